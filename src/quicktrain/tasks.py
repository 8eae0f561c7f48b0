"""What a task is to the loop: its training loss, its evaluation (named metrics), and which way its metric goes.

The loop knows nothing of argmax or accuracy: it calls `task.loss` in the step, `task.evaluate` at each check, and
`task.reached(value, target)` to decide the target. Two tasks: `Classification` (accuracy to reach, higher is better)
and `NextToken` (validation loss in nats per token to reach, lower is better; also bits per byte). What else differs
between them is where batches come from (quicktrain.data.lm), not the loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from quicktrain.dist import SINGLE, Dist
from quicktrain.methods.label_smoothing import loss_fn as make_loss
from quicktrain.methods.tta import tta_logits
from quicktrain.precision import Precision


class Interrupted(Exception):
    """A stop signal arrived during an evaluation (raised between chunks)."""


@dataclass(frozen=True)
class Classification:
    """Cross-entropy (label-smoothed in training when `smoothing` > 0); evaluation reports accuracy and the plain
    cross-entropy, with test-time augmentation `tta` (none | shift | crop | crop_flip)."""

    smoothing: float = 0.0
    tta: str = "none"
    metric: str = "acc"  # the metric a target refers to: records carry it as val_acc and test_acc
    higher_is_better: bool = True
    loss: Callable[[Tensor, Tensor], Tensor] = field(init=False, repr=False, compare=False)  # the training loss

    def __post_init__(self) -> None:
        object.__setattr__(self, "loss", make_loss(self.smoothing))

    def reached(self, value: float, target: float) -> bool:
        """Whether a validation value meets the target; a target of 0 means none."""
        if target <= 0:
            return False
        return value >= target if self.higher_is_better else value <= target

    @torch.no_grad()
    def evaluate(self, model: nn.Module, x: Tensor, y: Tensor, precision: Precision, chunk: int = 2048,
                 stop: Any = None, dist: Dist = SINGLE) -> dict[str, float]:
        """{"acc", "loss"} of `model` on (x, y), in eval mode. If `stop` becomes truthy (a signal flag), raise
        Interrupted at the next chunk rather than finish. Under data parallel each rank scores its shard."""
        return evaluate(model, x, y, precision, self.tta, chunk, stop, dist)


def next_token_loss(logits: Tensor, y: Tensor) -> Tensor:
    """Mean cross-entropy over every position of (B, T, V) logits against (B, T) next tokens, in float32."""
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1))


@dataclass(frozen=True)
class NextToken:
    """Next-token prediction: the training loss is the mean cross-entropy per token; evaluation reports it ("loss",
    nats per token), next-token accuracy ("acc") and, when the bytes a token stands for are known, bits per byte
    ("bpb" = loss / ln 2 / bytes_per_token). The target is a loss to reach: lower is better."""

    bytes_per_token: float = 0.0  # 1 for byte-level data; 0 = unknown (no bpb)
    metric: str = "loss"
    higher_is_better: bool = False
    loss: Callable[[Tensor, Tensor], Tensor] = field(default=next_token_loss, repr=False, compare=False)

    def reached(self, value: float, target: float) -> bool:
        return target > 0 and value <= target

    @torch.no_grad()
    def evaluate(self, model: nn.Module, x: Tensor, y: Tensor, precision: Precision, chunk: int = 32,
                 stop: Any = None, dist: Dist = SINGLE) -> dict[str, float]:
        """{"loss", "acc"[, "bpb"]} over the fixed windows (x, y), each (N, T), in eval mode (restored after)."""
        correct, loss_sum = _sums(model, x, y, precision, chunk, stop, model, torch.float64, dist)
        n = max(1, y.numel())
        out = {"loss": loss_sum / n, "acc": correct / n}
        if self.bytes_per_token > 0:
            out["bpb"] = out["loss"] / math.log(2) / self.bytes_per_token
        return out


Task = Classification | NextToken


@torch.no_grad()
def evaluate(model: nn.Module, x: Tensor, y: Tensor, precision: Precision, tta: str = "none", chunk: int = 2048,
             stop: Any = None, dist: Dist = SINGLE) -> dict[str, float]:
    """{"acc": accuracy, "loss": mean cross-entropy} of a classifier on (x, y), in eval mode, with test-time
    augmentation `tta`; the model's train/eval mode is restored afterwards."""
    correct, loss_sum = _sums(model, x, y, precision, chunk, stop, lambda xb: tta_logits(model, xb, tta),
                              torch.float32, dist)
    n = max(1, len(x))
    return {"acc": correct / n, "loss": loss_sum / n}


def _sums(model: nn.Module, x: Tensor, y: Tensor, precision: Precision, chunk: int, stop: Any,
          logits_of: Callable[[Tensor], Tensor], dtype: torch.dtype, dist: Dist = SINGLE) -> tuple[int, float]:
    """(correct predictions, summed cross-entropy) of `logits_of(x chunk)` against y over every position, chunk by
    chunk in eval mode (restored after); the sums stay on the device until the end (one host sync). If `stop`
    becomes truthy (a signal flag), raise Interrupted at the next chunk rather than finish. Under data parallel
    each rank sums its shard of (x, y) and the sums are all-reduced, so every rank returns the same numbers."""
    x, y = dist.shard(x), dist.shard(y)
    was_training = model.training
    model.eval()
    correct = torch.zeros((), device=x.device, dtype=torch.long)
    loss_sum = torch.zeros((), device=x.device, dtype=dtype)
    try:
        for i in range(0, len(x), chunk):
            if stop:
                raise Interrupted
            with precision.autocast():
                logits = logits_of(x[i : i + chunk])
            logits, yb = logits.float().reshape(-1, logits.shape[-1]), y[i : i + chunk].reshape(-1)
            correct += (logits.argmax(-1) == yb).sum()
            loss_sum += F.cross_entropy(logits, yb, reduction="sum").to(dtype)
    finally:
        model.train(was_training)
    if dist.on:
        total = dist.sum(torch.stack([correct.double(), loss_sum.double()]))
        return int(round(float(total[0]))), float(total[1])
    return int(correct.item()), float(loss_sum.item())
