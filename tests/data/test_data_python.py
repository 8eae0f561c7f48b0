"""Data passed from Python: Splits, (x, y) pairs of tensors or arrays, torch Datasets; shape and label rules."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset, TensorDataset

from quicktrain.config import DataConfig
from quicktrain.data import Split, Splits, load_data
from quicktrain.data.types import fingerprint
from quicktrain.errors import ConfigError, DataError

CUSTOM = DataConfig(name="custom")
PY = "data passed from Python"


def _pair(n: int = 100, shape: tuple[int, ...] = (40,), classes: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, *shape, generator=g), torch.arange(n) % classes


def test_tensor_pair_is_split_deterministically() -> None:
    x, y = _pair()
    s = load_data(CUSTOM, (x, y))
    assert s.name == "custom" and s.input_shape == (1, 40) and s.ndim == 1 and s.augment == "shift"
    assert (len(s.train), len(s.val), len(s.test)) == (72, 8, 20) and s.num_classes == 4
    assert load_data(CUSTOM, (x, y)).fingerprint == s.fingerprint
    assert load_data(DataConfig(name="custom", split_seed=3), (x, y)).fingerprint != s.fingerprint
    # left as given: the union of the splits is the input, each example once
    got = torch.cat([s.train.x, s.val.x, s.test.x])[:, 0]
    assert sorted(map(tuple, got.tolist())) == sorted(map(tuple, x.tolist()))


def test_numpy_pair_and_layouts() -> None:
    x, y = _pair(shape=(2, 40))
    assert load_data(CUSTOM, (x.numpy(), y.numpy())).input_shape == (2, 40)  # 3-D from Python: (N, C, L)
    x, y = _pair(shape=(3, 8, 8))
    s = load_data(CUSTOM, (x.numpy(), y.numpy().astype(np.int32)))
    assert s.input_shape == (3, 8, 8) and s.augment == "crop" and s.train.y.dtype == torch.int64
    nhwc = load_data(CUSTOM, (x.permute(0, 2, 3, 1), y))  # NHWC -> NCHW
    assert nhwc.fingerprint == s.fingerprint
    x = torch.randint(0, 256, (100, 1, 8, 8), dtype=torch.uint8)  # ints become float32, values unchanged
    s = load_data(CUSTOM, (x, y))
    assert s.train.x.dtype == torch.float32 and float(s.train.x.max()) > 200


def test_torch_datasets() -> None:
    x, y = _pair(shape=(1, 40))
    s = load_data(CUSTOM, TensorDataset(x, y))
    assert s.fingerprint == load_data(CUSTOM, (x, y)).fingerprint

    class Items(Dataset):  # numpy images and Python int labels
        def __len__(self) -> int:
            return 30

        def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
            return np.full((1, 4, 4), i, np.float32), i % 3

    s = load_data(CUSTOM, Items())
    assert s.input_shape == (1, 4, 4) and s.num_classes == 3 and len(s.train) + len(s.val) + len(s.test) == 30


def test_too_large_dataset_is_refused_when_streaming_is_off(one_line) -> None:  # type: ignore[no-untyped-def]
    x, y = _pair(n=1000, shape=(1, 1000))  # about 4 MB as float32; with data.stream=auto it streams (test_stream.py)
    with pytest.raises(DataError) as e:
        load_data(DataConfig(name="custom", resident_max_mb=1.0, stream="off"), TensorDataset(x, y))
    one_line(e, PY, "too large", "data.resident_max_mb")


def test_bad_dataset_items(one_line) -> None:  # type: ignore[no-untyped-def]
    class Triples(Dataset):
        def __len__(self) -> int:
            return 5

        def __getitem__(self, i: int) -> tuple[int, int, int]:
            return i, i, i

    with pytest.raises(DataError) as e:
        load_data(CUSTOM, Triples())
    one_line(e, PY, "item 0", "(x, y)")


@pytest.mark.parametrize("labels, words", [
    (torch.arange(100) % 4 + 2, "label 5 out of range [0, 3)"),
    (torch.arange(100) % 3 - 1, "label -1 out of range [0, 3)"),
])
def test_labels_out_of_range(one_line, labels, words) -> None:  # type: ignore[no-untyped-def]
    x, _ = _pair()
    with pytest.raises(DataError) as e:
        load_data(DataConfig(name="custom", num_classes=3), (x, labels))
    one_line(e, PY, words)


@pytest.mark.parametrize("x, y, words", [
    (torch.zeros(100, 4), torch.zeros(100), "float32"),
    (torch.zeros(100, 4), torch.zeros(100, dtype=torch.bool), "bool"),
    (torch.zeros(100, 4), torch.zeros(99, dtype=torch.int64), "99"),
    (torch.zeros(100), torch.zeros(100, dtype=torch.int64), "2 to 4 dims"),
    (torch.full((100, 4), float("inf")), torch.zeros(100, dtype=torch.int64), "infinite"),
    (np.array(["a"] * 100), np.zeros(100, np.int64), "dtype"),
])
def test_bad_pairs(one_line, x, y, words) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(DataError) as e:
        load_data(CUSTOM, (x, y))
    one_line(e, PY, words)


def test_unsupported_data_type(one_line) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(DataError) as e:
        load_data(CUSTOM, {"x": 1})
    one_line(e, PY, "dict")


def test_custom_needs_data(one_line) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError) as e:
        load_data(CUSTOM)
    one_line(e, "data.name", "'custom'", "Python")


def test_splits_pass_through() -> None:
    s = load_data(CUSTOM, _pair())
    assert load_data(DataConfig(name="mnist1d"), s) is s
    off = load_data(DataConfig(augment="none"), s)  # an explicit augment (e.g. an ablation) still applies
    assert off.augment == "none" and off.train is s.train
    with pytest.raises(ConfigError, match="data.augment"):
        load_data(DataConfig(augment="crop_flip"), s)


def test_fingerprint_is_pinned_and_stable_across_processes() -> None:
    code = ("import torch; from quicktrain.data.types import Split, fingerprint; "
            "s = Split(torch.arange(24, dtype=torch.float32).view(4, 1, 6), torch.arange(4)); "
            "print(fingerprint(s, s, s))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONHASHSEED": "7"})
    s = Split(torch.arange(24, dtype=torch.float32).view(4, 1, 6), torch.arange(4))
    assert out.stdout.strip() == fingerprint(s, s, s) == PINNED
    # dtype does not matter, values do
    assert fingerprint(Split(s.x.double(), s.y.int()), s, s) == PINNED
    assert fingerprint(Split(s.x + 1, s.y), s, s) != PINNED


PINNED = "6d5d28489b1eb68b795826171e79036c777288e7c1e3b5be6a0e01ee2a36d2ed"  # changing it breaks old results' ids


def test_splits_properties() -> None:
    x = torch.zeros(10, 3, 8, 8)
    split = Split(x, torch.zeros(10, dtype=torch.int64))
    s = Splits(split, split, split, num_classes=2, name="t", fingerprint="", augment="none")
    assert len(split) == 10 and s.input_shape == (3, 8, 8) and s.ndim == 2
