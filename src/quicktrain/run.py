"""A `Run`: everything one training run is made of, built once by `build_run` and shared by the loop, the LR finder
and the `auto` race: device, data splits on the device, the task, model and the net that is called (compiled or
not), optimizer, batch source, step methods, precision and the `auto` choices behind it.

Setup order is fixed, because it decides what the random generators have produced by the first step (and so what a
resumed run must reproduce): seeds, data, model, batch source, optimizer, methods, then the `auto` race on copies.
The race's time is *outside* the train clock, always (it is a per-machine measurement, cached; README, "What is
measured"); the LR finder's sweep, when the run uses one, is inside it.
"""

from __future__ import annotations

import copy
import inspect
import math
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import torch
from torch import Tensor, nn

from quicktrain import measure
from quicktrain.autotune import Choices, autotune, cache_key
from quicktrain.config import Config
from quicktrain.errors import ConfigError
from quicktrain.data import Splits, load_data
from quicktrain.data.batches import DeviceBatches
from quicktrain.data.lm import TokenSplits, lm_batches, load_lm
from quicktrain.data.stream import StreamedSplits, stream_batches
from quicktrain.dist import SINGLE, Dist, check_batch, device_for, setup as setup_dist
from quicktrain.lr_find import StartWeights
from quicktrain.memory.backoff import Backoff
from quicktrain.memory.checkpointing import apply_checkpointing
from quicktrain.memory.planner import Plan as MemoryPlan, Variant
from quicktrain.memory.reversible import configure_reversible
from quicktrain.memory.settings import apply_settings, memory_settings
from quicktrain.memory.tracking import tensor_bytes
from quicktrain.methods import EMA, Method, hooks
from quicktrain.methods.registry import build_methods
from quicktrain.models import MODELS, build_model
from quicktrain.models.contract import prepare_model, prepare_lm
from quicktrain.noise import DDPProbe, NoiseScale, half_batch_sq_norm, sq_norm
from quicktrain.optim import make_optimizer
from quicktrain.precision import Precision
from quicktrain.runtime import derive_seed, pick_device, seed_everything
from quicktrain.schedules import Schedule, make_schedule
from quicktrain.step import backward_pass, train_step
from quicktrain.tasks import Classification, NextToken, Task


@dataclass
class Run:
    cfg: Config
    device: torch.device
    splits: Splits | StreamedSplits | TokenSplits
    task: Task
    model: nn.Module  # owns the parameters: checkpointed, hashed, clipped
    net: nn.Module  # what the step calls: the model, or its torch.compile wrapper
    optimizer: torch.optim.Optimizer
    batches: Any  # DeviceBatches, or for a next-token task ResidentWindows / TokenWindows (quicktrain.data.lm)
    methods: list[Method]
    precision: Precision
    choices: Choices
    val: tuple[Tensor, Tensor]
    test: tuple[Tensor, Tensor]
    total: int  # samples in the budget: progress = samples seen / total
    schedule: Schedule  # progress -> (batch size, LR); observes each check (warmup-stable-decay)
    interval: int = 1  # samples between validation checks
    data_path: str = "resident"  # how training batches are read: resident (tensors on the device) | streamed
    adapted: bool = False  # the adaptive defaults replaced the recipe's constants (quicktrain.adapt)
    backoff: Backoff | None = None  # under a memory cap: halves the micro-batch on out-of-memory
    plan: MemoryPlan | None = None  # the memory settings and, under a cap, the planner's table
    dist: Dist = SINGLE  # data parallel under torchrun (quicktrain.dist): this process's rank and its collectives
    noise: NoiseScale | None = None  # the gradient noise scale, measured every noise.every steps (quicktrain.noise)
    probe: DDPProbe | None = None  # under data parallel: reads each rank's own gradient norm in DDP's hook
    start_weights: StartWeights = field(default_factory=StartWeights)  # a deferred LR range test sweeps from these
    on_batch: list[Callable[..., Any]] = field(default_factory=list)
    after_step: list[Callable[..., Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.on_batch, self.after_step = hooks(self.methods, "on_batch"), hooks(self.methods, "after_step")
        self._cl_input = self.choices.channels_last and len(self.splits.input_shape) == 3
        # under data parallel: every rank draws and augments the global batch and keeps its slice, unless the source
        # reads only the rank's rows itself (token windows)
        self._slice = self.dist.on and not hasattr(self.batches, "set_part")

    @property
    def defers_lr_test(self) -> bool:
        """An adaptive run with adapt.lr_find=auto: it decides at its checks whether the LR range test pays."""
        return self.adapted and self.cfg.adapt.lr_find == "auto"

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
        if self.noise is not None:
            out["noise"] = self.noise
        if self.defers_lr_test:  # its start weights, kept until the test has been decided
            out["start_weights"] = self.start_weights
        return out

    def next_batch(self, batch_size: int, progress: float) -> tuple[Tensor, Tensor]:
        """The next training batch with every method's `on_batch` applied, in the chosen memory layout."""
        x, y = self.batches.next(batch_size)
        for hook in self.on_batch:
            x, y = hook(x, y, progress)
        if self._slice:
            x, y = self.dist.part(x), self.dist.part(y)
        return self.layout(x), y

    def _measure_noise(self, x: Tensor, y: Tensor, step: int, samples: int) -> None:
        """|G_B|^2 of the step's gradient (all-reduced under data parallel) and |G_b|^2 of a smaller batch at the
        same weights: a rank's share (DDP's hook) or half of this batch, at most one micro-batch (quicktrain.noise)."""
        assert self.noise is not None
        scale = float(self.precision.scaler.get_scale()) if self.precision.scaler is not None else 1.0
        big = sq_norm(p.grad for p in self.model.parameters()) / scale**2
        if self.probe is not None:
            mine = torch.tensor([self.probe.take() / scale**2], dtype=torch.float64)
            small, b = float(self.dist.sum(mine)) / self.dist.world, len(x)
        elif len(x) >= 2:
            b = min(len(x) // 2, self.cfg.memory.micro_batch or len(x))
            small = half_batch_sq_norm(self.model, self.precision, self.task.loss, x, y, b)
        else:
            return
        self.noise.update(small, big, b, len(x) * self.dist.world, step, samples)

    def layout(self, x: Tensor) -> Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self._cl_input else x

    def step(self, x: Tensor, y: Tensor, measure: tuple[int, int] | None = None) -> Tensor:
        """One optimizer step on this rank's (x, y). `measure` = (step, samples): also measure the gradient noise
        scale, between the backward and the update."""
        mc = self.cfg.memory
        if self.backoff is None and measure is None:  # the hot path
            return train_step(self.net, self.optimizer, self.precision, self.task.loss, x, y, self.cfg.optim.grad_clip,
                              self.model, mc.micro_batch, mc.ghost_bn)
        if self.probe is not None and measure is not None:
            self.probe.measuring = True
        if self.backoff is None:
            loss = backward_pass(self.net, self.precision, self.task.loss, x, y, mc.micro_batch, mc.ghost_bn,
                                 self.model)
        else:  # under a cap: an out-of-memory forward/backward is redone on the same batch at half the micro-batch
            loss = self.backoff.run(lambda m: backward_pass(self.net, self.precision, self.task.loss, x, y, m,
                                                            mc.ghost_bn, self.model), self.model, len(x))
            if self.backoff.micro != mc.micro_batch:
                self.cfg = replace(self.cfg, memory=replace(mc, micro_batch=self.backoff.micro))
                self.choices.memory["micro_batch"] = self.backoff.micro  # saved with the next checkpoint
        if measure is not None:
            self._measure_noise(x, y, *measure)
        self.precision.step(self.optimizer, self.cfg.optim.grad_clip, self.model)
        self.optimizer.zero_grad(set_to_none=True)
        return loss


def build_run(cfg: Config, model: nn.Module | None = None, data: Any = None, choices: Choices | None = None,
              say: Callable[[str], None] = lambda _m: None, dist: Dist | None = None) -> Run:
    """Set up a run. `choices` (a resumed run's) skips the `auto` race and the memory planner: a different precision
    or micro-batch would change the numbers. `model` is used as given (moved to the device), not copied. Under
    torchrun (`dist`, else joined here) the model is wrapped in DistributedDataParallel and every choice is rank 0's."""
    tc = cfg.train
    d = dist if dist is not None else setup_dist(cfg.system)
    check_batch(tc.batch_size, "train.batch_size", d.world)
    local = tc.batch_size // d.world  # examples a rank computes per step
    device = pick_device(device_for(cfg.system.device, d))
    if cfg.system.threads:
        torch.set_num_threads(cfg.system.threads)
    seed_everything(tc.seed)
    order_seed = derive_seed(tc.seed, "order")
    splits, examples, task, prep = _inputs(cfg, data, device)
    if model is not None:
        model = prep(model, say)  # contract.py
    plan = _memory(cfg, choices, model, splits, examples, prep, task, device, say, batch=local)
    memory = d.broadcast_json(plan.memory())  # every rank runs rank 0's plan
    cfg = apply_settings(cfg, memory)
    if model is None:
        model = prep(build_model(cfg.model, splits.input_shape, splits.num_classes), say)
    if cfg.memory.checkpoint != "off":
        apply_checkpointing(model, cfg.memory.checkpoint)
    configure_reversible(model, cfg.memory.check_every, cfg.memory.tolerance)
    if cfg.data.language:
        batches, data_path = lm_batches(splits, cfg.data, order_seed, device, say)
        if d.on:
            batches.set_part(d.rank, d.world)
    elif isinstance(splits, StreamedSplits):  # bigger than data.resident_max_mb: through a DataLoader
        batches, data_path = stream_batches(splits, order_seed, device, say, sequential=tc.sequential)
    else:
        data_path = "resident"
        batches = DeviceBatches(examples.x.to(device), examples.y.to(device), seed=order_seed,
                                sequential=tc.sequential)
    n_train = batches.n
    optimizer = make_optimizer(model, cfg.optim, device)
    total = max(1, tc.steps * tc.batch_size if tc.steps else int(tc.epochs * n_train))
    interval = max(1, tc.eval_every_steps * tc.batch_size if tc.eval_every_steps else int(tc.eval_every * n_train))
    methods = build_methods(cfg, splits, model, device)
    if choices is None:  # the race runs at the micro-batch a step will run
        n = cfg.memory.micro_batch or local
        sample_x, sample_y = examples.x[:n].to(device), examples.y[:n].to(device)
        choices = autotune(cfg.system, model, lambda m: make_optimizer(m, cfg.optim, device), sample_x, sample_y,
                           task.loss, math.ceil(total / tc.batch_size),
                           cache_key(model, sample_x, cfg.optim.name, measure.device_name(device)))
        if d.on:  # one program on every rank: rank 0's choices
            picked = d.broadcast_json([choices.precision, choices.channels_last, choices.compile])
            choices.precision, choices.channels_last, choices.compile = picked
    choices.memory = memory
    say(f"device {measure.device_name(device)}: precision {choices.precision}, channels_last {choices.channels_last}, "
        f"compile {choices.compile}")
    if choices.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if d.on:
        synced_bn = sync_bn_wanted(cfg.system.sync_bn, cfg.memory.micro_batch or local, model)
        if synced_bn is not None:
            say(f"batch norm under data parallel: {'synced over all ranks' if synced_bn else 'per rank'} "
                f"(system.sync_bn={cfg.system.sync_bn}, {cfg.memory.micro_batch or local} examples per forward)")
    net = _data_parallel(model, device, d, bool(synced_bn)) if d.on else model
    probe = DDPProbe.attach(net) if d.on and cfg.noise.every > 0 else None
    net = torch.compile(net) if choices.compile else net
    val = (splits.val.x.to(device), splits.val.y.to(device))
    test = (splits.test.x.to(device), splits.test.y.to(device))
    noise = NoiseScale(cfg.noise.decay) if cfg.noise.every > 0 else None
    schedule = make_schedule(cfg, total, n_train, interval, resolution=2 / max(1, len(splits.val)), noise=noise,
                             multiple=d.world)
    # the out-of-memory backoff is one process's: under data parallel the other ranks could not follow it mid-step
    # (their collectives would wait for it), so there an OOM fails the run; the plan itself is rank 0's everywhere
    backoff = Backoff(cfg.memory.micro_batch, say) if memory.get("cap") and not d.on else None
    return Run(cfg, device, splits, task, model, net, optimizer, batches, methods, Precision(choices.precision, device),
               choices, val, test, total, schedule, interval, data_path, backoff=backoff, plan=plan, dist=d,
               noise=noise, probe=probe)


SYNC_BN_BELOW = 32  # system.sync_bn=auto syncs batch norm when a rank's forward holds fewer examples than this


def sync_bn_wanted(setting: str, per_forward: int, model: nn.Module) -> bool | None:
    """Whether batch norm statistics are synced across ranks (None: the model has no batch norm)."""
    if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return None
    return setting == "on" or (setting == "auto" and per_forward < SYNC_BN_BELOW)


def _data_parallel(model: nn.Module, device: torch.device, d: Dist, sync_bn: bool) -> nn.Module:
    """`model` wrapped in DistributedDataParallel, which checks that every rank holds the same weights; with
    `sync_bn`, batch norm over the global batch first (the same parameter objects, so the optimizer built before is
    unchanged)."""
    from torch.nn.parallel import DistributedDataParallel

    from quicktrain.sync_bn import SyncBatchNorm, convert_sync_bn

    if sync_bn:
        convert_sync_bn(model)
    # Buffers are broadcast from rank 0 at each forward (DDP's default) only where one outside batch norm exists
    # (a training forward may read it: spectral norm's power-iteration vector, say). Batch-norm statistics are read
    # only by evaluation, and each check copies rank 0's first (Dist.share_buffers), so per-rank ones need no
    # per-step broadcast, one ~1 ms gloo collective a step; synced ones are equal on every rank anyway.
    others = any(next(m.buffers(recurse=False), None) is not None
                 and not isinstance(m, (SyncBatchNorm, nn.modules.batchnorm._BatchNorm)) for m in model.modules())
    # torch 2.13 renames broadcast_buffers (the weights and buffers are still synced once, at construction)
    sync = "forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters \
        else "broadcast_buffers"
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                   **{sync: others})


def _inputs(cfg: Config, data: Any, device: torch.device) -> tuple[Any, Any, Task, Callable[..., nn.Module]]:
    """(splits, training examples to sample batches from, task, prepare(model, note=None) for this data)."""
    if cfg.data.language:  # a next-token task: what differs from classification is data, model check and task
        if data is not None:
            raise ConfigError("data from Python is not supported for a next-token task: write it as token shards "
                              "(quicktrain prepare-text) and set data.path")
        lm = load_lm(cfg.data, sample=max(64, cfg.train.batch_size))

        def prep_lm(m: nn.Module, note: Callable[[str], None] | None = None) -> nn.Module:
            return prepare_lm(m, lm.sample.x[:2], lm.vocab_size, device)
        return lm, lm.sample, NextToken(lm.bytes_per_token), prep_lm
    splits = load_data(cfg.data, data)
    examples = splits.sample if isinstance(splits, StreamedSplits) else splits.train

    def prep(m: nn.Module, note: Callable[[str], None] | None = None) -> nn.Module:
        return prepare_model(m, examples.x[:8], splits.num_classes, device, note=note)  # contract.py
    task = Classification(cfg.methods.label_smoothing, splits.augment if cfg.methods.tta else "none")
    return splits, examples, task, prep


def plan_memory_for(cfg: Config, model: nn.Module | None = None, data: Any = None,
                    say: Callable[[str], None] = lambda _m: None) -> MemoryPlan:
    """The memory plan a run of `cfg` would make, every variant measured (for `quicktrain plan-memory`)."""
    device = pick_device(cfg.system.device)
    if cfg.system.threads:
        torch.set_num_threads(cfg.system.threads)
    seed_everything(cfg.train.seed)
    splits, examples, task, prep = _inputs(cfg, data, device)
    if model is not None:
        model = prep(model, say)
    return _memory(cfg, None, model, splits, examples, prep, task, device, say, every=True)


def _memory(cfg: Config, choices: Choices | None, model: nn.Module | None, splits: Any, examples: Any,
            prep: Callable[..., nn.Module], task: Task, device: torch.device,
            say: Callable[[str], None], every: bool = False, batch: int = 0) -> MemoryPlan:
    """The run's memory settings (quicktrain.memory.settings), as a plan. The planner measures copies: of the
    given model, or fresh builds of the config's, all under restored RNG."""
    rng = torch.get_rng_state()

    def build(v: Variant) -> nn.Module:
        if model is not None:
            m = copy.deepcopy(model)
        else:
            torch.set_rng_state(rng)  # the planner runs under fork_rng: this changes nothing outside it
            m = prep(build_model(replace(cfg.model, reversible=v.reversible), splits.input_shape, splits.num_classes))
        if v.checkpoint != "off":
            apply_checkpointing(m, v.checkpoint)
        return m

    can_reverse = model is None and _has_reversible(cfg.model.name)
    n = min(batch or cfg.train.batch_size, len(examples.x))  # a rank's share of the batch under data parallel
    x, y = examples.x[:n].to(device), examples.y[:n].to(device)
    resident = device.type == "cuda" and not cfg.data.language and not isinstance(splits, StreamedSplits)
    extra = tensor_bytes([examples.x, examples.y, splits.val.x, splits.val.y, splits.test.x, splits.test.y]) \
        if resident else 0  # resident data shares the device with the step (LM tokens: not counted)
    return memory_settings(cfg, choices.memory if choices is not None else None, device, build, can_reverse,
                           lambda m: make_optimizer(m, cfg.optim, device), task.loss, x, y, extra, say, every)


def _has_reversible(name: str) -> bool:
    return name == "gpt" or (name in MODELS and "reversible" in inspect.signature(MODELS[name]).parameters)
