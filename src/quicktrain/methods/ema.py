"""Exponential moving average of the weights, used for evaluation (Polyak & Juditsky 1992; as in timm's ModelEmaV2
and airbench).

The average lags the noisy late iterates and usually evaluates better than the last weights, at the price of one
`lerp` over the parameters per update. With short runs the average must not be dominated by the random init, so the
decay warms up as min(decay, (1 + t) / (10 + t)) over the t updates so far (TensorFlow's num_updates rule).
Off: `--methods.ema=0`.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor, nn

from quicktrain.methods.base import Method


def ema_update_(average: list[Tensor], current: list[Tensor], decay: float) -> None:
    """average <- decay * average + (1 - decay) * current, in place, for lists of same-shaped tensors."""
    torch._foreach_lerp_(average, current, 1.0 - decay)


def warmed_decay(decay: float, updates: int) -> float:
    return min(decay, (1.0 + updates) / (10.0 + updates))


class EMA(Method):
    """Keeps an averaged copy of the model; `model` is what evaluation should use."""

    name = "ema"

    def __init__(self, model: nn.Module, decay: float, every: int = 1) -> None:
        self.model = copy.deepcopy(model).requires_grad_(False)
        self.decay, self.every, self.updates = decay, every, 0
        self._avg = [p for p in self.model.parameters()]
        self._src = [p for p in model.parameters()]
        self._avg_buf = [b for b in self.model.buffers()]
        self._src_buf = [b for b in model.buffers()]

    @torch.no_grad()
    def after_step(self, model: nn.Module, step: int) -> None:
        if step % self.every:
            return
        # k steps between updates: decay**k keeps the same averaging horizon in steps.
        ema_update_(self._avg, self._src, warmed_decay(self.decay**self.every, self.updates))
        if self._avg_buf:  # BatchNorm statistics are already running averages: copy them
            torch._foreach_copy_(self._avg_buf, self._src_buf)
        self.updates += 1

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.updates = int(state["updates"])
