"""Mixed precision: autocast plus, for fp16, a gradient scaler (Micikevicius et al. 2018, "Mixed precision training").

bf16 keeps fp32's exponent range, so it needs no loss scaling; fp16 does. Which one is *fastest* depends on the device
and the net: measured here on a 2-core Zen 4 CPU, bf16 autocast was slower for narrow nets at batch 64 and 20-35% faster
for wide nets at large batch. So `precision="auto"` measures (quicktrain.autotune) instead of guessing.
"""

from __future__ import annotations

import contextlib
from typing import Any, ContextManager

import torch
from torch import Tensor, nn

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
_NULL = contextlib.nullcontext()


def candidates(device: torch.device) -> list[str]:
    """Precisions worth measuring on this device (fp32 first: it is the reference for correctness)."""
    if device.type == "cuda":
        out = ["fp32", "fp16"]
        if torch.cuda.is_bf16_supported():
            out.insert(1, "bf16")
        return out
    return ["fp32", "bf16"]  # CPU fp16 autocast exists but has no fast kernels on x86


class Precision:
    """What one training step needs to know about precision: the autocast context, backward and optimizer step."""

    def __init__(self, name: str, device: torch.device) -> None:
        if name not in DTYPES:
            raise ValueError(f"unknown precision {name!r}")
        self.name, self.dtype, self.device_type = name, DTYPES[name], device.type
        self.scaler = torch.amp.GradScaler(device.type) if name == "fp16" else None

    def autocast(self) -> ContextManager[Any]:
        if self.name == "fp32":
            return _NULL
        return torch.autocast(self.device_type, dtype=self.dtype)

    def backward(self, loss: Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def step(self, optimizer: torch.optim.Optimizer, grad_clip: float = 0.0, model: nn.Module | None = None) -> None:
        if self.scaler is not None:
            if grad_clip and model is not None:
                self.scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
                nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            self.scaler.step(optimizer)
            self.scaler.update()
            return
        if grad_clip and model is not None:
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()

    def state_dict(self) -> dict[str, Any]:
        return {"scaler": self.scaler.state_dict()} if self.scaler is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
