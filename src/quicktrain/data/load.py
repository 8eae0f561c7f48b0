"""`load_data(cfg, data)`: every data source -> checked, split, normalised `Splits`.

Sources: the built-ins (mnist1d, digits, mnist5k), file formats (cifar10 directory, npz file) and data passed from
Python (a `Splits`, an (x, y) pair of tensors or arrays, or a map-style torch Dataset of (x, y) items), and data
that is streamed (quicktrain.data.stream): a Dataset that does not fit, an IterableDataset or DataLoader in a
{"train", "val", "test"} dict.

Normalisation: mnist1d as generated (make_dataset already standardises it); digits /16 and mnist5k /255, cifar10 /255,
each then standardised per channel with the train split's mean and std. npz files and data passed from Python are
left exactly as given: the user owns their preprocessing (an uint8 image stays 0..255, as float32).

Splits: where a source has no validation or test split of its own, one is held out deterministically by
`data.split_seed`: first `test_fraction` of all examples, then `val_fraction` of the rest.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from quicktrain.config import DataConfig
from quicktrain.data import builtin, files
from quicktrain.data.prepare import (
    as_x,
    as_y,
    check_pair,
    holdout,
    num_classes_of,
    resolve_augment,
    standardise,
    to_layout,
)
from quicktrain.data.stream import StreamedSplits, dataset_mb, is_stream_input, load_stream
from quicktrain.data.types import Split, Splits, fingerprint
from quicktrain.errors import ConfigError, DataError

PYTHON = "data passed from Python"
Pair = tuple[torch.Tensor, torch.Tensor]

# dataset -> (pixel scale divided out, standardise per channel with train statistics)
_NORMALISE = {"digits": (16.0, True), "mnist5k": (255.0, True), "cifar10": (255.0, True)}


def load_data(cfg: DataConfig, data: object | None = None) -> Splits | StreamedSplits:
    """The train/val/test splits described by `cfg`, or built from `data` when it is given (then named "custom").

    Shapes: x (N, L) becomes (N, 1, L); 3-D x is (N, C, L) signals for data passed from Python but (N, H, W) images
    in npz files (-> (N, 1, H, W)); 4-D x is NCHW, or NHWC when the last dim is 1 or 3 and the second is not
    (converted to NCHW). Labels must be a 1-D integer array; num_classes is `cfg.num_classes` if > 0, else the
    largest label + 1, and any label outside [0, num_classes) is an error. x must be finite.

    A Dataset is materialised into tensors (iterated once and stacked) so that training can index it on the device.
    One larger than `cfg.resident_max_mb` (as float32), or any with `cfg.stream == "on"`, is streamed instead: the
    result is then a `StreamedSplits` (quicktrain.data.stream), as it always is for an IterableDataset, a DataLoader or
    a {"train", "val", "test"} dict. `cfg.stream == "off"` refuses what does not fit, as before streaming existed.
    Errors: DataError for bad data, ConfigError for bad config, each one line naming the file or key.
    """
    if data is not None:
        return _from_python(cfg, data)
    if cfg.name == "custom":
        raise ConfigError("config key data.name: 'custom' needs data passed from Python (train(cfg, data=...))")
    if cfg.name == "mnist1d":
        a = builtin.mnist1d(cfg.mnist1d)
        arrays = {"x": a["x_train"], "y": a["y_train"], "x_val": a["x_val"], "y_val": a["y_val"],
                  "x_test": a["x_test"], "y_test": a["y_test"]}
        return _build(cfg, "mnist1d", "dataset mnist1d", arrays, images_3d=False)
    if cfg.name in ("digits", "mnist5k"):
        arrays = builtin.digits() if cfg.name == "digits" else builtin.mnist5k()
        return _build(cfg, cfg.name, f"dataset {cfg.name}", arrays, images_3d=True)
    if cfg.name in ("cifar10", "npz"):
        path = _path(cfg)
        arrays = files.read_cifar10(path) if cfg.name == "cifar10" else files.read_npz(path)
        return _build(cfg, cfg.name, f"data file {path}" if cfg.name == "npz" else f"CIFAR-10 directory {path}",
                      arrays, images_3d=True)
    raise ConfigError(f"config key data.name: unknown dataset {cfg.name!r}")


def _path(cfg: DataConfig) -> Path:
    if not cfg.path:
        what = "directory of CIFAR-10 binary batches" if cfg.name == "cifar10" else ".npz file with arrays x and y"
        raise ConfigError(f"config key data.path: data.name={cfg.name} needs a path (the {what})")
    return Path(cfg.path).expanduser()


# ---------------------------------------------------------------------------------------------------------------------
# From arrays to Splits


def _pairs(arrays: dict[str, Any], source: str, images_3d: bool) -> dict[str, Pair]:
    """Checked tensors for each present split key: "x" (always), "x_val", "x_test"."""
    out: dict[str, Pair] = {}
    for xk in ("x", "x_val", "x_test"):
        if xk in arrays:
            yk = "y" + xk[1:]
            x = to_layout(as_x(arrays[xk], source, xk), source, images_3d, xk)
            y = as_y(arrays[yk], source, yk)
            check_pair(x, y, source, xk)
            if xk != "x" and x.shape[1:] != out["x"][0].shape[1:]:
                raise DataError(f"{source}: {xk} examples have shape {tuple(x.shape[1:])} but x examples have "
                                f"{tuple(out['x'][0].shape[1:])}")
            out[xk] = (x, y)
    return out


def _split(cfg: DataConfig, pairs: dict[str, Pair], source: str) -> tuple[Pair, Pair, Pair]:
    """Train, val, test: those the source provides, the others held out of x by cfg.split_seed."""
    x, y = pairs["x"]
    if "x_test" in pairs:
        test = pairs["x_test"]
    else:
        rest, held = holdout(len(x), cfg.test_fraction, cfg.split_seed, source, "test")
        test, (x, y) = (x[held], y[held]), (x[rest], y[rest])
    if "x_val" in pairs:
        val = pairs["x_val"]
    else:
        # a different seed stream from the test cut, so the two holdouts are independent draws
        rest, held = holdout(len(x), cfg.val_fraction, cfg.split_seed + 1, source, "validation")
        val, (x, y) = (x[held], y[held]), (x[rest], y[rest])
    return (x, y), val, test


def _build(cfg: DataConfig, name: str, source: str, arrays: dict[str, Any], images_3d: bool) -> Splits:
    pairs = _pairs(arrays, source, images_3d)
    train, val, test = _split(cfg, pairs, source)
    num_classes = num_classes_of([train[1], val[1], test[1]], cfg.num_classes, source)
    if name in _NORMALISE:
        scale, per_channel = _NORMALISE[name]
        xs = [p[0] / scale for p in (train, val, test)]
        xs = standardise(*xs) if per_channel else xs
        train, val, test = ((x, p[1]) for x, p in zip(xs, (train, val, test)))
    splits = [Split(x.contiguous(), y.contiguous()) for x, y in (train, val, test)]
    ndim = splits[0].x.dim() - 2
    augment = resolve_augment(cfg.augment, name, ndim, tuple(splits[0].x.shape[1:]))
    return Splits(*splits, num_classes=num_classes, name=name, fingerprint=fingerprint(*splits), augment=augment,
                  source=cfg if name != "custom" else None)


# ---------------------------------------------------------------------------------------------------------------------
# Data passed from Python


def _from_python(cfg: DataConfig, data: object) -> Splits | StreamedSplits:
    if is_stream_input(data):  # before the Dataset case: an IterableDataset is a Dataset
        return load_stream(cfg, data)
    if isinstance(data, (Splits, StreamedSplits)):  # already loaded (tuning passes a run's splits on)
        if cfg.augment == "auto":
            return data
        # an explicit data.augment still applies (e.g. an ablation with --data.augment=none on shared data)
        return replace(data, augment=resolve_augment(cfg.augment, data.name, data.ndim, data.input_shape))
    if isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = data
    elif isinstance(data, torch.utils.data.Dataset):
        got = _materialise(data, cfg)
        if isinstance(got, StreamedSplits):
            return got
        x, y = got
    else:
        raise DataError(f"{PYTHON}: expected a Splits, an (x, y) pair of tensors or arrays, a torch Dataset of "
                        f"(x, y) items or a {{'train', 'val', 'test'}} dict; got {type(data).__name__}")
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
    if isinstance(y, torch.Tensor):
        y = y.detach().cpu()
    return _build(cfg, "custom", PYTHON, {"x": x, "y": y}, images_3d=False)


def _item(ds: Any, i: int) -> tuple[Any, Any]:
    item = ds[i]
    if not (isinstance(item, (tuple, list)) and len(item) == 2):
        raise DataError(f"{PYTHON}: Dataset item {i} is a {type(item).__name__}, expected an (x, y) pair")
    return item[0], item[1]


def _tensor(a: Any) -> torch.Tensor:
    """A CPU tensor from a tensor, array or number (a Python int label becomes an int64 scalar)."""
    return a.detach().cpu() if isinstance(a, torch.Tensor) else torch.as_tensor(np.asarray(a))


def _materialise(ds: Any, cfg: DataConfig) -> tuple[torch.Tensor, torch.Tensor] | StreamedSplits:
    """Iterate a map-style Dataset once and stack its items (the whole split then lives on the device), or stream it
    when it is larger than resident_max_mb or data.stream is on."""
    try:
        n = len(ds)
    except TypeError:
        raise DataError(f"{PYTHON}: a map-style Dataset needs len(); for an iterable pass an IterableDataset in "
                        f"data={{'train': it, 'val': ..., 'test': ...}}") from None
    if n == 0:
        raise DataError(f"{PYTHON}: the Dataset is empty")
    _item(ds, 0)  # an (x, y) pair, or a one-line error
    mb = dataset_mb(ds)
    if mb > cfg.resident_max_mb and cfg.stream == "off":
        raise DataError(f"{PYTHON}: the Dataset is about {mb:.0f} MB as float32, too large to keep on the device "
                        f"(data.resident_max_mb={cfg.resident_max_mb:g}); raise data.resident_max_mb "
                        f"or set data.stream=auto to stream it")
    if mb > cfg.resident_max_mb or cfg.stream == "on":
        return load_stream(cfg, ds)
    items = [_item(ds, i) for i in range(n)]
    try:
        x = torch.stack([_tensor(a) for a, _ in items])
        y = torch.stack([_tensor(b) for _, b in items])
    except (RuntimeError, TypeError, ValueError) as e:
        raise DataError(f"{PYTHON}: Dataset items cannot be stacked into tensors "
                        f"({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    return x, y
