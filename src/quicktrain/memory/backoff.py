"""Out-of-memory backoff: when a step runs out of memory anyway (the planner's fit was wrong, another process took
memory, or a cap is simulated), halve the micro-batch and redo the same batch, instead of losing the run.

Only the forward/backward is retried, never the optimizer step (an OOM inside a multi-tensor update could leave
some parameters stepped). Before the first attempt the RNG and every buffer (batch-norm statistics) and the
reversible blocks' counters are snapshotted; a failed attempt restores them and drops its partial gradients, so
the retry computes exactly what an attempt at the smaller micro-batch alone would have (tests/test_planner.py).
The batch is the same one: no sample is drawn twice or counted twice. The new micro-batch stays for the rest of
the run and is saved in the checkpoint's choices.

`CapMode` simulates a device with `cap` bytes on any machine: a LiveBytes tracker that raises
`torch.OutOfMemoryError` when live tensor storage would exceed the cap (tests and benchmarks/memory_planner.py).
"""

from __future__ import annotations

import gc
import math
from typing import Any, Callable, Iterable

import torch
from torch import Tensor, nn

from quicktrain.memory.tracking import LiveBytes, fmt_bytes

__all__ = ["Backoff", "CapMode", "restore", "snapshot"]


class CapMode(LiveBytes):
    """LiveBytes that raises torch.OutOfMemoryError once live bytes exceed `cap` (a simulated device limit)."""

    def __init__(self, cap: int, tracked: Iterable[Tensor] = ()) -> None:
        super().__init__()
        self.cap = cap
        self.track(tracked)
        self.raised = 0

    def _see(self, t: Tensor) -> None:
        super()._see(t)
        if self.current > self.cap:
            self.raised += 1
            raise torch.OutOfMemoryError(f"simulated: {fmt_bytes(self.current)} live > cap {fmt_bytes(self.cap)}")


def snapshot(model: nn.Module) -> dict[str, Any]:
    """The RNG, every buffer and the reversible counters: what a forward/backward changes besides gradients."""
    from quicktrain.memory.reversible import ReversibleSequence

    devices = sorted({b.device for b in model.buffers() if b.device.type == "cuda"}, key=str)
    return {"cpu": torch.get_rng_state(), "cuda": [(d, torch.cuda.get_rng_state(d)) for d in devices],
            "buffers": [(b, b.detach().clone()) for b in model.buffers()],
            "calls": [(m, m.calls) for m in model.modules() if isinstance(m, ReversibleSequence)]}


def restore(snap: dict[str, Any]) -> None:
    torch.set_rng_state(snap["cpu"])
    for device, state in snap["cuda"]:
        torch.cuda.set_rng_state(state, device)
    with torch.no_grad():
        for buf, value in snap["buffers"]:
            buf.copy_(value)
    for module, calls in snap["calls"]:
        module.calls = calls


class Backoff:
    """Runs a forward/backward pass at the current micro-batch, halving it on out-of-memory (down to 1)."""

    def __init__(self, micro: int, say: Callable[[str], None] = lambda _m: None) -> None:
        self.micro = micro  # 0 = the whole batch
        self.say = say
        self.events: list[dict[str, int]] = []  # {"from": m, "to": m'} per backoff, for the result

    def run(self, fwd_bwd: Callable[[int], Tensor], model: nn.Module, batch: int) -> Tensor:
        snap = snapshot(model)
        while True:
            try:
                return fwd_bwd(self.micro)
            except torch.OutOfMemoryError:
                current = self.micro if 0 < self.micro < batch else batch
                if current <= 1:
                    raise
            # out of the except block: the traceback, and the failed attempt's activations with it, are gone
            gc.collect()
            for p in model.parameters():
                p.grad = None
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            restore(snap)
            self.micro = math.ceil(current / 2)
            self.events.append({"from": current, "to": self.micro})
            self.say(f"out of memory at micro-batch {current}: retrying the same batch at {self.micro}")
