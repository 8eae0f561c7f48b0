"""On-device data augmentation as a step method: random shifts for 1-D signals, random crops (and flips, where the
data allows them) for images. The pure functions live in quicktrain.data.augment; this wrapper owns the random
generator so that runs are reproducible and resume exactly. Off: `--data.augment=none`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from quicktrain.data.augment import augment_batch
from quicktrain.methods.base import Method


class Augment(Method):
    name = "augment"

    def __init__(self, kind: str, amount: int, device: torch.device, seed: int) -> None:
        self.kind, self.amount = kind, amount
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(seed)

    def on_batch(self, x: Tensor, y: Tensor, progress: float) -> tuple[Tensor, Tensor]:
        return augment_batch(x, self.kind, self.amount, self.generator), y

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
