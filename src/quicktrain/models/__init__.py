"""The model registry: `MODELS` maps a name to a builder `builder(input_shape, num_classes, channels=()) -> nn.Module`.

`input_shape` is per sample: (C, L) for 1-D signals, (C, H, W) for images; models take batches (N, *input_shape).
`channels=()` means the model's own default widths; builders that take per-stage `strides` (fastnet1d) get them
from `model.strides` when it is set. Add a model by adding an entry to the dict. Every model uses
PyTorch's default initialisation.

| name      | data | default widths  | notes                                                                 |
|-----------|------|-----------------|-----------------------------------------------------------------------|
| convbase  | 1-D  | (25,)           | greydanus/mnist1d reference CNN, 5,210 params at L=40 (fixed length)  |
| fastnet1d | 1-D  | (32, 48, 64)    | conv-BN-ReLU stages, strided, global max; any length                  |
| resnet2d  | 2-D  | (32, 64, 128)   | one residual block a stage, global average; any size                  |
| mlp       | any  | (128,)          | two hidden layers of the one width; fixed size                        |
| tiny1d    | 1-D  | (8,)            | test model                                                            |
| tiny2d    | 2-D  | (8,)            | test model                                                            |
| revnet1d  | 1-D  | (64,)           | `model.depth` residual blocks at one width; `model.reversible` RevNet  |
| gpt       | tokens | model.gpt     | decoder-only transformer for next-token tasks (quicktrain.models.gpt) |

`gpt` takes its shape and toggles from `model.gpt` (GPTArgs) and its context from `data.context`; it is the one
next-token model, and the only registry model a next-token task accepts (any nn.Module from Python works too).
"""

from __future__ import annotations

import inspect
from dataclasses import asdict
from typing import Callable

from torch import nn
from torch.nn.parameter import is_lazy

from quicktrain.config import ModelConfig
from quicktrain.errors import ConfigError, UserError
from quicktrain.models.contract import LogitsAdapter, prepare_model
from quicktrain.models.conv1d import convbase, fastnet1d, tiny1d
from quicktrain.models.conv2d import resnet2d, tiny2d
from quicktrain.models.mlp import mlp
from quicktrain.models.revnet import revnet1d

__all__ = ["MODELS", "LogitsAdapter", "build_model", "count_params", "prepare_model"]

def _gpt(input_shape: tuple[int, ...], num_classes: int, channels: tuple[int, ...] = (), **args: object) -> nn.Module:
    from quicktrain.models.gpt import gpt

    try:
        return gpt(num_classes, input_shape[0], **args)  # type: ignore[arg-type]
    except ValueError as exc:  # e.g. rotary with an odd head dimension: a config problem, said in one line
        raise ConfigError(f"config key model.gpt: {exc}") from None


MODELS: dict[str, Callable[..., nn.Module]] = {
    "convbase": convbase,
    "fastnet1d": fastnet1d,
    "resnet2d": resnet2d,
    "mlp": mlp,
    "revnet1d": revnet1d,
    "tiny1d": tiny1d,
    "tiny2d": tiny2d,
    "gpt": _gpt,
}


def build_model(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """The model `cfg.name` for per-sample `input_shape` ((context,) for token ids); a one-line ConfigError naming
    the key if it cannot be built."""
    if cfg.name not in MODELS:
        raise ConfigError(f"config key model.name: unknown model {cfg.name!r} (choose from {', '.join(MODELS)})")
    tokens = len(input_shape) == 1
    if tokens != (cfg.name == "gpt"):
        need = "a next-token task needs model.name=gpt (or a model from Python)" if tokens else \
            "gpt is a next-token model: use it with data.name=stdlib or tokens"
        raise ConfigError(f"config key model.name: {need}")
    if cfg.name == "gpt":
        if cfg.depth:
            raise ConfigError("config key model.depth: gpt takes its depth from model.gpt.layers")
        return _gpt(input_shape, num_classes, **asdict(cfg.gpt), **({"reversible": True} if cfg.reversible else {}))
    builder = MODELS[cfg.name]
    kwargs = {"strides": tuple(cfg.strides), "depth": cfg.depth, "reversible": cfg.reversible}
    kwargs = {k: v for k, v in kwargs.items() if v}  # only what is set, so each builder gets what it knows
    accepted = inspect.signature(builder).parameters
    for key in kwargs:
        if key not in accepted:
            what = {"strides": "per-stage strides", "depth": "depth setting", "reversible": "reversible blocks"}[key]
            raise ConfigError(f"config key model.{key}: model {cfg.name!r} has no {what} (leave it unset)")
    return builder(tuple(input_shape), num_classes, tuple(cfg.channels), **kwargs)


def count_params(model: nn.Module, trainable: bool = False) -> int:
    """Number of parameters, or with `trainable` only those with requires_grad. A shared (tied) tensor counts once,
    as `model.parameters()` yields it once. Lazy parameters have no size yet: a one-line UserError says so."""
    params = [p for p in model.parameters() if p.requires_grad or not trainable]
    if any(is_lazy(p) for p in params):
        raise UserError("model has lazy parameters that are not materialised yet: run one batch through it first "
                        "(quicktrain.models.contract.prepare_model does)")
    return sum(p.numel() for p in params)
