"""The gradient noise scale (quicktrain.noise): the two-batch estimators are unbiased, B_simple agrees with one
computed from exact per-example gradients, measuring leaves the run as it was, the noise-driven batch ramp is
monotone and resumes bit for bit, and `quicktrain noise-scale` reports, plots and recommends."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn

from test_resume import _stop_after, assert_identical

from quicktrain import train
from quicktrain.cli import main
from quicktrain.config import Config, apply_overrides
from quicktrain.errors import ConfigError, Preempted
from quicktrain.memory.backoff import snapshot
from quicktrain.noise import NoiseScale, estimate, half_batch_sq_norm, sq_norm
from quicktrain.noise_scale import recommend
from quicktrain.precision import Precision

CPU = torch.device("cpu")


def test_the_two_batch_estimators_are_unbiased() -> None:
    # per-example "gradients" g_i = G + e_i, e_i ~ N(0, diag(s^2)): |G|^2 and tr(Sigma) are known exactly
    gen = torch.Generator().manual_seed(0)
    G, s = torch.tensor([1.0, -2.0, 0.5, 0.0]), torch.tensor([3.0, 1.0, 2.0, 0.5])
    b, B, trials = 8, 32, 20000
    g = G + s * torch.randn(trials, B, 4, generator=gen, dtype=torch.float64)
    small = g[:, :b].mean(1).pow(2).sum(1)
    big = g.mean(1).pow(2).sum(1)
    g2, trace = estimate(small.mean().item(), big.mean().item(), b, B)  # the estimators are linear: mean of them
    assert g2 == pytest.approx(float(G.pow(2).sum()), rel=0.03)
    assert trace == pytest.approx(float(s.pow(2).sum()), rel=0.03)
    with pytest.raises(ValueError):
        estimate(1.0, 1.0, 8, 8)


def test_smoothing_ratio_state_and_the_ramp_batch() -> None:
    n = NoiseScale(decay=0.9)
    assert n.b_simple is None and n.batch_for(16, 256, 2) == 16
    n.update(g_small_sq=3.0, g_big_sq=1.5, b_small=2, b_big=4)  # |G|^2 = 0, tr = 6: no ratio yet
    assert n.b_simple is None
    for _ in range(50):
        n.update(g_small_sq=5.0, g_big_sq=3.0, b_small=2, b_big=4)  # |G|^2 = 1, tr = 8
    # the first measurement (|G|^2 0, tr 6) still weighs 0.9^50 in both averages: (8 - 2w) / (1 - w) > 8
    assert 8.0 < n.b_simple < 8.01
    twin = NoiseScale()
    twin.load_state_dict(json.loads(json.dumps(n.state_dict())))
    assert twin.state_dict() == n.state_dict() and twin.b_simple == n.b_simple
    n.peak = 100.7
    assert n.batch_for(16, 256, 4) == 100 and n.batch_for(16, 64, 4) == 64 and n.batch_for(16, 256, 3) == 99
    n.update(g_small_sq=5.0, g_big_sq=4.9, b_small=2, b_big=4)
    assert n.peak == 100.7  # the ramp never goes down


def _bn_dropout_net() -> nn.Module:
    return nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 3))


def test_the_half_batch_probe_leaves_gradients_buffers_and_rng_as_they_were() -> None:
    torch.manual_seed(0)
    model, ce = _bn_dropout_net(), nn.functional.cross_entropy
    x, y = torch.randn(32, 6), torch.randint(0, 3, (32,))
    ce(model(x), y).backward()
    grads = [p.grad.clone() for p in model.parameters()]
    buffers = [b.clone() for b in model.buffers()]
    rng = torch.get_rng_state()
    value = half_batch_sq_norm(model, Precision("fp32", CPU), ce, x, y, 16)
    assert all(torch.equal(g, p.grad) for g, p in zip(grads, model.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(buffers, model.buffers()))
    assert torch.equal(rng, torch.get_rng_state())
    snap = snapshot(model)  # the same computation by hand, from the same RNG state
    direct = torch.autograd.grad(ce(model(x[:16]), y[:16]), list(model.parameters()))
    from quicktrain.memory.backoff import restore

    restore(snap)
    assert value == pytest.approx(sq_norm(direct), rel=1e-6)


def test_b_simple_agrees_with_exact_per_example_gradients() -> None:
    """A linear softmax classifier at fixed weights on 4096 examples: tr(Sigma) and |G|^2 from every per-example
    gradient, against the estimator fed with random batches of 64 (half-batch probe, as a run does)."""
    torch.manual_seed(0)
    n, d, k = 4096, 10, 4
    x = torch.randn(n, d, dtype=torch.float64)
    y = (x[:, :k].argmax(1) + (torch.rand(n) < 0.3).long()) % k  # learnable with label noise
    model = nn.Linear(d, k).double()
    ce = nn.functional.cross_entropy
    per = torch.stack([torch.cat([g.flatten() for g in torch.autograd.grad(ce(model(x[i:i + 1]), y[i:i + 1]),
                                                                            list(model.parameters()))])
                       for i in range(n)])
    G = per.mean(0)
    exact = float(per.var(0, unbiased=False).sum() / G.pow(2).sum())
    noise, prec, gen = NoiseScale(decay=0.995), Precision("fp32", CPU), torch.Generator().manual_seed(1)
    for _ in range(600):
        idx = torch.randperm(n, generator=gen)[:64]
        xb, yb = x[idx], y[idx]
        big = sq_norm(torch.autograd.grad(ce(model(xb), yb), list(model.parameters())))
        noise.update(half_batch_sq_norm(model, prec, ce, xb, yb, 32), big, 32, 64)
    assert 1 < exact < 1000
    assert noise.b_simple == pytest.approx(exact, rel=0.2)


def test_measuring_does_not_change_the_run(tiny_cfg: Config) -> None:
    plain = train(tiny_cfg, progress=False)
    measured = train(apply_overrides(tiny_cfg, {"noise.every": 1}), progress=False)
    assert measured.weights_sha256 == plain.weights_sha256
    assert [m["val_loss"] for m in measured.metrics] == [m["val_loss"] for m in plain.metrics]
    assert measured.noise["measurements"] == measured.steps and len(measured.noise_history) == measured.steps
    assert plain.noise == {} and "noise_history" not in measured.to_json()
    h = measured.noise_history[-1]
    assert h["b_small"] == 16 and h["b_big"] == 32 and h["step"] == measured.steps


def _ramp(cfg: Config) -> Config:
    return apply_overrides(cfg, {"noise.every": 1, "schedule.batch_ramp": "noise", "schedule.batch_ramp_from": 8,
                                 "train.epochs": 2.0})


def test_the_noise_driven_ramp_starts_small_never_shrinks_and_counts_its_flops(tiny_cfg: Config) -> None:
    fixed = train(tiny_cfg, progress=False)
    ramp = train(_ramp(tiny_cfg), progress=False)
    sizes = [m["batch_size"] for m in ramp.metrics]
    assert sizes == sorted(sizes) and all(8 <= s <= 32 for s in sizes)
    assert ramp.steps > ramp.samples / 32  # some steps ran below the final batch
    # FLOPs are replayed from the recorded measurements: linear in examples, so per example they match a fixed run
    assert ramp.flops / ramp.samples == pytest.approx(fixed.flops / fixed.samples, rel=1e-9)


def test_a_noise_driven_ramp_resumes_bit_for_bit(tiny_cfg: Config, tmp_path: Path) -> None:
    cfg = replace(_ramp(tiny_cfg), checkpoint=replace(tiny_cfg.checkpoint, every_seconds=0))
    train(cfg, run_dir=tmp_path / "straight", progress=False)
    with pytest.raises(Preempted):
        train(cfg, run_dir=tmp_path / "cut", progress=False, on_eval=_stop_after(3))
    train(cfg, run_dir=tmp_path / "cut", progress=False)
    assert_identical(tmp_path / "straight", tmp_path / "cut")


@pytest.mark.parametrize("overrides, key", [
    ({"schedule.batch_ramp": "noise", "schedule.batch_ramp_from": 8}, "noise.every"),
    ({"schedule.batch_ramp": "noise", "noise.every": 2}, "schedule.batch_ramp_from"),
    ({"schedule.batch_ramp": "noise", "noise.every": 2, "schedule.batch_ramp_from": 8, "schedule.kind": "wsd"},
     "schedule.kind"),
    ({"noise.decay": 1.0}, "noise.decay"),
])
def test_bad_noise_settings_name_the_key(tiny_cfg: Config, overrides: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=f"config key {key}"):
        apply_overrides(tiny_cfg, overrides)


def test_recommend_rounds_to_a_power_of_two() -> None:
    assert recommend(173.4) == 128 and recommend(190) == 256 and recommend(0.3) == 1
    assert recommend(None) is None and recommend(-5.0) is None and recommend(math.nan) is None


def test_the_noise_scale_command_reports_plots_and_recommends(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "noise"
    code = main(["noise-scale", "mnist1d", "--every", "2", "--out", str(out), "--no-progress",
                 "--data.mnist1d.num_samples=1000", "--train.epochs=2", "--train.batch_size=32", "--adapt.mode=off",
                 "--system.precision=fp32", "--system.compile=off", "--system.channels_last=off"])
    assert code == 0
    lines = capsys.readouterr().out.strip().splitlines()
    summary = json.loads(lines[-1])
    assert "recommended batch size" in lines[-2] and summary["measurements"] > 5
    rec = summary["recommended_batch_size"]
    assert rec is None or rec == recommend(summary["b_simple"])
    assert (out / "noise.png").stat().st_size > 1000
    saved = json.loads((out / "noise.json").read_text())
    assert len(saved["history"]) == summary["measurements"]
    assert main(["noise-scale", "--every", "0"]) == 2


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_the_probe_unscales_under_mixed_precision(precision: str) -> None:
    """Under fp16 the gradient is scaled by the grad scaler (65536 at the start): the probe divides it back out."""
    torch.manual_seed(0)
    model, ce = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3)), nn.functional.cross_entropy
    x, y = torch.randn(32, 6), torch.randint(0, 3, (32,))
    reference = half_batch_sq_norm(model, Precision("fp32", CPU), ce, x, y, 16)
    mixed = half_batch_sq_norm(model, Precision(precision, CPU), ce, x, y, 16)
    assert mixed == pytest.approx(reference, rel=0.05)
