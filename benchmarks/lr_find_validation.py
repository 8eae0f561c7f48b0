"""Is the LR finder's suggestion any good? Compare it with the best peak LR of a full sweep of the real recipe.

    python benchmarks/lr_find_validation.py [mnist1d digits mnist5k] [--seeds 3]

For each recipe: train it at 8 peak LRs (the recipe's own LR times 1/16 ... 8, a factor 2 apart) for `seeds` seeds
each; the best peak LR is the one with the highest mean *validation* accuracy. Then run the finder with the same seeds
and report, for every suggestion rule, the median suggestion and its ratio to the best LR (within 2x is the bar), and
what the finder cost in examples (at most one epoch) and seconds.
"""

from __future__ import annotations

import argparse
import json
import statistics
from dataclasses import replace

from quicktrain import apply_overrides, load_recipe, train
from quicktrain.data import load_data
from quicktrain.lr_find import find_lr

FACTORS = [1 / 16, 1 / 8, 1 / 4, 1 / 2, 1, 2, 4, 8]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("recipes", nargs="*", default=["mnist1d", "digits", "mnist5k"])
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args()
    report = {}
    for name in args.recipes:
        base = apply_overrides(load_recipe(name), {"train.target": 0.0})
        splits = load_data(base.data)
        sweep = {}
        for f in FACTORS:
            lr = base.optim.lr * f
            accs = [train(replace(base, optim=replace(base.optim, lr=lr), train=replace(base.train, seed=s)),
                          data=splits, progress=False).val_acc for s in range(args.seeds)]
            sweep[lr] = statistics.fmean(accs)
            print(f"{name}: peak lr {lr:.4g}: val {100 * sweep[lr]:.2f}%", flush=True)
        best = max(sweep, key=lambda k: sweep[k])
        finds = [find_lr(replace(base, train=replace(base.train, seed=s)), data=splits) for s in range(args.seeds)]
        rules = {rule: statistics.median(f.suggestions[rule] for f in finds) for rule in finds[0].suggestions}
        report[name] = {
            "best_lr": best, "best_val": sweep[best], "sweep": {f"{k:.4g}": v for k, v in sweep.items()},
            "rules": {rule: {"lr": lr, "ratio_to_best": lr / best, "within_2x": 0.5 <= lr / best <= 2.0}
                      for rule, lr in rules.items()},
            "finder_examples": finds[0].steps * finds[0].sweep_batch_size, "epoch_examples": len(splits.train),
            "finder_seconds_median": statistics.median(f.seconds for f in finds),
            "confidence": [f.confidence for f in finds],
        }
        print(f"{name}: best {best:.4g} ({100 * sweep[best]:.2f}%); " + ", ".join(
            f"{r} {v['lr']:.4g} ({v['ratio_to_best']:.2f}x)" for r, v in report[name]["rules"].items()), flush=True)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
