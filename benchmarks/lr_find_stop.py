"""Does stopping a run's LR range test a decade past its minimum change its answer, and what does it save? (#13)

For every model x data combination of benchmarks/generality.py (models and data of benchmarks/user_models.py, the
default recipe as an adaptive run builds them), the full sweep (100 steps from 1e-6 to 10, `lr_find.sweep`) and the
run's own sweep (`lr_find.sweep_for_run`: the same, stopped once the LR is 10x that of the lowest smoothed loss, if
that minimum is 10% below the start) on the same built run, seeds 0..n-1: steps, seconds, and both suggestions.

    python benchmarks/lr_find_stop.py [--seeds 3] [--threads 1]

Writes docs/results/lr_find_stop.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import generality  # noqa: E402
import user_models  # noqa: E402

from quicktrain.lr_find import sweep, sweep_for_run  # noqa: E402
from quicktrain.run import build_run  # noqa: E402

OUT = Path(__file__).resolve().parent.parent / "docs" / "results" / "lr_find_stop.json"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for combo in generality.COMBOS + generality.EXTRA:
        splits = user_models.load(combo.data)
        for seed in range(args.seeds):
            torch.manual_seed(seed)
            model = user_models.MODELS[combo.model](splits.input_shape, splits.num_classes)
            run = build_run(generality.config("default", combo, seed), model, splits)
            full, short = sweep(run), sweep_for_run(run)
            rows.append({"combo": combo.name, "seed": seed, "full_steps": full.steps, "steps": short.steps,
                         "full_seconds": full.seconds, "seconds": short.seconds, "full_lr": full.suggested_lr,
                         "lr": short.suggested_lr, "stopped": short.stopped})
            print(json.dumps(rows[-1]), flush=True)
    print("| combo | steps: full sweep | steps: stopped (median [min, max]) | same suggestion |")
    print("|---|---:|---|---|")
    for name in dict.fromkeys(r["combo"] for r in rows):
        rs = [r for r in rows if r["combo"] == name]
        steps = [r["steps"] for r in rs]
        same = sum(r["lr"] == r["full_lr"] for r in rs)
        print(f"| {name} | {statistics.median(r['full_steps'] for r in rs):.0f} | {statistics.median(steps):.0f} "
              f"[{min(steps)}, {max(steps)}] | {same}/{len(rs)} |")
    OUT.write_text(json.dumps({"argv": sys.argv[1:], "torch": torch.__version__, "cpu": platform.processor(),
                               "threads": args.threads, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
