"""Do quicktrain's defaults transfer to a user's own model and data? (issue #13)

For each (model, data) combo of `COMBOS` (models and data in benchmarks/user_models.py), trains through the public
API exactly as the README shows, `qt.train(cfg, model=build(), data=splits, progress=False)`, with

- `plain`:   the plain recipe (Adam 1e-3 constant, batch 128, fp32, a check every epoch, no stop at the target),
             data.name=custom, the combo's target, train.epochs = the combo's budget (`epochs` below; fewer than the
             recipe's 100 where plain reaches the target long before, to keep the script near 15 min on 2 cores);
- `default`: the built-in default recipe `mnist1d` with data.name=custom and the same target, as shipped: on a
             model and data it was not tuned for it adapts (quicktrain.adapt: peak LR from the range test where it
             pays, `adapt.lr_find=auto`; batch 128, warmup-stable-decay, a check every epoch, precision auto); its
             cap (adapt.max_epochs) is set to the combo's budget, so both get the same number of epochs at most;
- `first`:   the same with `adapt.lr_find=first` (the range test before training, the default until 2026-12-06);
- `auto`:    the same with `adapt.lr_find=auto` forced (the default since 2026-12-06);
- `last`:    the same with `adapt.ema=0`: checks and scores on the last weights, not their average (the default
             until 2026-12-06).

Neither stops at the target (train.stop_on_target=false): the time to target is the first check at it, read off
the metrics, and the final test accuracy is each one's at the end of its own run (plain: its budget; default: its
first decay that ends with the target met, or the cap).

Both get the same `Splits` object (user_models.load: train/val/test fixed by the data, named "custom", augment as
`auto` resolves it for data from Python), the same seeds (model weights: torch.manual_seed(seed) before building;
train.seed = seed), seed-major and interleaved in one process. Time to target is the train clock
(`result.seconds_to_target`); test accuracy is the final one (`result.test_acc`, after the whole budget for plain).

Targets: about 1-2 points below plain's median final validation accuracy over 3 seeds (rounded down), so that plain
reaches them in every seed well within its budget (calibrated with
`benchmarks/adaptive_explore.py --calibrate`, which prints plain's validation curves).

    .venv/bin/python benchmarks/generality.py                      # the 8 of COMBOS, 3 seeds (~15 min on 2 cores)
    .venv/bin/python benchmarks/generality.py --threads 1 --seeds 5 --quick-seeds 15 --combos ...  # docs/BENCHMARKS.md
    .venv/bin/python benchmarks/generality.py --combos gru/mnist1d --seeds 1 --recipes plain
    .venv/bin/python benchmarks/generality.py --recipes plain default first   # also adapt.lr_find=first
    .venv/bin/python benchmarks/generality.py --recipes default --set adapt.ema=0.9   # a variant of the default

Writes docs/results/generality/generality.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import user_models  # noqa: E402

import quicktrain as qt  # noqa: E402

OUT_DIR = Path(__file__).resolve().parent.parent / "docs" / "results" / "generality"


@dataclass(frozen=True)
class Combo:
    model: str
    data: str
    target: float  # validation accuracy
    epochs: float  # plain's budget (the cap for adaptive policies too)

    @property
    def name(self) -> str:
        return f"{self.model}/{self.data}"


# gru/mnist1d (40 steps of 1 feature) is not in the default list: ~7 s an epoch here under load, and plain had only 58%
# validation accuracy after 40 epochs (one seed), so it alone would exceed the script's budget. Run it on its own with
# `--combos gru/mnist1d` (EXTRA).
EXTRA = [Combo("gru", "mnist1d", 0.55, 60), Combo("lstm", "digits", 0.94, 40), Combo("rescnn", "digits", 0.97, 20)]
# Added 2026-12-06 to check `adapt.lr_find=auto` on two model families it had not seen (user_models.lenet,
# user_models.mlp_ln); its pays, decide_check and projection were then changed with these in view, so they are no
# longer held out (HELDOUT2 is). Targets 1-2 points below plain's final validation accuracy in one calibration seed
# (lenet/digits 99.3%, mlp_ln/digits 99.3%, lenet/mnist1d 84.6%, mlp_ln/mnist1d 71.7%, lenet/mnist5k 97.3%);
# lenet/mnist1d's 83% was reached by plain in 4 of 5 seeds (its calibration seed was its best), hence 80%.
HELDOUT = [Combo("lenet", "digits", 0.98, 30), Combo("mlp_ln", "digits", 0.98, 20), Combo("lenet", "mnist1d", 0.80, 30),
           Combo("mlp_ln", "mnist1d", 0.70, 30), Combo("lenet", "mnist5k", 0.96, 15)]
# Held out from every choice made on 2026-12-06 (never run before the final table): targets ~2 points below plain's
# final validation accuracy in one calibration seed (lenet/mnist1d_hard 47.2% at 20 epochs, mlp_ln/mnist5k 95.0%
# at 15, mlp_ln/mnist1d_hard 32.4% at 20, gru/mnist5k 91.0% at 15, still rising: its budget here is 20).
HELDOUT2 = [Combo("lenet", "mnist1d_hard", 0.45, 20), Combo("mlp_ln", "mnist5k", 0.93, 15),
            Combo("mlp_ln", "mnist1d_hard", 0.31, 20), Combo("gru", "mnist5k", 0.89, 20)]
# Held out from the weight average of the adaptive default (`adapt.ema`, chosen on 2026-12-06 on the 19 combos of
# the table, every one seen before): first run with it in docs/results/generality/generality_ema_20261206.json. The
# fifth run's table (docs/BENCHMARKS.md) has the first two; transformer/mnist5k (~2 min a seed) was left out for time.
# Targets ~2 points below plain's final validation accuracy in one calibration seed (lstm/mnist5k 91.0%;
# rescnn/mnist1d_hard 52.8%, after a peak of 58.7% at epoch 5: it overfits). lstm/mnist5k's result there (and the
# recurrent combos' reruns) chose `adapt.lr_max`, so only the other two stay held out from that.
# transformer/mnist5k's 92% (from an earlier run) was above what plain reached in any of 5 seeds there; 87% is 2
# points below plain's median final accuracy in them.
HELDOUT3 = [Combo("lstm", "mnist5k", 0.89, 20), Combo("rescnn", "mnist1d_hard", 0.50, 20),
            Combo("transformer", "mnist5k", 0.87, 20)]
# Held out from every choice (`adapt.ema`, `adapt.lr_max`): calibrated (plain's final validation accuracy 43.6% at
# 40 epochs, 41.9% at 9), then first run in the final table.
HELDOUT4 = [Combo("transformer", "mnist1d_hard", 0.42, 30)]
# New model families (user_models.mlp_bn, user_models.cnn_bn), added after every choice: calibrated, then first run in
# the sixth run's table. Targets 1-2 points below plain's final validation accuracy in one calibration seed, rounded
# down (mlp_bn/digits 98.6%, mlp_bn/mnist1d_hard 36.8% and still rising, cnn_bn/mnist1d 97.6%, cnn_bn/digits 99.3%).
HELDOUT5 = [Combo("mlp_bn", "digits", 0.97, 20), Combo("mlp_bn", "mnist1d_hard", 0.34, 20),
            Combo("cnn_bn", "mnist1d", 0.96, 20), Combo("cnn_bn", "digits", 0.98, 20)]
EXTRA += HELDOUT + HELDOUT2 + HELDOUT3 + HELDOUT4 + HELDOUT5
# cheapest first, so that a run cut short still has most combos; targets from one calibration seed each (plain's
# final validation accuracy at the budget: mlp/mnist1d 61%, mlp/mnist1d_hard 33%, mlp/digits 98.6%, mlp/mnist5k
# 93.5%, rescnn/mnist1d 99.2%, transformer/digits 91.7% at 20 epochs, gru/digits 97.2%, transformer/mnist1d 90.5%)
COMBOS = [
    Combo("mlp", "digits", 0.96, 20),
    Combo("mlp", "mnist1d", 0.59, 30),
    Combo("mlp", "mnist1d_hard", 0.31, 20),
    Combo("mlp", "mnist5k", 0.92, 20),
    Combo("rescnn", "mnist1d", 0.97, 20),
    Combo("transformer", "digits", 0.88, 30),
    Combo("gru", "digits", 0.94, 40),
    Combo("transformer", "mnist1d", 0.85, 40),
]
# Combos whose plain run costs under 5 s a seed (1 thread; the fifth run, or calibration for HELDOUT5): six of them
# reach their targets in a median of 3-7 epochs (plain), so a median of 5 seeds moves by a whole check's epoch from seed
# to seed, and more seeds cost little: `--quick-seeds` gives them more (the sixth run: 15). Chosen after mlp/digits
# measured 1.33x plain over 5 seeds in the fifth run and 0.98x over 15 in a quick check (not kept); the sixth run: 1.30x
# over its seeds 0-4, 1.01x over 0-14 (docs/BENCHMARKS.md shows both).
QUICK = {"mlp/digits", "mlp/mnist1d", "mlp/mnist1d_hard", "mlp/mnist5k", "gru/digits", "lstm/digits", "lenet/digits",
         "mlp_ln/digits", "lenet/mnist1d", "mlp_ln/mnist5k", "lstm/mnist5k", "mlp_bn/digits", "mlp_bn/mnist1d_hard"}

# first / auto: the default with adapt.lr_find=first / auto; last: the default scoring its last weights, not their
# average (adapt.ema=0, the default until 2026-12-06)
RECIPES = ("plain", "default", "first", "auto", "last")
VARIANTS = {"first": {"adapt.lr_find": "first"}, "auto": {"adapt.lr_find": "auto"}, "last": {"adapt.ema": 0.0}}


def config(recipe: str, combo: Combo, seed: int, extra_set: dict[str, Any] | None = None) -> qt.Config:
    if recipe == "plain":
        return qt.apply_overrides(qt.load_recipe("plain"), {"data.name": "custom", "train.target": combo.target,
                                                           "train.epochs": float(combo.epochs), "train.seed": seed})
    extra = VARIANTS.get(recipe, {})
    return qt.apply_overrides(qt.load_recipe("mnist1d"), {"data.name": "custom", "train.target": combo.target,
                                                         "train.seed": seed, "train.stop_on_target": False,
                                                         "adapt.max_epochs": float(combo.epochs), **extra,
                                                         **(extra_set or {})})


def run(recipe: str, combo: Combo, splits: Any, seed: int, extra_set: dict[str, Any] | None = None) -> dict[str, Any]:
    torch.manual_seed(seed)
    model = user_models.MODELS[combo.model](splits.input_shape, splits.num_classes)
    t0 = time.perf_counter()
    r = qt.train(config(recipe, combo, seed, extra_set), model=model, data=splits, progress=False)
    return {"combo": combo.name, "recipe": recipe, "seed": seed, "target": combo.target, "reached": r.reached_target,
            "seconds_to_target": r.seconds_to_target, "train_seconds": r.train_seconds, "test_acc": r.test_acc,
            "test_acc_at_target": r.test_acc_at_target, "val_acc": r.val_acc,
            "best_val": max(m["val_acc"] for m in r.metrics), "epochs": r.epochs, "precision": r.precision,
            "adapted": r.adapted,
            "wall_seconds": time.perf_counter() - t0,
            "curve": [{"epoch": m["epoch"], "seconds": m["train_seconds"], "val": m["val_acc"], "test": m["test_acc"]}
                      for m in r.metrics]}


def _med(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} [{min(values):.2f}, {max(values):.2f}]" if values else "-"


def _median_time(runs: list[dict[str, Any]]) -> float | None:
    """The median time to target, or None unless every run reached it."""
    t = [r["seconds_to_target"] for r in runs if r["reached"]]
    return statistics.median(t) if t and len(t) == len(runs) else None


def table(runs: list[dict[str, Any]], combos: list[Combo], recipes: list[str], base_seeds: int = 0) -> str:
    """One row per combo. `base_seeds` > 0 adds, for combos run with more seeds, each ratio over the first
    `base_seeds` seeds too (what the table would say without the extra seeds)."""
    head = "| combo | target | plain budget (epochs) | seeds |"
    for rec in recipes:
        head += f" {rec}: time to target s | {rec}: reached | {rec}: final test acc | {rec}: final val acc |"
    others = [r for r in recipes if r != "plain"]
    extra = [f" {r} / plain time, seeds 0-{base_seeds - 1} |" for r in others] if base_seeds else []
    lines = [head + "".join(f" {r} / plain time |" for r in others) + "".join(extra),
             "|" + "---|" * (4 + 4 * len(recipes) + len(others) + len(extra))]
    for c in combos:
        mine = [r for r in runs if r["combo"] == c.name]
        row = f"| {c.name} | {c.target:.0%} | {c.epochs:g} | {len({r['seed'] for r in mine})} |"
        for rec in recipes:
            rs = [r for r in mine if r["recipe"] == rec]
            t = [r["seconds_to_target"] for r in rs if r["reached"]]
            test = [100 * r["test_acc"] for r in rs]
            val = [100 * r["val_acc"] for r in rs]
            row += (f" {_med(t)} | {len(t)}/{len(rs)} | {statistics.mean(test):.1f} | "
                    f"{statistics.median(val):.1f} |") if rs else " - | - | - | - |"
        for seeds in [None] + ([base_seeds] if base_seeds else []):
            kept = [r for r in mine if seeds is None or r["seed"] < seeds]
            for rec in others:
                a, b = (_median_time([r for r in kept if r["recipe"] == x]) for x in (rec, "plain"))
                row += f" {a / b:.2f} |" if a and b else " never (not reached in every seed) |"
        lines.append(row)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--combos", nargs="*", default=[c.name for c in COMBOS])
    ap.add_argument("--recipes", nargs="*", default=["plain", "default"], choices=RECIPES)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--quick-seeds", type=int, default=0,
                    help="seeds for the combos in QUICK (plain under 5 s a seed); 0 = --seeds")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch intra-op threads; 0 = torch's default. On a shared 2-core machine use 1: with other "
                         "jobs running, 2 threads were 2-25x slower a step (oversubscription), 1 thread was stable")
    ap.add_argument("--out", default=str(OUT_DIR / "generality.json"))
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="config overrides for every recipe but plain (a variant of the default), e.g. methods.ema=0.9")
    args = ap.parse_args(argv)
    if any("=" not in kv for kv in args.set):
        ap.error("--set takes KEY=VALUE items")
    extra_set = dict(kv.split("=", 1) for kv in args.set)
    if args.threads:
        torch.set_num_threads(args.threads)
    combos = [c for c in COMBOS + EXTRA if c.name in args.combos]
    data = {d: user_models.load(d) for d in sorted({c.data for c in combos})}
    runs = []
    for c in combos:
        for seed in range(max(args.seeds, args.quick_seeds) if c.name in QUICK else args.seeds):
            for rec in args.recipes:
                r = run(rec, c, data[c.data], seed, extra_set if rec != "plain" else None)
                runs.append(r)
                t = f"{r['seconds_to_target']:.2f}s" if r["reached"] else "not reached"
                print(f"{c.name} seed {seed} {rec}: {t}, final val {r['val_acc']:.3f} test {r['test_acc']:.3f} "
                      f"({r['epochs']:.0f} epochs, {r['train_seconds']:.1f} s)", flush=True)
    md = table(runs, combos, args.recipes, args.seeds if args.quick_seeds > args.seeds else 0)
    print(md)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"argv": sys.argv[1:], "torch": torch.__version__, "threads": torch.get_num_threads(),
                               "combos": [c.__dict__ | {"name": c.name} for c in combos], "runs": runs,
                               "table": md}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
