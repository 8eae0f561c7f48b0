"""Exact resume, in-process: a run stopped by a signal and resumed equals an uninterrupted one, bit for bit."""

from __future__ import annotations

import json
import os
import signal
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from quicktrain.checkpoint import list_checkpoints, read_checkpoint
from quicktrain.config import Config, apply_overrides
from quicktrain.errors import Preempted, UserError
from quicktrain.loop import train

CLOCKS = ("train_seconds", "wall_seconds")


def _cfg(tiny_cfg: Config, **overrides: object) -> Config:
    base = {"train.epochs": 2.0, "train.eval_every": 0.25, "checkpoint.every_steps": 7, "checkpoint.every_seconds": 0.0,
            "methods.ema": 0.9, "data.augment": "shift", "methods.label_smoothing": 0.1}
    return apply_overrides(tiny_cfg, {**base, **overrides})


def final_state(run_dir: Path) -> dict[str, torch.Tensor]:
    step, path = list_checkpoints(run_dir / "checkpoints")[0]
    tensors, _ = read_checkpoint(path)
    return tensors


def metrics_without_clocks(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in CLOCKS} for r in rows]


def assert_identical(a: Path, b: Path) -> None:
    ta, tb = final_state(a), final_state(b)
    assert ta.keys() == tb.keys()
    for key in ta:
        if key.startswith("/rng") or key.startswith("/pending"):
            continue
        assert torch.equal(ta[key], tb[key]), key  # model, optimizer, EMA, data cursor, scaler: bitwise
    assert metrics_without_clocks(a) == metrics_without_clocks(b)
    ra, rb = (json.loads((d / "result.json").read_text()) for d in (a, b))
    assert ra["weights_sha256"] == rb["weights_sha256"] and ra["steps"] == rb["steps"]


def _stop_after(n_checks: int, sig: int = signal.SIGUSR1):  # type: ignore[no-untyped-def]
    seen = []

    def on_eval(record: dict) -> None:
        seen.append(record)
        if len(seen) == n_checks:
            os.kill(os.getpid(), sig)  # like a spot notice: the handler sets a flag, the loop saves and stops

    return on_eval


@pytest.mark.parametrize("stop_at", [1, 3])
def test_signal_then_resume_equals_uninterrupted(tiny_cfg: Config, tmp_path: Path, stop_at: int) -> None:
    cfg = _cfg(tiny_cfg)
    train(cfg, run_dir=tmp_path / "straight", progress=False)
    with pytest.raises(Preempted, match="SIGUSR1: checkpointed at step"):
        train(cfg, run_dir=tmp_path / "cut", progress=False, on_eval=_stop_after(stop_at))
    assert not (tmp_path / "cut" / "result.json").exists()
    logs: list[str] = []
    result = train(cfg, run_dir=tmp_path / "cut", progress=False, log=logs.append)
    assert any("resumed from" in m for m in logs)
    assert result.restarts == 1 and result.seconds_lost_to_restarts >= 0
    assert_identical(tmp_path / "straight", tmp_path / "cut")


class _SignalAt(torch.nn.Module):
    """tiny1d that sends SIGUSR1 from inside its `at`-th training forward of a full batch: the signal lands inside
    a step, and the loop sees it at that step's boundary."""

    def __init__(self, at: int | None, batch: int) -> None:
        super().__init__()
        from quicktrain.models.conv1d import tiny1d

        self.inner, self.at, self.batch, self.n = tiny1d((1, 40), 10), at, batch, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and len(x) == self.batch:
            self.n += 1
            if self.n == self.at:
                os.kill(os.getpid(), signal.SIGUSR1)
        return self.inner(x)


@pytest.mark.parametrize("at", [7, 8])  # 7: the step after which a check is due (regression: resumed a step late)
def test_signal_in_the_step_before_a_check_resumes_with_that_check(tiny_cfg: Config, tmp_path: Path, at: int) -> None:
    cfg = _cfg(tiny_cfg, **{"checkpoint.every_steps": 0})  # checks every 200 samples: after step 7 of 32
    torch.manual_seed(0)
    train(cfg, _SignalAt(None, 32), run_dir=tmp_path / "straight", progress=False)
    torch.manual_seed(0)
    with pytest.raises(Preempted, match="checkpointed at step"):
        train(cfg, _SignalAt(at, 32), run_dir=tmp_path / "cut", progress=False)
    torch.manual_seed(0)
    train(cfg, _SignalAt(None, 32), run_dir=tmp_path / "cut", progress=False)
    assert_identical(tmp_path / "straight", tmp_path / "cut")


def test_sigterm_and_sigint_checkpoint_too_and_handlers_are_restored(tiny_cfg: Config, tmp_path: Path) -> None:
    cfg = _cfg(tiny_cfg)
    before = signal.getsignal(signal.SIGTERM)
    for sig in (signal.SIGTERM, signal.SIGINT):
        with pytest.raises(Preempted, match=signal.Signals(sig).name):
            train(cfg, run_dir=tmp_path / sig.name, progress=False, on_eval=_stop_after(1, sig))
        assert list_checkpoints(tmp_path / sig.name / "checkpoints")
    assert signal.getsignal(signal.SIGTERM) is before


def test_different_config_is_refused_unless_forced(tiny_cfg: Config, tmp_path: Path) -> None:
    cfg = _cfg(tiny_cfg)
    with pytest.raises(Preempted):
        train(cfg, run_dir=tmp_path / "r", progress=False, on_eval=_stop_after(1))
    changed = apply_overrides(cfg, {"optim.lr": 0.02})
    with pytest.raises(UserError, match=r"cannot resume .*config differs: optim.lr 0.01 -> 0.02 \(use --force"):
        train(changed, run_dir=tmp_path / "r", progress=False)
    warnings: list[str] = []
    result = train(changed, run_dir=tmp_path / "r", progress=False, force=True, log=warnings.append)
    assert result.restarts == 1 and any("anyway (--force)" in w for w in warnings)
    # changing only how often to checkpoint is not a different run
    with pytest.raises(Preempted):
        train(cfg, run_dir=tmp_path / "s", progress=False, on_eval=_stop_after(1))
    train(apply_overrides(cfg, {"checkpoint.every_steps": 3}), run_dir=tmp_path / "s", progress=False)


def test_different_dataset_or_torch_is_refused(tiny_cfg: Config, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = _cfg(tiny_cfg)
    with pytest.raises(Preempted):
        train(cfg, run_dir=tmp_path / "r", progress=False, on_eval=_stop_after(1))
    other_data = replace(cfg, data=replace(cfg.data, mnist1d=replace(cfg.data.mnist1d, seed=7)))
    with pytest.raises(UserError, match="the dataset differs"):
        train(other_data, run_dir=tmp_path / "r", progress=False)
    monkeypatch.setattr(torch, "__version__", "9.9.9")
    with pytest.raises(UserError, match=r"torch .* -> 9.9.9"):
        train(cfg, run_dir=tmp_path / "r", progress=False)


def test_damaged_newest_checkpoint_warns_and_falls_back(tiny_cfg: Config, tmp_path: Path) -> None:
    cfg = _cfg(tiny_cfg, **{"checkpoint.keep": 3})
    train(cfg, run_dir=tmp_path / "straight", progress=False)
    with pytest.raises(Preempted):
        train(cfg, run_dir=tmp_path / "cut", progress=False, on_eval=_stop_after(3))
    (_, newest), (older_step, _) = list_checkpoints(tmp_path / "cut" / "checkpoints")[:2]
    data = (newest / "tensors.safetensors").read_bytes()
    (newest / "tensors.safetensors").write_bytes(data[: len(data) // 2])
    logs: list[str] = []
    result = train(cfg, run_dir=tmp_path / "cut", progress=False, log=logs.append)
    assert any(str(newest / "tensors.safetensors") in m and "falling back" in m for m in logs)
    assert any(f"at step {older_step}" in m for m in logs)
    assert result.restarts == 1
    assert_identical(tmp_path / "straight", tmp_path / "cut")


def test_finished_run_and_busy_run_dir_are_errors(tiny_cfg: Config, tmp_path: Path) -> None:
    cfg = _cfg(tiny_cfg)
    train(cfg, run_dir=tmp_path / "r", progress=False)
    with pytest.raises(UserError, match="holds a finished run"):
        train(cfg, run_dir=tmp_path / "r", progress=False)
    from quicktrain.rundir import _lock

    fd = _lock(tmp_path / "busy.lock")
    try:
        (tmp_path / "busy").mkdir()
        os.replace(tmp_path / "busy.lock", tmp_path / "busy" / ".lock")
        with pytest.raises(UserError, match="in use by another quicktrain process"):
            train(cfg, run_dir=tmp_path / "busy", progress=False)
    finally:
        os.close(fd)
