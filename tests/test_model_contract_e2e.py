"""The model contract (issue #14) end to end: `quicktrain.train(cfg, model=..., data=(x, y))` with each kind of model.

Each case is a tiny model trained a few steps through the public API, as a user would call it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from quicktrain import train
from quicktrain.config import Config, DataConfig, TrainConfig
from quicktrain.errors import UserError
from quicktrain.state import weights_sha256

F, K = 6, 2  # features, classes


@pytest.fixture
def xy() -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(400, F, generator=g)
    return x, (x[:, 0] > 0).long()


@pytest.fixture
def cfg(tiny_cfg: Config) -> Config:
    """A second or so: half an epoch of 32-example batches on 400 examples given from Python."""
    return replace(tiny_cfg, data=DataConfig(name="custom", augment="none"),
                   train=TrainConfig(epochs=0.5, batch_size=32, target=0.0, eval_every=0.5, eval_from=0.0))


def fit(cfg: Config, model: nn.Module, xy: tuple[Tensor, Tensor]) -> str:
    """Train; check the weights moved and the result hashes the user's own module (same keys); return the hash."""
    module = getattr(model, "_orig_mod", model)  # torch.compile's wrapper prefixes its keys; the run hashes the module
    before = weights_sha256(module)
    result = train(cfg, model=model, data=xy, progress=False)
    assert result.steps > 0 and 0.0 <= result.test_acc <= 1.0
    assert result.weights_sha256 == weights_sha256(module) != before
    return result.weights_sha256


class Head(nn.Module):
    def __init__(self, wrap: Any = None) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(F, 16), nn.BatchNorm1d(16), nn.ReLU())
        self.head = nn.Linear(16, K)
        self.wrap = wrap

    def forward(self, x: Tensor) -> Any:
        logits = self.head(self.body(x))
        return logits if self.wrap is None else self.wrap(logits)


@dataclass
class Output:
    logits: Tensor


class NanoGPTStyle(Head):
    def forward(self, x: Tensor,  # type: ignore[override]
                targets: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        logits = super().forward(x)
        return logits, None if targets is None else nn.functional.cross_entropy(logits, targets)


# ---------------------------------------------------------------------------------------------------------------------
# Working before the contract; kept working by it


def test_buffers_and_frozen_parameters_train(cfg: Config, xy: tuple[Tensor, Tensor]) -> None:
    model = Head()
    model.register_buffer("scale", torch.ones(1))
    model.body.requires_grad_(False)
    frozen = model.body[1].weight.detach().clone()
    fit(cfg, model, xy)
    assert torch.equal(model.body[1].weight, frozen)  # neither updated nor decayed


def test_tied_parameters_train(cfg: Config, xy: tuple[Tensor, Tensor]) -> None:
    tied = Head()
    tied.head.weight = nn.Parameter(torch.randn(K, 16))
    tied.extra = nn.Linear(16, K, bias=False)
    tied.extra.weight = tied.head.weight  # one tensor, two modules: one optimizer entry
    fit(cfg, tied, xy)


# ---------------------------------------------------------------------------------------------------------------------
# Working only through prepare_model


def test_the_issue_lazy_model_trains(cfg: Config, xy: tuple[Tensor, Tensor]) -> None:
    model = nn.Sequential(nn.Flatten(), nn.LazyLinear(32), nn.ReLU(), nn.LazyLinear(K))
    train(cfg, model=model, data=xy, progress=False)
    assert model[1].weight.shape == (32, F)


@pytest.mark.parametrize("kind", ["tuple", "dict", "dataclass", "nanogpt"])
def test_models_returning_more_than_logits_train(kind: str, cfg: Config, xy: tuple[Tensor, Tensor]) -> None:
    wraps = {"tuple": lambda z: (z, z.sum()), "dict": lambda z: {"logits": z}, "dataclass": Output}
    fit(cfg, NanoGPTStyle() if kind == "nanogpt" else Head(wraps[kind]), xy)


def test_a_compiled_model_trains_its_module_with_plain_keys(cfg: Config, xy: tuple[Tensor, Tensor]) -> None:
    compiled: list[Any] = []

    def backend(gm: torch.fx.GraphModule, _inputs: Any) -> Any:  # records that the user's wrapper compiled
        compiled.append(gm)
        return gm.forward

    model = Head()
    fit(cfg, torch.compile(model, backend=backend), xy)
    assert not compiled  # system.compile=off: the module inside was trained eagerly, as the config says


def test_wrong_number_of_classes_is_one_line(cfg: Config, xy: tuple[Tensor, Tensor]) -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(F, 5))
    with pytest.raises(UserError, match=r"^model output has shape \(\d+, 5\) but the data has 2 classes: make the last "
                                        r"layer output 2 features$"):
        train(cfg, model=model, data=xy, progress=False)


def test_a_forward_requiring_targets_is_one_line(cfg: Config, xy: tuple[Tensor, Tensor]) -> None:
    class NeedsTargets(NanoGPTStyle):
        def forward(self, x: Tensor, targets: Tensor) -> Any:  # type: ignore[override]
            return super().forward(x, targets)

    with pytest.raises(UserError, match=r"give the other arguments defaults \(e\.g\. targets=None\)"):
        train(cfg, model=NeedsTargets(), data=xy, progress=False)
