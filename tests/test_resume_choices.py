"""Exact resume for every precision, layout and compile choice the project can make, each forced (issue #8).

`auto` picks per machine (an Intel Xeon picked bf16 + channels_last for mnist1d where an AMD EPYC picked fp32), so a
test that only ran what this machine's `auto` picks would let the next CPU model break resume silently. fastnet1d
runs 2-D (1, k) kernels with several input channels, so channels_last really changes its weights' strides (tiny1d's
and tiny2d's single-input-channel first convs do not, which is how the bug of #8 hid from the suite).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_resume import _cfg, _stop_after, assert_identical

from quicktrain import measure
from quicktrain.config import Config
from quicktrain.errors import Preempted, UserError
from quicktrain.loop import train
from quicktrain.state import load_optimizer_state

CHOICES = [(p, cl, "off") for p in ("fp32", "bf16", "fp16") for cl in ("off", "on")] + [("bf16", "on", "on")]


def _forced(tiny_cfg: Config, precision: str, channels_last: str, compile_: str) -> Config:
    return _cfg(tiny_cfg, **{"system.precision": precision, "system.channels_last": channels_last,
                             "system.compile": compile_, "model.name": "fastnet1d", "model.channels": (8, 16, 16)})


@pytest.mark.parametrize("precision,channels_last,compile_", CHOICES)
def test_resume_is_bitwise_for_each_forced_choice(tiny_cfg: Config, tmp_path: Path, precision: str,
                                                  channels_last: str, compile_: str) -> None:
    cfg = _forced(tiny_cfg, precision, channels_last, compile_)
    straight = train(cfg, run_dir=tmp_path / "straight", progress=False)
    assert (straight.precision, straight.channels_last, straight.compile) == (precision, channels_last == "on",
                                                                              compile_ == "on")
    with pytest.raises(Preempted):
        train(cfg, run_dir=tmp_path / "cut", progress=False, on_eval=_stop_after(2))
    logs: list[str] = []
    train(cfg, run_dir=tmp_path / "cut", progress=False, log=logs.append)
    assert any(f"precision {precision}, channels_last {channels_last == 'on'}" in m for m in logs)
    assert_identical(tmp_path / "straight", tmp_path / "cut")


def test_restored_adam_moments_take_their_parameters_layout() -> None:
    """The root cause of #8, alone: fused CPU AdamW with channels_last parameters and contiguous moments (as a
    checkpoint gives them back) applies the moments to the wrong elements; restoring the layout makes it exact."""
    def run(restore: bool | None) -> torch.Tensor:
        torch.manual_seed(0)
        p = torch.nn.Parameter(torch.randn(8, 4, 1, 5).contiguous(memory_format=torch.channels_last))
        opt = torch.optim.AdamW([p], lr=1e-2, fused=True)
        for i in range(3):
            p.grad = torch.randn(8, 4, 1, 5).contiguous(memory_format=torch.channels_last)
            opt.step()
            if i == 0 and restore is not None:  # a checkpoint round trip: state saved contiguous, loaded back
                state = opt.state_dict()
                state["state"] = {k: {n: v.contiguous() for n, v in s.items()} for k, s in state["state"].items()}
                load_optimizer_state(opt, state) if restore else opt.load_state_dict(state)
        return p.detach().clone()

    uninterrupted = run(None)
    assert torch.equal(run(True), uninterrupted)
    assert not torch.equal(run(False), uninterrupted)  # torch's own load keeps the wrong layout: the bug is real


def test_resume_on_another_machine_is_refused_unless_forced(tiny_cfg: Config, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = _cfg(tiny_cfg)
    with pytest.raises(Preempted):
        train(cfg, run_dir=tmp_path / "r", progress=False, on_eval=_stop_after(1))
    here = measure.device_name(torch.device("cpu"))
    monkeypatch.setattr(measure, "device_name", lambda device: "Other CPU [AVX2; avx2] (4 threads)")
    with pytest.raises(UserError, match=r"the machine differs: .* -> Other CPU .*precision stays fp32.*--force"):
        train(cfg, run_dir=tmp_path / "r", progress=False)
    warnings: list[str] = []
    result = train(cfg, run_dir=tmp_path / "r", progress=False, force=True, log=warnings.append)
    assert any("anyway (--force): the machine differs: " + here in w for w in warnings)
    assert result.restarts == 1


def test_result_and_report_name_precision_layout_and_cpu(tiny_cfg: Config, tmp_path: Path) -> None:
    result = train(_forced(tiny_cfg, "bf16", "on", "off"), run_dir=tmp_path / "r", progress=False)
    assert result.device == measure.device_name(torch.device("cpu"))
    assert "[" in result.device and "threads)" in result.device  # model name, kernel features, threads
    report = (tmp_path / "r" / "report.md").read_text()
    assert result.device in report and "bf16 / compile no / channels_last yes" in report
