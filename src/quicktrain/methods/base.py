"""The small protocol a technique implements when it must act inside the training step.

Hooks run in list order; the loop only calls the hooks a method overrides (see `hooks`), so a technique that is off
costs nothing per step. `state_dict`/`load_state_dict` carry what an exact resume needs.
"""

from __future__ import annotations

from typing import Any, Callable

from torch import Tensor, nn


class Method:
    name = "method"

    def on_batch(self, x: Tensor, y: Tensor, progress: float) -> tuple[Tensor, Tensor]:
        return x, y

    def after_step(self, model: nn.Module, step: int) -> None:
        return None

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None


def hooks(methods: list[Method], name: str) -> list[Callable[..., Any]]:
    """Bound hooks of the methods that override `name` (skipping no-op defaults keeps the step lean)."""
    return [getattr(m, name) for m in methods if getattr(type(m), name) is not getattr(Method, name)]
