"""One registry of techniques. Each entry says which config field switches it, how to tell it is on, the overrides
that turn it off and on, what it adds to a run (a step `Method`, built in registry order, which is the order the
methods act on a batch), what it does to input shapes, and its range in the default search space.

`bench --ablate` (one row per entry), the default search space (`search`), the FLOP replay (`input_size`), the loop's
step methods (`build`) and the technique tests all iterate `TECHNIQUES`, so a new technique is one module plus one
entry here plus its test.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from quicktrain.config import Config
from quicktrain.data.types import Split, Splits
from quicktrain.errors import ConfigError
from quicktrain.methods.augment import Augment
from quicktrain.methods.base import Method
from quicktrain.methods.ema import EMA
from quicktrain.methods.progressive_resize import ProgressiveResize, resize, size_at
from quicktrain.models.gpt import NGRAM_ROWS
from quicktrain.runtime import derive_seed

Builder = Callable[[Config, Any, nn.Module, torch.device], Method | None]  # splits: Splits or TokenSplits
WD = 5e-4  # the decay the weight-decay rows add to a recipe that has none
TRUST_RATIO = ("lars", "lamb")  # quicktrain.large_batch: the decay is part of the layer-wise trust ratio
KEEPS_OPTIMIZER = ("muon", *TRUST_RATIO)  # the decay row toggles their decay and keeps the optimizer


@dataclass(frozen=True)
class Technique:
    name: str  # the ablation row: "− name" when the recipe has it, "+ name" when it does not
    key: str  # the config field that switches it
    is_on: Callable[[Config], bool]
    off: dict[str, Any] | Callable[[Config], dict[str, Any]]
    on: dict[str, Any] | Callable[[Config], dict[str, Any]]
    label_on: Callable[[Config], str] | None = None
    label_off: Callable[[Config], str | None] | None = None  # None, or None returned: "− name"
    build: Builder | None = None  # the step method this technique adds to a run (None: it acts through config)
    input_size: Callable[[Config, float, int], int] | None = None  # (cfg, progress, full size) -> training size
    search: tuple[Any, ...] | None = None  # its range in the default search space, keyed by `key`
    applies: Callable[[Config], bool] = lambda c: True  # whether it means anything for this config's task and model

    def off_for(self, base: Config) -> dict[str, Any]:
        """The overrides that turn this technique off on `base` (some depend on it: decay under Muon vs AdamW)."""
        return self.off(base) if callable(self.off) else self.off

    def variant(self, base: Config) -> tuple[str, dict[str, Any]]:
        """The ablation row for this technique on `base`: its label and the overrides that toggle it."""
        if self.is_on(base):
            label = self.label_off(base) if self.label_off is not None else None
            return label or f"− {self.name}", self.off_for(base)
        label = self.label_on(base) if self.label_on is not None else f"+ {self.name}"
        return label, self.on(base) if callable(self.on) else self.on


def _decay_everything(c: Config) -> dict[str, Any]:
    """On a recipe without decay, the informative row is decay on *every* parameter, to compare with the
    decoupled-decay row (which spares norm/bias/1-d parameters)."""
    if c.optim.weight_decay > 0:
        return {"optim.no_decay_1d": True}
    return {"optim.weight_decay": WD, "optim.no_decay_1d": False}


def _augment(cfg: Config, splits: Splits, model: nn.Module, device: torch.device) -> Method | None:
    if splits.augment == "none" or cfg.data.shift <= 0:
        return None
    return Augment(splits.augment, cfg.data.shift, device, derive_seed(cfg.train.seed, "augment"))


def examples(splits: Any) -> Split:
    """Training examples held in memory: the training split, or a next-token task's sample windows."""
    return splits.sample if hasattr(splits, "sample") else splits.train


def full_size(splits: Any) -> int:
    """The full input size progressive resizing grows to: the longest spatial side, or the context (tokens)."""
    shape = splits.input_shape
    return shape[0] if len(shape) == 1 else max(shape[1:])


def _resize(cfg: Config, splits: Any, model: nn.Module, device: torch.device) -> Method | None:
    mc = cfg.methods
    if mc.resize_from >= 1.0:
        return None
    full = full_size(splits)
    _check_resizable(model, splits, size_at(0.0, full, mc.resize_from, mc.resize_until, mc.resize_multiple), device,
                     cfg.model.name)
    return ProgressiveResize(full, mc.resize_from, mc.resize_until, mc.resize_multiple)


def _resize_size(cfg: Config, progress: float, full: int) -> int:
    mc = cfg.methods
    return size_at(progress, full, mc.resize_from, mc.resize_until, mc.resize_multiple) if mc.resize_from < 1 else full


def _check_resizable(model: nn.Module, splits: Splits, size: int, device: torch.device, name: str) -> None:
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(resize(examples(splits).x[:2].to(device), size))
    except RuntimeError:
        raise ConfigError(f"config key methods.resize_from: model {name!r} needs fixed-size inputs "
                          f"(it failed at size {size}); set methods.resize_from=1") from None
    finally:
        model.train(was_training)


def _gpt_row(flag: str, name: str) -> Technique:
    """A toggle of the gpt model (config model.gpt.<flag>), a row of `bench --ablate` on next-token recipes."""
    key = f"model.gpt.{flag}"
    return Technique(name, key, lambda c: getattr(c.model.gpt, flag), {key: False}, {key: True},
                     applies=lambda c: c.model.name == "gpt")


def _lm(c: Config) -> bool:
    return c.data.language


def _ema(cfg: Config, splits: Splits, model: nn.Module, device: torch.device) -> Method | None:
    return EMA(model, cfg.methods.ema, cfg.methods.ema_every) if cfg.methods.ema > 0 else None


TECHNIQUES: tuple[Technique, ...] = (
    Technique("warmup + one-cycle schedule", "schedule.kind", lambda c: c.schedule.kind != "constant",
              {"schedule.kind": "constant"}, {"schedule.kind": "onecycle"}, search=None),
    Technique("decoupled weight decay (AdamW)", "optim.weight_decay",
              lambda c: c.optim.name in ("adamw", "sgd", *KEEPS_OPTIMIZER) and c.optim.weight_decay > 0,
              lambda c: {"optim.weight_decay": 0.0} if c.optim.name in KEEPS_OPTIMIZER else {"optim.name": "adam"},
              lambda c: {"optim.weight_decay": c.optim.weight_decay or WD} if c.optim.name in KEEPS_OPTIMIZER else
              {"optim.name": "adamw", "optim.weight_decay": c.optim.weight_decay or WD},
              label_on=lambda c: f"+ weight decay ({c.optim.name}, {c.optim.weight_decay or WD:g})"
              if c.optim.name in TRUST_RATIO else
              f"+ decoupled weight decay ({'' if c.optim.name == 'muon' else 'AdamW, '}{c.optim.weight_decay or WD:g})",
              label_off=lambda c: f"− weight decay ({c.optim.name})" if c.optim.name in TRUST_RATIO else None,
              search=("log", 1e-5, 1e-2)),
    Technique("no decay on norm/bias/1-d", "optim.no_decay_1d",
              lambda c: c.optim.no_decay_1d and c.optim.weight_decay > 0,
              {"optim.no_decay_1d": False}, _decay_everything,
              label_on=lambda c: "+ no decay on norm/bias/1-d" if c.optim.weight_decay > 0
              else f"+ weight decay ({WD:g}) on norm/bias/1-d too"),
    Technique("mixed precision (bf16/fp16)", "system.precision", lambda c: c.system.precision != "fp32",
              {"system.precision": "fp32"}, {"system.precision": "bf16"}),
    Technique("label smoothing", "methods.label_smoothing", lambda c: c.methods.label_smoothing > 0,
              {"methods.label_smoothing": 0.0}, {"methods.label_smoothing": 0.1}, search=("float", 0.0, 0.2),
              applies=lambda c: not _lm(c)),
    Technique("on-device augmentation", "data.augment", lambda c: c.data.augment != "none", {"data.augment": "none"},
              {"data.augment": "auto"}, build=_augment, applies=lambda c: not _lm(c)),
    # on token sequences: sequence-length warm-up (windows cropped to the first tokens, Li et al. 2022)
    Technique("progressive resizing", "methods.resize_from", lambda c: c.methods.resize_from < 1,
              {"methods.resize_from": 1.0}, {"methods.resize_from": 0.5}, build=_resize, input_size=_resize_size),
    Technique("Muon for hidden 2-D weights", "optim.name", lambda c: c.optim.name == "muon", {"optim.name": "adamw"},
              {"optim.name": "muon"}, applies=_lm),
    _gpt_row("rotary", "rotary embeddings"),
    _gpt_row("qk_norm", "QK-norm"),
    _gpt_row("relu2", "ReLU² MLP"),
    _gpt_row("zero_init", "zero-initialised projections"),
    # modded-nanogpt's bigram embedding extended to 3- and 4-grams (quicktrain.models.gpt.ngram_hash): on stdlib_lm
    # the recipe's largest single gain (70 steps: 1.79 with, 2.28 without; docs/results/lm/selection2.jsonl)
    Technique("hashed n-gram embeddings", "model.gpt.ngram_rows", lambda c: any(c.model.gpt.ngram_rows),
              {"model.gpt.ngram_rows": ()}, {"model.gpt.ngram_rows": NGRAM_ROWS},
              applies=lambda c: c.model.name == "gpt"),
    Technique("head LR 4x the peak", "optim.head_lr_scale", lambda c: c.optim.head_lr_scale != 1.0,
              {"optim.head_lr_scale": 1.0}, {"optim.head_lr_scale": 4.0}, applies=lambda c: c.optim.name == "muon"),
    Technique("untied head", "model.gpt.tied_head", lambda c: not c.model.gpt.tied_head,
              {"model.gpt.tied_head": True}, {"model.gpt.tied_head": False}, applies=lambda c: c.model.name == "gpt"),
    Technique("EMA of weights", "methods.ema", lambda c: c.methods.ema > 0, {"methods.ema": 0.0}, {"methods.ema": 0.9},
              build=_ema),
    Technique("batch-size ramp", "schedule.batch_ramp_from", lambda c: c.schedule.batch_ramp_from > 0,
              {"schedule.batch_ramp_from": 0}, lambda c: {"schedule.batch_ramp_from": max(1, c.train.batch_size // 4)}),
    Technique("test-time augmentation", "methods.tta", lambda c: c.methods.tta, {"methods.tta": False},
              {"methods.tta": True}, applies=lambda c: not _lm(c)),
    Technique("channels_last", "system.channels_last", lambda c: c.system.channels_last != "off",
              {"system.channels_last": "off"}, {"system.channels_last": "on"}, applies=lambda c: not _lm(c)),
    Technique("torch.compile", "system.compile", lambda c: c.system.compile != "off", {"system.compile": "off"},
              {"system.compile": "on"}, applies=_lm),
)


def build_methods(cfg: Config, splits: Splits, model: nn.Module, device: torch.device) -> list[Method]:
    """The step methods this config turns on, in registry order (the order they act on a batch)."""
    built = (t.build(cfg, splits, model, device) for t in TECHNIQUES if t.build is not None and t.applies(cfg))
    return [m for m in built if m is not None]


def input_size(cfg: Config, progress: float, full: int) -> int:
    """The training input size at `progress` after every technique that changes it."""
    for t in TECHNIQUES:
        if t.input_size is not None:
            full = t.input_size(cfg, progress, full)
    return full
