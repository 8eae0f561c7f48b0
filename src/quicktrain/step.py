"""The one training step, shared by the loop, the LR finder and the `auto` race, so all three measure and train
the same thing: forward under autocast, the task's loss, backward (scaled for fp16), optional clipping, the
optimizer step, and gradients set to None.

With `micro_batch` the forward and backward run over micro-batches whose losses are weighted by their share of the
batch, accumulating the big batch's gradient (quicktrain.memory.accumulate), then one optimizer step.
"""

from __future__ import annotations

import contextlib
from typing import Callable

import torch
from torch import Tensor, nn

from quicktrain.memory.accumulate import ghost_momentum, split_batch
from quicktrain.precision import Precision

LossFn = Callable[[Tensor, Tensor], Tensor]


def backward_pass(net: nn.Module, precision: Precision, loss_fn: LossFn, x: Tensor, y: Tensor, micro_batch: int = 0,
                  ghost_bn: bool = True, model: nn.Module | None = None) -> Tensor:
    """Forward and backward of (x, y), in micro-batches of at most `micro_batch` examples (0: one pass); gradients
    accumulate in .grad. Returns the batch's mean loss, on the device. Under DDP (`net` has `no_sync`), only the
    last micro-batch all-reduces."""
    chunks = split_batch(x, y, micro_batch)
    if len(chunks) == 1:  # the hot path: no split, no extra op
        with precision.autocast():
            loss = loss_fn(net(x), y)
        precision.backward(loss)
        return loss.detach()
    total: Tensor | None = None
    no_sync = getattr(net, "no_sync", None)
    bn = ghost_momentum(model if model is not None else net, len(chunks)) if ghost_bn else contextlib.nullcontext()
    with bn:
        for i, (xi, yi, w) in enumerate(chunks):
            last = i == len(chunks) - 1
            with no_sync() if no_sync is not None and not last else contextlib.nullcontext():
                with precision.autocast():
                    loss = loss_fn(net(xi), yi) * w
                precision.backward(loss)
            total = loss.detach() if total is None else total + loss.detach()
    assert total is not None
    return total


def train_step(net: nn.Module, optimizer: torch.optim.Optimizer, precision: Precision, loss_fn: LossFn, x: Tensor,
               y: Tensor, grad_clip: float = 0.0, model: nn.Module | None = None, micro_batch: int = 0,
               ghost_bn: bool = True) -> Tensor:
    """One optimizer step on (x, y); returns the loss, still on the device (reading it would be a host sync).
    `net` is what is called (the model or its compiled wrapper); `model` owns the parameters to clip."""
    loss = backward_pass(net, precision, loss_fn, x, y, micro_batch, ghost_bn, model)
    precision.step(optimizer, grad_clip, model if model is not None else net)
    optimizer.zero_grad(set_to_none=True)
    return loss
