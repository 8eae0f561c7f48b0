"""Frozen config dataclasses. Their defaults *are* the fast recipe; recipes are Python files that define `CONFIG`.

CLI overrides (`--optim.lr=3e-3`) are derived from these fields: `apply_overrides` converts each value by the field's
type, and `check_config` rejects an unknown key, a wrong type or an out-of-range value with a one-line `ConfigError`
naming the key. Derived values (steps per epoch, total steps) are computed in the loop, never stored here.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field, fields, is_dataclass, replace
from typing import Any, Iterable, Iterator, Literal

from quicktrain.errors import ConfigError


@dataclass(frozen=True)
class Mnist1dArgs:
    """Generation arguments of `mnist1d.data.make_dataset` (defaults: the paper's dataset)."""

    num_samples: int = 5000  # train + test examples generated
    train_split: float = 0.8  # fraction of num_samples in the train part; the rest is the test split
    template_len: int = 12
    padding: tuple[int, int] = (36, 60)
    scale_coeff: float = 0.4
    max_translation: int = 48
    corr_noise_scale: float = 0.25
    iid_noise_scale: float = 2e-2
    shear_scale: float = 0.75
    shuffle_seq: bool = False
    final_seq_length: int = 40
    seed: int = 42  # the validation split is a second draw with seed + 1 (see data/builtin.py)

    def rules(self) -> Iterable[tuple[str, bool, str]]:
        yield "num_samples", self.num_samples >= 20, "must be >= 20"
        yield "train_split", 0 < self.train_split < 1, "must be in (0, 1)"
        yield "final_seq_length", self.final_seq_length >= 4, "must be >= 4"
        yield "padding", 0 <= self.padding[0] <= self.padding[1], "must be (low, high) with 0 <= low <= high"


@dataclass(frozen=True)
class DataConfig:
    # built-in (mnist1d, digits, mnist5k), a file format read from `path` (cifar10, npz), or data from Python (custom)
    # language modelling (a next-token task): stdlib (built-in corpus) or tokens (a shard directory at `path`)
    name: Literal["mnist1d", "digits", "mnist5k", "cifar10", "npz", "custom", "stdlib", "tokens"] = "mnist1d"
    path: str = ""  # cifar10: directory of binary batches; npz: file with `x` and `y`; LM: a token shard directory
    mnist1d: Mnist1dArgs = field(default_factory=Mnist1dArgs)
    val_fraction: float = 0.1  # of the training part, for data without a validation split of its own
    test_fraction: float = 0.2  # of all examples, for data without a test split of its own
    split_seed: int = 0  # splits depend on this, never on the run's seed
    augment: Literal["auto", "none", "shift", "crop", "crop_flip"] = "auto"  # auto: what suits the data
    shift: int = 4  # 1-D: max |shift| in samples; 2-D: crop padding in pixels
    num_classes: int = 0  # 0 = infer (max label + 1); labels outside [0, num_classes) are an error
    resident_max_mb: float = 2048.0  # datasets up to this size stay as tensors on the device
    stream: Literal["auto", "on", "off"] = "auto"  # auto: stream from disk only what exceeds resident_max_mb
    context: int = 256  # LM: tokens per training window (the model's context)
    eval_tokens: int = 65536  # LM: validation (and test) tokens evaluated at each check, fixed windows

    def rules(self) -> Iterable[tuple[str, bool, str]]:
        yield "val_fraction", 0 < self.val_fraction < 1, "must be in (0, 1)"
        yield "test_fraction", 0 < self.test_fraction < 1, "must be in (0, 1)"
        yield "shift", self.shift >= 0, "must be >= 0"
        yield "num_classes", self.num_classes >= 0, "must be >= 0 (0 = infer from the labels)"
        yield "resident_max_mb", self.resident_max_mb >= 0, "must be >= 0"
        yield "context", self.context >= 2, "must be >= 2"
        yield "eval_tokens", self.eval_tokens >= 1, "must be >= 1"
        yield "path", self.name != "tokens" or bool(self.path), "data.name=tokens needs data.path (a shard directory)"

    @property
    def language(self) -> bool:
        """A next-token task (quicktrain.tasks.NextToken) rather than classification."""
        return self.name in LM_DATASETS


DATASETS = typing.get_args(typing.get_type_hints(DataConfig)["name"])
LM_DATASETS = ("stdlib", "tokens")


@dataclass(frozen=True)
class GPTArgs:
    """The `gpt` model (quicktrain.models.gpt). Defaults: the modern toggles on (modded-nanogpt's speedrun), each one
    a row of `bench --ablate`; all off with tied_head on is nanoGPT's GPT-2."""

    layers: int = 4
    heads: int = 4
    width: int = 128
    rotary: bool = True  # rotary position embeddings (Su et al. 2021) instead of learned positions
    qk_norm: bool = True  # RMS-normalised queries and keys (Dehghani et al. 2023; modded-nanogpt)
    relu2: bool = True  # ReLU^2 MLP (So et al. 2021, "Primer") instead of GELU
    tied_head: bool = False  # output head shares the token embedding (GPT-2, nanoGPT)
    zero_init: bool = True  # output projections start at zero (modded-nanogpt), else GPT-2's scaled normal
    dropout: float = 0.0
    softcap: float = 0.0  # logits -> softcap * tanh(logits / softcap) (modded-nanogpt, Gemma 2); 0 = off
    embed_norm: bool = False  # RMS-normalise the token embedding's output before the blocks (modded-nanogpt)
    token_shift: bool = False  # add a learned per-channel share of the previous token's embedding (RWKV, modded)
    value_embed: bool = False  # a token table per layer added to the attention values (modded-nanogpt)
    # rows of the hashed n-gram tables added to x0, for n = 2, 3, ... (modded-nanogpt's bigram embedding, extended);
    # 0 = no table for that n, () = none
    ngram_rows: tuple[int, ...] = ()

    def rules(self) -> Iterable[tuple[str, bool, str]]:
        yield "layers", self.layers >= 1, "must be >= 1"
        yield "softcap", self.softcap >= 0, "must be >= 0 (0 = off)"
        yield "ngram_rows", all(r == 0 or r >= 2 for r in self.ngram_rows), "each must be 0 (off) or >= 2"
        yield "heads", self.heads >= 1, "must be >= 1"
        yield "width", self.width >= 1 and self.width % max(1, self.heads) == 0, "must be a multiple of heads"
        yield "dropout", 0 <= self.dropout < 1, "must be in [0, 1)"


@dataclass(frozen=True)
class ModelConfig:
    name: str = "fastnet1d"  # a key of quicktrain.models.MODELS
    channels: tuple[int, ...] = ()  # per-stage widths; () = the model's own default
    strides: tuple[int, ...] = ()  # per-stage strides, for models that take them (fastnet1d); () = the model's default
    gpt: GPTArgs = field(default_factory=GPTArgs)  # the gpt model's shape and toggles (context: data.context)
    depth: int = 0  # residual blocks, for models with a depth (revnet1d; gpt uses model.gpt.layers); 0 = default
    reversible: bool = False  # RevNet coupling blocks (quicktrain.memory.reversible), for models that have them

    def rules(self) -> Iterable[tuple[str, bool, str]]:
        yield "channels", all(c > 0 for c in self.channels), "widths must be > 0"
        yield "depth", self.depth >= 0, "must be >= 0 (0 = the model's default)"
        yield "strides", all(s > 0 for s in self.strides), "strides must be > 0"


@dataclass(frozen=True)
class OptimConfig:
    # sgd: Nesterov, decoupled decay; adam: torch's coupled L2; muon: Muon on hidden 2-D weights, AdamW on the rest;
    # lars / lamb: momentum SGD / Adam with a layer-wise trust ratio for large batches (quicktrain.large_batch)
    name: Literal["adamw", "sgd", "adam", "muon", "lars", "lamb"] = "adamw"
    lr: float = 4e-2  # peak LR at train.batch_size examples per step
    weight_decay: float = 0.0  # decoupled: adamw/sgd (Loshchilov & Hutter 2019); L2: adam, lars; lamb: in its update
    no_decay_1d: bool = True  # no decay (and, for lars/lamb, no trust ratio) on norm weights, biases, other 1-d params
    betas: tuple[float, float] = (0.9, 0.999)  # adam, adamw, muon's AdamW groups, lamb
    momentum: float = 0.9  # sgd and lars
    trust_coefficient: float = 0.001  # lars: η in the trust ratio
    eps: float = 1e-8
    grad_clip: float = 0.0  # max global gradient norm; 0 = off
    lr_find: bool = False  # run the LR range test first and use its suggestion as the peak LR (quicktrain.lr_find)
    muon_lr_scale: float = 1.0  # muon: the Muon groups' LR as a multiple of the peak LR (AdamW groups take it as is)
    muon_momentum: float = 0.95  # muon: Nesterov momentum of the Muon groups (modded-nanogpt)
    embed_lr_scale: float = 1.0  # muon: the embeddings' AdamW LR as a multiple of the peak LR (quicktrain.muon)
    head_lr_scale: float = 1.0  # muon: the output layer's AdamW LR as a multiple of the peak LR

    def rules(self) -> Iterable[tuple[str, bool, str]]:
        yield "lr", self.lr > 0, "must be > 0"
        yield "weight_decay", self.weight_decay >= 0, "must be >= 0"
        yield "betas", all(0 <= b < 1 for b in self.betas), "must be in [0, 1)"
        yield "momentum", 0 <= self.momentum < 1, "must be in [0, 1)"
        yield "trust_coefficient", self.trust_coefficient > 0, "must be > 0"
        yield "eps", self.eps > 0, "must be > 0"
        yield "grad_clip", self.grad_clip >= 0, "must be >= 0"
        yield "muon_lr_scale", self.muon_lr_scale > 0, "must be > 0"
        yield "muon_momentum", 0 <= self.muon_momentum < 1, "must be in [0, 1)"
        yield "embed_lr_scale", self.embed_lr_scale > 0, "must be > 0"
        yield "head_lr_scale", self.head_lr_scale > 0, "must be > 0"


@dataclass(frozen=True)
class ScheduleConfig:
    # onecycle: warmup + linear decay (Smith); wsd: warmup-stable-decay for runs of unknown length (quicktrain.wsd)
    kind: Literal["onecycle", "cosine", "linear", "constant", "wsd"] = "onecycle"
    warmup: float = 0.5  # fraction of training spent rising from start_frac to the peak LR
    start_frac: float = 0.04  # LR at the start as a fraction of peak (OneCycleLR's 1/div_factor)
    end_frac: float = 0.0  # LR at the end as a fraction of peak
    cooldown: float = 1.0  # onecycle/cosine/linear: the fall spans the last this much of training, the peak held
    #                        before it (warmup-stable-decay of a known length); 1 = the fall starts after the warmup
    batch_ramp_from: int = 0  # batch size at the start of a ramp up to train.batch_size; 0 = no ramp
    batch_ramp_until: float = 0.5  # progress at which the linear ramp reaches train.batch_size
    # linear: from batch_ramp_from to train.batch_size by batch_ramp_until; noise: the batch follows the measured
    # gradient noise scale B_simple (quicktrain.noise, every noise.every steps), from batch_ramp_from up to
    # train.batch_size, never down
    batch_ramp: Literal["linear", "noise"] = "linear"
    # how the LR follows the batch: auto = linear for sgd/lars (Goyal et al. 2017, with the warmup), sqrt for the
    # Adam family and muon (Hoffer et al. 2017; Malladi et al. 2022)
    lr_batch_rule: Literal["auto", "sqrt", "linear", "none"] = "auto"
    warmup_epochs: float = 0.5  # wsd: warmup in epochs (a run of unknown length has no fraction of itself to take)
    plateau_patience: int = 2  # wsd: checks without an improvement of plateau_delta before the decay starts
    plateau_delta: float = 0.005  # wsd: in the task's metric (accuracy: half a point, and at least 2 val examples)
    plateau_after_epochs: float = 3.0  # wsd: no plateau decision in a cycle's first epochs (noisy early checks)
    decay_frac: float = 0.2  # wsd: the decay lasts this fraction of the samples seen so far ...
    decay_min_epochs: float = 1.0  # wsd: ... and at least this many epochs
    rewarm: float = 1.0  # wsd: a decay that ends short of the target re-warms to this fraction of the last peak

    def rules(self) -> Iterable[tuple[str, bool, str]]:
        yield "warmup", 0 <= self.warmup < 1, "must be in [0, 1)"
        yield "start_frac", 0 <= self.start_frac <= 1, "must be in [0, 1]"
        yield "end_frac", 0 <= self.end_frac <= 1, "must be in [0, 1]"
        yield "cooldown", 0 < self.cooldown <= 1, "must be in (0, 1]"
        yield "batch_ramp_from", self.batch_ramp_from >= 0, "must be >= 0"
        yield "batch_ramp_until", 0 < self.batch_ramp_until <= 1, "must be in (0, 1]"
        yield "warmup_epochs", self.warmup_epochs >= 0, "must be >= 0"
        yield "plateau_patience", self.plateau_patience >= 1, "must be >= 1"
        yield "plateau_delta", self.plateau_delta >= 0, "must be >= 0"
        yield "plateau_after_epochs", self.plateau_after_epochs >= 0, "must be >= 0"
        yield "decay_frac", 0 < self.decay_frac <= 1, "must be in (0, 1]"
        yield "decay_min_epochs", self.decay_min_epochs > 0, "must be > 0"
        yield "rewarm", 0 < self.rewarm <= 1, "must be in (0, 1]"


@dataclass(frozen=True)
class TrainConfig:
    epochs: float = 3.0  # budget: passes over the training split
    steps: int = 0  # budget in steps of train.batch_size instead (LM recipes count iterations); 0 = use epochs
    eval_every_steps: int = 0  # checks every k steps of train.batch_size instead of eval_every epochs; 0 = off
    batch_size: int = 192  # examples per step (the final size when the batch ramp is on)
    target: float = 0.94  # validation metric to reach (classification: accuracy; LM: loss, lower); 0 = no target
    stop_on_target: bool = True  # stop at the first validation check that reaches the target
    max_seconds: float = 0.0  # train-clock budget in seconds; 0 = none
    eval_every: float = 1.0  # epochs between validation checks (there is always one at the end)
    eval_from: float = 1.0  # progress in [0, 1] before which there are no checks (mid-one-cycle accuracy is low)
    sequential: bool = False  # take batches in data order, unshuffled (the mnist1d reference does)
    seed: int = 0

    def rules(self) -> Iterable[tuple[str, bool, str]]:
        yield "epochs", self.epochs > 0, "must be > 0"
        yield "batch_size", self.batch_size >= 1, "must be >= 1"
        yield "target", self.target >= 0, "must be >= 0 (an accuracy in [0, 1] or a loss)"
        yield "steps", self.steps >= 0, "must be >= 0"
        yield "eval_every_steps", self.eval_every_steps >= 0, "must be >= 0"
        yield "max_seconds", self.max_seconds >= 0, "must be >= 0"
        yield "eval_every", self.eval_every > 0, "must be > 0"
        yield "eval_from", 0 <= self.eval_from <= 1, "must be in [0, 1]"


@dataclass(frozen=True)
class MethodsConfig:
    label_smoothing: float = 0.0  # Szegedy et al. 2016; 0 = off
    ema: float = 0.0  # decay of the weight average used for evaluation (Polyak & Juditsky 1992); 0 = off
    ema_every: int = 1  # update the average every k steps (decay adjusted to match)
    resize_from: float = 1.0  # progressive resizing: input size at the start, as a fraction of full; 1 = off
    resize_until: float = 0.5  # progress at which the full size is reached
    resize_multiple: int = 4  # sizes snap to a multiple of this, so only a few shapes occur
    tta: bool = True  # average predictions over shifted (1-D) or flipped/shifted (2-D) views at evaluation

    def rules(self) -> Iterable[tuple[str, bool, str]]:
        yield "label_smoothing", 0 <= self.label_smoothing < 1, "must be in [0, 1)"
        yield "ema", 0 <= self.ema < 1, "must be in [0, 1)"
        yield "ema_every", self.ema_every >= 1, "must be >= 1"
        yield "resize_from", 0 < self.resize_from <= 1, "must be in (0, 1]"
        yield "resize_until", 0 < self.resize_until <= 1, "must be in (0, 1]"
        yield "resize_multiple", self.resize_multiple >= 1, "must be >= 1"


@dataclass(frozen=True)
class MemoryConfig:
    """Fitting a step into memory (quicktrain.memory). `system.memory` sets a cap and lets the planner choose these."""

    micro_batch: int = 0  # examples per forward/backward, gradients accumulated to train.batch_size; 0 = whole batch
    checkpoint: Literal["off", "full", "selective"] = "off"  # activation checkpointing per block (recompute)
    ghost_bn: bool = True  # with micro-batches, BN momentum 1-(1-m)^(1/k) so k updates a step equal one (Hoffer 2017)
    check_every: int = 100  # reversible blocks: steps between reconstruction-error checks
    tolerance: float = 1e-3  # reversible: relative reconstruction error above which blocks fall back to checkpointing

    def rules(self) -> Iterable[tuple[str, bool, str]]:
        yield "micro_batch", self.micro_batch >= 0, "must be >= 0 (0 = the whole batch)"
        yield "check_every", self.check_every >= 1, "must be >= 1"
        yield "tolerance", self.tolerance > 0, "must be > 0"


@dataclass(frozen=True)
class NoiseConfig:
    """Measuring the gradient noise scale during training (quicktrain.noise; `quicktrain noise-scale`)."""

    every: int = 0  # steps between measurements; 0 = off (schedule.batch_ramp=noise needs it on)
    decay: float = 0.9  # moving-average decay, per measurement, of the |G|^2 and tr(Sigma) estimates

    def rules(self) -> Iterable[tuple[str, bool, str]]:
        yield "every", self.every >= 0, "must be >= 0 (0 = off)"
        yield "decay", 0 <= self.decay < 1, "must be in [0, 1)"


@dataclass(frozen=True)
class SystemConfig:
    device: str = "auto"  # auto (cuda if present) | cpu | cuda | cuda:N
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"  # auto: measured, the fastest correct candidate
    compile: Literal["auto", "on", "off"] = "auto"  # auto: only where measured faster over the run
    channels_last: Literal["auto", "on", "off"] = "auto"  # auto: measured, for models with 2-D convolutions
    threads: int = 0  # intra-op CPU threads; 0 = torch's default (one per physical core)
    # cap on a step's memory (params, grads, optimizer state, activations), e.g. 2GiB or 512MB: the planner
    # (quicktrain.memory.planner) picks micro-batch, checkpointing, reversible and precision to fit; "" = no cap;
    # auto = the free memory of a CUDA device, no cap on CPU
    memory: str = "auto"
    # data parallel under torchrun (quicktrain.dist): auto = nccl on CUDA, gloo on CPU
    backend: Literal["auto", "gloo", "nccl"] = "auto"
    dist_timeout: float = 300.0  # seconds a rank waits for its peers in a collective before the run fails
    # batch norm under data parallel: on = statistics over the global batch (the curve of one process), off = each
    # rank's own (DDP's default); auto = on only when a rank's forward holds < 32 examples (Goyal et al. 2017 kept
    # per-worker statistics at 32; synced ones cost an all-reduce per BN layer each way, 0.5-1.6 ms on gloo: measured
    # 2-rank throughput 1.8x lower on resnet2d, 2.5x on MNIST-1D, docs/BENCHMARKS.md)
    sync_bn: Literal["auto", "on", "off"] = "auto"

    def rules(self) -> Iterable[tuple[str, bool, str]]:
        ok = self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")
        yield "device", ok, "must be auto, cpu, cuda or cuda:N"
        yield "threads", self.threads >= 0, "must be >= 0"
        yield "dist_timeout", self.dist_timeout > 0, "must be > 0 (seconds)"
        yield "memory", self.memory in ("", "auto") or parse_bytes(self.memory) is not None, \
            "must be a size such as 2GiB, 512MB or 1e9, or auto, or empty"


@dataclass(frozen=True)
class AdaptConfig:
    """What a run does when the recipe's tuned constants do not apply: a model or data from Python, or a model or
    data config other than those of the recipe named by `Config.tuned_for` (quicktrain.adapt)."""

    mode: Literal["auto", "on", "off"] = "auto"  # auto: adapt when the recipe was not tuned for this model and data
    max_epochs: float = 100.0  # the budget becomes "until the target, or this cap" (plain's budget)
    eval_every: float = 1.0  # epochs between validation checks
    batch_size: int = 128  # examples per step (0 = the recipe's); 256 missed targets on small data (BENCHMARKS.md)
    lr_floor: float = 1e-3  # the range test's suggestion is never used below plain Adam's LR
    # ... nor above this (0 = no ceiling; 10x plain Adam's): for recurrent nets its minimum/10 rule says 0.01-0.08,
    # and on lstm/mnist5k 3 of 5 seeds at 0.04-0.05 ended 3-11 test points below plain. Capped at 0.01, gru and lstm
    # on digits and mnist5k were 0.46-0.63x plain's time and +1.4 to +2.9 test points (5 seeds). A gradient-norm clip
    # of 1 instead fixed lstm/mnist5k but, applied to the sweep too, had it say 0.15 on lstm/digits, which then missed
    # its target. docs/BENCHMARKS.md, "Defaults that transfer"
    lr_max: float = 1e-2
    # when the peak LR is measured (quicktrain.adapt): auto = train as plain Adam does (lr_floor, no warmup) until
    # the first check, run the LR range test there (from the weights before training) if it costs at most
    # `first_epochs` epochs, else at check `decide_check` if the time the checks project to the target exceeds
    # `pays` times its cost; first = the test before training (up to 2x slower than plain where plain needs a few
    # dozen steps: mlp/digits, mlp_ln/digits); off = never (lr_floor throughout). BENCHMARKS.md, "Defaults that
    # transfer"
    lr_find: Literal["first", "auto", "off"] = "auto"
    first_epochs: float = 2.0  # auto: a test this cheap runs at the first check
    # auto: else the check that decides, from the trend of the checks so far. Two points cannot tell an S-shaped
    # curve from a line: at the second check rescnn/digits projected 2.6+ epochs to the target, ran the test and
    # fell from 94% to 35% under the new LR, where plain reached the target an epoch later (1.53x plain)
    decide_check: int = 3
    # auto: the projection (adapt.epochs_to_target) tends to under-estimate what is left, so 1 already asks for more;
    # 4 skipped the test on gru/digits and lstm/digits (1.09x, 1.03x plain), where it makes the run ~2x faster
    pays: float = 1.0
    # the decay (per step) of the weight average that checks and the final scores evaluate (methods.ema; 0 = off).
    # rescnn/mnist1d's validation accuracy swings by 5-10 points between epochs at a constant LR; the average's does
    # not: 1.31x plain's time to target without it (fourth run), 0.62x with it; the default faster than plain in 19
    # of 22 combos (5 seeds; fifth run), 22 of 26 in the sixth. 0.9 did as well as 0.95. A per-step decay: ~20 steps,
    # 0.3-2 epochs on that data (10-62 steps an epoch). docs/BENCHMARKS.md, "Defaults that transfer"
    ema: float = 0.95

    def rules(self) -> Iterable[tuple[str, bool, str]]:
        yield "max_epochs", self.max_epochs > 0, "must be > 0"
        yield "eval_every", self.eval_every > 0, "must be > 0"
        yield "batch_size", self.batch_size >= 0, "must be >= 0 (0 = the recipe's)"
        yield "lr_floor", self.lr_floor >= 0, "must be >= 0"
        yield "lr_max", self.lr_max == 0 or self.lr_max >= self.lr_floor, "must be 0 (no ceiling) or >= adapt.lr_floor"
        yield "pays", self.pays > 0, "must be > 0"
        yield "first_epochs", self.first_epochs >= 0, "must be >= 0"
        yield "decide_check", self.decide_check >= 2, "must be >= 2 (a trend needs two checks)"
        yield "ema", 0 <= self.ema < 1, "must be in [0, 1) (0 = off)"
        yield "lr_floor", self.lr_floor > 0 or self.lr_find == "first", \
            "must be > 0 unless adapt.lr_find=first: a deferred or skipped LR test trains at it"


@dataclass(frozen=True)
class CheckpointConfig:
    """Used when the run has a run directory. The signal handlers catch SIGTERM/SIGINT/SIGUSR1 (spot notices)."""

    every_seconds: float = 30.0  # train-clock seconds between checkpoints, stretched to 50x the last write (<= 2%)
    every_steps: int = 0  # also every k steps; 0 = off
    keep: int = 2  # newest checkpoints kept (crash-safe rotation)
    on_signal: bool = True  # on SIGTERM/SIGINT/SIGUSR1: checkpoint at the next step boundary and exit 75

    def rules(self) -> Iterable[tuple[str, bool, str]]:
        yield "every_seconds", self.every_seconds >= 0, "must be >= 0 (0 = no time-based checkpoints)"
        yield "every_steps", self.every_steps >= 0, "must be >= 0 (0 = no step-based checkpoints)"
        yield "keep", self.keep >= 1, "must be >= 1"


@dataclass(frozen=True)
class Config:
    name: str = "mnist1d"  # recipe name, reported with every result
    tuned_for: str = "mnist1d"  # the recipe whose model and data these constants were tuned on; "" = fixed constants
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    methods: MethodsConfig = field(default_factory=MethodsConfig)
    system: SystemConfig = field(default_factory=SystemConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    adapt: AdaptConfig = field(default_factory=AdaptConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)

    def rules(self) -> Iterable[tuple[str, bool, str]]:
        if not self.data.language:  # an accuracy; an LM's target is a loss in nats per token
            yield "train.target", self.train.target <= 1, "must be in [0, 1] for classification (e.g. 0.94)"
        if self.schedule.batch_ramp == "noise":
            yield "noise.every", self.noise.every > 0, "schedule.batch_ramp=noise follows measurements: set it > 0"
            yield "schedule.batch_ramp_from", self.schedule.batch_ramp_from > 0, \
                "schedule.batch_ramp=noise starts from this batch: set it > 0"
            yield "schedule.kind", self.schedule.kind != "wsd", "wsd keeps one batch size; use onecycle or cosine " \
                "with schedule.batch_ramp=noise"


_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12, "kib": 2**10, "mib": 2**20,
          "gib": 2**30, "tib": 2**40}


def parse_bytes(text: str) -> int | None:
    """'2GiB' -> 2147483648, '512MB' -> 512000000, '1e9' -> 1000000000; None if it is not a positive size."""
    t = text.strip().lower().replace(" ", "")
    i = len(t)
    while i and t[i - 1].isalpha():
        i -= 1
    try:
        value = float(t[:i]) * _UNITS[t[i:]]
    except (ValueError, KeyError):
        return None
    return int(value) if value >= 1 else None


# ---------------------------------------------------------------------------------------------------------------------
# Checking and overriding


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _type_ok(value: Any, tp: Any) -> bool:
    origin = typing.get_origin(tp)
    if origin is Literal:  # every enum field is a Literal, checked here and nowhere else
        return isinstance(value, str) and value in typing.get_args(tp)
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, tuple):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_type_ok(v, args[0]) for v in value)
        return len(value) == len(args) and all(_type_ok(v, a) for v, a in zip(value, args))
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(tp, type) and is_dataclass(tp):
        return isinstance(value, tp)
    return isinstance(value, tp)


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return "one of " + ", ".join(typing.get_args(tp))
    if typing.get_origin(tp) is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"comma-separated {args[0].__name__}s"
        return f"{len(args)} comma-separated {args[0].__name__}s"
    return getattr(tp, "__name__", str(tp))


def check_config(cfg: Any, path: str = "") -> Any:
    """Raise ConfigError naming the first bad key; return cfg unchanged when it is valid."""
    hints = _hints(type(cfg))
    for f in fields(cfg):
        key, value, tp = f"{path}{f.name}", getattr(cfg, f.name), hints[f.name]
        if not _type_ok(value, tp):
            raise ConfigError(f"config key {key}: expected {_type_name(tp)}, got {value!r}")
        if is_dataclass(value):
            check_config(value, key + ".")
    for name, ok, message in cfg.rules():
        if not ok:
            value = cfg
            for part in name.split("."):  # a rule of Config may name a key of a section
                value = getattr(value, part)
            raise ConfigError(f"config key {path}{name}: {message} (got {value!r})")
    return cfg


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _parse(text: str, tp: Any, key: str) -> Any:
    """Convert one CLI string to the field's type, or raise ConfigError naming the key."""
    bad = ConfigError(f"config key {key}: expected {_type_name(tp)}, got {text!r}")
    if typing.get_origin(tp) is tuple:
        args = typing.get_args(tp)
        parts = [p for p in text.strip("()[] ").replace(" ", "").split(",") if p != ""]
        elem = args[0] if (len(args) == 2 and args[1] is Ellipsis) else None
        if elem is None and len(parts) != len(args):
            raise bad
        return tuple(_parse(p, elem or a, key) for p, a in zip(parts, [elem] * len(parts) if elem else args))
    if tp is bool:
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise bad
    try:
        if tp is int:
            return int(text)
        if tp is float:
            return float(text)
    except ValueError:
        raise bad from None
    return text


def iter_keys(cfg: Any, path: str = "") -> Iterator[tuple[str, Any, Any]]:
    """Every leaf key of a config: (dotted key, value, type)."""
    hints = _hints(type(cfg))
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        if is_dataclass(value):
            yield from iter_keys(value, f"{path}{f.name}.")
        else:
            yield f"{path}{f.name}", value, hints[f.name]


def set_key(cfg: Any, key: str, value: Any, _path: str = "") -> Any:
    """Return a copy of cfg with the dotted key set to an already-typed value (checked by check_config)."""
    head, _, rest = key.partition(".")
    full = _path + key
    names = {f.name for f in fields(cfg)}
    if head not in names:
        raise ConfigError(f"unknown config key {full!r}" + _suggest(head, names))
    current = getattr(cfg, head)
    if rest:
        if not is_dataclass(current):
            raise ConfigError(f"unknown config key {full!r}: {_path}{head} has no sub-keys")
        return replace(cfg, **{head: set_key(current, rest, value, f"{_path}{head}.")})
    if is_dataclass(current):
        raise ConfigError(f"config key {full!r} is a section; set one of its keys, "
                          f"e.g. {full}.{fields(current)[0].name}")
    return replace(cfg, **{head: value})


def _suggest(name: str, choices: Iterable[str]) -> str:
    import difflib

    close = difflib.get_close_matches(name, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def apply_overrides(cfg: Config, overrides: Iterable[str] | dict[str, Any]) -> Config:
    """Apply `a.b=value` strings (from the CLI) or a {key: value} dict (from Python), then check the result."""
    leaf_types = {k: tp for k, _, tp in iter_keys(cfg)}
    items = overrides.items() if isinstance(overrides, dict) else (_split(o) for o in overrides)
    for key, value in items:
        if key not in leaf_types:
            set_key(cfg, key, value)  # raises the right "unknown key" message
        if isinstance(value, str) and leaf_types[key] is not str:
            value = _parse(value, leaf_types[key], key)
        elif isinstance(value, list) and typing.get_origin(leaf_types[key]) is tuple:
            value = tuple(value)  # from JSON or Optuna, which have no tuples
        cfg = set_key(cfg, key, value)
    return check_config(cfg)


def _split(item: str) -> tuple[str, str]:
    key, sep, value = item.removeprefix("--").partition("=")
    if not sep or not key:
        raise ConfigError(f"override {item!r} is not of the form --section.key=value")
    return key, value


def to_dict(cfg: Config) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def from_dict(data: dict[str, Any], cls: type = Config, path: str = "") -> Any:
    """Rebuild a config from `to_dict` output (e.g. a run's config.json); unknown keys are errors."""
    hints = _hints(cls)
    names = {f.name for f in fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in names:
            raise ConfigError(f"unknown config key {path}{key!r}" + _suggest(key, names))
        tp = hints[key]
        if isinstance(tp, type) and is_dataclass(tp):
            value = from_dict(value, tp, f"{path}{key}.")
        elif typing.get_origin(tp) is tuple and isinstance(value, list):
            value = tuple(value)
        kwargs[key] = value
    return cls(**kwargs)


def dumps(cfg: Config) -> str:
    return json.dumps(to_dict(cfg), indent=2, sort_keys=True)


def diff(base: Config, other: Config) -> dict[str, tuple[Any, Any]]:
    """Keys whose values differ: {key: (base value, other value)}."""
    a = {k: v for k, v, _ in iter_keys(base)}
    return {k: (a[k], v) for k, v, _ in iter_keys(other) if a.get(k) != v}
