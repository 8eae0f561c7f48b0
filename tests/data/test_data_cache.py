"""The cache directory and the atomic array writer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from quicktrain.data.cache import cache_dir, cached_arrays, load_arrays, save_arrays


def test_cache_dir_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUICKTRAIN_CACHE", str(tmp_path / "q"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "q"
    monkeypatch.delenv("QUICKTRAIN_CACHE")
    assert cache_dir() == tmp_path / "xdg" / "quicktrain"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "quicktrain"


def test_save_is_atomic_and_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "a.npz"
    save_arrays(path, {"x": np.arange(6.0).reshape(2, 3), "y": np.arange(2)})
    assert [p.name for p in path.parent.iterdir()] == ["a.npz"]  # no temp file left behind
    loaded = load_arrays(path, ("x", "y"))
    assert loaded is not None and np.array_equal(loaded["x"], np.arange(6.0).reshape(2, 3))


def test_unwritable_cache_only_warns(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.warns(UserWarning, match="could not write"):
        out = cached_arrays(blocker / "a.npz", ("x",), lambda: {"x": np.zeros(2)})
    assert np.array_equal(out["x"], np.zeros(2))


def test_corrupt_or_incomplete_files_are_rebuilt(tmp_path: Path) -> None:
    path = tmp_path / "a.npz"
    assert load_arrays(path, ("x",)) is None  # missing: silently None
    np.savez(path, z=np.zeros(2))
    with pytest.warns(UserWarning, match="regenerating"):
        assert load_arrays(path, ("x",)) is None
    with pytest.warns(UserWarning, match="inconsistent"):
        out = cached_arrays(path, ("z",), lambda: {"z": np.ones(2)}, check=lambda a: float(a["z"].sum()) > 0)
    assert np.array_equal(out["z"], np.ones(2))
    assert np.array_equal(np.load(path, allow_pickle=False)["z"], np.ones(2))
