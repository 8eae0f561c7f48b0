"""The one training step, shared by the loop, the LR finder and the `auto` race, so all three measure and train
the same thing: forward under autocast, the task's loss, backward (scaled for fp16), optional clipping, the
optimizer step, and gradients set to None.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from quicktrain.precision import Precision

LossFn = Callable[[Tensor, Tensor], Tensor]


def train_step(net: nn.Module, optimizer: torch.optim.Optimizer, precision: Precision, loss_fn: LossFn, x: Tensor,
               y: Tensor, grad_clip: float = 0.0, model: nn.Module | None = None) -> Tensor:
    """One optimizer step on (x, y); returns the loss, still on the device (reading it would be a host sync).
    `net` is what is called (the model or its compiled wrapper); `model` owns the parameters to clip."""
    with precision.autocast():
        loss = loss_fn(net(x), y)
    precision.backward(loss)
    precision.step(optimizer, grad_clip, model if model is not None else net)
    optimizer.zero_grad(set_to_none=True)
    return loss.detach()
