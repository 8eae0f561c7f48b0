"""Gradient accumulation: one optimizer step over a batch computed as k micro-batches, forward and backward each.

Each micro-batch's loss is weighted by its share of the batch's examples (or tokens, for a next-token task: the
weight is the share of target elements), so an uneven split (a batch of 10 in micro-batches of 4: 4 + 3 + 3) gives
the big batch's mean-loss gradient exactly, up to float rounding (tests/test_accumulate.py: allclose at 1e-6
relative in float64). Splits are balanced: k = ceil(B / micro) chunks whose sizes differ by at most one.

What does change: layers with batch statistics. BatchNorm normalises each micro-batch with that micro-batch's mean
and variance (a "ghost batch", Hoffer et al. 2017, "Train longer, generalize better"), so the forward is not the
big batch's, and its running statistics take k updates per step instead of one. `ghost_momentum` sets each BN's
momentum to m' = 1 - (1 - m)^(1/k), so that k updates decay the old statistics exactly as one update with m
would: (1 - m')^k = 1 - m. Off with memory.ghost_bn=false.

Under data parallel, every micro-batch but the last runs in `no_sync()`, so gradients are all-reduced once a step.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Iterator

from torch import Tensor, nn

__all__ = ["bn_layers", "ghost_momentum", "micro_count", "split_batch"]


def micro_count(batch: int, micro: int) -> int:
    """How many micro-batches a batch of `batch` takes at most `micro` examples each (1 when micro is 0 or >= it)."""
    return 1 if micro <= 0 or micro >= batch else math.ceil(batch / micro)


def split_batch(x: Tensor, y: Tensor, micro: int) -> list[tuple[Tensor, Tensor, float]]:
    """(x_i, y_i, weight_i) chunks along the batch dimension with sizes differing by at most one; the weights are
    each chunk's share of y's elements and sum to 1. One chunk (weight 1) when no split is needed."""
    k = micro_count(len(x), micro)
    if k == 1:
        return [(x, y, 1.0)]
    base, extra = divmod(len(x), k)
    sizes = [base + (i < extra) for i in range(k)]
    xs, ys = x.split(sizes), y.split(sizes)
    total = y.numel()
    return [(xi, yi, yi.numel() / total) for xi, yi in zip(xs, ys)]


def bn_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


@contextlib.contextmanager
def ghost_momentum(model: nn.Module, k: int) -> Iterator[None]:
    """Within the block, every BatchNorm with a momentum m uses 1 - (1 - m)^(1/k): k micro-batch updates of the
    running statistics then weigh the past as one update with m does. Momentum None (a cumulative average) and
    k = 1 are left alone."""
    layers = [m for m in bn_layers(model) if m.momentum is not None] if k > 1 else []
    saved: list[Any] = [m.momentum for m in layers]
    for m in layers:
        m.momentum = 1.0 - (1.0 - m.momentum) ** (1.0 / k)
    try:
        yield
    finally:
        for m, momentum in zip(layers, saved):
            m.momentum = momentum
