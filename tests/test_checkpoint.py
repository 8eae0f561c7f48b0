"""The checkpoint format: verification before any parsing, damage detection, write failures, rotation, no pickle."""

from __future__ import annotations

import errno
import os
import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import quicktrain.checkpoint as ckpt
from quicktrain.checkpoint import (CheckpointWriteError, CorruptCheckpoint, list_checkpoints, read_checkpoint,
                                   read_latest, write_checkpoint)
from quicktrain.config import Config, apply_overrides
from quicktrain.loop import train
from quicktrain.state import flatten, restore_state, save_state, unflatten, weights_sha256


def _two_checkpoints(root: Path) -> tuple[Path, Path]:
    for step in (10, 20):
        tensors = {"w": torch.full((64, 64), float(step)), "b": torch.arange(step)}
        write_checkpoint(root, step, tensors, {"step": step, "note": "x" * 300})
    (_, newest), (_, older) = list_checkpoints(root)
    return newest, older


def test_round_trip_and_nested_state() -> None:
    state = {"opt": {"state": {0: {"step": torch.tensor(3.0)}}, "param_groups": [{"betas": (0.9, 0.99), "lr": 0.1}]},
             "np": np.random.RandomState(0).get_state(), "ints": [1, 2], "none": None}
    tensors: dict[str, torch.Tensor] = {}
    back = unflatten(flatten(state, tensors), tensors)
    assert back["opt"]["state"][0]["step"].item() == 3.0 and 0 in back["opt"]["state"]  # int keys survive
    assert back["opt"]["param_groups"][0]["betas"] == (0.9, 0.99)  # tuples survive
    assert back["np"][1].dtype == np.uint32 and np.array_equal(back["np"][1], state["np"][1])
    assert back["ints"] == [1, 2] and back["none"] is None


def test_every_truncation_and_byte_flip_is_detected_before_parsing(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    newest, older = _two_checkpoints(tmp_path)
    parsed: list[int] = []
    real_load = ckpt.st_load
    monkeypatch.setattr(ckpt, "st_load", lambda data: parsed.append(len(data)) or real_load(data))
    rng = random.Random(0)
    originals = {p.name: p.read_bytes() for p in newest.iterdir()}
    cases = 0
    for name, data in originals.items():
        cuts = sorted({0, 1, len(data) - 1, *rng.sample(range(len(data)), min(40, len(data)))})
        damaged = [data[:cut] for cut in cuts]
        for _ in range(40):
            i = rng.randrange(len(data))
            damaged.append(data[:i] + bytes([data[i] ^ (1 << rng.randrange(8))]) + data[i + 1:])
        for bad in damaged:
            (newest / name).write_bytes(bad)
            parsed.clear()
            warnings: list[str] = []
            path, tensors, meta = read_latest(tmp_path, warnings.append)
            assert path == older and meta["step"] == 10  # fell back
            assert len(warnings) == 1 and name in warnings[0]  # the warning names the damaged file
            assert parsed == [len((older / ckpt.TENSORS).read_bytes())]  # only the good checkpoint was parsed
            cases += 1
        (newest / name).write_bytes(data)
    assert cases >= 3 * 80
    assert read_latest(tmp_path, lambda m: None)[0] == newest  # restored: the newest is good again


def test_no_valid_checkpoint_is_an_error_naming_it(tmp_path: Path) -> None:
    newest, older = _two_checkpoints(tmp_path)
    for path in (newest, older):
        (path / ckpt.META).write_bytes(b"{}")
    with pytest.raises(CorruptCheckpoint, match=f"no valid checkpoint in {tmp_path}"):
        read_latest(tmp_path, lambda m: None)
    assert read_latest(tmp_path / "empty", lambda m: None) is None


class _FailingFile:
    """A file whose writes fail with ENOSPC after half the data, like a disk that fills up mid-checkpoint."""

    def __init__(self, real):  # type: ignore[no-untyped-def]
        self.real = real

    def write(self, data: bytes) -> int:
        self.real.write(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    def __getattr__(self, name):  # type: ignore[no-untyped-def]
        return getattr(self.real, name)

    def __enter__(self):  # type: ignore[no-untyped-def]
        return self

    def __exit__(self, *exc):  # type: ignore[no-untyped-def]
        self.real.close()


@pytest.mark.parametrize("failure", ["enospc", "read-only"])
def test_write_failure_leaves_the_previous_checkpoint_and_no_temp_files(tmp_path: Path, monkeypatch,  # type: ignore[no-untyped-def]
                                                                        failure: str) -> None:
    newest, _ = _two_checkpoints(tmp_path)
    if failure == "enospc":
        real_fdopen = os.fdopen
        monkeypatch.setattr(ckpt.os, "fdopen", lambda fd, mode: _FailingFile(real_fdopen(fd, mode)))
    else:
        real_open = os.open

        def read_only(path, flags, mode=0o777, **kwargs):  # type: ignore[no-untyped-def]
            if flags & (os.O_WRONLY | os.O_RDWR):
                raise OSError(errno.EROFS, "Read-only file system")
            return real_open(path, flags, mode, **kwargs)

        def no_mkdir(path, mode=0o777, **kwargs):  # type: ignore[no-untyped-def]
            raise OSError(errno.EROFS, "Read-only file system")

        monkeypatch.setattr(os, "open", read_only)
        monkeypatch.setattr(os, "mkdir", no_mkdir)
    with pytest.raises(CheckpointWriteError,
                       match=r"could not write checkpoint .*step-000000030.*previous checkpoint is intact"):
        write_checkpoint(tmp_path, 30, {"w": torch.ones(3)}, {"step": 30})
    monkeypatch.undo()
    assert [s for s, _ in list_checkpoints(tmp_path)] == [20, 10]
    assert read_latest(tmp_path, lambda m: None)[0] == newest
    assert not list(tmp_path.rglob("*.tmp"))


def test_a_failing_checkpoint_stops_the_run_without_reporting_success(tiny_cfg: Config, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                                      monkeypatch) -> None:
    cfg = apply_overrides(tiny_cfg, {"checkpoint.every_steps": 2, "checkpoint.every_seconds": 0.0, "train.epochs": 1.0})
    calls = [0]
    real = ckpt._write_file

    def fail_third_checkpoint(directory, name, data):  # type: ignore[no-untyped-def]
        calls[0] += name == ckpt.TENSORS
        if calls[0] == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(directory, name, data)

    monkeypatch.setattr(ckpt, "_write_file", fail_third_checkpoint)
    with pytest.raises(CheckpointWriteError, match="No space left on device"):
        train(cfg, run_dir=tmp_path / "r", progress=False)
    monkeypatch.undo()
    assert not (tmp_path / "r" / "result.json").exists() and not (tmp_path / "r" / "report.md").exists()
    assert [s for s, _ in list_checkpoints(tmp_path / "r" / "checkpoints")] == [4, 2]
    assert not list((tmp_path / "r").rglob("*.tmp"))


def test_rotation_keeps_the_newest_and_ignores_uncommitted(tmp_path: Path) -> None:
    for step in range(1, 6):
        write_checkpoint(tmp_path, step, {"w": torch.ones(2) * step}, {"step": step}, keep=2)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [5, 4]
    # a crash between writing step 6's files and its manifest leaves an uncommitted directory: it does not exist
    partial = ckpt.checkpoint_dir(tmp_path, 6)
    partial.mkdir()
    (partial / ckpt.TENSORS).write_bytes(b"half")
    warnings: list[str] = []
    path, _, meta = read_latest(tmp_path, warnings.append)
    assert meta["step"] == 5 and "an interrupted write" in warnings[0]
    write_checkpoint(tmp_path, 7, {"w": torch.ones(2)}, {"step": 7}, keep=2)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [7, 5]  # the partial one was cleaned up


class _Payload:
    def __init__(self, sentinel: Path) -> None:
        self.sentinel = sentinel

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.makedirs, (str(self.sentinel),))


def test_a_malicious_pickle_is_never_unpickled(tmp_path: Path, tiny_cfg: Config) -> None:
    sentinel = tmp_path / "PWNED"
    payload = pickle.dumps(_Payload(sentinel))
    root = tmp_path / "run" / "checkpoints"
    newest, _ = _two_checkpoints(root)
    # 1) in place of the tensors file, with a manifest forged to match it, so the checksums pass
    (newest / ckpt.TENSORS).write_bytes(payload)
    meta = (newest / ckpt.META).read_bytes()
    files = {ckpt.TENSORS: ckpt._write_file(newest, ckpt.TENSORS, payload),
             ckpt.META: ckpt._write_file(newest, ckpt.META, meta)}
    ckpt._write_file(newest, ckpt.MANIFEST, ckpt._manifest_bytes({"format": ckpt.FORMAT, "step": 20, "files": files}))
    with pytest.raises(CorruptCheckpoint, match="passed its checksums but does not parse"):
        read_checkpoint(newest)
    # 2) as the files a torch-based tool would have written
    for name in ("checkpoint.pt", "model.pth", "last.ckpt"):
        (root / name).write_bytes(payload)
    warnings: list[str] = []
    path, _, meta_ = read_latest(root, warnings.append)
    assert meta_["step"] == 10 and not sentinel.exists()


def test_no_unpickling_anywhere_in_the_package() -> None:
    src = Path(__file__).parent.parent / "src" / "quicktrain"
    for path in src.rglob("*.py"):
        text = path.read_text()
        assert "pickle.load" not in text and "weights_only=False" not in text, path
        for line in text.splitlines():
            if "torch.load(" in line:
                assert "weights_only=True" in line, f"{path}: {line}"


def test_save_state_and_restore_state_for_your_own_loop(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    for _ in range(3):
        model(torch.randn(16, 4)).sum().backward()
        opt.step()
        opt.zero_grad()
    save_state(tmp_path, 3, model=model, optimizer=opt, extra={"epoch": 1, "best": 0.5, "curve": [1.0, 2.0]})
    expected_next = torch.rand(3)  # the RNG stream right after the save

    other = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 2))
    other_opt = torch.optim.AdamW(other.parameters(), lr=0.1)
    torch.manual_seed(99)
    restored = restore_state(tmp_path, model=other, optimizer=other_opt)
    assert restored == {"step": 3, "extra": {"epoch": 1, "best": 0.5, "curve": [1.0, 2.0]}}
    assert weights_sha256(other) == weights_sha256(model)
    assert torch.equal(torch.rand(3), expected_next)  # the RNGs were restored too
    for a, b in zip(opt.state_dict()["state"].values(), other_opt.state_dict()["state"].values()):
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert restore_state(tmp_path / "nothing", model=other) is None
