"""The `auto` choices, made by measurement on this device rather than by rule of thumb.

- precision x channels_last, raced jointly (they interact: on this CPU bf16 lost to fp32 in the default layout but
  won in channels_last): the combinations take turns training a few steps on a copy of the model; the fastest wins,
  and only if it beats the default (fp32, default layout) by MARGIN, so noise never flips the choice. A precision
  whose first loss disagrees with fp32's is not raced. channels_last is raced for models with 2-D conv weights,
  which includes our 1-D nets (they run 2-D (1, k) kernels).
- compile: torch.compile cost 5-20 s here and saved about 5% per step on MNIST-1D-sized nets, so it is only tried
  when the projected train time is at least COMPILE_MIN_SECONDS; then a compiled copy is timed and kept only if the
  saving over the remaining steps exceeds the compile time.

Results are cached per (device, torch version, threads, model, batch shape) in <cache>/autotune.json, so the
measurement happens once per machine and setup. Delete the file to measure again.
"""

from __future__ import annotations

import copy
import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import Tensor, nn

from quicktrain.cache import cache_dir, read_json, write_json
from quicktrain.precision import Precision, candidates
from quicktrain.runtime import sync
from quicktrain.step import LossFn, train_step

MARGIN = 0.05  # a candidate must be 5% faster than the default to replace it
ROUNDS, ROUND_STEPS = 4, 5  # the race: 4 turns of 5 timed steps per candidate, interleaved
COMPILE_MIN_SECONDS = 300.0  # below this projected train time, compile (5-20 s) cannot pay for itself at ~5% gain

OptFactory = Callable[[nn.Module], torch.optim.Optimizer]


@dataclass
class Choices:
    precision: str
    channels_last: bool
    compile: bool
    notes: dict[str, Any] = field(default_factory=dict)  # the timings behind each choice, for the report
    # micro_batch, checkpoint, reversible, precision (None = not planned), planned, cap: quicktrain.memory.settings
    memory: dict[str, Any] = field(default_factory=dict)


def time_steps(model: nn.Module, optimizer: torch.optim.Optimizer, x: Tensor, y: Tensor, loss_fn: LossFn,
               precision: Precision, steps: int = 10, warmup: int = 3) -> float:
    """Median seconds per training step (forward, backward, optimizer step) on this batch."""
    return _median(_step_times(model, optimizer, x, y, loss_fn, precision, steps, warmup))


def _step_times(model: nn.Module, optimizer: torch.optim.Optimizer, x: Tensor, y: Tensor, loss_fn: LossFn,
                precision: Precision, steps: int, warmup: int) -> list[float]:
    """Seconds of each of `steps` training steps after `warmup` untimed ones; [] if the loss was not finite."""
    times = []
    for i in range(warmup + steps):
        sync(x.device)
        t0 = time.perf_counter()
        loss = train_step(model, optimizer, precision, loss_fn, x, y)
        sync(x.device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return times if torch.isfinite(loss).item() else []


def _has_2d_convs(model: nn.Module) -> bool:
    return any(p.ndim == 4 for p in model.parameters())


def _race(model: nn.Module, make_opt: OptFactory, x: Tensor, y: Tensor, loss_fn: LossFn, precision: str,
          channels_last: bool = False, steps: int = 10, warmup: int = 3) -> list[float]:
    """Step times of a fresh copy of the model in this setup ([] if its loss was not finite)."""
    m = copy.deepcopy(model)
    if channels_last:
        m = m.to(memory_format=torch.channels_last)
        if x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
    return _step_times(m, make_opt(m), x, y, loss_fn, Precision(precision, x.device), steps, warmup)


def _median(times: list[float]) -> float:
    return statistics.median(times) if times else math.inf


def _agrees(model: nn.Module, x: Tensor, y: Tensor, loss_fn: LossFn, name: str, reference: float) -> bool:
    """The candidate's loss on the same weights and batch is finite and within 5% (or 0.05) of fp32's."""
    m = copy.deepcopy(model)
    with torch.no_grad(), Precision(name, x.device).autocast():
        value = float(loss_fn(m(x), y))
    return math.isfinite(value) and abs(value - reference) <= 0.05 * max(1.0, abs(reference))


def choose_layout(model: nn.Module, make_opt: OptFactory, x: Tensor, y: Tensor, loss_fn: LossFn,
                  precisions: list[str], layouts: list[bool]) -> tuple[tuple[str, bool], dict[str, float]]:
    """Race every (precision, channels_last) combination; return the choice and the seconds per step of each."""
    if len(precisions) > 1:
        m = copy.deepcopy(model)
        with torch.no_grad():
            reference = float(loss_fn(m(x), y))
        precisions = [p for p in precisions if p == "fp32" or _agrees(model, x, y, loss_fn, p, reference)]
    # Candidates take turns (ROUNDS rounds of a few steps each, one model copy alive at a time) rather than one after
    # the other: raced back to back, a drift in this shared machine's speed once made fp32+channels_last look
    # slower than a later direct measurement (2.89 vs 1.97 ms, 47%) and flipped the choice.
    samples: dict[tuple[str, bool], list[float]] = {(p, cl): [] for p in precisions for cl in layouts}
    for _ in range(ROUNDS):
        for (p, cl), times in samples.items():
            got = _race(model, make_opt, x, y, loss_fn, p, cl, steps=ROUND_STEPS, warmup=2)
            times.extend(got if got else [math.inf] * (ROUNDS * ROUND_STEPS))  # not finite: it cannot win
    timings = {k: _median(v) for k, v in samples.items()}
    default = (precisions[0], layouts[0])
    best = min(timings, key=lambda k: timings[k])
    choice = best if timings[best] < timings[default] * (1 - MARGIN) else default
    return choice, {f"{p}{' channels_last' if cl else ''}": t for (p, cl), t in timings.items()}


def choose_compile(model: nn.Module, make_opt: OptFactory, x: Tensor, y: Tensor, loss_fn: LossFn, precision: str,
                   eager_step: float, total_steps: int) -> tuple[bool, dict[str, float]]:
    projected = eager_step * total_steps
    if projected < COMPILE_MIN_SECONDS:
        return False, {"projected_seconds": projected}
    m = torch.compile(copy.deepcopy(model))
    opt, prec = make_opt(m), Precision(precision, x.device)
    t0 = time.perf_counter()
    time_steps(m, opt, x, y, loss_fn, prec, steps=1, warmup=1)  # triggers compilation of forward and backward
    compile_seconds = time.perf_counter() - t0
    compiled_step = time_steps(m, opt, x, y, loss_fn, prec)
    saving = (eager_step - compiled_step) * total_steps
    notes = {"projected_seconds": projected, "compile_seconds": compile_seconds, "compiled_step": compiled_step,
             "eager_step": eager_step}
    return saving > compile_seconds, notes


# ---------------------------------------------------------------------------------------------------------------------


def cache_key(model: nn.Module, x: Tensor, optimizer_name: str, device_label: str) -> str:
    params = sum(p.numel() for p in model.parameters())
    name = type(getattr(model, "wrapped", model)).__name__  # an adapted model is cached under its own class
    return "|".join([device_label, f"torch{torch.__version__}", f"threads{torch.get_num_threads()}", name,
                     f"{params}p", "x".join(map(str, x.shape)), optimizer_name])


def autotune(settings: Any, model: nn.Module, make_opt: OptFactory, x: Tensor, y: Tensor, loss_fn: LossFn,
             total_steps: int, key: str) -> Choices:
    """Resolve the `auto` fields of a SystemConfig (precision, channels_last, compile) for this model and batch."""
    path = cache_dir() / "autotune.json"
    cache = read_json(path)
    entry = dict(cache[key]) if isinstance(cache.get(key), dict) else {}
    before = dict(entry)
    notes: dict[str, Any] = {}

    precisions = candidates(x.device) if settings.precision == "auto" else [settings.precision]
    race_layout = settings.channels_last == "auto" and _has_2d_convs(model)
    layouts = [False, True] if race_layout else [settings.channels_last == "on"]
    precision, channels_last = precisions[0], layouts[0]
    if len(precisions) * len(layouts) > 1:
        race = f"race {'/'.join(precisions)} x channels_last {'/'.join(map(str, layouts))}"  # what was raced
        if race not in entry:
            choice, timings = choose_layout(model, make_opt, x, y, loss_fn, precisions, layouts)
            entry[race] = {"precision": choice[0], "channels_last": choice[1], "timings": timings}
        precision, channels_last = entry[race]["precision"], entry[race]["channels_last"]
        notes["precision x layout"] = entry[race]["timings"]

    compile_ = settings.compile == "on"
    if settings.compile == "auto":
        setup = f"step {precision}{' channels_last' if channels_last else ''}"
        if setup not in entry:
            entry[setup] = _median(_race(model, make_opt, x, y, loss_fn, precision, channels_last))
        compile_, notes["compile"] = choose_compile(model, make_opt, x, y, loss_fn, precision, entry[setup],
                                                    total_steps)

    if entry != before:
        cache[key] = entry
        try:
            write_json(path, cache)
        except OSError:
            pass  # an unwritable cache costs a re-measurement next time, never a failed run
    return Choices(precision, channels_last, compile_, notes)
