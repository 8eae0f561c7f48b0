"""Defaults that transfer: a recipe's constants (peak LR, a 3-epoch budget, one-cycle) were chosen for one model on
one dataset, and on another they can lose to plain PyTorch defaults (a GRU on MNIST-1D reached 38.9% where plain
Adam reached 94.8%; issue #13). So a run checks whether its recipe was tuned for what it is given, and where it was
not, it chooses by measurement what the constants used to fix:

- the peak LR from the LR range test on the run's own model and data (quicktrain.lr_find; its time is on the
  train clock), never below `adapt.lr_floor` (plain Adam's 1e-3) nor above `adapt.lr_max` (10x it: for recurrent
  nets the test said up to 0.08, and lstm/mnist5k at 0.04-0.05 ended 3-11 test points below plain), run where it
  pays (`adapt.lr_find=auto`, the default): the run trains as plain Adam does (the floor LR, no warmup) until its
  first check, where the test runs if it costs at most `adapt.first_epochs` (2) epochs of the run's own, timed
  steps; else at check `adapt.decide_check` (3) if the time the checks' trend projects to the target exceeds
  `adapt.pays` (1) times its cost (`lr_test_pays`). The test sweeps from the weights before training
  (`lr_find.StartWeights`), and the run warms up to its LR from where it is. Why not the test first
  (`adapt.lr_find=first`, the default until 2026-12-06): on a problem plain Adam solves in a few dozen steps the
  test costs more than all of plain's training (mlp/digits 1.86x, mlp_ln/digits 1.53x plain), while an epoch at
  plain Adam's LR is never wasted; docs/BENCHMARKS.md, "Defaults that transfer";
- the budget: until the target, or `adapt.max_epochs` (plain's budget), or `train.max_seconds`, checking the
  validation split every `adapt.eval_every` epochs;
- the schedule: warmup-stable-decay with the decay started when validation stops improving (quicktrain.wsd), which
  needs no length up front;
- evaluation: of a weight average (EMA, `adapt.ema` 0.95 a step; quicktrain.methods.ema), whose accuracy does not
  swing from check to check as the last weights' does at a constant LR (rescnn/mnist1d: 1.31x plain's time without
  it, 0.62x with it);
- augmentation, test-time augmentation and progressive resizing, chosen for the recipe's data, are off.

A recipe says what it was tuned for (`Config.tuned_for`, a recipe name); "" means fixed constants that are never
adapted (the `plain` and `reference` baselines). `adapt.mode`: auto (adapt when the recipe was not tuned for this
run), on (always), off (never). What was chosen, and why, is printed and recorded in the result and report.md.
The effect, on 8+ model x data combinations none of the recipes was tuned on: docs/BENCHMARKS.md, "Defaults that
transfer".
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

from quicktrain.config import Config, iter_keys

SECTIONS = ("data.", "model.")  # what a recipe's constants were tuned on ...
SWITCHES = {"data.augment", "data.shift", "data.resident_max_mb"}  # ... except technique switches (an ablation)


def untuned(cfg: Config, model: Any = None, data: Any = None) -> list[str]:
    """Why the recipe's tuned constants do not apply to a run of `cfg` on `model` and `data` (as passed to
    `train`): [] when they do, or when the recipe has fixed constants. Splits loaded from a DataConfig (as `bench`
    passes them) count as that DataConfig's data, not as data from Python."""
    if cfg.adapt.mode == "off" or (cfg.adapt.mode == "auto" and not cfg.tuned_for) or cfg.data.language:
        return []  # next-token recipes keep their constants: adaptation is measured for classification only
    if cfg.adapt.mode == "on":
        return ["adapt.mode=on"]
    from quicktrain.recipes import load_recipe

    source = getattr(data, "source", None)
    from_python = data is not None and source is None
    reasons = (["a model from Python"] if model is not None else []) + (["data from Python"] if from_python else [])
    actual = replace(cfg, data=source) if source is not None else cfg
    tuned = {k: v for k, v, _ in iter_keys(load_recipe(cfg.tuned_for)) if k.startswith(SECTIONS)}
    for key, value, _ in iter_keys(actual):
        if key in tuned and key not in SWITCHES and tuned[key] != value and not (from_python and key == "data.name"):
            reasons.append(f"{key}={_text(value)} (tuned: {_text(tuned[key])})")
    return reasons


def _text(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


def adapted(cfg: Config) -> Config:
    """The config with the adaptive choices in place of the recipe's tuned constants."""
    a, sc, tc = cfg.adapt, cfg.schedule, cfg.train
    return replace(
        cfg,
        optim=replace(cfg.optim, lr_find=a.lr_find == "first", lr=cfg.optim.lr if a.lr_find == "first" else a.lr_floor),
        schedule=replace(sc, kind="wsd", batch_ramp_from=0),
        train=replace(tc, epochs=a.max_epochs, eval_every=a.eval_every, eval_from=0.0,
                      batch_size=a.batch_size or tc.batch_size),
        data=replace(cfg.data, augment="none"),
        methods=replace(cfg.methods, tta=False, resize_from=1.0, ema=a.ema),
    )


def peak_from_test(suggested: float, cfg: Config) -> float:
    """The peak LR an adaptive run takes from the LR range test's suggestion: within [adapt.lr_floor, adapt.lr_max]
    (lr_max 0 = no ceiling)."""
    a = cfg.adapt
    peak = max(suggested, a.lr_floor)
    return min(peak, a.lr_max) if a.lr_max > 0 else peak


def describe(cfg: Config, reasons: list[str]) -> str:
    """The one-line note a run prints when it adapts."""
    tc, a = cfg.train, cfg.adapt
    tuned = f"recipe {cfg.name} was tuned for recipe {cfg.tuned_for}'s model and data" if cfg.tuned_for \
        else f"recipe {cfg.name}"
    budget = f"until the target or {a.max_epochs:g} epochs" if tc.target > 0 else f"{a.max_epochs:g} epochs at most"
    cap = f" in [{a.lr_floor:g}, {a.lr_max:g}]" if a.lr_max else f" >= {a.lr_floor:g}"
    lr = {"first": f"peak LR from the LR range test{cap}", "off": f"peak LR {a.lr_floor:g}",
          "auto": f"peak LR from the LR range test{cap} where it pays"}[a.lr_find]
    ema = f"evaluated on a weight average (EMA {a.ema:g})" if a.ema else "evaluated on the last weights"
    return (f"adaptive defaults ({tuned}; this run has {', '.join(reasons)}): {lr}, {budget}, warmup-stable-decay, "
            f"batch {a.batch_size or tc.batch_size}, {ema}, no augmentation "
            "(--adapt.mode=off keeps the recipe's constants)")


def lr_test_pays(metrics: list[dict[str, Any]], target: float, seconds: float, test_seconds: float,
                 pays: float) -> tuple[bool, str]:
    """Whether the LR range test pays for itself now, in a run training at the floor LR: the train-clock time the
    trend of its checks projects to the target (`epochs_to_target`, at the seconds per epoch so far) against `pays`
    times the test's cost. No projection (a flat or wrong-way trend, or the target past 10x the epochs so far)
    counts as far away. Returns (run it, why)."""
    epochs = metrics[-1]["epoch"]
    if target <= 0:
        return True, "no target to project to"
    est = epochs_to_target(metrics, target)
    if est is None:
        return True, f"no trend toward the target after {epochs:.3g} epochs"
    left = max(0.0, (est - epochs) * seconds / max(epochs, 1e-9))
    compare = f"{left:.3g} s projected to the target at the floor LR vs {pays:g} x {test_seconds:.3g} s for the test"
    return left > pays * test_seconds, compare


PLAIN_EPOCHS = 100  # the `plain` recipe's budget: what plain defaults would still be training at


def epochs_to_target(metrics: list[dict[str, Any]], target: float, key: str = "val_acc",
                     higher_is_better: bool = True) -> float | None:
    """Where the trend of the last (up to 4) checks reaches `target`: a power law in the error (1 - accuracy, or
    the loss itself where lower is better) against epochs, i.e. a least-squares line of log(error) against
    log(epoch), the form learning curves take (Hestness et al. 2017). None with fewer than 2 checks, a flat or
    wrong-way trend, or an answer past 10x the epochs so far. Measured against a line of the accuracy itself in
    log(epoch) (the rule until 2026-12-06), from the first 3 checks of plain's 73 runs on the generality set that had
    not reached their target yet: it under-estimated the epochs still needed by more than 2x in 9 runs (the line: 32,
    e.g. lstm/digits 6.6 projected against 20.1), and over-estimated by more than 2x in 36 (the line: 15), mostly
    recurrent and attention models it calls far away that needed 14-24 more epochs."""
    def error(v: float) -> float:
        return 1.0 - v if higher_is_better else v

    pts = [(math.log(m["epoch"]), math.log(error(m[key]))) for m in metrics[-4:]
           if m.get("epoch", 0) > 0 and m.get(key) is not None and error(m[key]) > 0]
    if len(pts) < 2 or error(target) <= 0:
        return None
    mx, my = sum(p[0] for p in pts) / len(pts), sum(p[1] for p in pts) / len(pts)
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    slope = sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx if sxx > 0 else 0.0
    if slope >= 0:  # the error is not falling
        return None
    log_epochs = mx + (math.log(error(target)) - my) / slope  # compared in logs: a near-flat trend would overflow
    return math.exp(log_epochs) if log_epochs <= pts[-1][0] + math.log(10) else None


def guard_notes(cfg: Config, metrics: list[dict[str, Any]], stopped_by: str, reached: bool,
                was_adapted: bool) -> list[str]:
    """The never-worse-than-plain guard: a run that ends short of its target says what stopped it, where its trend
    would reach the target, and, where a recipe's tuned budget ended it, that plain defaults would still be training
    (and how to train until the target instead)."""
    tc = cfg.train
    if tc.target <= 0 or reached or not metrics:
        return []
    epochs = metrics[-1]["epoch"]
    best = max(m["val_acc"] for m in metrics)
    why = {"budget": f"the budget of {tc.epochs:g} epochs", "max_seconds": f"train.max_seconds={tc.max_seconds:g}",
           "schedule": "the end of its schedule", "on_eval": "on_eval"}.get(stopped_by, stopped_by)
    notes = [f"target {100 * tc.target:.4g}% not reached: stopped by {why} after {epochs:.3g} epochs "
             f"(best validation {100 * best:.2f}%)"]
    est = epochs_to_target(metrics, tc.target)
    if est is not None:
        notes.append(f"the trend of its last checks reaches the target after about {est:.3g} epochs")
    if not was_adapted and cfg.tuned_for and stopped_by == "budget" and tc.epochs < PLAIN_EPOCHS:
        notes.append(f"this {tc.epochs:g}-epoch budget was tuned for recipe {cfg.tuned_for}'s model and data; plain "
                     f"defaults would still be training ({PLAIN_EPOCHS} epochs): --adapt.mode=on trains until the "
                     "target with measured choices")
    return notes
