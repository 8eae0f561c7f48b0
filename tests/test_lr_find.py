"""The LR range test: its pure parts against closed forms, and that it leaves everything exactly as it found it."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from support import SMALL_MNIST1D

from quicktrain.config import Config, apply_overrides
from quicktrain.data import load_data
from quicktrain.loop import train
from quicktrain.lr_find import find_lr, smooth, suggest
from quicktrain.models import MODELS


def test_smooth_is_a_bias_corrected_average_and_keeps_nan() -> None:
    assert smooth([2.0, 2.0, 2.0]) == pytest.approx([2.0, 2.0, 2.0])  # no bias toward 0 at the start
    s = smooth([1.0, 3.0], beta=0.5)
    assert s[1] == pytest.approx((0.5 * 0.5 * 1.0 + 0.5 * 3.0) / (1 - 0.25))
    assert math.isnan(smooth([1.0, float("nan"), 1.0])[-1])


def test_suggest_on_a_synthetic_curve() -> None:
    lrs = [10 ** (-6 + 7 * i / 99) for i in range(100)]
    # flat, then a smooth descent centred on 1e-3 down to a minimum near 1e-2, then divergence
    loss = [2.0 - 1.5 / (1 + math.exp(-3 * (math.log10(lr) + 3))) + max(0.0, math.log10(lr) + 2) ** 2 for lr in lrs]
    rules = suggest(lrs, loss)
    assert 3e-4 < rules["steepest"] < 3e-3
    assert 5e-4 < rules["minimum/10"] < 2e-3
    assert 1e-5 < rules["valley"] < 1e-2
    with pytest.raises(ValueError):
        suggest(lrs[:2], loss[:2])


def test_find_lr_leaves_model_optimizer_and_rngs_exactly_as_they_were(tiny_cfg: Config) -> None:
    splits = load_data(SMALL_MNIST1D)
    model = MODELS["tiny1d"](splits.input_shape, splits.num_classes)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(splits.train.x[:16]).sum().backward()
    opt.step()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    grads = [p.grad.clone() for p in model.parameters()]
    opt_before = {i: {k: v.clone() for k, v in s.items()} for i, s in opt.state_dict()["state"].items()}
    random.seed(5), np.random.seed(5), torch.manual_seed(5)
    expected = (random.random(), np.random.rand(), torch.rand(2))
    random.seed(5), np.random.seed(5), torch.manual_seed(5)

    result = find_lr(tiny_cfg, model=model, data=splits)

    assert (random.random(), np.random.rand()) == expected[:2] and torch.equal(torch.rand(2), expected[2])
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), grads))
    for i, s in opt.state_dict()["state"].items():
        assert all(torch.equal(v, opt_before[i][k]) for k, v in s.items())
    assert result.steps * result.sweep_batch_size <= len(splits.train)  # at most one epoch
    assert result.low <= result.suggested_lr <= result.high and result.confidence in ("high", "medium", "low")


def test_a_diverging_sweep_stops_and_still_answers(tiny_cfg: Config) -> None:
    result = find_lr(tiny_cfg, start_lr=1e-3, end_lr=1e6)
    assert "diverged" in result.stopped or "non-finite" in result.stopped
    assert result.steps < 100 and math.isfinite(result.suggested_lr)


def test_recipe_option_runs_the_finder_first(tiny_cfg: Config) -> None:
    cfg = apply_overrides(tiny_cfg, {"optim.lr_find": True})
    logs: list[str] = []
    result = train(cfg, progress=False, log=logs.append)
    found = [m for m in logs if m.startswith("lr-find: suggested peak LR")]
    assert found and result.peak_lr == pytest.approx(float(found[0].split()[4]), rel=1e-2)
    assert result.peak_lr != tiny_cfg.optim.lr


def test_cli_lr_find_and_apply(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    from test_cli import cli, recipe

    code, out, err = cli(capsys, "lr-find", recipe(tmp_path), "--run-dir", str(tmp_path / "f"))
    assert code == 0, err
    last = json.loads(out.strip().splitlines()[-1])
    assert last["suggested_lr"] > 0 and last["seconds"] > 0 and "valley" in last["suggestions"]
    assert (tmp_path / "f" / "lr_find.png").exists()
    assert len(json.loads((tmp_path / "f" / "lr_find.json").read_text())["lrs"]) == last["steps"]
    code, out, err = cli(capsys, "lr-find", recipe(tmp_path), "--apply", "--run-dir", str(tmp_path / "g"),
                         "--no-progress")
    assert code == 0, err
    last = json.loads(out.strip().splitlines()[-1])
    assert last["peak_lr"] == pytest.approx(last["suggested_lr"]) and "test_acc" in last and last["seconds"] > 0
    code, _, err = cli(capsys, "lr-find", recipe(tmp_path), "--start-lr", "1", "--end-lr", "0.1")
    assert code == 2 and "start_lr" in err


def test_a_runs_own_sweep_stops_a_decade_past_its_minimum_with_the_full_sweeps_answer(tiny_cfg: Config) -> None:
    from quicktrain.lr_find import PAST_MIN, sweep, sweep_for_run
    from quicktrain.run import build_run

    run = build_run(apply_overrides(tiny_cfg, {"optim.name": "sgd"}))  # its minimum is well inside the sweep
    short, full = sweep_for_run(run), sweep(run)
    n = len(short.lrs)
    assert short.lrs == full.lrs[:n] and short.losses == full.losses[:n]  # the same sweep, stopped
    watched = min(range(max(1, 10), n), key=lambda i: short.smoothed[i])  # the stop rule skips the first 10 steps
    assert short.stopped.startswith("lr ") and n < len(full.lrs)
    assert short.lrs[-1] > PAST_MIN * short.lrs[watched] >= short.lrs[-2]
    m = len(full.lrs)
    full_best = min(range(m // 10, m), key=lambda i: full.smoothed[i])
    assert n // 10 <= full_best < n  # the full sweep's minimum lies before the stop: the same minimum/10
    assert short.suggested_lr == pytest.approx(full.suggested_lr, rel=1e-9)
