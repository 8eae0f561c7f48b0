"""The `auto` choices, made by measurement on this device rather than by rule of thumb.

- precision: each candidate (fp32, bf16; fp16 on CUDA) trains a few steps on a copy of the model; the fastest one
  whose first loss agrees with fp32's wins, and only if it beats fp32 by MARGIN (noise must not flip the choice).
- channels_last (4-D inputs only): the same race between memory formats.
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

MARGIN = 0.05  # a candidate must be 5% faster than the default to replace it
COMPILE_MIN_SECONDS = 300.0  # below this projected train time, compile (5-20 s) cannot pay for itself at ~5% gain

LossFn = Callable[[Tensor, Tensor], Tensor]
OptFactory = Callable[[nn.Module], torch.optim.Optimizer]


@dataclass
class Choices:
    precision: str
    channels_last: bool
    compile: bool
    step_seconds: float | None = None  # measured eager seconds per step of the chosen setup, if measured
    notes: dict[str, Any] = field(default_factory=dict)  # the timings behind each choice, for the report


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(model: nn.Module, optimizer: torch.optim.Optimizer, x: Tensor, y: Tensor, loss_fn: LossFn,
               precision: Precision, steps: int = 10, warmup: int = 3) -> float:
    """Median seconds per training step (forward, backward, optimizer step) on this batch."""
    times = []
    for i in range(warmup + steps):
        _sync(x.device)
        t0 = time.perf_counter()
        with precision.autocast():
            loss = loss_fn(model(x), y)
        precision.backward(loss)
        precision.step(optimizer)
        optimizer.zero_grad(set_to_none=True)
        _sync(x.device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    if not torch.isfinite(loss.detach()).item():
        return math.inf
    return statistics.median(times)


def _race(model: nn.Module, make_opt: OptFactory, x: Tensor, y: Tensor, loss_fn: LossFn, precision: str,
          channels_last: bool = False) -> float:
    m = copy.deepcopy(model)
    if channels_last:
        m, x = m.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    return time_steps(m, make_opt(m), x, y, loss_fn, Precision(precision, x.device))


def _agrees(model: nn.Module, x: Tensor, y: Tensor, loss_fn: LossFn, name: str, reference: float) -> bool:
    """The candidate's loss on the same weights and batch is finite and within 5% (or 0.05) of fp32's."""
    m = copy.deepcopy(model)
    with torch.no_grad(), Precision(name, x.device).autocast():
        value = float(loss_fn(m(x), y))
    return math.isfinite(value) and abs(value - reference) <= 0.05 * max(1.0, abs(reference))


def choose_precision(model: nn.Module, make_opt: OptFactory, x: Tensor, y: Tensor, loss_fn: LossFn) -> tuple[str, dict[str, float]]:
    m = copy.deepcopy(model)
    with torch.no_grad():
        reference = float(loss_fn(m(x), y))
    timings: dict[str, float] = {}
    for name in candidates(x.device):
        if name == "fp32" or _agrees(model, x, y, loss_fn, name, reference):
            timings[name] = _race(model, make_opt, x, y, loss_fn, name)
    best = min(timings, key=lambda k: timings[k])
    return (best if timings[best] < timings["fp32"] * (1 - MARGIN) else "fp32"), timings


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
    return "|".join([device_label, f"torch{torch.__version__}", f"threads{torch.get_num_threads()}",
                     type(model).__name__, f"{params}p", "x".join(map(str, x.shape)), optimizer_name])


def autotune(settings: Any, model: nn.Module, make_opt: OptFactory, x: Tensor, y: Tensor, loss_fn: LossFn,
             total_steps: int, key: str) -> Choices:
    """Resolve the `auto` fields of a SystemConfig (precision, channels_last, compile) for this model and batch."""
    path = cache_dir() / "autotune.json"
    cache = read_json(path)
    entry = dict(cache[key]) if isinstance(cache.get(key), dict) else {}
    before = dict(entry)
    notes: dict[str, Any] = {}
    step: float | None = entry.get("step_seconds")

    precision = settings.precision
    if precision == "auto":
        if "precision" not in entry:
            entry["precision"], entry["precision_timings"] = choose_precision(model, make_opt, x, y, loss_fn)
            entry["step_seconds"] = step = entry["precision_timings"][entry["precision"]]
        precision, notes["precision"] = entry["precision"], entry["precision_timings"]

    channels_last = settings.channels_last == "on"
    if settings.channels_last == "auto" and x.ndim == 4:
        if "channels_last" not in entry:
            plain = _race(model, make_opt, x, y, loss_fn, precision)
            cl = _race(model, make_opt, x, y, loss_fn, precision, channels_last=True)
            entry["channels_last"], entry["channels_last_timings"] = cl < plain * (1 - MARGIN), {"off": plain, "on": cl}
        channels_last, notes["channels_last"] = entry["channels_last"], entry["channels_last_timings"]

    compile_ = settings.compile == "on"
    if settings.compile == "auto":
        if step is None:
            step = entry["step_seconds"] = _race(model, make_opt, x, y, loss_fn, precision, channels_last)
        compile_, notes["compile"] = choose_compile(model, make_opt, x, y, loss_fn, precision, step, total_steps)

    if entry != before:
        cache[key] = entry
        try:
            write_json(path, cache)
        except OSError:
            pass  # an unwritable cache costs a re-measurement next time, never a failed run
    return Choices(precision, channels_last, compile_, step, notes)
