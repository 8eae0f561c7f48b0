"""On-device batch augmentation as pure functions: random shifts (1-D signals), random crops and flips (images).

Each function transforms a whole batch with a few tensor ops (one gather per axis), no Python loop over samples, so
it runs on the device at the speed of the batch. Randomness comes only from the `generator` argument, which the caller
creates on x's device and saves with its checkpoints: a run is reproducible and resumes exactly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

KINDS = ("none", "shift", "crop", "crop_flip")


def _offsets(n: int, amount: int, generator: torch.Generator, device: torch.device) -> Tensor:
    """n integer offsets uniform in [-amount, amount]."""
    return torch.randint(0, 2 * amount + 1, (n,), generator=generator, device=device) - amount


def random_shift(x: Tensor, max_shift: int, generator: torch.Generator) -> Tensor:
    """Shift each signal of x (N, C, L) right by its own s in [-max_shift, max_shift], replicating the edge values.

    out[n, c, i] = x[n, c, clamp(i - s_n, 0, L - 1)]: one gather. Edge replication (not zeros) because a signal that
    suddenly drops to zero has a step the data never shows.
    """
    if max_shift <= 0:
        return x
    n, c, length = x.shape
    s = _offsets(n, max_shift, generator, x.device)
    idx = (torch.arange(length, device=x.device) - s[:, None]).clamp_(0, length - 1)
    return x.gather(2, idx[:, None, :].expand(n, c, length))


def random_crop(x: Tensor, pad: int, generator: torch.Generator) -> Tensor:
    """Random translation of images x (N, C, H, W), like torchvision's RandomCrop(size, padding=pad).

    Zero-pad by `pad` on every side, then cut an H x W window at a per-sample offset in [0, 2 * pad] along each axis:
    one gather for the rows, one for the columns.
    """
    if pad <= 0:
        return x
    n, c, h, w = x.shape
    dy = _offsets(n, pad, generator, x.device) + pad
    dx = _offsets(n, pad, generator, x.device) + pad
    padded = F.pad(x, (pad, pad, pad, pad))
    rows = torch.arange(h, device=x.device) + dy[:, None]  # (N, H) rows of `padded`
    cols = torch.arange(w, device=x.device) + dx[:, None]  # (N, W)
    out = padded.gather(2, rows[:, None, :, None].expand(n, c, h, w + 2 * pad))
    return out.gather(3, cols[:, None, None, :].expand(n, c, h, w))


def random_flip(x: Tensor, generator: torch.Generator) -> Tensor:
    """Flip each sample along its last (horizontal) axis with probability 0.5."""
    flip = torch.rand(x.shape[0], generator=generator, device=x.device) < 0.5
    return torch.where(flip.view(-1, *([1] * (x.dim() - 1))), x.flip(-1), x)


def augment_batch(x: Tensor, kind: str, amount: int, generator: torch.Generator) -> Tensor:
    """Apply augmentation `kind` (none | shift | crop | crop_flip) with `amount` = max shift or crop padding.

    crop_flip with amount 0 still flips: amount sizes the translation only.
    """
    if kind == "none":
        return x
    if kind == "shift":
        return random_shift(x, amount, generator)
    if kind == "crop":
        return random_crop(x, amount, generator)
    if kind == "crop_flip":
        return random_flip(random_crop(x, amount, generator), generator)
    raise ValueError(f"unknown augmentation {kind!r} (choose from {', '.join(KINDS)})")
