"""Progressive resizing: train on smaller inputs early, full size at the end (fast.ai's DAWNBench ImageNet entry,
Howard et al. 2018; Touvron et al. 2019 "FixRes" on why the last phase must be at the test size).

Early steps cost less (a conv net's FLOPs scale with input length or area), and early features are coarse anyway.
1-D signals are shrunk with area (average) interpolation, which is anti-aliased; images with anti-aliased bilinear.
The net must accept variable sizes (global pooling); the loop checks that at setup. Evaluation is always at full size.
On token sequences it is sequence-length warm-up: windows are cropped to their first tokens, so early steps see
shorter contexts (Li et al. 2022, "The stability-efficiency dilemma"; modded-nanogpt grows its attention window).
Off: `--methods.resize_from=1`.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from quicktrain.methods.base import Method


def size_at(progress: float, full: int, start_frac: float, until: float, multiple: int = 1) -> int:
    """Longest spatial side at `progress`: linear from start_frac * full to full over [0, until], snapped down to a
    multiple of `multiple` so only a few shapes occur."""
    if start_frac >= 1.0 or progress >= until:
        return full
    raw = full * (start_frac + (1.0 - start_frac) * max(progress, 0.0) / until)
    snapped = int(raw) // multiple * multiple
    return max(min(multiple, full), min(full, snapped))


def resize(x: Tensor, size: int) -> Tensor:
    """Resize a batch (N, C, L) or (N, C, H, W) so its longest spatial side is `size` (aspect ratio kept); token
    ids (N, T) are cropped to their first `size` tokens (sequence-length warm-up)."""
    if x.ndim == 2:
        return x[:, :size]
    spatial = x.shape[2:]
    full = max(spatial)
    if size == full:
        return x
    new = tuple(max(1, round(d * size / full)) for d in spatial)
    if x.ndim == 3:
        return F.interpolate(x, size=new, mode="area")
    return F.interpolate(x, size=new, mode="bilinear", align_corners=False, antialias=True)


class ProgressiveResize(Method):
    name = "progressive_resize"

    def __init__(self, full: int, start_frac: float, until: float, multiple: int) -> None:
        self.full, self.start_frac, self.until, self.multiple = full, start_frac, until, multiple

    def on_batch(self, x: Tensor, y: Tensor, progress: float) -> tuple[Tensor, Tensor]:
        if progress >= self.until:
            return x, y
        size = size_at(progress, self.full, self.start_frac, self.until, self.multiple)
        return resize(x, size), (y[:, :size] if y.ndim == 2 else y)  # next tokens are cropped with their inputs
