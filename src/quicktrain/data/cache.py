"""Where quicktrain keeps things it can rebuild (generated datasets, measurements), and how it writes them safely.

Everything here is a cache: a missing or corrupt file is rebuilt with a warning, never an error, because a run must
not fail over something it can regenerate. Arrays are stored as .npz and read with `allow_pickle=False`, so a cache
file can never execute code.
"""

from __future__ import annotations

import hashlib
import json
import warnings
import zipfile
import zlib
from pathlib import Path
from typing import Any, Callable

import numpy as np

from quicktrain.atomic import atomic_write
from quicktrain.cache import cache_dir

FORMAT_VERSION = 1  # bump when the layout of a cached dataset changes, so old files are ignored

# What np.load can raise on a damaged file: truncated zip, bad CRC, short read, missing key, bad header.
_CORRUPT = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error)


def datasets_dir() -> Path:
    return cache_dir() / "datasets"


def cache_key(**parts: Any) -> str:
    """A short stable hash of JSON-able parts (generation arguments, package versions, format version)."""
    text = json.dumps({"format": FORMAT_VERSION, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def save_arrays(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write arrays to `path` atomically: a temp file in the same directory, fsync, then os.replace.

    A reader (another process, or this one after a crash) sees either the old file or the complete new one, never a
    half-written one. Failure to write (read-only home, full disk) only warns: the data is already in memory.
    """
    try:
        atomic_write(path, lambda f: np.savez(f, **arrays))
    except OSError as e:
        warnings.warn(f"could not write the dataset cache {path}: {e}", stacklevel=3)


def load_arrays(path: Path, keys: tuple[str, ...]) -> dict[str, np.ndarray] | None:
    """The arrays of a cache file, or None if it is missing or damaged (damaged: with a warning)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            out = {k: f[k] for k in keys}
    except _CORRUPT as e:
        warnings.warn(f"dataset cache {path} is unreadable ({type(e).__name__}: {e}); regenerating", stacklevel=3)
        return None
    return out


def cached_arrays(path: Path, keys: tuple[str, ...], build: Callable[[], dict[str, np.ndarray]],
                  check: Callable[[dict[str, np.ndarray]], bool] = lambda a: True) -> dict[str, np.ndarray]:
    """Load `keys` from the cache file at `path`, or call `build()` and store its result there.

    `check` rejects a file that reads fine but holds the wrong thing (e.g. mismatched lengths): it is rebuilt too.
    """
    arrays = load_arrays(path, keys)
    if arrays is not None and not check(arrays):
        warnings.warn(f"dataset cache {path} has inconsistent contents; regenerating", stacklevel=2)
        arrays = None
    if arrays is None:
        arrays = build()
        save_arrays(path, arrays)
    return arrays
