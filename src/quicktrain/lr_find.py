"""A learning-rate range test (Smith 2017, "Cyclical learning rates", sec. 3.3) that leaves no trace.

The LR grows exponentially from `start_lr` to `end_lr` over at most one epoch of the recipe's real model, data,
augmentation, loss and precision, and the loss is smoothed with a bias-corrected exponential average. The sweep stops
early once the smoothed loss is non-finite or exceeds 4x its best (the usual divergence rule).

It trains a *copy* of the model, with its own optimizer and data order, and restores every random generator
afterwards, so the caller's model, optimizer and random streams are exactly as they were (Lightning's finder changes
the weights, the complaint in Lightning #1767 / #6675).

To get ~100 points from one epoch, the sweep uses batches of about n/100 examples, and the suggestion is carried to the
recipe's batch size by the recipe's own LR-batch rule (`schedule.lr_batch_rule`: sqrt for the Adam family).

Suggestion rules (`suggest`): `steepest` (the LR of the steepest descent of the smoothed loss, Smith's and fastai's
classic), `minimum/10` (fastai's `lr_min`), and `valley` (the middle of the longest stretch of descent, fastai's
default since 2.5). quicktrain reports minimum/10, the one that held up against full sweeps of real recipes
(benchmarks/lr_find_validation.py, docs/BENCHMARKS.md, "LR range test"). The reported range spans the rules'
suggestions; the confidence says how much they agree.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field, replace
from types import ModuleType
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from quicktrain.config import Config, check_config
from quicktrain.methods.augment import Augment
from quicktrain.optim import make_optimizer, set_lr
from quicktrain.precision import Precision
from quicktrain.runtime import derive_seed
from quicktrain.schedules import lr_batch_scale, lr_rule
from quicktrain.state import rng_state, set_rng_state
from quicktrain.sync_bn import local_copy
from quicktrain.step import train_step

if TYPE_CHECKING:
    from quicktrain.run import Run

# The rule reported as `suggested_lr`. Against full sweeps of the real recipes (8 peak LRs x 6 seeds each;
# benchmarks/lr_find_validation.py, docs/BENCHMARKS.md "LR range test"), minimum/10 landed within 2x of a best peak LR
# on all three (0.86x, 1.23x, 0.85x of the nearest; digits and mnist5k have two exactly tied bests, and against the
# lower one it is 4.9x and 6.8x); valley (0.22x on MNIST-1D) and steepest (3.7x on digits) did not.
RULE = "minimum/10"
DIVERGE = 4.0  # stop when the smoothed loss exceeds this many times its best
BETA = 0.9  # smoothing of the loss (bias-corrected EMA); ~10-step memory for a 100-step sweep


@dataclass
class LRFindResult:
    suggested_lr: float  # for the recipe's batch size
    low: float  # range spanned by the rules' suggestions
    high: float
    confidence: str  # high: the rules agree within 3x; medium: within 10x; low: otherwise
    rule: str
    suggestions: dict[str, float]  # every rule's LR, for the recipe's batch size
    sweep_batch_size: int
    batch_lr_factor: float  # a sweep LR times this is the same LR at the recipe's batch size (schedule.lr_batch_rule)
    steps: int
    seconds: float
    stopped: str  # why the sweep ended
    lrs: list[float] = field(repr=False)  # at the sweep's batch size
    losses: list[float] = field(repr=False)
    smoothed: list[float] = field(repr=False)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("lrs", "losses", "smoothed"):
            out.pop(key)
        return out


def smooth(losses: list[float], beta: float = BETA) -> list[float]:
    """Bias-corrected exponential average (as in Adam's moment estimates); NaN or inf stay NaN or inf."""
    avg, out = 0.0, []
    for i, value in enumerate(losses, 1):
        avg = beta * avg + (1 - beta) * value
        out.append(avg / (1 - beta**i))
    return out


def suggest(lrs: list[float], smoothed: list[float]) -> dict[str, float]:
    """Each rule's LR from a sweep (finite points only; the first 10% skipped, where the average is still settling)."""
    points = [(lr, s) for lr, s in zip(lrs, smoothed) if math.isfinite(s)]
    skip = max(1, len(points) // 10)
    points = points[skip:]
    if len(points) < 3:
        raise ValueError("the sweep has fewer than 3 usable points; widen the LR range or check the data")
    x = [math.log(lr) for lr, _ in points]
    y = [s for _, s in points]
    slopes = [(y[i + 1] - y[i - 1]) / (x[i + 1] - x[i - 1]) for i in range(1, len(y) - 1)]
    steepest = points[1 + min(range(len(slopes)), key=lambda i: slopes[i])][0]
    minimum = points[min(range(len(y)), key=lambda i: y[i])][0] / 10
    # valley: the longest run of points each lower than the one before; its middle third is a safe region
    best_start, best_len, start = 0, 1, 0
    for i in range(1, len(y)):
        if y[i] >= y[i - 1]:
            start = i
        elif i - start + 1 > best_len:
            best_start, best_len = start, i - start + 1
    a, b = best_start + best_len // 3, best_start + 2 * best_len // 3
    valley = math.exp((x[a] + x[b]) / 2)
    return {"steepest": steepest, "minimum/10": minimum, "valley": valley}


def find_lr(cfg: Config | ModuleType | str, model: nn.Module | None = None, data: Any = None, *,
            start_lr: float = 1e-6, end_lr: float = 10.0, steps: int = 100) -> LRFindResult:
    """Run the range test for a recipe (and optionally your model and data); nothing of yours is changed.
    Its `seconds` count the sweep alone (setting up the run and the `auto` race are not in it, as in a run)."""
    from quicktrain.recipes import load_recipe
    from quicktrain.run import build_run

    cfg = load_recipe(cfg) if not isinstance(cfg, Config) else check_config(cfg)
    if not 0 < start_lr < end_lr:
        raise ValueError(f"need 0 < start_lr < end_lr (got {start_lr}, {end_lr})")
    saved_rng = rng_state()
    try:
        run = build_run(cfg, copy.deepcopy(model) if model is not None else None, data)
    finally:
        set_rng_state(saved_rng)
    return sweep(run, start_lr, end_lr, steps)


def sweep(run: Run, start_lr: float = 1e-6, end_lr: float = 10.0, steps: int = 100,
          past_min: float = math.inf, start: dict[str, torch.Tensor] | None = None) -> LRFindResult:
    """The range test on a built run: a copy of its model, its data already on the device, its precision and
    layout, its augmentation and loss; its own optimizer and data order. The run and every RNG are left as they were.
    `past_min`: also stop once the LR is this many times that of the lowest smoothed loss (minimum/10 cannot move
    then unless the loss falls below its best again, which a sweep that has risen for that long rarely does).
    `start`: weights (a state dict of the run's model) the copy sweeps from instead of the model's current ones."""
    t0 = time.perf_counter()
    saved_rng = rng_state()
    try:
        return _sweep(run, start_lr, end_lr, steps, t0, past_min, start)
    finally:
        set_rng_state(saved_rng)


PAST_MIN = 10.0  # adaptive runs' sweeps stop a decade past their minimum: minimum/10 is known by then
PROGRESS = 0.9  # ... once that minimum is 10% below the smoothed loss where the sweep started


def sweep_for_run(run: Run, start: dict[str, torch.Tensor] | None = None) -> LRFindResult:
    """The range test a run uses for its own peak LR (optim.lr_find, quicktrain.adapt): the full sweep from 1e-6,
    stopped a decade past its lowest smoothed loss (`past_min`), where the minimum/10 rule's answer is settled.
    (A minimum within 10% of the starting loss does not count: at tiny LRs the loss is flat and its noise has
    minima.) The same suggestion as the full sweep unless the loss falls below its best again after a decade:
    on the 12 generality models x 3 seeds, the same in 36/36, with 14-29% fewer steps on 4 models and none saved on
    the 8 whose sweep diverges or ends within a decade of its minimum (benchmarks/lr_find_stop.py). Starting the
    sweep higher (1e-4) would save more, and was tried twice: it moved the minimum (less training before it) and
    cost the transformers 1-2 points of accuracy."""
    return sweep(run, past_min=PAST_MIN, start=start)


class StartWeights:
    """The model's weights before training, kept by a run that defers its LR range test (adapt.lr_find=auto) so that
    the test, when it runs, sweeps from them as a test before training would. A sweep from partly trained weights
    starts where the loss is already low and flat and its minimum/10 rule answers noise (mlp/mnist1d at epoch 2:
    9.1e-7, where the sweep from the initial weights gives 3.7e-3). A run's `stateful` object until the test is
    decided, so a resumed run sweeps from the same weights; then cleared (nothing left to checkpoint)."""

    def __init__(self) -> None:
        self.weights: dict[str, torch.Tensor] = {}

    def capture(self, model: nn.Module) -> None:
        self.weights = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def clear(self) -> None:
        self.weights = {}

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.weights)

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.weights = dict(state)


@dataclass
class _Sweep:
    """What a sweep trains: a copy of the run's model, its own optimizer and data order, at the sweep's batch."""

    run: Run
    net: nn.Module
    optimizer: torch.optim.Optimizer
    batches: Any
    augment: Augment | None
    precision: Precision
    steps: int
    batch: int

    def step(self) -> torch.Tensor:
        cfg = self.run.cfg
        x, y = self.batches.next(self.batch)
        if self.augment is not None:
            x, y = self.augment.on_batch(x, y, 0.0)
        return train_step(self.net, self.optimizer, self.precision, self.run.task.loss, self.run.layout(x), y,
                          cfg.optim.grad_clip, micro_batch=cfg.memory.micro_batch,
                          ghost_bn=cfg.memory.ghost_bn)  # the run's memory plan


def _prepare(run: Run, start_lr: float, steps: int, start: dict[str, torch.Tensor] | None = None) -> _Sweep:
    cfg, device = run.cfg, run.device
    net = (local_copy(run.model) if run.dist.on else copy.deepcopy(run.model)).train()  # no collectives in it
    if start:
        net.load_state_dict(start)
    n = run.n_train
    steps = max(3, min(steps, n))  # at most one epoch of examples in total
    batch = max(1, min(cfg.train.batch_size, n // steps))
    batches = run.batches.fork(derive_seed(cfg.train.seed, "lr-find"))  # the same data in its own order
    augment = Augment(run.splits.augment, cfg.data.shift, device, derive_seed(cfg.train.seed, "augment")) \
        if run.splits.augment != "none" and cfg.data.shift > 0 else None
    optimizer = make_optimizer(net, replace(cfg.optim, lr=start_lr), device)
    return _Sweep(run, net, optimizer, batches, augment, Precision(run.precision.name, device), steps, batch)


def estimate_seconds(run: Run, steps: int = 100, probe: int = 3) -> float:
    """What a sweep of `steps` would cost on this run now: `probe` steps timed (after one untimed) on the sweep's
    copy at the sweep's batch, times the sweep's steps, plus setting up the copy. The run and every RNG are left as
    they were. (An over-estimate where the sweep stops early: a decade past its minimum, or on divergence.)"""
    saved_rng = rng_state()
    t0 = time.perf_counter()
    sw = _prepare(run, 1e-6, steps)
    try:
        setup = time.perf_counter() - t0
        sw.step().item()
        t1 = time.perf_counter()
        for _ in range(probe):
            sw.step().item()
        per = (time.perf_counter() - t1) / probe
    finally:
        set_rng_state(saved_rng)
        if hasattr(sw.batches, "close"):
            sw.batches.close()
    return setup + per * sw.steps


def _sweep(run: Run, start_lr: float, end_lr: float, steps: int, t0: float, past_min: float,
           start: dict[str, torch.Tensor] | None) -> LRFindResult:
    cfg = run.cfg
    sw = _prepare(run, start_lr, steps, start)
    steps, batch, optimizer, batches = sw.steps, sw.batch, sw.optimizer, sw.batches
    factor = (end_lr / start_lr) ** (1 / (steps - 1))
    lrs, losses, best, stopped = [], [], math.inf, "reached end_lr"
    settle, settled_best, lr_best, first = max(1, steps // 10), math.inf, 0.0, math.inf  # as `suggest` skips 10%
    for i in range(steps):
        lr = start_lr * factor**i
        set_lr(optimizer, lr)
        loss = sw.step()
        lrs.append(lr)
        losses.append(loss.item())
        current = smooth(losses)[-1]
        if not math.isfinite(current):
            stopped = f"loss became non-finite at lr {lr:.3g}"
            break
        best = min(best, current)
        if current > DIVERGE * best:
            stopped = f"diverged at lr {lr:.3g} (smoothed loss > {DIVERGE:g}x its best)"
            break
        if i == settle:
            first = current
        if i >= settle and current < settled_best:
            settled_best, lr_best = current, lr
        # a decade past a minimum that is real progress (10% below where the sweep started), not a flat start's noise
        if lr_best and lr > past_min * lr_best and settled_best < PROGRESS * first:
            stopped = f"lr {lr:.3g}: {past_min:g}x that of the lowest smoothed loss"
            break
    if hasattr(batches, "close"):  # a streamed source's DataLoader workers, or open files
        batches.close()
    smoothed = smooth(losses)
    to_recipe = lr_batch_scale(cfg.train.batch_size, batch, lr_rule(cfg))
    rules = {k: v * to_recipe for k, v in suggest(lrs, smoothed).items()}
    spread = max(rules.values()) / min(rules.values())
    confidence = "high" if spread <= 3 else "medium" if spread <= 10 else "low"
    return LRFindResult(suggested_lr=rules[RULE], low=min(rules.values()), high=max(rules.values()),
                        confidence=confidence, rule=RULE, suggestions=rules, sweep_batch_size=batch,
                        batch_lr_factor=to_recipe, steps=len(lrs),
                        seconds=time.perf_counter() - t0, stopped=stopped, lrs=lrs, losses=losses, smoothed=smoothed)
