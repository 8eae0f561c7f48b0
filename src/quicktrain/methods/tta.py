"""Test-time augmentation: average the logits over a few views of each input (as airbench does with flips and
1-pixel translations). The views match the training augmentation: 1-pixel shifts for signals and translated digits,
a horizontal flip for data trained with flips. It triples evaluation cost, which matters only when evaluation is
frequent. Off: `--methods.tta=false`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def shift_1d(x: Tensor, s: int) -> Tensor:
    """Shift (N, C, L) right by s (left if negative), replicating the edge value, as the training shift does."""
    if s == 0:
        return x
    if s > 0:
        return torch.cat([x[..., :1].expand(*x.shape[:-1], s), x[..., :-s]], dim=-1)
    return torch.cat([x[..., -s:], x[..., -1:].expand(*x.shape[:-1], -s)], dim=-1)


def translate_2d(x: Tensor, dy: int, dx: int) -> Tensor:
    """Translate (N, C, H, W) by (dy, dx) pixels with zero fill, as the training random crop with padding does."""
    h, w = x.shape[-2:]
    p = max(abs(dy), abs(dx))
    padded = F.pad(x, (p, p, p, p))
    return padded[..., p - dy : p - dy + h, p - dx : p - dx + w]


def tta_views(x: Tensor, kind: str) -> list[Tensor]:
    if kind == "shift":
        return [x, shift_1d(x, 1), shift_1d(x, -1)]
    if kind == "crop":
        return [x, translate_2d(x, 1, 1), translate_2d(x, -1, -1)]
    if kind == "crop_flip":
        return [x, x.flip(-1)]
    return [x]


def tta_logits(model: nn.Module, x: Tensor, kind: str) -> Tensor:
    """Mean logits over the views of x (one forward pass for all views)."""
    views = tta_views(x, kind)
    if len(views) == 1:
        return model(x)
    out = model(torch.cat(views))
    return out.view(len(views), x.shape[0], -1).mean(0)
