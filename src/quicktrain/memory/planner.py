"""The memory planner: under a cap (`--system.memory=2GiB`), choose micro-batch (accumulation), activation
checkpointing, reversible blocks and precision so that a training step fits, with the best predicted step time,
from a dry measurement, never by running into an out-of-memory error.

How (`plan_memory`):
1. Measure plain first (no checkpointing, not reversible) at 2-3 small micro-batch sizes m (B/16, B/8, B/4 of the
   batch B, on copies of the model, the RNG restored): the peak bytes of a steady-state step with the whole batch
   held, split in micro-batches as the run will (LiveBytes on CPU, `torch.cuda.max_memory_allocated` on CUDA), and
   at the two larger sizes the step's seconds. Fit peak = a + b*m (a: parameters, gradients, optimizer state, the
   batch; b: activations per example) and seconds = alpha + beta*k for k = ceil(B/m) micro-steps (beta: a
   micro-step's fixed cost; the B examples of work are the same for every k).
2. If plain fits at m = B (no accumulation), that is the plan: nothing is slower than no technique, and precision
   stays the `auto` race's. Else every variant (precision candidates x checkpoint off/selective/full x reversible,
   where the model has reversible blocks) is measured the same way, and for each variant the largest m whose
   predicted peak is under the cap less a margin (`MARGIN`). The `CONFIRM` variants with the least predicted step
   time are then timed at that very micro-batch (memory predicted under the cap, as the run's own steps), and the
   fastest measured wins: a line through three sizes can be off by tens of percent at a fourth (in a first run of
   benchmarks/memory_planner.py, on a loaded machine, the version without this step chose settings 1.7x and 2.7x
   slower than the best on a residual MLP; that run was not kept).
   The global batch never changes, so the optimisation is the same and time to accuracy is steps x step time:
   minimum step time is the best time to accuracy.
3. If nothing fits at m = 1, a one-line UserError gives the smallest predicted need.

The planner's seconds are outside the train clock (like the `auto` race) and reported. What the cap counts: on
CUDA everything the caching allocator holds for the step (plus resident data); on CPU live tensor storage
(parameters, gradients, optimizer state, batch, activations), not the process's RSS.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn

from quicktrain.config import parse_bytes
from quicktrain.errors import UserError
from quicktrain.memory.accumulate import micro_count
from quicktrain.memory.tracking import LiveBytes, fmt_bytes, tensor_bytes
from quicktrain.precision import Precision
from quicktrain.runtime import sync
from quicktrain.step import LossFn, train_step

__all__ = ["MARGIN", "Candidate", "Plan", "Variant", "fit_line", "plan_memory", "resolve_cap", "step_peak"]

MARGIN = 0.05  # plan under (1 - MARGIN) x cap: the fit's error on the benchmarked models was <= 3% (BENCHMARKS.md)
TIMED_STEPS = 3  # median of 3 whole steps per size, after one untimed
CONFIRM = 3  # the best predicted variants timed at their planned micro-batch ...
CONFIRM_STEPS = 7  # ... by the median of 7 steps after one untimed


def resolve_cap(spec: str, device: torch.device) -> int | None:
    """Bytes of `system.memory`: "" = none; "auto" = a CUDA device's free memory, none on CPU; else "2GiB" etc."""
    if spec == "":
        return None
    if spec == "auto":
        return int(torch.cuda.mem_get_info(device)[0]) if device.type == "cuda" else None
    cap = parse_bytes(spec)
    assert cap is not None, "config checks system.memory"
    return cap


@dataclass(frozen=True)
class Variant:
    precision: str
    checkpoint: str  # off | selective | full
    reversible: bool

    def __str__(self) -> str:
        return f"{self.precision}, checkpoint {self.checkpoint}" + (", reversible" if self.reversible else "")


@dataclass(frozen=True)
class Candidate:
    """A variant's fit and its best micro-batch under the cap (micro_batch 0: nothing fits)."""

    variant: Variant
    peak_fit: tuple[float, float]  # bytes = a + b * micro
    time_fit: tuple[float, float]  # seconds = alpha + beta * micro-steps
    micro_batch: int
    peak: float  # predicted bytes at micro_batch (at 1 when nothing fits)
    step_seconds: float  # predicted, at micro_batch
    measured_seconds: float | None = None  # timed at micro_batch (the CONFIRM best predicted only)

    @property
    def fits(self) -> bool:
        return self.micro_batch > 0


@dataclass
class Plan:
    cap: int | None
    batch: int
    candidates: list[Candidate] = field(default_factory=list)
    choice: Candidate | None = None
    seconds: float = 0.0  # the planner's own time (outside the train clock)
    given: dict[str, Any] | None = None  # settings not planned: a resumed run's, or the config's own

    def memory(self) -> dict[str, Any]:
        """The chosen settings, as recorded in the run's choices (and so kept on resume)."""
        if self.given is not None:
            return dict(self.given)
        if self.choice is None:
            return {}
        v = self.choice.variant
        bound = self.choice.micro_batch < self.batch or v != self.candidates[0].variant
        micro = self.choice.micro_batch if self.choice.micro_batch < self.batch else 0
        return {"micro_batch": micro, "checkpoint": v.checkpoint, "reversible": v.reversible,
                # plain at the whole batch fits: precision stays the `auto` race's (None = not planned)
                "precision": v.precision if bound else None, "planned": True, "cap": self.cap,
                "predicted_peak": int(self.choice.peak)}

    def table(self) -> str:
        head = f"{'variant':<38} {'micro':>6} {'accum':>5} {'peak':>11} {'step s':>9} {'timed s':>9}  fits"
        rows = [head]
        for c in self.candidates:
            k = micro_count(self.batch, c.micro_batch) if c.fits else 0
            mark = "<- chosen" if c is self.choice else ""
            timed = f"{c.measured_seconds:>9.4f}" if c.measured_seconds is not None else f"{'-':>9}"
            rows.append(f"{str(c.variant):<38} {c.micro_batch or '-':>6} {k or '-':>5} {fmt_bytes(c.peak):>11} "
                        f"{c.step_seconds:>9.4f} {timed}  {'yes' if c.fits else 'no'} {mark}".rstrip())
        return "\n".join(rows)

    def summary(self) -> str:
        if self.choice is None:
            return "memory: " + ", ".join(f"{k} {v}" for k, v in self.memory().items())
        c = self.choice
        k = micro_count(self.batch, c.micro_batch)
        return (f"memory plan under {fmt_bytes(self.cap or 0)}: {c.variant}, micro-batch {c.micro_batch} x {k} "
                f"(batch {self.batch}), predicted peak {fmt_bytes(c.peak)}, "
                f"{(c.measured_seconds or c.step_seconds) * 1e3:.1f} ms a step "
                f"({'timed' if c.measured_seconds is not None else 'predicted'}; planned in {self.seconds:.1f} s, "
                f"outside the train clock)")


def fit_line(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float]:
    """Least-squares (intercept, slope) of ys on xs; slope 0 from a single point."""
    n = len(xs)
    if n == 1 or len(set(xs)) == 1:
        return float(sum(ys) / n), 0.0
    mx, my = sum(xs) / n, sum(ys) / n
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    return my - slope * mx, slope


def micro_sizes(batch: int) -> list[int]:
    """The 2-3 micro-batch sizes measured: B/16, B/8, B/4 (at least 1, distinct)."""
    return sorted({max(1, batch // d) for d in (16, 8, 4)} | ({2} if batch >= 2 else set()))[-3:]


def step_peak(model: nn.Module, optimizer: torch.optim.Optimizer, precision: Precision, loss_fn: LossFn, x: Tensor,
              y: Tensor, micro: int) -> int:
    """Peak bytes of a steady-state training step at micro-batch `micro`, counting the model, gradients, optimizer
    state and the whole batch `x, y`: `torch.cuda.max_memory_allocated` on CUDA, LiveBytes elsewhere.

    Two micro-batches are enough to see the peak of any number of them: from the second on, the gradients
    accumulated so far are held during the forward, and each micro-batch's activations are freed by its backward.
    A first, unmeasured step creates the optimizer state, as the run's first step does."""
    part = min(len(x), 2 * micro) if micro > 0 else len(x)  # micro 0: the whole batch in one pass
    xs, ys = x[:part], y[:part]  # views: the batch's storage is what is counted
    train_step(model, optimizer, precision, loss_fn, xs, ys, micro_batch=micro, model=model)
    if x.device.type == "cuda":
        sync(x.device)
        held = [*model.parameters(), *model.buffers(), x, y,
                *(v for s in optimizer.state.values() for v in s.values() if isinstance(v, Tensor))]
        base = torch.cuda.memory_allocated(x.device) - tensor_bytes(held)  # what is not this step's
        torch.cuda.reset_peak_memory_stats(x.device)
        train_step(model, optimizer, precision, loss_fn, xs, ys, micro_batch=micro, model=model)
        sync(x.device)
        return int(torch.cuda.max_memory_allocated(x.device) - base)
    with LiveBytes() as live:
        live.track([*model.parameters(), *model.buffers(), x, y])
        live.track(v for s in optimizer.state.values() for v in s.values() if isinstance(v, Tensor))
        train_step(model, optimizer, precision, loss_fn, xs, ys, micro_batch=micro, model=model)
    return live.peak


def _seconds(model: nn.Module, optimizer: torch.optim.Optimizer, precision: Precision, loss_fn: LossFn, x: Tensor,
             y: Tensor, micro: int, timed: int = TIMED_STEPS) -> float:
    """Median seconds of a whole step on (x, y) at `micro` (after one untimed step)."""
    times = []
    train_step(model, optimizer, precision, loss_fn, x, y, micro_batch=micro, model=model)
    for _ in range(timed):
        sync(x.device)
        t0 = time.perf_counter()
        train_step(model, optimizer, precision, loss_fn, x, y, micro_batch=micro, model=model)
        sync(x.device)
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


Builder = Callable[[Variant], nn.Module]  # a fresh model (a copy, on the device) for a variant
OptFactory = Callable[[nn.Module], torch.optim.Optimizer]


def measure(variant: Variant, build: Builder, make_opt: OptFactory, loss_fn: LossFn, x: Tensor, y: Tensor,
            sizes: Sequence[int]) -> tuple[tuple[float, float], tuple[float, float]]:
    """(peak fit a + b*m, time fit alpha + beta*k) of `variant` from steps at each micro-batch size in `sizes`,
    on a copy of the model, leaving the RNG as it was."""
    peaks, times, ks = [], [], []
    with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
        model = build(variant)
        optimizer = make_opt(model)
        precision = Precision(variant.precision, x.device)
        for m in sizes:
            peaks.append(step_peak(model, optimizer, precision, loss_fn, x, y, m))
        for m in sizes:  # seconds are about linear in the micro-steps k
            times.append(_seconds(model, optimizer, precision, loss_fn, x, y, m))
            ks.append(micro_count(len(x), m))
        del model, optimizer
    return fit_line(sizes, peaks), fit_line(ks, times)


def best_micro(batch: int, peak_fit: tuple[float, float], budget: float) -> int:
    """The largest balanced micro-batch ceil(B/k) whose predicted peak is within `budget` (0 if not even 1)."""
    a, b = peak_fit
    for k in range(1, batch + 1):
        m = math.ceil(batch / k)
        if a + b * m <= budget:
            return m
    return 0


def candidate(variant: Variant, fits: tuple[tuple[float, float], tuple[float, float]], batch: int,
              budget: float) -> Candidate:
    (a, b), (alpha, beta) = fits
    m = best_micro(batch, (a, b), budget)
    k = micro_count(batch, m) if m else batch
    return Candidate(variant, (a, b), (alpha, beta), m, a + b * (m or 1), alpha + beta * k)


def plan_memory(cap: int, build: Builder, make_opt: OptFactory, loss_fn: LossFn, x: Tensor, y: Tensor,
                variants: Sequence[Variant], extra_bytes: int = 0, margin: float = MARGIN, every: bool = False) -> Plan:
    """The plan for a batch (x, y) under `cap` bytes (`extra_bytes`: resident data the cap must also hold).
    `variants[0]` is plain; the rest are measured only when plain needs accumulation, or with `every`."""
    t0 = time.perf_counter()
    batch = len(x)
    plan = Plan(cap, batch)
    budget = cap * (1 - margin) - extra_bytes
    sizes = micro_sizes(batch)
    plain = candidate(variants[0], measure(variants[0], build, make_opt, loss_fn, x, y, sizes), batch, budget)
    plan.candidates.append(plain)
    if plain.micro_batch < batch or every:
        for v in variants[1:]:
            plan.candidates.append(candidate(v, measure(v, build, make_opt, loss_fn, x, y, sizes), batch, budget))
    fitting = [c for c in plan.candidates if c.fits]
    if not fitting:
        need = min(c.peak for c in plan.candidates) + extra_bytes
        raise UserError(f"config key system.memory: {fmt_bytes(cap)} is below what the smallest plan needs "
                        f"({fmt_bytes(need / (1 - margin))} with the {margin:.0%} margin: micro-batch 1, "
                        f"{min(plan.candidates, key=lambda c: c.peak).variant}); raise the cap or shrink the model")
    if plain.micro_batch == batch:
        plan.choice = plain
    else:
        best = sorted(fitting, key=lambda c: c.step_seconds)[:CONFIRM]
        timed = {id(c): confirm(c, build, make_opt, loss_fn, x, y) for c in best}
        plan.candidates = [replace(c, measured_seconds=timed[id(c)]) if id(c) in timed else c
                           for c in plan.candidates]
        plan.choice = min((c for c in plan.candidates if c.measured_seconds is not None),
                          key=lambda c: c.measured_seconds or 0.0)
    plan.seconds = time.perf_counter() - t0
    return plan


def confirm(c: Candidate, build: Builder, make_opt: OptFactory, loss_fn: LossFn, x: Tensor, y: Tensor) -> float:
    """Median seconds of a whole step of `c`'s variant at its planned micro-batch, on a fresh copy (RNG restored)."""
    with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
        model = build(c.variant)
        micro = c.micro_batch if c.micro_batch < len(x) else 0
        # more steps than the fit's: candidates within ~10% of each other are told apart here (a CPU step's time
        # moved by +-25% from step to step on the 2-core benchmark machine)
        return _seconds(model, make_opt(model), Precision(c.variant.precision, x.device), loss_fn, x, y, micro,
                        timed=CONFIRM_STEPS)


def variants(precisions: Sequence[str], reversible: bool) -> list[Variant]:
    """Plain first, then each precision x checkpoint policy, and reversible (with no checkpointing) if available."""
    out = [Variant(precisions[0], "off", False)]
    for p in precisions:
        for policy in ("off", "selective", "full"):
            if Variant(p, policy, False) not in out:
                out.append(Variant(p, policy, False))
        if reversible:
            out.append(Variant(p, "off", True))
    return out


def copy_builder(model: nn.Module, apply: Callable[[nn.Module, str], Any],
                 reversible: Callable[[], nn.Module] | None = None) -> Builder:
    """A Builder from a model (deep-copied per variant), `apply(model, policy)` for checkpointing, and a factory of
    the reversible form of the model where it has one."""
    def build(v: Variant) -> nn.Module:
        m = reversible() if v.reversible and reversible is not None else copy.deepcopy(model)
        if v.checkpoint != "off":
            apply(m, v.checkpoint)
        return m
    return build
