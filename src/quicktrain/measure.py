"""Measurements a run reports: model FLOPs per step, this machine's peak matmul rate, utilisation, process age.

Utilisation follows the MFU convention of PaLM (Chowdhery et al. 2022, appendix B) and nanoGPT: model FLOPs of the
matmuls and convolutions only, over a peak rate. Unlike those, the peak is *measured* on this machine for the dtype in
use rather than taken from a datasheet, because CPUs have no honest datasheet number (measured here on a 2-core Zen 4:
~130-210 GFLOP/s fp32, ~900 GFLOP/s bf16 via AVX512-BF16, and ~1-3 GFLOP/s fp16, which has no native CPU matmul). The
peak is measured once per machine, dtype, torch version and thread count, and cached as JSON in the cache directory.
"""

from __future__ import annotations

import functools
import os
import platform
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from quicktrain.cache import cache_dir, read_json, write_json
from quicktrain.runtime import sync

_IMPORTED_AT = time.monotonic()  # fallback origin for process_age where /proc is unavailable
_CACHE_FILE = "peak_flops.json"


# ---------------------------------------------------------------------------------------------------------------------
# Model FLOPs


def count_train_flops(model: nn.Module, x: Tensor, y: Tensor, loss_fn: Callable[[Tensor, Tensor], Tensor]) -> float:
    """FLOPs of one training step (forward + backward) of `model` on this batch, counted by
    `torch.utils.flop_counter.FlopCounterMode`: matmuls and convolutions only (2 FLOPs a multiply-add); elementwise
    ops, norms and the loss are not counted, as in the MFU convention of PaLM and nanoGPT. Backward is typically 2x
    forward, less for the first layer, whose input needs no gradient.

    The run is unaffected: gradients come from `torch.autograd.grad`, so `.grad` is never touched; the forward runs in
    train mode (the FLOPs of training) but every buffer (BN running stats, num_batches_tracked) is restored after,
    as are the train/eval mode and the RNG state (dropout draws)."""
    net = getattr(model, "_orig_mod", model)  # count the eager module under torch.compile's wrapper
    params = [p for p in net.parameters() if p.requires_grad]
    saved = {name: b.detach().clone() for name, b in net.named_buffers()}
    was_training = net.training
    devices = [x.device] if x.device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices), torch.enable_grad(), _global_flop_counter() as counter:
            net.train()
            loss = loss_fn(net(x), y)
            if params and loss.requires_grad:
                torch.autograd.grad(loss, params, allow_unused=True)
    finally:
        net.train(was_training)
        with torch.no_grad():
            for name, b in net.named_buffers():
                b.copy_(saved[name])
    return float(counter.get_total_flops())


class _GlobalOnly:
    """Stands in for FlopCounterMode's per-module tracker: its backward hooks fail inside a custom autograd
    Function that calls `torch.autograd.grad` in its backward (the reversible blocks, quicktrain.memory.reversible:
    "A leaf node was passed to _will_engine_execute_node", torch 2.13). Only the global total is read here."""

    parents = frozenset({"Global"})

    def __enter__(self) -> "_GlobalOnly":
        return self

    def __exit__(self, *exc: Any) -> None:
        return None


def _global_flop_counter() -> FlopCounterMode:
    counter = FlopCounterMode(display=False)
    counter.mod_tracker = _GlobalOnly()  # type: ignore[assignment]
    return counter


# ---------------------------------------------------------------------------------------------------------------------
# Peak matmul rate


def _time_matmul(a: Tensor, b: Tensor, inner: int) -> float:
    """Seconds for `inner` back-to-back products a @ b, synchronised on the device."""
    sync(a.device)
    start = time.perf_counter()
    for _ in range(inner):
        torch.mm(a, b)
    sync(a.device)
    return time.perf_counter() - start


def _measure(device: torch.device, dtype: torch.dtype) -> float:
    """Best matmul rate (FLOP/s) over square sizes, growing n while the next size still fits the time budget.

    Sizes grow because small products underuse the machine (measured here: fp32 ~130 GFLOP/s at n=1024, ~210 at
    n=2048); the budget stops growth where a dtype is slow (fp16 on this CPU: 0.1 s at n=512, 2.4 s at n=1024).
    Each size: one warm-up (library init, cache and clock ramp), then the best of three."""
    cuda = device.type == "cuda"
    sizes, budget, inner = ((2048, 4096, 8192), 4.0, 10) if cuda else ((256, 512, 1024, 2048), 1.2, 1)
    deadline = time.perf_counter() + budget
    best = 0.0
    with torch.no_grad():
        for n in sizes:
            a, b = (torch.randn(n, n, device=device).to(dtype) for _ in range(2))
            warm = _time_matmul(a, b, inner)
            best = max(best, 2.0 * n**3 * inner / warm)
            if time.perf_counter() + 3 * warm > deadline:
                break
            fastest = min(_time_matmul(a, b, inner) for _ in range(3))
            best = max(best, 2.0 * n**3 * inner / fastest)
            if time.perf_counter() + 4 * 8 * fastest > deadline:  # the next size costs ~8x (n^3)
                break
    return best


def _cache_key(device: torch.device, dtype: torch.dtype, threads: int) -> str:
    parts = [_hardware_name(device), str(dtype).removeprefix("torch."), f"torch {torch.__version__}"]
    if device.type == "cpu":
        parts.append(f"{threads} threads")
    if dtype == torch.float32:  # TF32 on or off changes the fp32 rate on GPUs by ~8x
        parts.append(f"fp32 matmul precision {torch.get_float32_matmul_precision()}")
    return " | ".join(parts)


def peak_flops(device: torch.device, dtype: torch.dtype, threads: int | None = None) -> float:
    """Measured peak matmul rate (FLOP/s) of this machine for `dtype`, with `threads` intra-op threads on a CPU
    (default: torch's current setting). Measured once (~1.5 s on a CPU) and cached in <cache dir>/peak_flops.json,
    keyed by device name, dtype, torch version and thread count; delete the file to measure again."""
    device = torch.device(device)
    threads = threads or torch.get_num_threads()
    path, key = cache_dir() / _CACHE_FILE, _cache_key(device, dtype, threads)
    cache = read_json(path)
    entry = cache.get(key)
    if isinstance(entry, dict) and isinstance(entry.get("flops"), (int, float)) and entry["flops"] > 0:
        return float(entry["flops"])
    before = torch.get_num_threads()
    try:
        if device.type == "cpu":
            torch.set_num_threads(threads)
        flops = _measure(device, dtype)
    finally:
        torch.set_num_threads(before)
    cache = read_json(path)  # re-read: another process may have added entries meanwhile
    cache[key] = {"flops": flops, "measured": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    try:
        write_json(path, cache)
    except OSError:
        pass  # an unwritable cache costs a re-measurement next time, never a failed run
    return flops


def utilisation(flops: float, seconds: float, peak: float) -> float | None:
    """Fraction of peak achieved: flops / seconds / peak; None when seconds or peak is 0 (nothing to divide by)."""
    if seconds <= 0 or peak <= 0:
        return None
    return flops / seconds / peak


# ---------------------------------------------------------------------------------------------------------------------
# Clocks and names


def process_age() -> float:
    """Seconds since this process started, for "wall seconds from process start" (interpreter start-up and imports
    included). Linux: field 22 of /proc/self/stat (start time in clock ticks since boot, so 10 ms resolution at the
    usual 100 Hz) against CLOCK_BOOTTIME, the clock that field is counted on (/proc/uptime reads the same clock, but a
    container's may be virtualised while the stat field is not). Elsewhere: seconds since this module was imported."""
    since_import = time.monotonic() - _IMPORTED_AT
    try:
        stat = Path("/proc/self/stat").read_text()
        start_ticks = int(stat.rsplit(")", 1)[1].split()[19])  # fields after "(comm)" start at field 3
        age = time.clock_gettime(time.CLOCK_BOOTTIME) - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return since_import
    # The process started before this module was imported; anything less means the clocks disagree.
    return age if age >= since_import - 0.02 else since_import


@functools.lru_cache(maxsize=None)
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "CPU"


# CPU features that change which kernels oneDNN and ATen dispatch to (and so the low bits of bf16/fp16 results)
_KERNEL_FLAGS = ("amx_bf16", "amx_fp16", "avx512_bf16", "avx512_fp16", "avx512f", "avx2")


@functools.lru_cache(maxsize=None)
def cpu_model() -> str:
    """The CPU's model name plus what decides its kernels: torch's dispatch level and the bf16/fp16/AMX features,
    e.g. "Intel(R) Xeon(R) Processor [AVX512; amx_bf16 avx512_bf16 avx512f avx2]". Two machines with the same string
    run the same kernels; a resume that sees a different one warns (quicktrain.rundir)."""
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    level = torch.backends.cpu.get_cpu_capability()
    return f"{_cpu_model()} [{level}; {' '.join(f for f in _KERNEL_FLAGS if f in flags) or 'no vector flags read'}]"


def _hardware_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "cpu":
        return cpu_model()
    if device.type == "mps":
        return "Apple GPU (MPS)"
    return device.type


def device_name(device: torch.device) -> str:
    """A human name for the device: "AMD EPYC 9R14 [AVX512; avx512_bf16 avx512f avx2] (2 threads)" or "NVIDIA H100
    80GB HBM3". Results, reports and checkpoints carry it; a resume on another one is refused unless forced."""
    device = torch.device(device)
    name = _hardware_name(device)
    return f"{name} ({torch.get_num_threads()} threads)" if device.type == "cpu" else name
