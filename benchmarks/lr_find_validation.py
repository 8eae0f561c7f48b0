"""Is the LR finder's suggestion any good? Compare it with the best peak LR of a full sweep of the real recipe.

    python benchmarks/lr_find_validation.py [mnist1d digits mnist5k] [--seeds 3]

For each recipe: train it at 8 peak LRs (the recipe's own LR times 1/16 ... 8, a factor 2 apart) for `seeds` seeds
each; the best peak LR is the one with the highest mean *validation* accuracy. Then run the finder with the same seeds
and report, for every suggestion rule, the median suggestion and its ratio to the best LR (within 2x is the bar), and
what the finder cost in examples (at most one epoch) and seconds.

Where the sweep cannot tell its top LRs apart (a flat optimum: their means within one standard error of the best
mean), "the best" is a tie; the report then also gives the tied region and whether the suggestion is within 2x of
any LR in it. Both readings are printed; neither replaces the other. Where several LRs share the best mean exactly
(small validation sets make that happen), all of them are "the best" and the ratio is to the nearest one.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from dataclasses import replace

from quicktrain import apply_overrides, load_recipe, train
from quicktrain.data import load_data
from quicktrain.lr_find import find_lr

FACTORS = [1 / 16, 1 / 8, 1 / 4, 1 / 2, 1, 2, 4, 8]


def best_lrs(sweep: dict[float, float]) -> list[float]:
    """Every LR whose mean validation accuracy equals the sweep's maximum. Validation sets are small (digits: 180
    examples), so exact ties happen; `max` alone would pick the lowest tied LR and call the others worse."""
    top = max(sweep.values())
    return sorted(lr for lr, acc in sweep.items() if acc >= top - 1e-12)


def nearest_ratio(lr: float, bests: list[float]) -> float:
    """suggestion / the best LR nearest to it on a log scale."""
    return min((lr / b for b in bests), key=lambda r: abs(math.log(r)))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("recipes", nargs="*", default=["mnist1d", "digits", "mnist5k"])
    ap.add_argument("--seeds", type=int, default=6)
    args = ap.parse_args()
    report = {}
    for name in args.recipes:
        base = apply_overrides(load_recipe(name), {"train.target": 0.0})
        splits = load_data(base.data)
        sweep, se = {}, {}
        for f in FACTORS:
            lr = base.optim.lr * f
            accs = [train(replace(base, optim=replace(base.optim, lr=lr), train=replace(base.train, seed=s)),
                          data=splits, progress=False).val_acc for s in range(args.seeds)]
            sweep[lr], se[lr] = statistics.fmean(accs), statistics.stdev(accs) / len(accs) ** 0.5
            print(f"{name}: peak lr {lr:.4g}: val {100 * sweep[lr]:.2f}% ± {100 * se[lr]:.2f} (s.e.)", flush=True)
        best = max(sweep, key=lambda k: sweep[k])
        bests = best_lrs(sweep)
        tied = sorted(lr for lr in sweep if sweep[lr] >= sweep[best] - se[best])
        finds = [find_lr(replace(base, train=replace(base.train, seed=s)), data=splits) for s in range(args.seeds)]
        rules = {rule: statistics.median(f.suggestions[rule] for f in finds) for rule in finds[0].suggestions}
        suggested = statistics.median(f.suggested_lr for f in finds)  # the rule quicktrain reports
        at_suggestion = statistics.fmean(
            train(replace(base, optim=replace(base.optim, lr=suggested), train=replace(base.train, seed=s)),
                  data=splits, progress=False).val_acc for s in range(args.seeds))
        report[name] = {
            "best_lr": best, "best_lrs": bests, "best_val": sweep[best],
            "sweep": {f"{k:.4g}": v for k, v in sweep.items()},
            "tied_best_region": [tied[0], tied[-1]], "se": {f"{k:.4g}": v for k, v in se.items()},
            "rules": {rule: {"lr": lr, "ratio_to_best": lr / best, "within_2x": 0.5 <= lr / best <= 2.0,
                             "ratio_to_nearest_best": nearest_ratio(lr, bests),
                             "within_2x_of_a_best": 0.5 <= nearest_ratio(lr, bests) <= 2.0,
                             "within_2x_of_tied_region": tied[0] / 2 <= lr <= tied[-1] * 2}
                      for rule, lr in rules.items()},
            "suggested_lr": suggested, "val_at_suggestion": at_suggestion,
            "regret_points": 100 * (sweep[best] - at_suggestion),
            "finder_examples": finds[0].steps * finds[0].sweep_batch_size, "epoch_examples": len(splits.train),
            "finder_seconds_median": statistics.median(f.seconds for f in finds),
            "confidence": [f.confidence for f in finds],
        }
        print(f"{name}: at the suggestion {suggested:.4g}: val {100 * at_suggestion:.2f}% "
              f"({100 * (sweep[best] - at_suggestion):+.2f} points below the sweep's best)", flush=True)
        print(f"{name}: best {' = '.join(f'{b:.4g}' for b in bests)} ({100 * sweep[best]:.2f}%), "
              f"tied region {tied[0]:.4g}-{tied[-1]:.4g}; " + ", ".join(
                  f"{r} {v['lr']:.4g} ({v['ratio_to_best']:.2f}x)" for r, v in report[name]["rules"].items()),
              flush=True)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
