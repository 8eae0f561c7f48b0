"""A validation-only sweep: each candidate (a set of config overrides on a recipe) runs n seeds; the table shows
validation accuracy (mean, min) and train-clock time (median). Test accuracy is never read or printed here, so the
choices it informs are made on validation only (the honesty rule of docs/BENCHMARKS.md).

    python benchmarks/sweep.py mnist1d --seeds 8 --grid benchmarks/grids/mnist1d_fast.py

A grid file defines CANDIDATES: a list of {key: value} override dicts.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
from dataclasses import replace
from pathlib import Path

from quicktrain import apply_overrides, load_recipe, train
from quicktrain.data import load_data


def run(recipe: str, candidates: list[dict], seeds: int, target: float | None) -> list[dict]:
    base = load_recipe(recipe)
    splits = load_data(base.data)
    rows = []
    for overrides in candidates:
        cfg = apply_overrides(base, overrides)
        if target is not None:
            cfg = replace(cfg, train=replace(cfg.train, target=target))
        vals, times, reached = [], [], 0
        for seed in range(seeds):
            r = train(replace(cfg, train=replace(cfg.train, seed=seed)),
                      data=splits if cfg.data == base.data else None, progress=False)
            vals.append(r.val_acc)
            times.append(r.train_seconds)
            reached += r.reached_target
        row = {"overrides": overrides, "val_mean": statistics.fmean(vals), "val_min": min(vals),
               "seconds_median": statistics.median(times), "reached": reached, "n": seeds}
        rows.append(row)
        print(f"val {100 * row['val_mean']:.2f} (min {100 * row['val_min']:.1f})  "
              f"{row['seconds_median']:.3f} s  reached {reached}/{seeds}  {json.dumps(overrides)}", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("recipe")
    ap.add_argument("--grid", required=True, help="a .py file defining CANDIDATES")
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--target", type=float, help="override the recipe's target (e.g. 0 to always run the budget)")
    args = ap.parse_args()
    spec = importlib.util.spec_from_file_location("grid", Path(args.grid))
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    run(args.recipe, module.CANDIDATES, args.seeds, args.target)


if __name__ == "__main__":
    main()
