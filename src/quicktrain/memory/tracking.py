"""What a training step holds in memory, measured rather than guessed, on CPU as on CUDA.

- `saved_bytes(fn)`: bytes autograd saves for backward while `fn()` runs (the activations), via
  `torch.autograd.graph.saved_tensors_hooks`, each storage counted once (a view and its base share one) and the
  model's own parameters and buffers left out (a Linear saves its weight, which is no activation).
- `LiveBytes`: the peak of live tensor storage bytes over a piece of work, tracked by a `TorchDispatchMode` that sees
  every op's outputs (forward, backward and optimizer: the mode follows autograd into backward) and frees a storage's
  bytes when Python's finalizer says the storage died. Tensors that existed before (parameters, gradients, optimizer
  state) are counted with `track`. Not seen: an op's internal workspace that never becomes a tensor, and allocator
  rounding; so on CUDA the loop reads `torch.cuda.max_memory_allocated` instead (exact for the caching allocator).
  torch's own `torch.distributed._tools.mem_tracker.MemTracker` was tried first: on CPU (torch 2.13) its peak
  snapshot showed 4 bytes of activations for an 8-layer MLP at batch 512 whose activations are 8.9 MB, and it refuses
  a second iteration, so it is not used.
- `memory_line(...)`: params, grads, optimizer state, activations: the one memory line a run reports.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import torch
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

__all__ = ["LiveBytes", "MemoryLine", "describe", "fmt_bytes", "memory_line", "optimizer_bytes", "saved_bytes",
           "tensor_bytes"]


def _key(t: Tensor) -> int:
    return t.untyped_storage()._cdata  # the StorageImpl's address: one key per storage, shared by every view


def tensor_bytes(tensors: Iterable[Tensor]) -> int:
    """Bytes of the distinct storages behind `tensors` (a storage shared by several tensors counts once)."""
    seen: dict[int, int] = {}
    for t in tensors:
        if isinstance(t, Tensor) and t.device.type != "meta":
            seen[_key(t)] = t.untyped_storage().nbytes()
    return sum(seen.values())


def optimizer_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes of the optimizer's state tensors (Adam's two moments, momentum buffers; 0 before its first step)."""
    return tensor_bytes(v for state in optimizer.state.values() for v in state.values() if isinstance(v, Tensor))


def saved_bytes(fn: Callable[[], Any], exclude: nn.Module | None = None) -> tuple[Any, int]:
    """Run `fn()` and return (its result, bytes saved for backward while it ran), each storage once, without the
    parameters and buffers of `exclude` (the model)."""
    skip = {_key(t) for t in (*exclude.parameters(), *exclude.buffers())} if exclude is not None else set()
    seen: dict[int, int] = {}

    def pack(t: Tensor) -> Tensor:
        if t.device.type != "meta":
            k = _key(t)
            if k not in skip:
                seen[k] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, sum(seen.values())


class LiveBytes(TorchDispatchMode):
    """Peak bytes of live tensor storages while the mode is active (see the module docstring for what it sees)."""

    def __init__(self) -> None:
        super().__init__()
        self._live: dict[int, int] = {}
        self.current = 0
        self.peak = 0

    def track(self, tensors: Iterable[Tensor]) -> None:
        """Count tensors that already exist (parameters, gradients, optimizer state) as live."""
        for t in tensors:
            if isinstance(t, Tensor):
                self._see(t)

    def reset_peak(self) -> None:
        self.peak = self.current

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, Tensor):
                self._see(t)
        return out

    def _see(self, t: Tensor) -> None:
        if t.device.type == "meta":
            return
        storage = t.untyped_storage()
        key, n = storage._cdata, storage.nbytes()
        old = self._live.get(key)
        if old is None:
            weakref.finalize(storage, self._free, key)
        elif n <= old:
            return
        self._live[key] = n
        self.current += n - (old or 0)
        self.peak = max(self.peak, self.current)

    def _free(self, key: int) -> None:
        self.current -= self._live.pop(key, 0)


@dataclass(frozen=True)
class MemoryLine:
    """A run's memory, in bytes: what the model and optimizer hold, and the activations of one micro-batch."""

    params: int
    grads: int
    optimizer: int
    activations: int
    peak: int = 0  # measured peak of a whole step (LiveBytes on CPU, max_memory_allocated on CUDA); 0 = not measured

    def __str__(self) -> str:
        parts = [f"params {fmt_bytes(self.params)}", f"grads {fmt_bytes(self.grads)}",
                 f"optimizer {fmt_bytes(self.optimizer)}", f"activations {fmt_bytes(self.activations)}"]
        if self.peak:
            parts.append(f"peak {fmt_bytes(self.peak)}")
        return "memory: " + ", ".join(parts)


def memory_line(model: nn.Module, optimizer: torch.optim.Optimizer, activations: int, peak: int = 0) -> MemoryLine:
    trainable = [p for p in model.parameters() if p.requires_grad]
    return MemoryLine(params=tensor_bytes(model.parameters()) + tensor_bytes(model.buffers()),
                      grads=sum(p.numel() * p.element_size() for p in trainable),
                      optimizer=optimizer_bytes(optimizer), activations=activations, peak=peak)


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def describe(memory: dict[str, Any]) -> str:
    """One line from a result's `memory` dict (MemoryLine fields plus the run's memory settings)."""
    if not memory:
        return "–"
    parts = [f"{k} {fmt_bytes(memory[k])}" for k in ("params", "grads", "optimizer", "activations") if k in memory]
    if memory.get("peak"):
        parts.append(f"peak {fmt_bytes(memory['peak'])}")
    how = [f"micro-batch {memory['micro_batch']}" if memory.get("micro_batch") else "whole batch",
           f"checkpoint {memory.get('checkpoint', 'off')}"] + (["reversible"] if memory.get("reversible") else [])
    if memory.get("planned"):
        how.append(f"planned under {fmt_bytes(memory['cap'])}, predicted peak {fmt_bytes(memory['predicted_peak'])}")
    if memory.get("backoffs"):
        how.append(f"{len(memory['backoffs'])} out-of-memory backoff(s)")
    return ", ".join(parts) + " (" + "; ".join(how) + ")"
