"""A `Run`: everything one training run is made of, built once by `build_run` and shared by the loop, the LR finder
and the `auto` race: device, data splits on the device, the task, model and the net that is called (compiled or
not), optimizer, batch source, step methods, precision and the `auto` choices behind it.

Setup order is fixed, because it decides what the random generators have produced by the first step (and so what a
resumed run must reproduce): seeds, data, model, batch source, optimizer, methods, then the `auto` race on copies.
The race's time is *outside* the train clock, always (it is a per-machine measurement, cached; README, "What is
measured"); the LR finder's sweep, when the run uses one, is inside it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import Tensor, nn

from quicktrain import measure
from quicktrain.autotune import Choices, autotune, cache_key
from quicktrain.config import Config
from quicktrain.data import Splits, load_data
from quicktrain.data.batches import DeviceBatches
from quicktrain.methods import EMA, Method, hooks
from quicktrain.methods.registry import build_methods
from quicktrain.models import build_model
from quicktrain.models.contract import prepare_model
from quicktrain.optim import make_optimizer
from quicktrain.precision import Precision
from quicktrain.runtime import derive_seed, pick_device, seed_everything
from quicktrain.schedules import Schedule, make_schedule
from quicktrain.step import train_step
from quicktrain.tasks import Classification


@dataclass
class Run:
    cfg: Config
    device: torch.device
    splits: Splits
    task: Classification
    model: nn.Module  # owns the parameters: checkpointed, hashed, clipped
    net: nn.Module  # what the step calls: the model, or its torch.compile wrapper
    optimizer: torch.optim.Optimizer
    batches: DeviceBatches
    methods: list[Method]
    precision: Precision
    choices: Choices
    val: tuple[Tensor, Tensor]
    test: tuple[Tensor, Tensor]
    total: int  # samples in the budget: progress = samples seen / total
    schedule: Schedule  # progress -> (batch size, LR); observes each check (warmup-stable-decay)
    adapted: bool = False  # the adaptive defaults replaced the recipe's constants (quicktrain.adapt)
    on_batch: list[Callable[..., Any]] = field(default_factory=list)
    after_step: list[Callable[..., Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.on_batch, self.after_step = hooks(self.methods, "on_batch"), hooks(self.methods, "after_step")
        self._cl_input = self.choices.channels_last and self.batches.x.ndim == 4

    @property
    def eval_model(self) -> nn.Module:
        """What evaluation uses: the EMA average when that technique is on, else the model."""
        ema = next((m for m in self.methods if isinstance(m, EMA)), None)
        return ema.model if ema is not None else self.model

    @property
    def n_train(self) -> int:
        return self.batches.n

    def stateful(self) -> dict[str, Any]:
        """Everything whose state decides the rest of the run, by checkpoint name."""
        out = {"model": self.model, "optimizer": self.optimizer, "batches": self.batches, "precision": self.precision,
               **{f"method/{m.name}": m for m in self.methods}}
        if hasattr(self.schedule, "state_dict"):  # a schedule that reacts to checks has state to resume
            out["schedule"] = self.schedule
        return out

    def next_batch(self, batch_size: int, progress: float) -> tuple[Tensor, Tensor]:
        """The next training batch with every method's `on_batch` applied, in the chosen memory layout."""
        x, y = self.batches.next(batch_size)
        for hook in self.on_batch:
            x, y = hook(x, y, progress)
        return self.layout(x), y

    def layout(self, x: Tensor) -> Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self._cl_input else x

    def step(self, x: Tensor, y: Tensor) -> Tensor:
        return train_step(self.net, self.optimizer, self.precision, self.task.loss, x, y, self.cfg.optim.grad_clip,
                          self.model)


def build_run(cfg: Config, model: nn.Module | None = None, data: Any = None, choices: Choices | None = None,
              say: Callable[[str], None] = lambda _m: None) -> Run:
    """Set up a run. `choices` (a resumed run's) skips the `auto` race: a different precision would change the
    numbers. `model` is used as given (moved to the device), not copied."""
    tc = cfg.train
    device = pick_device(cfg.system.device)
    if cfg.system.threads:
        torch.set_num_threads(cfg.system.threads)
    seed_everything(tc.seed)
    splits = load_data(cfg.data, data)
    model = model if model is not None else build_model(cfg.model, splits.input_shape, splits.num_classes)
    model = prepare_model(model, splits.train.x[:8], splits.num_classes, device, note=say)  # any nn.Module: contract.py
    xtr, ytr = splits.train.x.to(device), splits.train.y.to(device)
    batches = DeviceBatches(xtr, ytr, seed=derive_seed(tc.seed, "order"), sequential=tc.sequential)
    optimizer = make_optimizer(model, cfg.optim, device)
    task = Classification(cfg.methods.label_smoothing, splits.augment if cfg.methods.tta else "none")
    total = max(1, int(tc.epochs * len(splits.train)))
    methods = build_methods(cfg, splits, model, device)
    if choices is None:
        sample_x, sample_y = xtr[: tc.batch_size], ytr[: tc.batch_size]
        choices = autotune(cfg.system, model, lambda m: make_optimizer(m, cfg.optim, device), sample_x, sample_y,
                           task.loss, math.ceil(total / tc.batch_size),
                           cache_key(model, sample_x, cfg.optim.name, measure.device_name(device)))
    say(f"device {measure.device_name(device)}: precision {choices.precision}, channels_last {choices.channels_last}, "
        f"compile {choices.compile}")
    if choices.channels_last:
        model = model.to(memory_format=torch.channels_last)
    net = torch.compile(model) if choices.compile else model
    val = (splits.val.x.to(device), splits.val.y.to(device))
    test = (splits.test.x.to(device), splits.test.y.to(device))
    schedule = make_schedule(cfg, total, len(splits.train), max(1, int(tc.eval_every * len(splits.train))),
                             resolution=2 / max(1, len(splits.val)))
    return Run(cfg, device, splits, task, model, net, optimizer, batches, methods, Precision(choices.precision, device),
               choices, val, test, total, schedule)
