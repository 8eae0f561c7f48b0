"""Defaults that transfer (issue #13): a recipe used on a model or data it was not tuned for adapts, says so, and
records why; warmup-stable-decay; the never-worse-than-plain guard; exact resume of an adaptive run."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from support import SMALL_MNIST1D
from test_resume import _stop_after, assert_identical, final_state
from torch import nn

from quicktrain.adapt import adapted, epochs_to_target, guard_notes, lr_test_pays, peak_from_test, untuned
from quicktrain.config import Config, Mnist1dArgs, apply_overrides
from quicktrain.data import load_data
from quicktrain.errors import ConfigError, Preempted
from quicktrain.loop import train
from quicktrain.recipes import load_recipe
from quicktrain.schedules import make_schedule


def _mlp(features: int = 16, classes: int = 4) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(features, 64), nn.ReLU(), nn.Linear(64, classes))


def _blobs(n: int = 1200, features: int = 16, classes: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """A generated task a small MLP learns to > 90% in a few epochs."""
    g = torch.Generator().manual_seed(0)
    centers = 2.0 * torch.randn(classes, features, generator=g)
    y = torch.randint(0, classes, (n,), generator=g)
    return centers[y] + torch.randn(n, features, generator=g), y


def test_a_recipe_on_its_own_model_and_data_keeps_its_constants() -> None:
    cfg = load_recipe("mnist1d")
    assert untuned(cfg) == []
    assert untuned(cfg, data=load_data(cfg.data)) == []  # splits loaded from its own DataConfig (as bench passes)
    assert untuned(apply_overrides(cfg, {"data.augment": "none", "train.epochs": 5})) == []  # ablations, budgets
    assert untuned(load_recipe("plain"), model=_mlp()) == []  # fixed constants are never adapted


def test_a_model_data_or_size_the_recipe_was_not_tuned_on_is_named() -> None:
    cfg = load_recipe("mnist1d")
    assert untuned(cfg, model=_mlp()) == ["a model from Python"]
    assert untuned(apply_overrides(cfg, {"data.name": "custom"}), data=_blobs()) == ["data from Python"]
    harder = replace(cfg, data=replace(cfg.data, mnist1d=Mnist1dArgs(num_samples=10000, iid_noise_scale=0.1)))
    assert untuned(harder) == ["data.mnist1d.num_samples=10000 (tuned: 5000)",
                               "data.mnist1d.iid_noise_scale=0.1 (tuned: 0.02)"]
    assert untuned(apply_overrides(cfg, {"model.name": "mlp"})) == ["model.name=mlp (tuned: fastnet1d)"]
    assert untuned(apply_overrides(cfg, {"adapt.mode": "off"}), model=_mlp()) == []
    assert untuned(apply_overrides(load_recipe("plain"), {"adapt.mode": "on"})) == ["adapt.mode=on"]


def test_the_adapted_config_measures_instead_of_fixing() -> None:
    a = adapted(load_recipe("mnist1d"))
    assert a.schedule.kind == "wsd" and a.train.epochs == 100 and a.train.eval_from == 0
    assert a.data.augment == "none" and not a.methods.tta
    assert not a.optim.lr_find and a.optim.lr == 1e-3  # auto (the default): plain Adam's LR until the test runs
    first = adapted(apply_overrides(load_recipe("mnist1d"), {"adapt.lr_find": "first"}))
    assert first.optim.lr_find  # the LR range test before training
    with pytest.raises(ConfigError, match="adapt.lr_floor"):
        apply_overrides(load_recipe("mnist1d"), {"adapt.lr_floor": 0.0, "adapt.lr_find": "auto"})


def test_an_adaptive_run_scores_a_weight_average_of_its_weights() -> None:
    from quicktrain.run import build_run

    assert adapted(load_recipe("mnist1d")).methods.ema == 0.95
    cfg = apply_overrides(load_recipe("mnist1d"), {"data.name": "custom", "system.precision": "fp32"})
    run = build_run(adapted(cfg), model=_mlp(), data=_blobs())
    assert run.eval_model is not run.model and isinstance(run.eval_model, nn.Sequential)  # the average's copy
    off = build_run(adapted(apply_overrides(cfg, {"adapt.ema": 0.0})), model=_mlp(), data=_blobs())
    assert off.eval_model is off.model
    with pytest.raises(ConfigError, match="adapt.ema"):
        apply_overrides(cfg, {"adapt.ema": 1.0})


def test_the_measured_peak_lr_stays_between_plain_adams_and_ten_times_it() -> None:
    cfg = load_recipe("mnist1d")
    assert (cfg.adapt.lr_floor, cfg.adapt.lr_max) == (1e-3, 1e-2)
    assert peak_from_test(3e-4, cfg) == 1e-3 and peak_from_test(4e-3, cfg) == 4e-3
    assert peak_from_test(0.05, cfg) == 1e-2  # a recurrent net's suggestion (lstm/mnist5k: 0.04-0.05)
    assert peak_from_test(0.05, apply_overrides(cfg, {"adapt.lr_max": 0.0})) == 0.05  # no ceiling
    with pytest.raises(ConfigError, match="adapt.lr_max"):
        apply_overrides(cfg, {"adapt.lr_max": 1e-4})


def test_the_deferred_lr_test_runs_only_where_the_projection_says_it_pays() -> None:
    rising = [{"epoch": 1.0, "val_acc": 0.80}, {"epoch": 2.0, "val_acc": 0.88}]  # error 0.2 -> 0.12: 0.05 at ~6.6
    go, why = lr_test_pays(rising, 0.95, seconds=1.0, test_seconds=1.0, pays=4.0)  # ~2.3 s left < 4 s
    assert not go and "projected to the target" in why
    assert lr_test_pays(rising, 0.95, seconds=20.0, test_seconds=1.0, pays=4.0)[0]  # ~46 s left > 4 s
    flat = [{"epoch": 1.0, "val_acc": 0.80}, {"epoch": 2.0, "val_acc": 0.79}]
    assert lr_test_pays(flat, 0.95, seconds=0.1, test_seconds=1.0, pays=4.0) == (
        True, "no trend toward the target after 2 epochs")


def test_the_wsd_warmup_to_a_new_peak_starts_from_the_lr_in_use() -> None:
    s = _wsd(warmup_epochs=1.0, start_frac=0.1, plateau_after_epochs=0.0)  # peak 1.0, 100 examples an epoch
    assert s.at(300 / 10_000)[1] == 1.0
    s.rewarm_to(5.0, 300)
    assert s.at(300 / 10_000)[1] == pytest.approx(1.0) and s.at(350 / 10_000)[1] == pytest.approx(3.0)
    assert s.at(400 / 10_000)[1] == pytest.approx(5.0)
    t = _wsd(warmup_epochs=1.0, start_frac=0.1, plateau_after_epochs=0.0)
    t.load_state_dict(s.state_dict())
    t.peak = s.peak  # the loop restores the peak from its own state
    assert [t.at(p / 100)[1] for p in range(100)] == [s.at(p / 100)[1] for p in range(100)]


def test_a_user_model_with_the_default_config_learns_and_records_why(tmp_path: Path) -> None:
    cfg = apply_overrides(load_recipe("mnist1d"), {"data.name": "custom", "train.target": 0.9})
    logs: list[str] = []
    torch.manual_seed(0)
    result = train(cfg, model=_mlp(), data=_blobs(), run_dir=tmp_path / "r", progress=False, log=logs.append)
    assert result.reached_target and result.stopped_by == "target" and result.test_acc > 0.85
    assert result.adapted[:2] == ["a model from Python", "data from Python"]
    assert result.peak_lr != cfg.optim.lr  # not the recipe's 4e-2: the floor, or the deferred test's
    assert any(m.startswith("adaptive defaults (recipe mnist1d was tuned for") and "weight average (EMA 0.95)" in m
               for m in logs)
    report = (tmp_path / "r" / "report.md").read_text()
    assert "## Adaptive defaults" in report and "a model from Python" in report
    assert json.loads((tmp_path / "r" / "result.json").read_text())["adapted"] == result.adapted


def test_the_same_model_under_adapt_off_keeps_the_recipe_constants() -> None:
    cfg = apply_overrides(load_recipe("mnist1d"), {"data.name": "custom", "train.target": 0.9, "adapt.mode": "off",
                                                   "train.epochs": 0.5})
    result = train(cfg, model=_mlp(), data=_blobs(), progress=False)
    assert result.adapted == [] and result.peak_lr == cfg.optim.lr and result.epochs < 1


def _wsd(**schedule: object):  # type: ignore[no-untyped-def]
    cfg = apply_overrides(Config(), {"schedule.kind": "wsd", "optim.lr": 1.0, "train.batch_size": 10,
                                     **{f"schedule.{k}": v for k, v in schedule.items()}})
    return make_schedule(cfg, total_samples=10_000, n_train=100, check_every=100)


def test_wsd_warms_up_holds_and_decays_on_a_plateau_ending_at_a_check() -> None:
    s = _wsd(warmup_epochs=1.0, start_frac=0.0, plateau_patience=2, plateau_delta=0.01, decay_frac=0.2,
             rewarm=0.5, plateau_after_epochs=0.0)
    assert s.at(0.0) == (10, 0.0) and s.at(50 / 10_000)[1] == pytest.approx(0.5) and s.at(0.05)[1] == 1.0
    for samples, acc in [(100, 0.5), (200, 0.6), (300, 0.605), (400, 0.6)]:  # two checks without +1 point
        s.observe(acc, samples, True)
    assert s.decay_start == 400 and s.decay_len == 100  # max(1 epoch, 20% of 400) = 100, a whole check interval
    assert s.at(450 / 10_000)[1] == pytest.approx(0.5) and s.at(500 / 10_000)[1] == 0.0
    s.observe(0.7, 500, True, target_open=True)  # the decay ended short of the target: re-warm to half the peak
    assert s.scale == 0.5 and s.decay_start == -1 and s.at(700 / 10_000)[1] == 0.5
    state = s.state_dict()
    t = _wsd(warmup_epochs=1.0, start_frac=0.0, plateau_patience=2, plateau_delta=0.01, decay_frac=0.2,
             rewarm=0.5, plateau_after_epochs=0.0)
    t.load_state_dict(state)
    assert [t.at(p / 100)[1] for p in range(100)] == [s.at(p / 100)[1] for p in range(100)]


def test_wsd_waits_for_noisy_early_checks_and_ignores_changes_below_the_resolution() -> None:
    cfg = apply_overrides(Config(), {"schedule.kind": "wsd", "schedule.plateau_patience": 1,
                                     "schedule.plateau_after_epochs": 3.0, "schedule.plateau_delta": 0.005})
    s = make_schedule(cfg, total_samples=10_000, n_train=100, check_every=100, resolution=0.02)
    s.observe(0.50, 100, True)
    s.observe(0.50, 200, True)  # stale, but within the first 3 epochs: no decay yet
    assert s.decay_start == -1
    s.observe(0.515, 300, True)  # +1.5 points < 2 examples of 100: not progress
    assert s.decay_start == 300


def test_wsd_without_a_target_is_exhausted_after_its_decay_and_decays_by_the_budget_end() -> None:
    s = _wsd(plateau_patience=1, plateau_delta=0.01, plateau_after_epochs=0.0)
    s.observe(0.5, 100, True)
    s.observe(0.5, 200, True, target_open=False)
    s.observe(0.5, 300, True, target_open=False)
    assert s.exhausted
    lr_end = _wsd().at(0.999)[1]  # no plateau: the decay is timed to end with the budget
    assert 0 < lr_end < 0.05


def test_the_guard_names_the_tuned_budget_and_the_trend() -> None:
    cfg = apply_overrides(load_recipe("mnist1d"), {"train.target": 0.99})
    metrics = [{"epoch": 1.0, "val_acc": 0.80}, {"epoch": 2.0, "val_acc": 0.90}, {"epoch": 3.0, "val_acc": 0.95}]
    notes = guard_notes(cfg, metrics, "budget", reached=False, was_adapted=False)
    assert notes[0].startswith("target 99% not reached: stopped by the budget of 3 epochs after 3 epochs")
    assert "trend" in notes[1] and "--adapt.mode=on" in notes[2]
    assert guard_notes(cfg, metrics, "target", reached=True, was_adapted=False) == []
    assert epochs_to_target(metrics, 0.95) == pytest.approx(3.0, rel=0.15)
    assert epochs_to_target([{"epoch": 1.0, "val_acc": 0.9}], 0.95) is None
    nearly_flat = [{"epoch": 1.0, "val_acc": 0.5}, {"epoch": 2.0, "val_acc": 0.5 + 1e-12}]
    assert epochs_to_target(nearly_flat, 0.99) is None  # far away, not an OverflowError
    assert epochs_to_target(metrics, 1.0) is None  # no error left to reach: never
    losses = [{"epoch": 1.0, "val_loss": 2.0}, {"epoch": 4.0, "val_loss": 1.0}]  # loss ~ 2 / sqrt(epoch)
    assert epochs_to_target(losses, 0.5, key="val_loss", higher_is_better=False) == pytest.approx(16.0)


def test_a_tuned_recipe_short_of_its_target_says_so(tiny_cfg: Config) -> None:
    cfg = replace(apply_overrides(tiny_cfg, {"train.target": 0.999, "train.epochs": 0.5}), tuned_for="mnist1d")
    cfg = replace(cfg, data=load_recipe("mnist1d").data, model=load_recipe("mnist1d").model)
    result = train(cfg, progress=False)
    assert not result.reached_target and result.stopped_by == "budget"
    assert any("--adapt.mode=on" in n for n in result.notes)


def test_a_run_that_reaches_its_target_early_never_pays_for_the_lr_test() -> None:
    cfg = apply_overrides(load_recipe("mnist1d"), {"data.name": "custom", "train.target": 0.6,
                                                   "adapt.lr_find": "auto"})
    torch.manual_seed(0)
    result = train(cfg, model=_mlp(), data=_blobs(), progress=False)
    assert result.reached_target and result.peak_lr == cfg.adapt.lr_floor
    assert not any(a.startswith("LR range test") for a in result.adapted)


def test_a_cheap_lr_test_runs_at_the_first_check_after_an_epoch_at_plain_adams_lr() -> None:
    cfg = apply_overrides(load_recipe("mnist1d"), {"data.name": "custom", "train.target": 0.999,
                                                   "adapt.max_epochs": 3.0, "adapt.lr_find": "auto",
                                                   "adapt.first_epochs": 1e9})
    torch.manual_seed(0)
    result = train(cfg, model=_mlp(), data=_blobs(), progress=False)
    test = [a for a in result.adapted if a.startswith("LR range test")]
    assert len(test) == 1 and test[0].startswith("LR range test ran at epoch 1") and "(it costs " in test[0]
    assert result.metrics[0]["lr"] == cfg.adapt.lr_floor  # the first epoch trained as plain Adam does
    assert result.peak_lr >= cfg.adapt.lr_floor


def test_lr_find_first_runs_the_test_before_training() -> None:
    cfg = apply_overrides(load_recipe("mnist1d"), {"data.name": "custom", "train.target": 0.9,
                                                   "adapt.lr_find": "first"})
    logs: list[str] = []
    torch.manual_seed(0)
    result = train(cfg, model=_mlp(), data=_blobs(), progress=False, log=logs.append)
    found = [m for m in logs if m.startswith("lr-find: suggested peak LR")]
    assert len(found) == 1 and result.peak_lr >= cfg.adapt.lr_floor and result.reached_target
    assert not any(m.startswith("lr-find: deferred") for m in logs)


def test_a_deferred_sweep_starts_from_the_weights_before_training(tiny_cfg: Config) -> None:
    from quicktrain.lr_find import StartWeights, sweep_for_run
    from quicktrain.run import build_run

    torch.manual_seed(0)
    run = build_run(tiny_cfg)
    before = sweep_for_run(run)
    kept = StartWeights()
    kept.capture(run.model)
    with torch.no_grad():  # as if the run had trained since
        for p in run.model.parameters():
            p.add_(0.5 * torch.randn_like(p))
    assert sweep_for_run(run).losses != before.losses
    again = sweep_for_run(run, start=kept.weights)
    assert again.losses == before.losses and again.suggested_lr == before.suggested_lr


def test_a_deferred_lr_test_that_pays_runs_at_the_deciding_check_and_is_recorded(tmp_path: Path) -> None:
    cfg = apply_overrides(load_recipe("mnist1d"), {"data.name": "custom", "train.target": 0.999,
                                                   "adapt.max_epochs": 5.0, "adapt.pays": 1e-9,
                                                   "adapt.lr_find": "auto", "adapt.first_epochs": 0.0})
    torch.manual_seed(0)
    logs: list[str] = []
    result = train(cfg, model=_mlp(), data=_blobs(), run_dir=tmp_path / "r", progress=False, log=logs.append)
    test = [a for a in result.adapted if a.startswith("LR range test")]
    assert len(test) == 1 and test[0].startswith("LR range test ran at epoch 3")  # check 3 (adapt.decide_check)
    assert result.peak_lr >= cfg.adapt.lr_floor and any(m.startswith("lr-find (deferred): ran") for m in logs)
    assert any(m.startswith("lr-find: deferred again") and "decided at check 3" in m for m in logs)
    assert "LR range test ran at epoch 3" in (tmp_path / "r" / "report.md").read_text()


@pytest.mark.parametrize("cut", [1, 4])
def test_an_adaptive_run_resumes_bitwise(tiny_cfg: Config, tmp_path: Path, cut: int,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    # first_epochs 0, pays tiny: the LR test runs at check 3 whatever the clock says, so both runs take the same
    # path. Cut at check 1: the resumed run sweeps from the weights before training, kept in the checkpoint; cut at
    # check 4: it continues with the test's LR and warmup
    cfg = apply_overrides(replace(tiny_cfg, tuned_for="mnist1d", data=SMALL_MNIST1D),
                          {"adapt.max_epochs": 3.0, "adapt.eval_every": 0.5, "train.target": 0.99,
                           "checkpoint.every_steps": 5, "checkpoint.every_seconds": 0.0, "adapt.pays": 1e-9,
                           "adapt.lr_find": "auto", "adapt.first_epochs": 0.0})
    assert untuned(cfg)  # tiny1d on a small draw: not what mnist1d was tuned on
    import quicktrain.loop

    swept_from: list[float] = []  # what each deferred sweep started from (a checksum of the weights it was given)
    real = quicktrain.loop.sweep_for_run
    monkeypatch.setattr(quicktrain.loop, "sweep_for_run", lambda run, start=None: swept_from.append(
        sum(float(v.double().sum()) for v in start.values()) if start else float("nan")) or real(run, start))
    train(cfg, run_dir=tmp_path / "straight", progress=False)
    with pytest.raises(Preempted):
        train(cfg, run_dir=tmp_path / "cut", progress=False, on_eval=_stop_after(cut))
    kept = {k: v for k, v in final_state(tmp_path / "cut").items() if k.startswith("/start_weights/")}
    initial = {k: v for k, v in final_state(tmp_path / "straight").items() if k.startswith("/model/")}
    assert len(kept) == (len(initial) if cut == 1 else 0)  # kept until the test is decided (check 3), then dropped
    result = train(cfg, run_dir=tmp_path / "cut", progress=False)
    assert result.restarts == 1 and result.adapted
    assert_identical(tmp_path / "straight", tmp_path / "cut")
    assert len(swept_from) == 2 and swept_from[0] == swept_from[1]  # both from the same (restored) weights
