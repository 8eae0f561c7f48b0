"""Reversible residual blocks: activation memory that does not grow with depth.

What: a coupling block (RevNet; Gomez et al. 2017, "The reversible residual network: backpropagation without storing
activations") splits the residual stream in two and computes y1 = x1 + F(x2), y2 = x2 + G(y1). Its inputs follow
from its outputs, x2 = y2 - G(y1), x1 = y1 - F(x2), so `ReversibleSequence` runs a whole sequence of such blocks in
one custom `torch.autograd.Function` that saves only the sequence's final output; backward walks the blocks from the
last to the first, reconstructing each block's inputs while recomputing F and G once with gradients (one extra
forward, as with full checkpointing). The GPT uses it Reformer-style (Kitaev et al. 2020): F = attention sub-block,
G = MLP sub-block on two copies of the embedding; revnet1d on the two channel halves.

Measured (benchmarks/memory_depth.py, docs/BENCHMARKS.md "Memory vs depth"): bytes saved for backward by a
reversible revnet1d are the same at depth 8 and 64 (the stem, the head and the last output only).

Correctness kept by this module:
- gradients: parameters are inputs of the Function, so their gradients reach autograd as usual (hooks, data
  parallel, accumulation); tests check them against plain autograd of the same couplings (float64 <= 1e-6).
- dropout: with `preserve_rng` the CPU (and the input's CUDA device) RNG state before every F and G call is recorded
  and replayed in backward inside `torch.random.fork_rng`, so the same masks are drawn and the RNG stream after the
  step is the plain one. Off (`preserve_rng=False`) for blocks without randomness: saves a 5 KB state copy per call.
- batch norm in F or G: its buffers are restored around each recompute, so running statistics update once a step.
- autocast: backward recomputes under the forward's autocast state (enabled, dtype) for the input's device type.
- extra arguments (the GPT's rope tables) are passed to every F and G unchanged and get no gradient.
- reconstruction drift: x1 = y1 - F(x2) is exact in real arithmetic only; in floating point errors compound over
  depth, worse in bf16. On every `check_every`-th training forward (the first included) the sequence keeps a
  reference to its real inputs, and backward compares them with the reconstruction (relative L2 error, the worst
  of the two streams: the input is where the error of every block has accumulated, so one comparison bounds them
  all, at no extra memory). Above `tolerance` the sequence warns once and falls back to per-block activation
  checkpointing (`checkpointing.checkpoint_call`) for the rest of the run; `fallback` records it and
  `last_error` holds the latest measured error. The step that detected it has already used its reconstructed
  activations (an error just above tolerance); the next step uses checkpointing.
- exact resume: the training-forward counter and the fallback flag are the module's extra state, so they are in
  `state_dict` (as one small int64 tensor) and a resumed run checks and falls back on the same steps.

Off: build the model without it (`--model.reversible=false`, the default).
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from typing import Any, Iterable, Iterator, Protocol

import torch
from torch import Tensor, nn
from torch.utils._pytree import tree_flatten

from quicktrain.memory.checkpointing import checkpoint_call, frozen_bn_stats

__all__ = ["Coupling", "CouplingBlock", "ReversibleSequence", "configure_reversible", "couple", "reversible_fell_back"]

RngState = tuple[Tensor, Tensor | None]


class CouplingBlock(Protocol):
    """What ReversibleSequence needs of a block: the two residual functions (nn.Modules that define them)."""

    def f(self, x: Tensor, *extra: Any) -> Tensor: ...

    def g(self, x: Tensor, *extra: Any) -> Tensor: ...


def couple(block: Any, x1: Tensor, x2: Tensor, *extra: Any) -> tuple[Tensor, Tensor]:
    """The additive coupling y1 = x1 + F(x2), y2 = x2 + G(y1), by plain autograd (the reference, and the fallback)."""
    y1 = x1 + block.f(x2, *extra)
    return y1, x2 + block.g(y1, *extra)


class Coupling(nn.Module):
    """A coupling block from two modules: f = F, g = G (each maps a half-stream to a tensor of its shape)."""

    def __init__(self, F: nn.Module, G: nn.Module) -> None:
        super().__init__()
        self.F, self.G = F, G

    def f(self, x: Tensor, *extra: Any) -> Tensor:
        return self.F(x, *extra)

    def g(self, x: Tensor, *extra: Any) -> Tensor:
        return self.G(x, *extra)

    def forward(self, x1: Tensor, x2: Tensor, *extra: Any) -> tuple[Tensor, Tensor]:
        return couple(self, x1, x2, *extra)


def _rng_state(device: torch.device) -> RngState:
    return torch.get_rng_state(), torch.cuda.get_rng_state(device) if device.type == "cuda" else None


@contextlib.contextmanager
def _replayed(state: RngState | None, device: torch.device) -> Iterator[None]:
    """Run with the RNG as it was at `state`, and leave the RNG as it was before (backward draws nothing)."""
    if state is None:
        yield
        return
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.set_rng_state(state[0])
        if state[1] is not None:
            torch.cuda.set_rng_state(state[1], device)
        yield


def _relative_error(rebuilt: Tensor, real: Tensor) -> float:
    real = real.float()
    return float((rebuilt.float() - real).norm() / real.norm().clamp_min(torch.finfo(torch.float32).tiny))


class _ReversibleFunction(torch.autograd.Function):
    """Forward without a graph, saving the final (y1, y2); backward reconstructs and recomputes block by block.
    Inputs: (sequence, extra args, real inputs to check or None, x1, x2, *parameters)."""

    @staticmethod
    def forward(ctx: Any, seq: ReversibleSequence, extra: tuple[Any, ...], check: bool, x1: Tensor, x2: Tensor,
                *params: Tensor) -> tuple[Tensor, Tensor]:
        device = x1.device
        ctx.seq, ctx.extra, ctx.params, ctx.device = seq, extra, params, device
        ctx.autocast = (torch.is_autocast_enabled(device.type), torch.get_autocast_dtype(device.type))
        ctx.real = (x1.detach(), x2.detach()) if check else None  # references: the caller holds these anyway
        ctx.rng = []
        for block in seq:
            if seq.preserve_rng:
                ctx.rng.append(_rng_state(device))
            y1 = x1 + block.f(x2, *extra)
            if seq.preserve_rng:
                ctx.rng.append(_rng_state(device))
            x1, x2 = y1, x2 + block.g(y1, *extra)
        ctx.save_for_backward(x1, x2)
        return x1, x2

    @staticmethod
    def backward(ctx: Any, dy1: Tensor, dy2: Tensor) -> tuple[Tensor | None, ...]:
        seq, extra, device = ctx.seq, ctx.extra, ctx.device
        index = {id(p): i for i, p in enumerate(ctx.params)}
        grads: list[Tensor | None] = [None] * len(ctx.params)
        y1, y2 = (t.detach() for t in ctx.saved_tensors)
        rng = list(ctx.rng) if seq.preserve_rng else []
        enabled, dtype = ctx.autocast
        with torch.autocast(device.type, dtype=dtype, enabled=enabled):
            for block in reversed(seq):
                params = [p for p in block.parameters() if id(p) in index]
                g_rng, f_rng = (rng.pop(), rng.pop()) if rng else (None, None)
                with frozen_bn_stats(block):
                    x2, dy1, g_grads = _undo(block.g, y1, y2, dy2, dy1, extra, params, g_rng, device)
                    x1, dy2, f_grads = _undo(block.f, x2, y1, dy1, dy2, extra, params, f_rng, device)
                for p, grad in zip(params * 2, (*g_grads, *f_grads)):
                    i = index[id(p)]
                    if grad is not None:
                        grads[i] = grad if grads[i] is None else grads[i] + grad
                y1, y2 = x1, x2
        if ctx.real is not None:
            seq._checked(max(_relative_error(y1, ctx.real[0]), _relative_error(y2, ctx.real[1])))
        return (None, None, None, dy1, dy2, *grads)


def _undo(fn: Any, z: Tensor, y: Tensor, dy: Tensor, dz_other: Tensor, extra: tuple[Any, ...],
          params: list[Tensor], rng: RngState | None, device: torch.device
          ) -> tuple[Tensor, Tensor, tuple[Tensor | None, ...]]:
    """One half of a coupling backwards: y = x + fn(z). Recompute fn(z) with gradients (under the recorded RNG),
    return x = y - fn(z), the gradient of the other stream dz_other + d fn/dz^T dy, and the parameter gradients."""
    with _replayed(rng, device), torch.enable_grad():
        z = z.detach().requires_grad_(True)
        out = fn(z, *extra)
    dz, *dparams = torch.autograd.grad(out, (z, *params), dy.to(out.dtype), allow_unused=True)
    with torch.no_grad():
        x = y - out
    return x, dz_other if dz is None else dz_other + dz, tuple(dparams)


class ReversibleSequence(nn.ModuleList):
    """A list of coupling blocks (each with `f` and `g`) run as one reversible computation: `forward(x1, x2, *extra)`
    returns the last block's (y1, y2). Training with gradients uses the reversible Function (or, after a failed
    reconstruction check, per-block checkpointing); without gradients it is a plain loop. The state_dict keys are a
    ModuleList's plus `_extra_state` (the forward counter and fallback flag)."""

    def __init__(self, blocks: Iterable[nn.Module] = (), *, check_every: int = 100, tolerance: float = 1e-3,
                 preserve_rng: bool = True) -> None:
        super().__init__(blocks)
        self.check_every, self.tolerance, self.preserve_rng = check_every, tolerance, preserve_rng
        self.calls = 0  # training forwards so far: the check cadence, resumed from the extra state
        self.fallback = False
        self.last_error: float | None = None

    def forward(self, x1: Tensor, x2: Tensor, *extra: Any) -> tuple[Tensor, Tensor]:
        if any(isinstance(t, Tensor) and t.requires_grad for t in tree_flatten(extra)[0]):
            raise ValueError("ReversibleSequence: extra arguments get no gradient; pass tensors that do not need one")
        if not torch.is_grad_enabled() or len(self) == 0:
            return self._loop(couple, x1, x2, extra)
        check = self.training and self.calls % self.check_every == 0
        self.calls += self.training
        if self.fallback:
            return self._loop(self._checkpointed, x1, x2, extra)
        params = tuple({id(p): p for p in self.parameters() if p.requires_grad}.values())
        return _ReversibleFunction.apply(self, extra, check, x1, x2, *params)

    def _loop(self, step: Any, x1: Tensor, x2: Tensor, extra: tuple[Any, ...]) -> tuple[Tensor, Tensor]:
        for block in self:
            x1, x2 = step(block, x1, x2, *extra)
        return x1, x2

    @staticmethod
    def _checkpointed(block: nn.Module, x1: Tensor, x2: Tensor, *extra: Any) -> tuple[Tensor, Tensor]:
        return checkpoint_call(functools.partial(couple, block), block, x1, x2, *extra)

    def _checked(self, error: float) -> None:
        self.last_error = error
        if error > self.tolerance and not self.fallback:
            self.fallback = True
            warnings.warn(f"reversible blocks: reconstruction error {error:.2e} > memory.tolerance={self.tolerance:g}; "
                          "using activation checkpointing for the rest of the run", RuntimeWarning, stacklevel=2)

    def get_extra_state(self) -> Tensor:
        return torch.tensor([self.calls, int(self.fallback)], dtype=torch.int64)

    def set_extra_state(self, state: Tensor) -> None:
        self.calls, self.fallback = int(state[0]), bool(state[1])

    def extra_repr(self) -> str:
        return f"check_every={self.check_every}, tolerance={self.tolerance:g}, fallback={self.fallback}"


def configure_reversible(model: nn.Module, check_every: int, tolerance: float) -> int:
    """Set the reconstruction-check cadence and tolerance (memory.check_every, memory.tolerance) of every
    ReversibleSequence in `model`; returns how many there are (0: the model has no reversible blocks)."""
    seqs = [m for m in model.modules() if isinstance(m, ReversibleSequence)]
    for seq in seqs:
        seq.check_every, seq.tolerance = check_every, tolerance
    return len(seqs)


def reversible_fell_back(model: nn.Module) -> bool:
    """Whether any ReversibleSequence in `model` has fallen back to checkpointing (for the run's report)."""
    return any(m.fallback for m in model.modules() if isinstance(m, ReversibleSequence))
