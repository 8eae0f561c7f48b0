"""THE training loop: `train(cfg, model, data) -> Result`. Setup, then one loop, read top to bottom.

Clocks (see docs/ARCHITECTURE.md):
- train clock: the training steps plus the validation checks that decide stopping (synchronised on CUDA at the
  points where it is read). Not in it: data loading, model construction, `auto` measurements, test-set evaluation
  (reporting only), writing files.
- wall clock: everything, from `wall_origin` (the CLI passes the process start) or from the call.
Time to target is the train clock at the first validation check that reaches the target; the test split is
evaluated at every check for the record and never decides anything.
"""

from __future__ import annotations

import hashlib
import math
import random
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from quicktrain import measure, prices
from quicktrain.autotune import Choices, autotune, cache_key
from quicktrain.config import Config, check_config
from quicktrain.data import Splits, load_data
from quicktrain.data.batches import DeviceBatches
from quicktrain.errors import ConfigError, TrainingDiverged
from quicktrain.methods import EMA, Method, ProgressiveResize, hooks, resize, size_at, tta_logits
from quicktrain.methods.augment import Augment
from quicktrain.methods.label_smoothing import loss_fn as make_loss
from quicktrain.models import build_model
from quicktrain.optim import make_optimizer
from quicktrain.precision import Precision
from quicktrain.recipes import load_recipe
from quicktrain.schedules import make_schedule

NAN_CHECK_EVERY = 32  # steps between non-finite-loss checks (each check is a host sync on CUDA)


@dataclass
class Result:
    recipe: str
    seed: int
    target: float
    reached_target: bool
    seconds_to_target: float | None  # train clock at the first validation check that reached the target
    train_seconds: float
    wall_seconds: float
    test_acc: float  # at the end of the run (= at the target when the run stops on it)
    test_acc_at_target: float | None
    val_acc: float
    steps: int
    samples: int
    epochs: float
    flops: float  # model FLOPs of the training steps (forward + backward)
    utilisation: float | None  # flops / train_seconds / measured peak matmul rate for the precision used
    peak_flops: float
    precision: str
    compile: bool
    channels_last: bool
    device: str
    instance: str
    cost_usd_on_demand: float  # train_seconds at the instance's price
    cost_usd_spot: float
    price_date: str
    price_source: str
    torch_version: str
    run_dir: str | None = None
    metrics: list[dict[str, Any]] = field(default_factory=list, repr=False)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("metrics")
        return out


def train(cfg: Config | ModuleType | str | None = None, model: nn.Module | None = None, data: Any = None, *,
          run_dir: str | Path | None = None, instance: str | None = None, prices_path: str | None = None,
          on_eval: Callable[[dict[str, Any]], bool | None] | None = None, progress: bool = True,
          wall_origin: float | None = None, log: Callable[[str], None] | None = None) -> Result:
    """Train `model` (or the config's registry model) on `data` (or the config's dataset) until the validation
    accuracy reaches cfg.train.target or the budget ends. `on_eval(record)` may return True to stop (or raise)."""
    origin = time.perf_counter() if wall_origin is None else wall_origin
    cfg = load_recipe(cfg) if cfg is not None else check_config(Config())
    say = log or (lambda _msg: None)
    tc, mc = cfg.train, cfg.methods

    # ---- setup: device, seeds, data, model, optimizer, techniques -----------------------------------------------
    device = _device(cfg.system.device)
    if cfg.system.threads:
        torch.set_num_threads(cfg.system.threads)
    _seed_everything(tc.seed)
    splits = load_data(cfg.data, data)
    model = (model if model is not None else build_model(cfg.model, splits.input_shape, splits.num_classes)).to(device)
    xtr, ytr = splits.train.x.to(device), splits.train.y.to(device)
    batches = DeviceBatches(xtr, ytr, seed=_derive(tc.seed, "order"), sequential=tc.sequential)
    optimizer = make_optimizer(model, cfg.optim, device)
    loss_fn = make_loss(mc.label_smoothing)
    n_train = len(splits.train)
    total = max(1, int(tc.epochs * n_train))  # samples in the budget; progress = samples / total
    methods = _methods(cfg, splits, model, device)
    ema = next((m for m in methods if isinstance(m, EMA)), None)
    on_batch, after_step = hooks(methods, "on_batch"), hooks(methods, "after_step")

    sample_x, sample_y = xtr[: tc.batch_size], ytr[: tc.batch_size]
    choices = autotune(cfg.system, model, lambda m: make_optimizer(m, cfg.optim, device), sample_x, sample_y,
                       loss_fn, math.ceil(total / tc.batch_size), cache_key(model, sample_x, cfg.optim.name, measure.device_name(device)))
    say(f"device {measure.device_name(device)}: precision {choices.precision}, channels_last {choices.channels_last}, compile {choices.compile}")
    prec = Precision(choices.precision, device)
    if choices.channels_last:
        model = model.to(memory_format=torch.channels_last)
    net = torch.compile(model) if choices.compile else model
    eval_model = ema.model if ema is not None else model
    tta_kind = splits.augment if mc.tta else "none"
    val = (splits.val.x.to(device), splits.val.y.to(device))
    test = (splits.test.x.to(device), splits.test.y.to(device))
    price = prices.lookup(instance or prices.DEFAULT_INSTANCE, prices.load_prices(prices_path))
    writer = _RunWriter(run_dir, cfg) if run_dir is not None else None

    # ---- the loop ---------------------------------------------------------------------------------------------------
    # Hot path: ~0.6 ms a step on a tiny net, so everything the loop reads each step is a local (docs/BENCHMARKS.md,
    # "Loop overhead"), and nothing is computed per step that can be recomputed afterwards (e.g. the FLOP count).
    schedule = make_schedule(cfg)
    clip, max_seconds, cl_input = cfg.optim.grad_clip, tc.max_seconds, choices.channels_last and xtr.ndim == 4
    step, samples, train_seconds, lr = 0, 0, 0.0, -1.0
    interval = max(1, int(tc.eval_every * n_train))
    next_eval = max(interval, int(tc.eval_from * total))
    metrics: list[dict[str, Any]] = []
    pending: list[Tensor] = []
    reached_at: dict[str, Any] | None = None
    bar = _progress_bar(math.ceil(total / tc.batch_size), cfg.name, progress)
    last_val: float | None = None
    model.train()
    _sync(device)
    t_seg = time.perf_counter()
    while True:
        progress_ = samples / total
        bs, new_lr = schedule(progress_)
        if new_lr != lr:
            lr = new_lr
            for group in optimizer.param_groups:
                group["lr"] = lr
        x, y = batches.next(bs)
        for hook in on_batch:
            x, y = hook(x, y, progress_)
        if cl_input:
            x = x.contiguous(memory_format=torch.channels_last)
        with prec.autocast():
            loss = loss_fn(net(x), y)
        prec.backward(loss)
        prec.step(optimizer, clip, model)
        optimizer.zero_grad(set_to_none=True)
        step += 1
        samples += bs
        for hook in after_step:
            hook(model, step)
        pending.append(loss.detach())
        if len(pending) >= NAN_CHECK_EVERY:
            _check_finite(pending, step, lr)
        bar.update(step, val_acc=last_val)

        out_of_time = max_seconds > 0 and train_seconds + time.perf_counter() - t_seg >= max_seconds
        done = samples >= total or out_of_time
        if samples < next_eval and not done:
            continue

        # ---- validation check (on the train clock), then the test split for the record (off it) -----------------
        train_loss = _check_finite(pending, step, lr)
        val_acc, val_loss = evaluate(eval_model, *val, prec, tta_kind)
        _sync(device)
        train_seconds += time.perf_counter() - t_seg
        test_acc, _ = evaluate(eval_model, *test, prec, tta_kind)
        record = {"step": step, "samples": samples, "epoch": samples / n_train, "progress": min(1.0, samples / total),
                  "train_seconds": train_seconds, "wall_seconds": time.perf_counter() - origin, "lr": lr,
                  "batch_size": bs, "size": int(x.shape[-1]), "train_loss": train_loss, "val_acc": val_acc,
                  "val_loss": val_loss, "test_acc": test_acc}
        metrics.append(record)
        last_val = val_acc
        if writer is not None:
            writer.metric(record)
        reached = tc.target > 0 and val_acc >= tc.target
        if reached and reached_at is None:
            reached_at = record
        stop = bool(on_eval(record)) if on_eval is not None else False
        if done or stop or (reached and tc.stop_on_target):
            break
        next_eval += interval
        model.train()
        _sync(device)
        t_seg = time.perf_counter()
    bar.close()

    # ---- the result ---------------------------------------------------------------------------------------------
    last = metrics[-1]
    flops = sum(n * _step_flops(model, splits, shape, loss_fn, device) for shape, n in _shapes(cfg, splits, total, step).items())
    peak = measure.peak_flops(device, prec.dtype)
    on_demand, spot = prices.cost_usd(train_seconds, price)
    result = Result(
        recipe=cfg.name, seed=tc.seed, target=tc.target, reached_target=reached_at is not None,
        seconds_to_target=reached_at["train_seconds"] if reached_at else None, train_seconds=train_seconds,
        wall_seconds=time.perf_counter() - origin, test_acc=last["test_acc"],
        test_acc_at_target=reached_at["test_acc"] if reached_at else None, val_acc=last["val_acc"], steps=step,
        samples=samples, epochs=samples / n_train, flops=flops, utilisation=measure.utilisation(flops, train_seconds, peak),
        peak_flops=peak, precision=prec.name, compile=choices.compile, channels_last=choices.channels_last,
        device=measure.device_name(device), instance=price.instance, cost_usd_on_demand=on_demand, cost_usd_spot=spot,
        price_date=price.date, price_source=price.source, torch_version=torch.__version__,
        run_dir=str(run_dir) if run_dir is not None else None, metrics=metrics)
    if writer is not None:
        writer.finish(result, choices)
    return result


# ---------------------------------------------------------------------------------------------------------------------
# Evaluation


@torch.no_grad()
def evaluate(model: nn.Module, x: Tensor, y: Tensor, precision: Precision, tta: str = "none",
             chunk: int = 2048) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of `model` on (x, y), in eval mode, with test-time augmentation `tta`."""
    was_training = model.training
    model.eval()
    correct = torch.zeros((), device=x.device, dtype=torch.long)
    loss_sum = torch.zeros((), device=x.device)
    for i in range(0, len(x), chunk):
        xb, yb = x[i : i + chunk], y[i : i + chunk]
        with precision.autocast():
            logits = tta_logits(model, xb, tta).float()
        correct += (logits.argmax(-1) == yb).sum()
        loss_sum += F.cross_entropy(logits, yb, reduction="sum")
    model.train(was_training)
    n = max(1, len(x))
    return correct.item() / n, loss_sum.item() / n


# ---------------------------------------------------------------------------------------------------------------------
# Setup helpers


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"config key system.device: {name!r} requested but CUDA is not available on this machine")
    return device


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


def _derive(seed: int, purpose: str) -> int:
    """An independent seed per random stream, so run s's augmentation never equals run s+1's data order."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{purpose}".encode()).digest()[:8], "little") >> 1


def _methods(cfg: Config, splits: Splits, model: nn.Module, device: torch.device) -> list[Method]:
    """The step methods this config turns on, in the order they act on a batch."""
    mc, out = cfg.methods, []  # type: ignore[var-annotated]
    if splits.augment != "none" and cfg.data.shift > 0:
        out.append(Augment(splits.augment, cfg.data.shift, device, _derive(cfg.train.seed, "augment")))
    if mc.resize_from < 1.0:
        full = max(splits.input_shape[1:])
        smallest = size_at(0.0, full, mc.resize_from, mc.resize_until, mc.resize_multiple)
        _check_resizable(model, splits, smallest, device, cfg.model.name)
        out.append(ProgressiveResize(full, mc.resize_from, mc.resize_until, mc.resize_multiple))
    if mc.ema > 0:
        out.append(EMA(model, mc.ema, mc.ema_every))
    return out


def _check_resizable(model: nn.Module, splits: Splits, size: int, device: torch.device, name: str) -> None:
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(resize(splits.train.x[:2].to(device), size))
    except RuntimeError:
        raise ConfigError(f"config key methods.resize_from: model {name!r} needs fixed-size inputs "
                          f"(it failed at size {size}); set methods.resize_from=1") from None
    finally:
        model.train(was_training)


def _check_finite(pending: list[Tensor], step: int, lr: float) -> float | None:
    """Mean of the pending losses; raise TrainingDiverged if any is NaN or infinite. Clears `pending`."""
    if not pending:
        return None
    losses = torch.stack(pending).float()
    pending.clear()
    mean = losses.mean().item()
    if not math.isfinite(mean):
        raise TrainingDiverged(f"the training loss became {mean} by step {step} (lr {lr:.3g}); "
                               "lower optim.lr, set optim.grad_clip, or use precision fp32")
    return mean


def _shapes(cfg: Config, splits: Splits, total: int, steps: int) -> Counter[tuple[int, int]]:
    """How many steps ran at each (batch size, input size): the loop's schedule replayed, not tracked per step."""
    schedule, mc, full = make_schedule(cfg), cfg.methods, max(splits.input_shape[1:])
    counts: Counter[tuple[int, int]] = Counter()
    samples = 0
    for _ in range(steps):
        p = samples / total
        bs = schedule(p)[0]
        size = size_at(p, full, mc.resize_from, mc.resize_until, mc.resize_multiple) if mc.resize_from < 1 else full
        counts[(bs, size)] += 1
        samples += bs
    return counts


def _step_flops(model: nn.Module, splits: Splits, shape: tuple[int, int], loss_fn: Any, device: torch.device) -> float:
    n, size = shape
    x = resize(splits.train.x[:n].to(device), size)
    return measure.count_train_flops(model, x, splits.train.y[:n].to(device), loss_fn)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _progress_bar(total_steps: int, name: str, enabled: bool) -> Any:
    from quicktrain.progress import TrainProgress

    return TrainProgress(total_steps, description=name, enabled=enabled)


class _RunWriter:
    """The run directory: config.json at the start, metrics.jsonl as it goes, report.md + plot at the end."""

    def __init__(self, run_dir: str | Path, cfg: Config) -> None:
        import json

        from quicktrain.config import to_dict

        self.dir = Path(run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config = to_dict(cfg)
        (self.dir / "config.json").write_text(json.dumps(self.config, indent=2, sort_keys=True) + "\n")
        self._metrics = open(self.dir / "metrics.jsonl", "w")  # noqa: SIM115 (closed in finish)

    def metric(self, record: dict[str, Any]) -> None:
        import json

        self._metrics.write(json.dumps(record) + "\n")
        self._metrics.flush()

    def finish(self, result: Result, choices: Choices) -> None:
        import json

        from quicktrain.report import write_run_report

        self._metrics.close()
        summary = result.to_json() | {"autotune": choices.notes}
        (self.dir / "result.json").write_text(json.dumps(summary, indent=2) + "\n")
        write_run_report(self.dir, result.to_json(), self.config, result.metrics)
