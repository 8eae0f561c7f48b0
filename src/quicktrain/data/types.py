"""The two containers every data source ends in: `Split` (one set of examples) and `Splits` (train/val/test plus
what the rest of the library needs to know about them). Plain dataclasses of CPU tensors: the loop moves them to
the device itself, so this package never needs to know which device a run uses.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class Split:
    """Examples of one split: x float32 (N, C, L) for 1-D signals or (N, C, H, W) for images; y int64 (N,)."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return int(self.y.shape[0])


@dataclass
class Splits:
    """Train, validation and test splits of one dataset.

    The validation split decides everything (stopping, tuning); the test split only reports. `fingerprint` identifies
    the exact tensors, so a result can say which data it was measured on and a cache can tell two datasets apart.
    """

    train: Split
    val: Split
    test: Split
    num_classes: int
    name: str  # dataset name, e.g. "mnist1d"; "custom" for data passed from Python
    fingerprint: str  # sha256 hex of all split tensors and shapes (see `fingerprint`)
    augment: str  # resolved augmentation kind: none | shift | crop | crop_flip
    source: Any = None  # the DataConfig these splits were loaded from; None for data passed from Python

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one example, e.g. (1, 40) or (3, 32, 32)."""
        return tuple(self.train.x.shape[1:])

    @property
    def ndim(self) -> int:
        """Spatial dimensions: 1 for signals (N, C, L), 2 for images (N, C, H, W)."""
        return self.train.x.dim() - 2


def fingerprint(train: Split, val: Split, test: Split) -> str:
    """sha256 over shapes and bytes of train, val, test (x as float32, y as int64, in that order).

    Bytes of contiguous CPU tensors do not depend on the process, so the value is stable across runs and machines
    of the same endianness (all that torch supports).
    """
    h = hashlib.sha256()
    for split in (train, val, test):
        x = split.x.detach().to("cpu", torch.float32).contiguous()
        y = split.y.detach().to("cpu", torch.int64).contiguous()
        h.update(repr((tuple(x.shape), tuple(y.shape))).encode())
        h.update(x.numpy())  # the buffer itself: no copy of a large dataset
        h.update(y.numpy())
    return h.hexdigest()
