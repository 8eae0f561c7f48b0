from dataclasses import replace

import pytest
import torch
from support import SMALL_MNIST1D, steps
from torch import nn

from quicktrain.config import (Config, DataConfig, ModelConfig, SystemConfig, TrainConfig, apply_overrides)
from quicktrain.data import Split, load_data
from quicktrain.errors import ConfigError, TrainingDiverged
from quicktrain.loop import train
from quicktrain.recipes import load_recipe

# Each technique switched on, one at a time, on top of the tiny config (2-D ones on digits with tiny2d).
TECHNIQUES = {
    "onecycle": {"schedule.kind": "onecycle"},
    "cosine": {"schedule.kind": "cosine"},
    "linear-decay": {"schedule.kind": "linear"},
    "adamw": {"optim.name": "adamw", "optim.weight_decay": 0.1},
    "sgd-nesterov-decoupled": {"optim.name": "sgd", "optim.lr": 0.05, "optim.weight_decay": 0.01},
    "no-decay-1d": {"optim.no_decay_1d": True},
    "bf16": {"system.precision": "bf16"},
    "precision-auto": {"system.precision": "auto"},
    "label-smoothing": {"methods.label_smoothing": 0.1},
    "ema": {"methods.ema": 0.9, "methods.ema_every": 1},
    "progressive-resize": {"methods.resize_from": 0.5, "methods.resize_until": 1.0},
    "batch-ramp": {"schedule.batch_ramp_from": 8, "schedule.batch_ramp_until": 1.0},
    "tta": {"methods.tta": True},
    "shift-augment": {"data.augment": "shift"},
    "grad-clip": {"optim.grad_clip": 1.0},
}
TECHNIQUES_2D = {
    "crop": {"data.augment": "crop"},
    "crop-flip": {"data.augment": "crop_flip"},
    "channels-last": {"system.channels_last": "on"},
    "resize-2d": {"methods.resize_from": 0.5, "methods.resize_until": 1.0},
    "tta-2d": {"methods.tta": True},
}


def _two_steps(cfg: Config, overrides: dict) -> None:
    result = train(apply_overrides(steps(cfg, 2), overrides), progress=False)
    # a batch ramp starts with smaller batches, so the same samples take a few more steps
    assert result.steps == 2 or ("schedule.batch_ramp_from" in overrides and 2 < result.steps <= 5)
    assert all(m["train_loss"] is not None and m["train_loss"] == m["train_loss"] for m in result.metrics)
    assert 0.0 <= result.test_acc <= 1.0


@pytest.mark.parametrize("name", list(TECHNIQUES))
def test_every_technique_trains_two_steps(tiny_cfg: Config, name: str) -> None:
    _two_steps(tiny_cfg, TECHNIQUES[name])


@pytest.mark.parametrize("name", list(TECHNIQUES_2D))
def test_every_2d_technique_trains_two_steps(tiny_cfg: Config, name: str) -> None:
    cfg = replace(tiny_cfg, data=DataConfig(name="digits"), model=ModelConfig(name="tiny2d"))
    cfg = replace(cfg, train=replace(cfg.train, epochs=2 * 32 / 1294))  # digits: 1294 training images
    result = train(apply_overrides(cfg, TECHNIQUES_2D[name]), progress=False)
    assert result.steps == 2


@pytest.mark.slow
def test_compile_trains_two_steps(tiny_cfg: Config) -> None:
    result = train(apply_overrides(steps(tiny_cfg, 2), {"system.compile": "on"}), progress=False)
    assert result.steps == 2 and result.compile


def test_weights_change_and_loss_falls(tiny_cfg: Config) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(40, 64), nn.ReLU(), nn.Linear(64, 10))
    before = [p.detach().clone() for p in model.parameters()]
    cfg = replace(tiny_cfg, train=replace(tiny_cfg.train, epochs=8, eval_every=1.0))
    result = train(cfg, model=model, progress=False)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    losses = [m["train_loss"] for m in result.metrics]
    assert losses[-1] < 0.7 * losses[0]
    assert result.metrics[-1]["val_acc"] > 0.4  # 10 classes: chance is 0.1


def test_fast_recipe_reaches_a_modest_target_on_mnist1d() -> None:
    cfg = apply_overrides(load_recipe("mnist1d"), {"train.target": 0.85})
    result = train(cfg, progress=False)
    assert result.reached_target and result.seconds_to_target is not None
    assert result.val_acc >= 0.85 and result.test_acc > 0.8
    assert result.seconds_to_target <= result.train_seconds <= result.wall_seconds


def test_stops_at_the_first_check_that_reaches_the_target(tiny_cfg: Config) -> None:
    cfg = replace(tiny_cfg, train=replace(tiny_cfg.train, epochs=10, target=0.3, eval_every=0.5))
    result = train(cfg, progress=False)
    assert result.reached_target
    assert [m["val_acc"] >= 0.3 for m in result.metrics] == [False] * (len(result.metrics) - 1) + [True]
    assert result.test_acc_at_target == result.metrics[-1]["test_acc"]
    assert result.epochs < 10


def test_time_budget_stops_the_run(tiny_cfg: Config) -> None:
    cfg = replace(tiny_cfg, train=replace(tiny_cfg.train, epochs=1000, max_seconds=0.3))
    result = train(cfg, progress=False)
    assert result.epochs < 1000 and 0.3 <= result.train_seconds < 5.0


def test_test_split_never_decides_anything(tiny_cfg: Config) -> None:
    """Scrambling the test labels changes the reported test accuracy and nothing else."""
    splits = load_data(SMALL_MNIST1D)
    scrambled = replace(splits, test=Split(splits.test.x, (splits.test.y + 1) % splits.num_classes))
    cfg = replace(tiny_cfg, train=replace(tiny_cfg.train, epochs=3, target=0.5, eval_every=0.5))
    a, b = train(cfg, data=splits, progress=False), train(cfg, data=scrambled, progress=False)
    assert [m["val_acc"] for m in a.metrics] == [m["val_acc"] for m in b.metrics]
    assert a.steps == b.steps
    assert a.test_acc != b.test_acc


def test_same_seed_same_result_and_different_seed_differs(tiny_cfg: Config) -> None:
    runs = [train(replace(tiny_cfg, train=replace(tiny_cfg.train, seed=s)), progress=False) for s in (3, 3, 4)]
    assert runs[0].metrics[-1]["val_loss"] == runs[1].metrics[-1]["val_loss"]
    assert runs[0].metrics[-1]["val_loss"] != runs[2].metrics[-1]["val_loss"]


def test_any_module_on_a_tensor_pair(tiny_cfg: Config) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(600, 6, generator=g)
    y = (x[:, 0] > 0).long()
    model = nn.Sequential(nn.Flatten(), nn.Linear(6, 2))
    cfg = replace(tiny_cfg, data=DataConfig(name="custom", augment="none"),
                  train=TrainConfig(epochs=20, batch_size=32, target=0.9, eval_every=1.0, eval_from=0.0))
    result = train(cfg, model=model, data=(x, y), progress=False)
    assert result.reached_target


def test_non_finite_loss_stops_with_a_clear_message(tiny_cfg: Config) -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(40, 10))
    with torch.no_grad():
        model[1].bias.fill_(float("nan"))
    with pytest.raises(TrainingDiverged, match="loss became nan by step"):
        train(tiny_cfg, model=model, progress=False)


def test_fixed_size_model_with_progressive_resizing_is_a_config_error(tiny_cfg: Config) -> None:
    cfg = apply_overrides(tiny_cfg, {"model.name": "convbase", "methods.resize_from": 0.5})
    with pytest.raises(ConfigError, match="methods.resize_from: model 'convbase' needs fixed-size inputs"):
        train(cfg, progress=False)


def test_run_directory_contents(tiny_cfg: Config, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json

    result = train(tiny_cfg, run_dir=tmp_path / "run", progress=False)
    files = {p.name for p in (tmp_path / "run").iterdir()}
    assert {"config.json", "metrics.jsonl", "report.md", "accuracy.png", "result.json"} <= files
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == len(result.metrics) and json.loads(lines[-1])["step"] == result.steps
    assert json.loads((tmp_path / "run" / "config.json").read_text())["train"]["batch_size"] == 32


def test_cuda_request_without_cuda_is_a_config_error(tiny_cfg: Config) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ConfigError, match="system.device"):
        train(replace(tiny_cfg, system=SystemConfig(device="cuda")), progress=False)


@pytest.mark.parametrize("name", ["mnist1d", "plain", "reference", "mnist1d_97", "mnist1d_98", "digits", "mnist5k"])
def test_builtin_recipes_load(name: str) -> None:
    assert load_recipe(name).name == name


def test_on_eval_sees_every_record_including_the_last_and_can_stop(tiny_cfg: Config) -> None:
    seen: list[dict] = []
    result = train(replace(tiny_cfg, train=replace(tiny_cfg.train, epochs=1.0, eval_every=0.25)), progress=False,
                   on_eval=seen.append)
    assert seen == result.metrics and len(seen) == 4
    stopped = train(replace(tiny_cfg, train=replace(tiny_cfg.train, epochs=1.0, eval_every=0.25)), progress=False,
                    on_eval=lambda record: record["step"] >= 12)
    assert len(stopped.metrics) == 2 and stopped.epochs < 1.0


def test_auto_race_is_outside_the_train_clock_in_runs_and_in_the_lr_finder(tiny_cfg: Config, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import time

    import quicktrain.run as run_module
    from quicktrain.lr_find import find_lr

    real = run_module.autotune

    def slow_autotune(*args, **kwargs):  # type: ignore[no-untyped-def]
        time.sleep(2.5)  # far longer than the few steps below, even on a loaded machine
        return real(*args, **kwargs)

    monkeypatch.setattr(run_module, "autotune", slow_autotune)
    cfg = apply_overrides(steps(tiny_cfg, 2), {"system.precision": "auto"})
    result = train(cfg, progress=False)
    assert result.wall_seconds >= 2.5 and result.train_seconds < 2.5
    assert find_lr(cfg, steps=5).seconds < 2.5
    import quicktrain.lr_find as lr_find_module

    real_sweep = lr_find_module._sweep

    def slow_sweep(*args, **kwargs):  # type: ignore[no-untyped-def]
        time.sleep(2.6)  # inside the sweep's own clock
        return real_sweep(*args, **kwargs)

    monkeypatch.setattr(lr_find_module, "_sweep", slow_sweep)
    found = train(apply_overrides(cfg, {"optim.lr_find": True}), progress=False)  # the sweep is inside the clock
    assert found.train_seconds >= 2.6 and found.peak_lr != cfg.optim.lr
