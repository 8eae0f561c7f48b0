"""Readers for data files: CIFAR-10's binary batches and .npz files. They return raw numpy arrays.

Both formats are parsed without unpickling anything: CIFAR-10 from its *binary* version (fixed-size records read with
numpy), .npz with `allow_pickle=False`. Every problem with a file becomes a one-line DataError naming that file;
no numpy, zipfile or OS traceback reaches the user.
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import numpy as np

from quicktrain.errors import DataError

CIFAR_RECORD = 1 + 3 * 32 * 32  # one label byte, then 3072 pixel bytes, channel-major (R plane, G plane, B plane)
CIFAR_TRAIN = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
CIFAR_TEST = "test_batch.bin"
CIFAR_SUBDIR = "cifar-10-batches-bin"  # what the official tarball unpacks to

NPZ_PAIRS = (("x", "y"), ("x_val", "y_val"), ("x_test", "y_test"))
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a zip with entries, an empty zip


# ---------------------------------------------------------------------------------------------------------------------
# CIFAR-10, binary version


def _cifar_dir(path: Path) -> Path:
    if not path.is_dir():
        raise DataError(f"CIFAR-10 directory {path} does not exist (set data.path to the directory of the binary "
                        f"batches, {CIFAR_SUBDIR})")
    return path / CIFAR_SUBDIR if (path / CIFAR_SUBDIR).is_dir() else path


def read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One binary batch file -> x (N, 3, 32, 32) uint8, y (N,) int64."""
    try:
        raw = np.fromfile(path, dtype=np.uint8)
    except OSError as e:
        raise DataError(f"data file {path}: cannot read ({e.strerror or e})") from None
    if raw.size == 0 or raw.size % CIFAR_RECORD:
        raise DataError(f"data file {path}: truncated or not CIFAR-10 binary: {raw.size} bytes is not a positive "
                        f"multiple of {CIFAR_RECORD}")
    records = raw.reshape(-1, CIFAR_RECORD)
    y = records[:, 0].astype(np.int64)
    if y.max() >= 10:
        raise DataError(f"data file {path}: label {int(y.max())} out of range [0, 10) (not CIFAR-10 binary?)")
    return records[:, 1:].reshape(-1, 3, 32, 32), y


def read_cifar10(path: Path) -> dict[str, np.ndarray]:
    """All data_batch_*.bin present (sorted) as the training part, test_batch.bin as the test split."""
    folder = _cifar_dir(path)
    train_files = sorted(folder.glob("data_batch_*.bin"))
    if not train_files:
        raise DataError(f"CIFAR-10 directory {folder}: no training batches found (expected "
                        f"{', '.join(CIFAR_TRAIN)})")
    if not (folder / CIFAR_TEST).is_file():
        raise DataError(f"CIFAR-10 directory {folder}: test batch {folder / CIFAR_TEST} not found")
    parts = [read_cifar_batch(f) for f in train_files]
    x_test, y_test = read_cifar_batch(folder / CIFAR_TEST)
    return {"x": np.concatenate([p[0] for p in parts]), "y": np.concatenate([p[1] for p in parts]),
            "x_test": x_test, "y_test": y_test}


# ---------------------------------------------------------------------------------------------------------------------
# .npz


def _check_zip(path: Path) -> None:
    """Reject what np.load would mishandle: a missing file, a directory, a non-zip file (which np.load would try to
    read as a pickle or a single .npy array)."""
    if not path.exists():
        raise DataError(f"data file {path} does not exist")
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as e:
        raise DataError(f"data file {path}: cannot read ({e.strerror or e})") from None
    if head not in _ZIP_MAGIC:
        raise DataError(f"data file {path}: not an .npz file (no zip header)")


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _read_key(f: np.lib.npyio.NpzFile, path: Path, key: str) -> np.ndarray:
    try:
        return f[key]
    except ValueError as e:
        if "pickle" in str(e):
            raise DataError(f"data file {path}: array {key!r} contains pickled objects; refusing to unpickle "
                            f"(store numeric arrays)") from None
        raise DataError(f"data file {path}: array {key!r} is unreadable ({_first_line(e)})") from None
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise DataError(f"data file {path}: array {key!r} is truncated or corrupt ({type(e).__name__})") from None


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """Keys x and y (required), x_val/y_val and x_test/y_test (optional, each pair complete or absent)."""
    _check_zip(path)
    try:
        f = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise DataError(f"data file {path}: not a valid .npz file, truncated or corrupt ({type(e).__name__})") from None
    with f:
        keys = set(f.files)
        out: dict[str, np.ndarray] = {}
        for xk, yk in NPZ_PAIRS:
            present = [k for k in (xk, yk) if k in keys]
            if xk == "x" or present:
                for k in (xk, yk):
                    if k not in keys:
                        raise DataError(f"data file {path}: missing array {k!r} "
                                        f"(found: {', '.join(map(repr, sorted(keys))) or 'none'})")
                    out[k] = _read_key(f, path, k)
    return out
