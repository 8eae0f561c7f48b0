"""Every registered technique (quicktrain.methods.registry.TECHNIQUES): its off-switch turns it off, its on-switch
turns it on, and a run with it on trains 2 steps; the ablation, the search space and the FLOP replay iterate the
same registry."""

from __future__ import annotations

import pytest
import torch
from support import steps

from quicktrain.config import Config, apply_overrides
from quicktrain.loop import train
from quicktrain.methods.registry import TECHNIQUES, build_methods, input_size
from quicktrain.search_space import default_space


@pytest.mark.parametrize("technique", TECHNIQUES, ids=lambda t: t.key)
def test_each_technique_switches_and_trains_two_steps(technique, tiny_cfg: Config) -> None:  # type: ignore[no-untyped-def]
    base = apply_overrides(tiny_cfg, {"optim.weight_decay": 5e-4})  # so that the decay rows have decay to act on
    _, on = technique.variant(apply_overrides(base, technique.off_for(base)))
    on_cfg = apply_overrides(base, on)
    assert technique.is_on(on_cfg)
    assert not technique.is_on(apply_overrides(on_cfg, technique.off_for(on_cfg)))
    if technique.key == "system.precision":  # bf16 autocast works on every CPU torch supports
        on_cfg = apply_overrides(on_cfg, {"system.precision": "bf16"})
    result = train(steps(on_cfg, 2), progress=False)
    ramp = technique.key == "schedule.batch_ramp_from"  # smaller batches first: the same samples take more steps
    assert result.steps == 2 or (ramp and 2 < result.steps <= 8)
    assert torch.isfinite(torch.tensor(result.metrics[-1]["train_loss"]))


def test_ablation_has_one_row_per_technique() -> None:
    base = Config()
    labels = [t.variant(base)[0] for t in TECHNIQUES]
    assert len(set(labels)) == len(TECHNIQUES)


def test_default_space_includes_each_declared_technique_range() -> None:
    space = default_space(Config())
    assert {t.key for t in TECHNIQUES if t.search is not None} <= set(space)


def test_methods_are_built_in_registry_order_and_input_size_follows_resizing(tiny_cfg: Config) -> None:
    from quicktrain.data import load_data

    cfg = apply_overrides(tiny_cfg, {"data.augment": "auto", "methods.resize_from": 0.5, "methods.ema": 0.9})
    splits = load_data(cfg.data)
    model = torch.nn.Sequential(torch.nn.Conv1d(1, 4, 3, padding=1), torch.nn.AdaptiveMaxPool1d(1),
                                torch.nn.Flatten(), torch.nn.Linear(4, 10))
    assert [m.name for m in build_methods(cfg, splits, model, torch.device("cpu"))] == \
        ["augment", "progressive_resize", "ema"]
    assert input_size(cfg, 0.0, 40) == 20 and input_size(cfg, 1.0, 40) == 40
