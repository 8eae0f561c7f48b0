"""Turning raw arrays into checked tensors: shapes, labels, finiteness, deterministic splits, normalisation, and the
choice of augmentation. Every check raises a one-line DataError (bad data) or ConfigError (bad config) that names the
source: a file path, "dataset NAME" or "data passed from Python".
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from quicktrain.errors import ConfigError, DataError

SPATIAL_AUGMENT = {"shift": 1, "crop": 2, "crop_flip": 2}  # kind -> the spatial dims it needs
BUILTIN_AUGMENT = {"mnist1d": "shift", "digits": "crop", "mnist5k": "crop", "cifar10": "crop_flip"}


def as_x(x: Any, source: str, key: str = "x") -> torch.Tensor:
    """Any numeric array or tensor -> float32 tensor (values unchanged)."""
    if isinstance(x, np.ndarray) and not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
        raise DataError(f"{source}: {key} has dtype {x.dtype}, expected numbers")
    try:
        t = torch.as_tensor(x)
    except (TypeError, ValueError, RuntimeError) as e:
        raise DataError(f"{source}: {key} is not a numeric array ({type(e).__name__})") from None
    if t.is_complex():
        raise DataError(f"{source}: {key} is complex, expected real numbers")
    return t.to(torch.float32)


def as_y(y: Any, source: str, key: str = "y") -> torch.Tensor:
    """Integer labels -> int64 tensor. Float labels are refused: 2.5 has no class, and 2.0 usually means a mix-up."""
    if isinstance(y, np.ndarray) and not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{source}: labels {key} have dtype {y.dtype}, expected integers")
    try:
        t = torch.as_tensor(y)
    except (TypeError, ValueError, RuntimeError) as e:
        raise DataError(f"{source}: labels {key} are not an integer array ({type(e).__name__})") from None
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise DataError(f"{source}: labels {key} have dtype {str(t.dtype).removeprefix('torch.')}, expected integers")
    if t.dim() != 1:
        raise DataError(f"{source}: labels {key} must be 1-D (N,), got shape {tuple(t.shape)}")
    return t.to(torch.int64)


def to_layout(x: torch.Tensor, source: str, images_3d: bool, key: str = "x") -> torch.Tensor:
    """Bring x to (N, C, L) for signals or (N, C, H, W) for images.

    2-D (N, L) -> (N, 1, L). 3-D is (N, C, L) signals, except where the source stores images as (N, H, W)
    (`images_3d`: npz files, the digit sets) -> (N, 1, H, W). 4-D is NCHW, or NHWC when the last dim is 1 or 3 and the
    second is not (e.g. (N, 32, 32, 3)), which is converted to NCHW.
    """
    if x.dim() == 2:
        return x.unsqueeze(1)
    if x.dim() == 3:
        return x.unsqueeze(1) if images_3d else x
    if x.dim() == 4:
        nhwc = x.shape[3] in (1, 3) and x.shape[1] not in (1, 3)
        return x.permute(0, 3, 1, 2).contiguous() if nhwc else x
    raise DataError(f"{source}: {key} must have 2 to 4 dims ((N, L), (N, C, L) or (N, H, W), (N, C, H, W)), "
                    f"got shape {tuple(x.shape)}")


def check_pair(x: torch.Tensor, y: torch.Tensor, source: str, key: str = "x") -> None:
    if len(x) != len(y):
        raise DataError(f"{source}: {key} has {len(x)} examples but its labels have {len(y)}")
    if len(x) == 0:
        raise DataError(f"{source}: {key} has no examples")
    if not bool(torch.isfinite(x).all()):
        raise DataError(f"{source}: {key} contains NaN or infinite values")


def num_classes_of(ys: list[torch.Tensor], requested: int, source: str) -> int:
    """`requested` if > 0, else max label + 1; every label must lie in [0, num_classes)."""
    low = min(int(y.min()) for y in ys)
    high = max(int(y.max()) for y in ys)
    n = requested if requested > 0 else high + 1
    bad = low if low < 0 else high if high >= n else None
    if bad is not None:
        raise DataError(f"{source}: label {bad} out of range [0, {n})")
    return n


# ---------------------------------------------------------------------------------------------------------------------
# Splitting and normalisation


def holdout(n: int, fraction: float, seed: int, source: str, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministically shuffle range(n) and cut off round(n * fraction) (at least 1): (rest, held out).

    A local numpy Generator keyed by the split seed: the same data always splits the same way, whatever the run's
    seed or the global RNG state. The rest stays shuffled, which matters for data sorted by class (mnist5k).
    """
    k = max(1, round(n * fraction))
    if n - k < 1:
        raise DataError(f"{source}: {n} examples are too few to hold out a {what} split")
    perm = torch.from_numpy(np.random.default_rng(seed).permutation(n))
    return perm[k:], perm[:k]


def standardise(train: torch.Tensor, *others: torch.Tensor) -> list[torch.Tensor]:
    """Per-channel (dim 1) standardisation of every tensor with the *train* split's mean and std.

    Statistics from train only: val and test must not influence anything that trains.
    """
    dims = [d for d in range(train.dim()) if d != 1]
    shape = [1] * train.dim()
    shape[1] = -1
    std, mean = torch.std_mean(train, dim=dims, correction=0)
    mean, std = mean.view(shape), std.clamp_min(1e-8).view(shape)
    return [(t - mean) / std for t in (train, *others)]


def resolve_augment(requested: str, name: str, ndim: int, input_shape: tuple[int, ...]) -> str:
    """The augmentation kind for this data: `auto` picks what suits it; an explicit kind must fit its dims."""
    if requested == "auto":
        return BUILTIN_AUGMENT.get(name, "shift" if ndim == 1 else "crop")
    needed = SPATIAL_AUGMENT.get(requested)
    if needed is not None and needed != ndim:
        kind = "1-D signals" if ndim == 1 else "2-D images"
        want = "1-D signals (N, C, L)" if needed == 1 else "2-D images (N, C, H, W)"
        raise ConfigError(f"config key data.augment: {requested!r} needs {want}, but the data are {kind} of shape "
                          f"{input_shape}")
    return requested
