from dataclasses import replace

import pytest

from quicktrain.config import (Config, OptimConfig, apply_overrides, check_config, diff, from_dict, iter_keys,
                               to_dict)
from quicktrain.errors import ConfigError


def test_defaults_are_valid_and_every_key_is_reachable() -> None:
    cfg = check_config(Config())
    keys = [k for k, _, _ in iter_keys(cfg)]
    assert "optim.lr" in keys and "data.mnist1d.num_samples" in keys
    assert len(keys) == len(set(keys))


@pytest.mark.parametrize(
    ("override", "key", "expected"),
    [
        ("optim.lr=3e-3", "lr", 3e-3),
        ("train.batch_size=64", "batch_size", 64),
        ("train.stop_on_target=false", "stop_on_target", False),
        ("model.channels=16,32", "channels", (16, 32)),
        ("optim.betas=(0.9, 0.95)", "betas", (0.9, 0.95)),
        ("data.mnist1d.num_samples=2000", "num_samples", 2000),
    ],
)
def test_overrides_convert_by_field_type(override: str, key: str, expected: object) -> None:
    cfg = apply_overrides(Config(), [override])
    section = cfg
    for part in override.split("=")[0].split(".")[:-1]:
        section = getattr(section, part)
    assert getattr(section, key) == expected


def test_overrides_from_python_dict() -> None:
    assert apply_overrides(Config(), {"optim.lr": 0.5}).optim.lr == 0.5
    assert apply_overrides(Config(), {"model.channels": [8, 16]}).model.channels == (8, 16)  # JSON lists


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("optim.lrr=1", "unknown config key 'optim.lrr' (did you mean 'lr'?)"),
        ("nosection.x=1", "unknown config key 'nosection.x'"),
        ("optim.lr=fast", "config key optim.lr: expected float, got 'fast'"),
        ("train.batch_size=3.5", "config key train.batch_size: expected int"),
        ("train.stop_on_target=maybe", "config key train.stop_on_target: expected bool"),
        ("optim.lr=-1", "config key optim.lr: must be > 0"),
        ("train.target=1.5", "config key train.target: must be in [0, 1]"),
        ("optim.betas=0.9", "config key optim.betas: expected 2 comma-separated floats"),
        ("optim=1", "is a section"),
        ("optim.lr", "not of the form"),
        ("data.name=imagenet",
         "config key data.name: expected one of mnist1d, digits, mnist5k, cifar10, npz, custom, stdlib, tokens, "
             "got 'imagenet'"),
    ],
)
def test_bad_overrides_name_the_key_in_one_line(override: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as err:
        apply_overrides(Config(), [override])
    assert fragment in str(err.value)
    assert "\n" not in str(err.value)


def test_wrong_type_in_a_python_recipe_is_caught() -> None:
    bad = replace(Config(), optim=OptimConfig(lr="fast"))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="config key optim.lr: expected float"):
        check_config(bad)


def test_dict_round_trip_and_diff() -> None:
    cfg = apply_overrides(Config(), ["optim.lr=0.1", "model.channels=8,8"])
    assert from_dict(to_dict(cfg)) == cfg
    assert diff(Config(), cfg) == {"optim.lr": (Config().optim.lr, 0.1), "model.channels": ((), (8, 8))}
    with pytest.raises(ConfigError, match="unknown config key"):
        from_dict({"optim": {"lr": 1.0, "bogus": 2}})


def test_config_defaults_are_the_fast_default_recipe() -> None:
    from quicktrain.recipes import load_recipe

    assert Config() == load_recipe("mnist1d")


def test_every_enum_field_is_a_literal_checked_by_type() -> None:
    import typing

    from quicktrain.config import iter_keys

    enums = {k: typing.get_args(tp) for k, _, tp in iter_keys(Config()) if typing.get_origin(tp) is typing.Literal}
    assert {"optim.name", "schedule.kind", "system.precision", "data.augment", "data.name"} <= set(enums)
    for key, allowed in enums.items():
        for value in allowed:
            rules = {("data.name", "tokens"): {"data.path": "shards"},  # values with a rule of their own
                     ("schedule.batch_ramp", "noise"): {"noise.every": 5, "schedule.batch_ramp_from": 32}}
            needs = rules.get((key, value), {})
            apply_overrides(Config(), {key: value, **needs})  # every allowed value is accepted
        with pytest.raises(ConfigError, match=f"config key {key}: expected one of {', '.join(allowed)}, got 'nope'"):
            apply_overrides(Config(), [f"{key}=nope"])
