"""File formats: CIFAR-10 binary batches and .npz files, and every way such a file can be wrong."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from quicktrain.config import DataConfig
from quicktrain.data import load_data
from quicktrain.data.files import read_cifar_batch
from quicktrain.errors import ConfigError, DataError

RECORD = 3073


def _write_batch(path: Path, n: int, label: int | None = None, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    records = rng.integers(0, 256, (n, RECORD), dtype=np.uint8)
    records[:, 0] = rng.integers(0, 10, n) if label is None else label
    path.write_bytes(records.tobytes())


def _cifar_dir(root: Path, batches: int = 2, n: int = 20) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(1, batches + 1):
        _write_batch(root / f"data_batch_{i}.bin", n, seed=i)
    _write_batch(root / "test_batch.bin", n, seed=99)
    return root


def _cifar(path: Path, **kw: object) -> DataConfig:
    return DataConfig(name="cifar10", path=str(path), **kw)  # type: ignore[arg-type]


def test_cifar10_loads(tmp_path: Path) -> None:
    s = load_data(_cifar(_cifar_dir(tmp_path / "c")))
    assert (len(s.train), len(s.val), len(s.test)) == (36, 4, 20)
    assert s.input_shape == (3, 32, 32) and s.num_classes <= 10 and s.augment == "crop_flip" and s.name == "cifar10"
    assert torch.allclose(s.train.x.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4)  # per-channel train stats
    assert load_data(_cifar(tmp_path / "c")).fingerprint == s.fingerprint


def test_cifar10_accepts_the_parent_of_the_batches_dir(tmp_path: Path) -> None:
    _cifar_dir(tmp_path / "cifar-10-batches-bin")
    assert load_data(_cifar(tmp_path)).fingerprint == load_data(_cifar(tmp_path / "cifar-10-batches-bin")).fingerprint


def test_cifar10_records_are_channel_major(tmp_path: Path) -> None:
    record = np.concatenate([[7], np.full(1024, 10), np.full(1024, 20), np.full(1024, 30)]).astype(np.uint8)
    (tmp_path / "b.bin").write_bytes(record.tobytes() * 2)
    x, y = read_cifar_batch(tmp_path / "b.bin")
    assert x.shape == (2, 3, 32, 32) and y.tolist() == [7, 7]
    assert ([int(x[0, c].min()) for c in range(3)] == [10, 20, 30]
            and [int(x[0, c].max()) for c in range(3)] == [10, 20, 30])


def test_cifar10_truncated_file(tmp_path: Path, one_line) -> None:  # type: ignore[no-untyped-def]
    root = _cifar_dir(tmp_path / "c")
    bad = root / "data_batch_2.bin"
    bad.write_bytes(bad.read_bytes()[: 5 * RECORD + 100])  # cut mid-record
    with pytest.raises(DataError) as e:
        load_data(_cifar(root))
    one_line(e, bad, "truncated", str(5 * RECORD + 100), "3073")


def test_cifar10_empty_file(tmp_path: Path, one_line) -> None:  # type: ignore[no-untyped-def]
    root = _cifar_dir(tmp_path / "c")
    (root / "test_batch.bin").write_bytes(b"")
    with pytest.raises(DataError) as e:
        load_data(_cifar(root))
    one_line(e, root / "test_batch.bin", "0 bytes")


def test_cifar10_bad_label(tmp_path: Path, one_line) -> None:  # type: ignore[no-untyped-def]
    root = _cifar_dir(tmp_path / "c")
    _write_batch(root / "data_batch_1.bin", 20, label=11)
    with pytest.raises(DataError) as e:
        load_data(_cifar(root))
    one_line(e, root / "data_batch_1.bin", "label 11")


def test_cifar10_missing_dir(tmp_path: Path, one_line) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(DataError) as e:
        load_data(_cifar(tmp_path / "nowhere"))
    one_line(e, tmp_path / "nowhere", "does not exist")


def test_cifar10_missing_test_batch(tmp_path: Path, one_line) -> None:  # type: ignore[no-untyped-def]
    root = _cifar_dir(tmp_path / "c")
    (root / "test_batch.bin").unlink()
    with pytest.raises(DataError) as e:
        load_data(_cifar(root))
    one_line(e, root / "test_batch.bin", "not found")


def test_cifar10_no_train_batches(tmp_path: Path, one_line) -> None:  # type: ignore[no-untyped-def]
    tmp_path.joinpath("test_batch.bin").write_bytes(b"")
    with pytest.raises(DataError) as e:
        load_data(_cifar(tmp_path))
    one_line(e, tmp_path, "data_batch_1.bin", "data_batch_5.bin")


def test_file_formats_need_a_path(one_line) -> None:  # type: ignore[no-untyped-def]
    for name in ("cifar10", "npz"):
        with pytest.raises(ConfigError) as e:
            load_data(DataConfig(name=name))
        one_line(e, "data.path")


# ---------------------------------------------------------------------------------------------------------------------
# npz


def _npz(path: Path, **arrays: object) -> DataConfig:
    np.savez(path, **arrays)  # type: ignore[arg-type]
    return DataConfig(name="npz", path=str(path))


def _xy(n: int = 50, shape: tuple[int, ...] = (8, 8), classes: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, *shape)).astype(np.float32), np.arange(n) % classes


def test_npz_images(tmp_path: Path) -> None:
    x, y = _xy()
    s = load_data(_npz(tmp_path / "d.npz", x=x, y=y))
    assert (len(s.train), len(s.val), len(s.test)) == (36, 4, 10)
    assert s.input_shape == (1, 8, 8) and s.num_classes == 3 and s.augment == "crop" and s.name == "npz"
    # left as given: every split row is one of the file's rows, unchanged
    rows = {r.tobytes() for r in x}
    assert all(r.tobytes() in rows for p in (s.train, s.val, s.test) for r in p.x[:, 0].numpy())


def test_npz_signals_and_nhwc(tmp_path: Path) -> None:
    x, y = _xy(shape=(40,))
    assert load_data(_npz(tmp_path / "a.npz", x=x, y=y)).input_shape == (1, 40)
    x, y = _xy(shape=(8, 8, 3))
    s = load_data(_npz(tmp_path / "b.npz", x=x, y=y, x_test=x[:5], y_test=y[:5]))
    assert s.input_shape == (3, 8, 8)
    assert torch.equal(s.test.x, torch.from_numpy(x[:5]).permute(0, 3, 1, 2))


def test_npz_explicit_splits(tmp_path: Path) -> None:
    x, y = _xy()
    xt, yt = _xy(n=7)
    s = load_data(_npz(tmp_path / "d.npz", x=x, y=y, x_test=xt, y_test=yt))
    assert torch.equal(s.test.x[:, 0], torch.from_numpy(xt)) and torch.equal(s.test.y, torch.from_numpy(yt))
    assert (len(s.train), len(s.val)) == (45, 5)
    s = load_data(_npz(tmp_path / "e.npz", x=x, y=y, x_val=xt[:3], y_val=yt[:3], x_test=xt, y_test=yt))
    assert (len(s.train), len(s.val), len(s.test)) == (50, 3, 7)


def test_npz_missing_file(tmp_path: Path, one_line) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(DataError) as e:
        load_data(DataConfig(name="npz", path=str(tmp_path / "none.npz")))
    one_line(e, tmp_path / "none.npz", "does not exist")


@pytest.mark.parametrize("compressed", [False, True])
def test_npz_truncated(tmp_path: Path, one_line, compressed: bool) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "t.npz"
    x, y = _xy(n=500)
    (np.savez_compressed if compressed else np.savez)(path, x=x, y=y)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DataError) as e:
        load_data(DataConfig(name="npz", path=str(path)))
    one_line(e, path)


def test_npz_not_a_zip(tmp_path: Path, one_line) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "t.npz"
    path.write_text("x,y\n1,2\n")
    with pytest.raises(DataError) as e:
        load_data(DataConfig(name="npz", path=str(path)))
    one_line(e, path, "not an .npz")


class _Trap:
    """Unpickling this creates a directory: proof that a loader unpickled something."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.mkdir, (str(self.marker),)


def test_npz_object_array_is_refused_unopened(tmp_path: Path, one_line) -> None:  # type: ignore[no-untyped-def]
    marker = tmp_path / "unpickled"
    x = np.empty(3, dtype=object)
    x[:] = [_Trap(marker)] * 3
    path = tmp_path / "o.npz"
    cfg = _npz(path, x=x, y=np.arange(3))
    with pytest.raises(DataError) as e:
        load_data(cfg)
    one_line(e, path, "'x'", "pickled objects", "refusing to unpickle")
    assert not marker.exists()


def test_npz_missing_key(tmp_path: Path, one_line) -> None:  # type: ignore[no-untyped-def]
    x, y = _xy()
    with pytest.raises(DataError) as e:
        load_data(_npz(tmp_path / "k.npz", x=x, labels=y))
    one_line(e, tmp_path / "k.npz", "'y'")
    with pytest.raises(DataError) as e:
        load_data(_npz(tmp_path / "v.npz", x=x, y=y, x_val=x))
    one_line(e, tmp_path / "v.npz", "'y_val'")


@pytest.mark.parametrize("x_shape, y_shape, words", [
    ((50,), (50,), "2 to 4 dims"),
    ((50, 2, 2, 2, 2), (50,), "2 to 4 dims"),
    ((50, 8), (49,), "50 examples"),
    ((50, 8), (50, 1), "1-D"),
])
def test_npz_wrong_shapes(tmp_path: Path, one_line, x_shape, y_shape, words) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "s.npz"
    with pytest.raises(DataError) as e:
        load_data(_npz(path, x=np.zeros(x_shape, np.float32), y=np.zeros(y_shape, np.int64)))
    one_line(e, path, words)


def test_npz_split_shapes_must_agree(tmp_path: Path, one_line) -> None:  # type: ignore[no-untyped-def]
    x, y = _xy()
    with pytest.raises(DataError) as e:
        load_data(_npz(tmp_path / "m.npz", x=x, y=y, x_test=x[:, :4], y_test=y))
    one_line(e, tmp_path / "m.npz", "x_test")


def test_npz_float_labels(tmp_path: Path, one_line) -> None:  # type: ignore[no-untyped-def]
    x, y = _xy()
    with pytest.raises(DataError) as e:
        load_data(_npz(tmp_path / "f.npz", x=x, y=y.astype(np.float32)))
    one_line(e, tmp_path / "f.npz", "float32", "integers")


def test_npz_labels_out_of_range(tmp_path: Path, one_line) -> None:  # type: ignore[no-untyped-def]
    x, y = _xy(classes=4)  # labels 0..3
    path = tmp_path / "r.npz"
    np.savez(path, x=x, y=y)
    with pytest.raises(DataError) as e:
        load_data(DataConfig(name="npz", path=str(path), num_classes=3))
    one_line(e, path, "label 3 out of range [0, 3)")
    with pytest.raises(DataError) as e:
        load_data(_npz(path, x=x, y=y - 1))
    one_line(e, path, "label -1")


def test_npz_nan(tmp_path: Path, one_line) -> None:  # type: ignore[no-untyped-def]
    x, y = _xy()
    x[3, 2, 1] = np.nan
    with pytest.raises(DataError) as e:
        load_data(_npz(tmp_path / "n.npz", x=x, y=y))
    one_line(e, tmp_path / "n.npz", "NaN")


def test_npz_too_few_examples(tmp_path: Path, one_line) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(DataError) as e:
        load_data(_npz(tmp_path / "few.npz", x=np.zeros((2, 4), np.float32), y=np.zeros(2, np.int64)))
    one_line(e, tmp_path / "few.npz", "too few")


def test_npz_augment_must_fit_the_data(tmp_path: Path, one_line) -> None:  # type: ignore[no-untyped-def]
    x, y = _xy(shape=(40,))
    path = tmp_path / "a.npz"
    np.savez(path, x=x, y=y)
    with pytest.raises(ConfigError) as e:
        load_data(DataConfig(name="npz", path=str(path), augment="crop"))
    one_line(e, "data.augment", "'crop'")
    assert load_data(DataConfig(name="npz", path=str(path), augment="none")).augment == "none"
