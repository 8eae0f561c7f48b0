"""The model contract (issue #14): every kind of nn.Module a user brings either works or is refused in one line.

Each case has a tiny model and is checked through quicktrain.models.contract directly; the end-to-end runs through
`quicktrain.train` live in test_model_contract_e2e.py. Every test here takes well under a second.
"""

from __future__ import annotations

import copy
from collections import OrderedDict, namedtuple
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from quicktrain.cli import main
from quicktrain.config import OptimConfig
from quicktrain.errors import UserError
from quicktrain.models import MODELS, count_params
from quicktrain.models.contract import LogitsAdapter, logits_of, prepare_model, unwrap_compiled
from quicktrain.optim import make_optimizer, param_groups
from quicktrain.state import weights_sha256

N, C, L, K = 8, 1, 40, 10  # batch, channels, length, classes: MNIST-1D's layout
CPU = torch.device("cpu")


def batch() -> Tensor:
    return torch.randn(N, C, L)


def refused(model: nn.Module, num_classes: int = K, x: Tensor | None = None) -> str:
    """The one-line message prepare_model refuses `model` with."""
    with pytest.raises(UserError) as info:
        prepare_model(model, batch() if x is None else x, num_classes, CPU)
    message = str(info.value)
    assert "\n" not in message
    return message


class Head(nn.Module):
    """A linear classifier on flattened input whose forward wraps the logits with `wrap` (tuple, dict, ...)."""

    def __init__(self, wrap: Any = None) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(C * L, 16), nn.BatchNorm1d(16), nn.ReLU())
        self.head = nn.Linear(16, K)
        self.wrap = wrap

    def forward(self, x: Tensor) -> Any:
        logits = self.head(self.body(x))
        return logits if self.wrap is None else self.wrap(logits)


# ---------------------------------------------------------------------------------------------------------------------
# Lazy modules


def lazy_net() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.LazyLinear(16), nn.LazyBatchNorm1d(), nn.ReLU(), nn.LazyLinear(K))


def test_lazy_modules_are_materialised_before_anything_counts_them() -> None:
    model = lazy_net()
    with pytest.raises(UserError, match="lazy parameters that are not materialised yet"):
        count_params(model)
    notes: list[str] = []
    prepared = prepare_model(model, batch(), K, CPU, note=notes.append)
    assert prepared is model
    assert count_params(model) == (C * L * 16 + 16) + 2 * 16 + (16 * K + K)
    assert notes == [f"model: materialised 8 lazy parameters and buffers from a batch of shape {(N, C, L)}"]
    groups = param_groups(model, 0.1)
    assert [len(g["params"]) for g in groups] == [2, 4]  # two weights decayed; biases and BN gains not
    make_optimizer(model, OptimConfig(), CPU)
    assert model(batch()).shape == (N, K)


def test_the_probe_does_not_change_batchnorm_statistics_or_modes() -> None:
    model = lazy_net()
    model[2].eval()  # a user's frozen-statistics BN inside a model in train mode stays as it was
    prepare_model(model, batch() + 5.0, K, CPU)
    bn = model[2]
    assert torch.equal(bn.running_mean, torch.zeros(16)) and torch.equal(bn.running_var, torch.ones(16))
    assert int(bn.num_batches_tracked) == 0
    assert model.training and not bn.training and model[1].training


# ---------------------------------------------------------------------------------------------------------------------
# Outputs: tuple, dict, dataclass, .logits, own loss


@dataclass
class Output:
    logits: Tensor
    hidden: Tensor | None = None


class ModelOutput(OrderedDict):  # Hugging Face's shape: a dict whose items are also attributes
    def __getattr__(self, name: str) -> Any:
        return self[name]


Pair = namedtuple("Pair", "logits aux")

WRAPS = {
    "tuple": lambda z: (z, z.sum()),
    "list": lambda z: [z],
    "namedtuple": lambda z: Pair(z, z),
    "dict": lambda z: {"loss": None, "logits": z},
    "dataclass": lambda z: Output(z),
    "hf_model_output": lambda z: ModelOutput(logits=z),
}


@pytest.mark.parametrize("kind", list(WRAPS))
def test_non_tensor_outputs_are_adapted_to_their_logits(kind: str) -> None:
    model = Head(WRAPS[kind])
    notes: list[str] = []
    adapted = prepare_model(model, batch(), K, CPU, note=notes.append)
    assert isinstance(adapted, LogitsAdapter) and adapted.wrapped is model
    x = batch()
    adapted.eval()
    assert torch.equal(adapted(x), logits_of(model(x)))  # type: ignore[arg-type]
    assert len(notes) == 1 and "LogitsAdapter" in notes[0]


class NanoGPTStyle(nn.Module):
    """forward(idx, targets=None) -> (logits, loss): the loss only when targets are given."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(C * L, K))

    def forward(self, idx: Tensor, targets: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        logits = self.net(idx)
        loss = None if targets is None else nn.functional.cross_entropy(logits, targets)
        return logits, loss


def test_a_model_with_its_own_loss_trains_on_its_logits() -> None:
    adapted = prepare_model(NanoGPTStyle(), batch(), K, CPU)
    assert isinstance(adapted, LogitsAdapter)
    assert adapted(batch()).shape == (N, K)


def test_a_forward_that_requires_targets_is_refused() -> None:
    class NeedsTargets(NanoGPTStyle):
        def forward(self, idx: Tensor, targets: Tensor) -> tuple[Tensor, Tensor | None]:  # type: ignore[override]
            return super().forward(idx, targets)

    message = refused(NeedsTargets())
    assert message.startswith("model.forward(idx: 'Tensor', targets: 'Tensor')")
    assert "give the other arguments defaults (e.g. targets=None)" in message


def test_an_output_without_logits_is_refused() -> None:
    message = refused(Head(lambda z: {"scores": z}))
    assert message.startswith("model returns a dict with keys 'scores', with no logits in it: return a tensor")
    no_logits = Head(lambda z: Output(logits=None))  # type: ignore[arg-type]
    assert refused(no_logits).startswith("model returns an object of type Output, with no logits in it")


def test_output_kind_may_differ_between_train_and_eval() -> None:
    """torchvision's Inception style: (logits, aux) in training, logits alone in evaluation."""
    model = Head(lambda z: (z, z) if model.training else z)
    adapted = prepare_model(model, batch(), K, CPU)
    assert isinstance(adapted, LogitsAdapter)
    assert adapted.train()(batch()).shape == (N, K) and adapted.eval()(batch()).shape == (N, K)


def test_a_tensor_output_needs_no_adapter() -> None:
    model = Head()
    assert prepare_model(model, batch(), K, CPU) is model
    assert prepare_model(MODELS["tiny1d"]((C, L), K), batch(), K, CPU).__class__ is not LogitsAdapter


def test_the_adapter_keeps_the_model_state_dict_keys_and_hash() -> None:
    model = Head(WRAPS["dict"])
    plain_keys = list(model.state_dict())
    adapted = prepare_model(model, batch(), K, CPU)
    assert list(adapted.state_dict()) == plain_keys
    assert weights_sha256(adapted) == weights_sha256(model)
    twin = Head(WRAPS["dict"])  # a bare model loads the adapter's state, and the adapter a bare model's
    twin.load_state_dict(adapted.state_dict())
    adapted.load_state_dict(Head(WRAPS["dict"]).state_dict())
    twin.load_state_dict(adapted.state_dict())
    assert weights_sha256(twin) == weights_sha256(adapted)
    copied = copy.deepcopy(adapted)  # as EMA and the auto race copy it
    assert list(copied.state_dict()) == plain_keys and copied.wrapped is not model
    nested = nn.Sequential(adapted)  # a parent (or torch.compile's wrapper) sees the keys under its own prefix
    assert list(nested.state_dict()) == [f"0.{k}" for k in plain_keys]
    nested.load_state_dict(nested.state_dict())


# ---------------------------------------------------------------------------------------------------------------------
# Buffers, frozen and tied parameters, devices, torch.compile


class WithBuffers(Head):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))
        self.register_buffer("scale", torch.ones(1), persistent=False)

    def forward(self, x: Tensor) -> Any:
        self.calls += 1  # a buffer the forward updates, like BN's num_batches_tracked
        return super().forward(x) * self.scale


def test_buffers_are_kept_and_the_probe_leaves_them_and_the_rng_alone() -> None:
    model, x = nn.Sequential(WithBuffers(), nn.Dropout(0.5)), batch()
    rng = torch.get_rng_state()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert prepare_model(model, x, K, CPU) is model
    assert torch.equal(torch.get_rng_state(), rng)  # the train-mode probe's dropout drew from a forked RNG
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before) and "scale" not in "".join(after)
    assert torch.equal(model[0].scale, torch.ones(1))


def frozen_net() -> nn.Module:
    model = Head()
    model.body.requires_grad_(False)  # a frozen feature extractor: only the head trains
    return model


def test_frozen_parameters_are_in_no_group_and_not_decayed() -> None:
    model = frozen_net()
    assert prepare_model(model, batch(), K, CPU) is model
    trainable = {id(model.head.weight), id(model.head.bias)}
    groups = param_groups(model, 0.1)
    assert [(g["weight_decay"], [id(p) for p in g["params"]]) for g in groups] == [
        (0.1, [id(model.head.weight)]), (0.0, [id(model.head.bias)])]
    for name in ("adamw", "sgd", "adam"):
        opt = make_optimizer(model, OptimConfig(name=name), CPU)
        assert {id(p) for g in opt.param_groups for p in g["params"]} == trainable
    assert count_params(model, trainable=True) == 16 * K + K < count_params(model)


def test_a_model_with_nothing_to_train_is_refused() -> None:
    model = Head().requires_grad_(False)
    assert refused(model) == "model has no trainable parameters (every requires_grad is False): unfreeze at least one"
    with pytest.raises(UserError, match="no trainable parameters"):
        make_optimizer(model, OptimConfig(), CPU)


class Tied(nn.Module):
    """An input embedding and output layer sharing one weight (GPT-2, nanoGPT)."""

    def __init__(self, vocab: int = K, dim: int = 6) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.out = nn.Linear(dim, vocab, bias=False)
        self.out.weight = self.embed.weight

    def forward(self, idx: Tensor) -> Tensor:
        return self.out(self.embed(idx).mean(1))


def test_tied_parameters_count_once_and_are_in_one_group() -> None:
    model = Tied()
    idx = torch.randint(0, K, (N, 5))
    assert prepare_model(model, idx, K, CPU) is model
    assert count_params(model) == K * 6
    groups = param_groups(model, 0.1)
    assert [[id(p) for p in g["params"]] for g in groups] == [[id(model.embed.weight)]]
    for name in ("adamw", "sgd"):  # torch refuses a tensor in two groups; there is one
        make_optimizer(model, OptimConfig(name=name), CPU)


def test_parameters_on_the_meta_device_are_refused() -> None:
    with torch.device("meta"):
        model = Head()
    message = refused(model)
    assert message.startswith("model has parameters on the meta device, which hold no values (first: body.1.weight)")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_parameters_on_another_device_are_moved() -> None:
    model = Head(WRAPS["tuple"]).cuda()
    adapted = prepare_model(model, batch(), K, CPU)  # the sample batch is moved too
    assert all(t.device.type == "cpu" for t in adapted.state_dict().values())
    back = prepare_model(model, batch(), K, torch.device("cuda"))
    assert all(t.device.type == "cuda" for t in back.state_dict().values())
    assert back(batch().cuda()).shape == (N, K)


def test_a_compiled_model_trains_the_module_inside() -> None:
    model = Head()
    compiled = torch.compile(model)  # lazy: nothing compiles until it is called, and prepare_model never calls it
    assert unwrap_compiled(compiled) == (model, True) and unwrap_compiled(model) == (model, False)
    notes: list[str] = []
    assert prepare_model(compiled, batch(), K, CPU, note=notes.append) is model
    assert notes[0].startswith("model: training the module inside its torch.compile wrapper")
    lazy = torch.compile(nn.Sequential(lazy_net(), nn.Identity()))
    adapted = prepare_model(torch.compile(Head(WRAPS["tuple"])), batch(), K, CPU)
    assert isinstance(adapted, LogitsAdapter) and list(adapted.state_dict())[0] == "body.1.weight"
    assert count_params(prepare_model(lazy, batch(), K, CPU)) > 0


# ---------------------------------------------------------------------------------------------------------------------
# Shapes and failing forwards


def test_an_output_with_the_wrong_number_of_classes_names_both_shapes() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(C * L, 7))
    assert refused(model) == ("model output has shape (8, 7) but the data has 10 classes: "
                              "make the last layer output 10 features")
    wrapped = Head(lambda z: (z[:, :3], None))
    assert refused(wrapped).startswith("model output has shape (8, 3) but the data has 10 classes")


def test_an_output_that_is_not_batch_by_classes_is_refused() -> None:
    unflattened = nn.Linear(L, K)  # (N, 1, 40) -> (N, 1, 10): forgot to flatten
    assert refused(unflattened) == ("model output has shape (8, 1, 10) for a batch of shape (8, 1, 40); it must be "
                                    "(8, 10) (batch, classes): e.g. flatten or pool before the last layer")
    pooled_batch = nn.Sequential(nn.Flatten(0), nn.Linear(N * C * L, K))  # (10,): the batch dimension is gone
    assert refused(pooled_batch).startswith("model output has shape (10,) for a batch of shape (8, 1, 40)")


def test_a_forward_that_fails_on_the_data_is_one_line() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(30, K))
    assert refused(model) == ("model failed on a batch of shape (8, 1, 40) in eval mode: RuntimeError: "
                              "mat1 and mat2 shapes cannot be multiplied (8x40 and 30x10)")


def test_not_a_module_is_refused() -> None:
    with pytest.raises(UserError, match="model must be a torch.nn.Module, got function"):
        prepare_model(lambda x: x, batch(), K, CPU)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------------------------------
# A recipe naming a model the zoo does not have

UNKNOWN = """
from quicktrain.config import Config, DataConfig, Mnist1dArgs, ModelConfig, SystemConfig, TrainConfig
CONFIG = Config(
    name="unknown",
    tuned_for="",  # fixed constants: a test (or benchmark) of the loop itself, never adapted
    data=DataConfig(name="mnist1d", mnist1d=Mnist1dArgs(num_samples=1000)),
    model=ModelConfig(name="resnet50"),
    train=TrainConfig(epochs=0.1, batch_size=32),
    system=SystemConfig(precision="fp32", compile="off"),
)
"""


def test_a_recipe_with_an_unknown_model_is_one_line_listing_the_zoo(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "unknown.py"
    path.write_text(UNKNOWN)
    code = main(["run", str(path), "--run-dir", str(tmp_path / "r"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    assert err == (f"quicktrain: error: config key model.name: unknown model 'resnet50' "
                   f"(choose from {', '.join(MODELS)})\n")
