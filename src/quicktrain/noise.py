"""The gradient noise scale: how large a batch still pays (McCandlish et al. 2018, "An empirical model of large-batch
training"; Shallue et al. 2019 measured the same regimes: perfect scaling, diminishing returns, a maximum).

B_simple = tr(Sigma) / |G|^2, with G the true gradient and Sigma the per-example gradient covariance. Below it,
doubling the batch nearly halves the steps to a target; above it, extra examples are mostly wasted. McCandlish et
al. find the critical batch size (the knee of steps vs batch) close to B_simple measured at the target's loss.

Estimated without per-example gradients, from squared norms of mean gradients over b and B > b examples taken at
the *same weights* (their appendix A.1; gpt-neox's estimator averaged gradients from different steps, which mixes
the weights' motion into the "noise"):
    |G|^2  ~  (B |G_B|^2 - b |G_b|^2) / (B - b)        unbiased
    tr S   ~  (|G_b|^2 - |G_B|^2) / (1/b - 1/B)          unbiased
Each estimate alone is very noisy (|G|^2 can come out negative), so each is smoothed by an exponential moving
average and B_simple is the ratio of the averages, as the paper recommends (`NoiseScale`).

Where the two batch sizes come from, in the same step, measured every `noise.every` steps:
- one process (`half_batch_sq_norm`): B is the step's batch (its gradient, as the step computed it); b is half of
  it (or one micro-batch, if that is smaller), whose gradient a second forward/backward computes with
  `torch.autograd.grad`, the RNG and every buffer (batch-norm statistics) restored after, so the measurement does
  not change the run (tests/test_noise.py). Cost: about half a step more, on measuring steps only.
- data parallel (`DDPProbe`): b is a rank's share (its gradient read in DDP's communication hook, before the
  all-reduce), B the global batch (after it): no extra computation; the ranks' |G_b|^2 are averaged.
With batch norm the two gradients normalise with different batches' statistics; the estimate is that of the
gradients the run actually takes. For Adam-type optimizers this is the noise scale of the raw gradient, not of the
preconditioned update (McCandlish et al. sec. 2.3): a guide to the batch size, like theirs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable

import torch
from torch import Tensor, nn

__all__ = ["DDPProbe", "NoiseScale", "estimate", "half_batch_sq_norm", "sq_norm"]


def estimate(g_small_sq: float, g_big_sq: float, b_small: float, b_big: float) -> tuple[float, float]:
    """Unbiased (|G|^2, tr Sigma) from the squared norms of mean gradients over b_small and b_big examples."""
    if not 0 < b_small < b_big:
        raise ValueError(f"need 0 < b_small < b_big (got {b_small}, {b_big})")
    g2 = (b_big * g_big_sq - b_small * g_small_sq) / (b_big - b_small)
    trace = (g_small_sq - g_big_sq) / (1.0 / b_small - 1.0 / b_big)
    return g2, trace


def sq_norm(tensors: Iterable[Tensor | None]) -> float:
    """Sum of squared entries, in float32 or wider (one host sync)."""
    parts = [t.detach().float().pow(2).sum() for t in tensors if t is not None]
    return float(torch.stack(parts).sum()) if parts else 0.0


@dataclass
class NoiseScale:
    """Exponential moving averages of the |G|^2 and tr(Sigma) estimates (bias-corrected, as Adam's moments) and
    their ratio B_simple; the raw measurements in `history`. Its state is part of a checkpoint."""

    decay: float = 0.9  # per measurement
    g2: float = 0.0
    trace: float = 0.0
    n: int = 0
    peak: float = 0.0  # the largest smoothed B_simple so far: a noise-driven batch ramp never goes down
    history: list[dict[str, float | None]] = field(default_factory=list)

    def update(self, g_small_sq: float, g_big_sq: float, b_small: float, b_big: float, step: int = 0,
               samples: int = 0) -> float | None:
        g2, trace = estimate(g_small_sq, g_big_sq, b_small, b_big)
        if not (math.isfinite(g2) and math.isfinite(trace)):
            return self.b_simple
        self.n += 1
        self.g2 = self.decay * self.g2 + (1 - self.decay) * g2
        self.trace = self.decay * self.trace + (1 - self.decay) * trace
        b = self.b_simple
        if b is not None:
            self.peak = max(self.peak, b)
        self.history.append({"step": step, "samples": samples, "b_small": b_small, "b_big": b_big,
                             "g_small_sq": g_small_sq, "g_big_sq": g_big_sq, "g2": g2, "trace": trace,
                             "b_simple": b, "b_raw": trace / g2 if g2 > 0 else None})  # None: no ratio yet
        return b

    @property
    def b_simple(self) -> float | None:
        """tr(Sigma) / |G|^2 from the smoothed estimates; None until the smoothed |G|^2 is positive."""
        if self.n == 0 or self.g2 <= 0:
            return None
        correction = 1 - self.decay ** self.n  # the same for both averages: it cancels in the ratio
        return max(0.0, (self.trace / correction) / (self.g2 / correction))

    def batch_for(self, low: int, high: int, multiple: int = 1) -> int:
        """The batch a noise-driven ramp uses now: the largest B_simple seen, in [low, high], a multiple of
        `multiple` (the ranks); `low` until a first estimate exists."""
        target = min(max(self.peak, low), high)
        return max(multiple, int(target) // multiple * multiple)

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "g2": self.g2, "trace": self.trace, "n": self.n, "peak": self.peak,
                "history": [dict(h) for h in self.history]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.decay, self.g2, self.trace = float(state["decay"]), float(state["g2"]), float(state["trace"])
        self.n, self.peak = int(state["n"]), float(state["peak"])
        self.history = [dict(h) for h in state["history"]]


def half_batch_sq_norm(model: nn.Module, precision: Any, loss_fn: Any, x: Tensor, y: Tensor, b: int) -> float:
    """|G_b|^2 for the first `b` examples of (x, y), at the current weights, leaving the run as it was: gradients
    by `torch.autograd.grad` (so .grad is untouched), the RNG and every buffer restored afterwards. The eager model
    is called (a compiled one would recompile for the new batch size)."""
    from quicktrain.memory.backoff import restore, snapshot

    params = [p for p in model.parameters() if p.requires_grad]
    snap = snapshot(model)
    try:
        with precision.autocast():
            loss = loss_fn(model(x[:b]), y[:b])
        scale = float(precision.scaler.get_scale()) if precision.scaler is not None else 1.0
        grads = torch.autograd.grad(loss * scale, params, allow_unused=True)
    finally:
        restore(snap)
    return sq_norm(grads) / scale**2


class DDPProbe:
    """DistributedDataParallel's communication hook with a measuring switch: when `measuring`, each bucket's squared
    norm is added up before the all-reduce (a rank's own gradient over its share of the batch); then the default
    all-reduce (mean over ranks). Register with `DDPProbe.attach(ddp)`."""

    def __init__(self) -> None:
        self.measuring = False
        self.small_sq: Tensor | None = None

    @classmethod
    def attach(cls, ddp: nn.Module) -> "DDPProbe":
        probe = cls()
        ddp.register_comm_hook(probe, _probe_hook)  # type: ignore[operator]
        return probe

    def take(self) -> float:
        """The rank's |G_b|^2 of the last measured backward (reset for the next)."""
        value = float(self.small_sq) if self.small_sq is not None else 0.0
        self.small_sq, self.measuring = None, False
        return value


def _probe_hook(probe, bucket):  # type: ignore[no-untyped-def]  # DDP refuses any annotation but its own classes
    from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

    if probe.measuring:
        sq = bucket.buffer().detach().float().pow(2).sum()
        probe.small_sq = sq if probe.small_sq is None else probe.small_sq + sq
    return allreduce_hook(None, bucket)  # type: ignore[arg-type]
