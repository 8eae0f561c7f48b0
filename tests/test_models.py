"""The model registry: every model builds, runs forward and backward with the right output shape; the reference CNN
matches its paper's parameter count; the size-agnostic nets accept smaller inputs; bad configs give one-line errors."""

from __future__ import annotations

import pytest
import torch

from quicktrain.config import ModelConfig
from quicktrain.errors import ConfigError
from quicktrain.models import MODELS, build_model, count_params

SHAPES = {
    "convbase": (1, 40),
    "fastnet1d": (1, 40),
    "resnet2d": (3, 32, 32),
    "mlp": (1, 8, 8),
    "tiny1d": (2, 40),
    "tiny2d": (1, 8, 8),
    "revnet1d": (1, 40),
}


TOKEN_MODELS = {"gpt": (16,)}  # next-token models: per-sample shape (context,), token ids in, (B, T, vocab) out


def test_every_registered_model_has_a_test_shape() -> None:
    assert set(SHAPES) | set(TOKEN_MODELS) == set(MODELS)


def test_the_token_model_builds_from_the_registry_and_refuses_the_wrong_task() -> None:
    model = build_model(ModelConfig(name="gpt"), TOKEN_MODELS["gpt"], 7)
    out = model(torch.randint(0, 7, (5, 16)))
    assert out.shape == (5, 16, 7)
    with pytest.raises(ConfigError, match="gpt is a next-token model"):
        build_model(ModelConfig(name="gpt"), (1, 40), 7)
    with pytest.raises(ConfigError, match="a next-token task needs model.name=gpt"):
        build_model(ModelConfig(name="mlp"), (16,), 7)


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_forward_backward_shape(name: str) -> None:
    shape = SHAPES[name]
    model = build_model(ModelConfig(name=name), shape, 7)
    out = model(torch.randn(5, *shape))
    assert out.shape == (5, 7)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_convbase_matches_the_reference_param_count() -> None:
    # greydanus/mnist1d ConvBase: 150 + 1900 + 1900 + 1260 parameters at L=40, 10 classes.
    model = build_model(ModelConfig(name="convbase"), (1, 40), 10)
    assert count_params(model) == 5210
    assert [n for n, _ in model.named_children()] == ["conv1", "conv2", "conv3", "linear"]


def test_convbase_linear_follows_length() -> None:
    model = build_model(ModelConfig(name="convbase"), (1, 72), 10)
    assert model(torch.randn(3, 1, 72)).shape == (3, 10)


def test_convbase_prints_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    build_model(ModelConfig(name="convbase"), (1, 40), 10)(torch.randn(2, 1, 40))
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("name,full,small", [("fastnet1d", (1, 40), (1, 20)), ("resnet2d", (3, 32, 32), (3, 16, 16)),
                                             ("tiny1d", (1, 40), (1, 20)), ("tiny2d", (1, 28, 28), (1, 16, 16))])
def test_size_agnostic_models_accept_smaller_inputs(name: str, full: tuple[int, ...], small: tuple[int, ...]) -> None:
    model = build_model(ModelConfig(name=name), full, 10)
    assert model(torch.randn(4, *small)).shape == (4, 10)


def test_custom_widths() -> None:
    model = build_model(ModelConfig(name="fastnet1d", channels=(16, 16, 24, 32)), (1, 40), 10)
    assert model(torch.randn(2, 1, 40)).shape == (2, 10)
    assert (build_model(ModelConfig(name="fastnet1d", channels=(8,)), (1, 40), 10)(torch.randn(2, 1, 40)).shape
            == (2, 10))
    resnet = build_model(ModelConfig(name="resnet2d", channels=(8, 16)), (1, 8, 8), 10)
    assert resnet(torch.randn(2, 1, 8, 8)).shape == (2, 10)
    mlp = build_model(ModelConfig(name="mlp", channels=(32,)), (1, 40), 10)
    assert count_params(mlp) == (40 * 32 + 32) + (32 * 32 + 32) + (32 * 10 + 10)


def _one_line_error(cfg: ModelConfig, shape: tuple[int, ...]) -> str:
    with pytest.raises(ConfigError) as info:
        build_model(cfg, shape, 10)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_unknown_model() -> None:
    message = _one_line_error(ModelConfig(name="resnet9000"), (1, 40))
    assert message == f"config key model.name: unknown model 'resnet9000' (choose from {', '.join(MODELS)})"


def test_1d_model_on_images() -> None:
    message = _one_line_error(ModelConfig(name="convbase"), (1, 28, 28))
    assert message == "config key model.name: model 'convbase' takes 1-D signals (N, C, L); this data is (1, 28, 28)"


def test_2d_model_on_signals() -> None:
    message = _one_line_error(ModelConfig(name="resnet2d"), (1, 40))
    assert message == "config key model.name: model 'resnet2d' takes 2-D images (N, C, H, W); this data is (1, 40)"


@pytest.mark.parametrize("name", ["mlp", "convbase", "tiny1d"])
def test_wrong_number_of_widths(name: str) -> None:
    message = _one_line_error(ModelConfig(name=name, channels=(8, 8)), SHAPES[name])
    assert message.startswith(f"config key model.channels: model {name!r} takes 1 width, got 2")


def test_convbase_needs_one_channel() -> None:
    assert _one_line_error(ModelConfig(name="convbase"), (3, 40)).startswith("config key model.name: model 'convbase'")


def test_fastnet1d_strides_from_config() -> None:
    from quicktrain.config import ModelConfig

    net = build_model(ModelConfig(name="fastnet1d", channels=(8, 8, 8), strides=(1, 2, 2)), (1, 40), 10)
    assert [s[0].stride for s in net.stages] == [(1, 1), (1, 2), (1, 2)]
    assert net(torch.randn(2, 1, 40)).shape == (2, 10)
    with pytest.raises(ConfigError, match="config key model.strides: 2 strides for 3 stages"):
        build_model(ModelConfig(name="fastnet1d", channels=(8, 8, 8), strides=(1, 2)), (1, 40), 10)
    with pytest.raises(ConfigError, match="config key model.strides: model 'convbase' has no per-stage strides"):
        build_model(ModelConfig(name="convbase", strides=(1,)), (1, 40), 10)


def test_depth_and_reversible_reach_builders_that_take_them_and_are_refused_elsewhere() -> None:
    plain = build_model(ModelConfig(name="revnet1d", depth=3), (1, 40), 7)
    rev = build_model(ModelConfig(name="revnet1d", depth=3, reversible=True), (1, 40), 7)
    assert len(plain.blocks) == 3 and len(rev.blocks) == 3 and rev.reversible and not plain.reversible
    assert rev(torch.randn(2, 1, 40)).shape == (2, 7)
    with pytest.raises(ConfigError, match="model.depth"):
        build_model(ModelConfig(name="mlp", depth=4), (1, 8, 8), 7)
    with pytest.raises(ConfigError, match="model.reversible"):
        build_model(ModelConfig(name="fastnet1d", reversible=True), (1, 40), 7)
    with pytest.raises(ConfigError, match="odd"):
        build_model(ModelConfig(name="revnet1d", reversible=True, channels=(15,)), (1, 40), 7)
