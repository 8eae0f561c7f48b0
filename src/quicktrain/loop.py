"""THE training loop: `train(cfg, model, data) -> Result`. Setup, then one loop, read top to bottom.

Clocks (README, "What is measured, and how"):
- train clock: the training steps plus the validation checks that decide stopping (synchronised on CUDA at the
  points where it is read). Not in it: data loading, model construction, `auto` measurements, test-set evaluation
  (reporting only), writing files.
- wall clock: everything, from `wall_origin` (the CLI passes the process start) or from the call.
Time to target is the train clock at the first validation check that reaches the target; the test split is
evaluated at every check for the record and never decides anything.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from quicktrain import measure, prices
from quicktrain.autotune import Choices, autotune, cache_key
from quicktrain.config import Config, check_config
from quicktrain.data import Splits, load_data
from quicktrain.data.batches import DeviceBatches
from quicktrain.errors import ConfigError, Preempted, TrainingDiverged
from quicktrain.lr_find import find_lr
from quicktrain.methods import EMA, Method, ProgressiveResize, hooks, resize, size_at, tta_logits
from quicktrain.methods.augment import Augment
from quicktrain.methods.label_smoothing import loss_fn as make_loss
from quicktrain.models import build_model
from quicktrain.optim import make_optimizer
from quicktrain.precision import Precision
from quicktrain.recipes import load_recipe
from quicktrain.result import Result
from quicktrain.rundir import RunDir, RunState
from quicktrain.runtime import derive_seed, pick_device, seed_everything, sync
from quicktrain.schedules import make_schedule
from quicktrain.signals import StopFlag, stop_on_signals
from quicktrain.state import weights_sha256

NAN_CHECK_EVERY = 32  # steps between non-finite-loss checks (each check is a host sync on CUDA)


def train(cfg: Config | ModuleType | str | None = None, model: nn.Module | None = None, data: Any = None, *,
          run_dir: str | Path | None = None, instance: str | None = None, prices_path: str | None = None,
          on_eval: Callable[[dict[str, Any]], bool | None] | None = None, progress: bool = True,
          wall_origin: float | None = None, log: Callable[[str], None] | None = None, force: bool = False) -> Result:
    """Train `model` (or the config's registry model) on `data` (or the config's dataset) until the validation
    accuracy reaches cfg.train.target or the budget ends. `on_eval(record)` may return True to stop (or raise).

    With `run_dir`, the run writes its directory and checkpoints there, resumes by itself from the newest valid
    checkpoint in it (`force` to resume under a changed config, dataset or torch version), and on SIGTERM, SIGINT or
    SIGUSR1 checkpoints at the next step boundary and raises `Preempted`."""
    origin = time.perf_counter() if wall_origin is None else wall_origin
    cfg = load_recipe(cfg) if cfg is not None else check_config(Config())
    say = log or (lambda _msg: None)
    rundir = RunDir(run_dir, cfg, warn=say) if run_dir is not None else None
    try:
        with stop_on_signals(rundir is not None and cfg.checkpoint.on_signal) as stop_flag:
            return _train(cfg, model, data, rundir, instance, prices_path, on_eval, progress, origin, say, force, stop_flag)
    finally:
        if rundir is not None:
            rundir.close()


def _train(cfg: Config, model: nn.Module | None, data: Any, rundir: RunDir | None, instance: str | None,
           prices_path: str | None, on_eval: Callable[[dict[str, Any]], bool | None] | None, progress: bool,
           origin: float, say: Callable[[str], None], force: bool, stop_flag: StopFlag) -> Result:
    tc, mc, kc = cfg.train, cfg.methods, cfg.checkpoint

    # ---- setup: device, seeds, data, model, optimizer, techniques -----------------------------------------------
    device = pick_device(cfg.system.device)
    if cfg.system.threads:
        torch.set_num_threads(cfg.system.threads)
    seed_everything(tc.seed)
    splits = load_data(cfg.data, data)
    model = (model if model is not None else build_model(cfg.model, splits.input_shape, splits.num_classes)).to(device)
    xtr, ytr = splits.train.x.to(device), splits.train.y.to(device)
    batches = DeviceBatches(xtr, ytr, seed=derive_seed(tc.seed, "order"), sequential=tc.sequential)
    optimizer = make_optimizer(model, cfg.optim, device)
    loss_fn = make_loss(mc.label_smoothing)
    n_train = len(splits.train)
    total = max(1, int(tc.epochs * n_train))  # samples in the budget; progress = samples / total
    methods = _methods(cfg, splits, model, device)
    ema = next((m for m in methods if isinstance(m, EMA)), None)
    on_batch, after_step = hooks(methods, "on_batch"), hooks(methods, "after_step")

    # A resumed run keeps the original run's `auto` choices: a different precision would change the numbers.
    resumed = rundir.latest() if rundir is not None else None
    if resumed is not None:
        rundir.check_compatible(resumed.meta, splits.fingerprint, force)  # type: ignore[union-attr]
        choices = Choices(**resumed.meta["choices"], notes={})
    else:
        sample_x, sample_y = xtr[: tc.batch_size], ytr[: tc.batch_size]
        choices = autotune(cfg.system, model, lambda m: make_optimizer(m, cfg.optim, device), sample_x, sample_y,
                           loss_fn, math.ceil(total / tc.batch_size),
                           cache_key(model, sample_x, cfg.optim.name, measure.device_name(device)))
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

    # Everything whose state decides the rest of the run, by checkpoint name.
    stateful = {"model": model, "optimizer": optimizer, "batches": batches, "precision": prec,
                **{f"method/{m.name}": m for m in methods}}
    pending: list[Tensor] = []  # this window's losses, checked for NaN every NAN_CHECK_EVERY steps
    interval = max(1, int(tc.eval_every * n_train))
    st = RunState(next_eval=max(interval, int(tc.eval_from * total)))
    if resumed is not None:
        st = RunDir.restore(resumed, stateful, pending)
        say(f"resumed from {resumed.path} at step {st.step} ({st.restarts[-1]['lost_seconds']:.1f} s since it was written)")
    if cfg.optim.lr_find and resumed is None:  # a resumed run keeps the LR it found
        found = find_lr(cfg, model, splits)
        st.peak_lr, st.train_seconds = found.suggested_lr, found.seconds  # its cost is part of the time to train
        say(f"lr-find: peak LR {found.suggested_lr:.3g} ({found.confidence} confidence, {found.seconds:.2f} s)")
    run_cfg = replace(cfg, optim=replace(cfg.optim, lr=st.peak_lr)) if st.peak_lr else cfg
    wall_base, t_wall = (st.wall_seconds, time.perf_counter()) if resumed is not None else (0.0, origin)
    if rundir is not None:
        rundir.start(st.metrics)
    saved_choices = {"precision": choices.precision, "channels_last": choices.channels_last, "compile": choices.compile}

    def checkpoint(clock: float) -> float:
        """Write a checkpoint of the state at this step boundary; `clock` is the train clock right now."""
        snapshot = RunState(**{**st.__dict__, "train_seconds": clock, "wall_seconds": wall_base + time.perf_counter() - t_wall})
        return rundir.save(stateful, snapshot, pending, saved_choices, splits.fingerprint)  # type: ignore[union-attr]

    # ---- the loop ---------------------------------------------------------------------------------------------------
    # Hot path: ~0.6 ms a step on a tiny net, so the loop reads locals and does nothing per step that can be done
    # afterwards (the FLOP count is replayed from the schedule). docs/BENCHMARKS.md, "Loop overhead".
    schedule = make_schedule(run_cfg)
    clip, max_seconds, cl_input = cfg.optim.grad_clip, tc.max_seconds, choices.channels_last and xtr.ndim == 4
    every_steps, every_seconds = (kc.every_steps, kc.every_seconds) if rundir is not None else (0, 0.0)
    last_save, min_gap, lr = st.train_seconds, every_seconds, -1.0
    bar = _progress_bar(math.ceil(total / tc.batch_size), cfg.name, progress)
    last_val = st.metrics[-1]["val_acc"] if st.metrics else None
    model.train()
    sync(device)
    t_seg = time.perf_counter()
    while True:
        if st.samples < total:  # False only when resumed after the last step, with its check still to do
            progress_ = st.samples / total
            bs, new_lr = schedule(progress_)
            if new_lr != lr:
                lr = st.lr = new_lr
                for group in optimizer.param_groups:
                    group["lr"] = lr
            x, y = batches.next(bs)
            for hook in on_batch:
                x, y = hook(x, y, progress_)
            if cl_input:
                x = x.contiguous(memory_format=torch.channels_last)
            st.batch_size, st.size = bs, x.shape[-1]
            with prec.autocast():
                loss = loss_fn(net(x), y)
            prec.backward(loss)
            prec.step(optimizer, clip, model)
            optimizer.zero_grad(set_to_none=True)
            st.step += 1
            st.samples += bs
            for hook in after_step:
                hook(model, st.step)
            pending.append(loss.detach())
            if st.step % NAN_CHECK_EVERY == 0:
                _flush(pending, st, lr)
            bar.update(st.step, val_acc=last_val)

        # ---- at the step boundary: a stop signal, a validation check, a periodic checkpoint ----------------------
        if stop_flag:
            checkpoint(st.train_seconds + time.perf_counter() - t_seg)
            raise Preempted(f"{stop_flag.name}: checkpointed at step {st.step} in {rundir.path}")  # type: ignore[union-attr]
        out_of_time = max_seconds > 0 and st.train_seconds + time.perf_counter() - t_seg >= max_seconds
        done = st.samples >= total or out_of_time
        if st.samples >= st.next_eval or done:
            _flush(pending, st, lr)
            try:
                val_acc, val_loss = evaluate(eval_model, *val, prec, tta_kind, stop=stop_flag)
            except Interrupted:  # a signal during the check: save the state as it was before it
                checkpoint(st.train_seconds + time.perf_counter() - t_seg)
                raise Preempted(f"{stop_flag.name}: checkpointed at step {st.step} in {rundir.path}") from None  # type: ignore[union-attr]
            sync(device)
            st.train_seconds += time.perf_counter() - t_seg
            test_acc, _ = evaluate(eval_model, *test, prec, tta_kind)
            record = {"step": st.step, "samples": st.samples, "epoch": st.samples / n_train,
                      "progress": min(1.0, st.samples / total), "train_seconds": st.train_seconds,
                      "wall_seconds": wall_base + time.perf_counter() - t_wall, "lr": st.lr,
                      "batch_size": st.batch_size, "size": st.size, "train_loss": st.loss_sum / max(1, st.loss_n), "val_acc": val_acc,
                      "val_loss": val_loss, "test_acc": test_acc}
            st.metrics.append(record)
            st.loss_sum, st.loss_n, last_val = 0.0, 0, val_acc
            if rundir is not None:
                rundir.metric(record)
            reached = tc.target > 0 and val_acc >= tc.target
            if reached and st.reached_at is None:
                st.reached_at = len(st.metrics) - 1
            stop = bool(on_eval(record)) if on_eval is not None else False  # every record, the final one too
            if done or stop or (reached and tc.stop_on_target):
                break
            st.next_eval += interval
            model.train()
            sync(device)
            t_seg = time.perf_counter()
        if every_steps or every_seconds:
            clock = st.train_seconds + time.perf_counter() - t_seg
            if (every_steps and st.step % every_steps == 0) or (every_seconds and clock - last_save >= min_gap):
                # never more often than 50x the time a save takes, so checkpoints cost at most ~2% of the train clock
                min_gap, last_save = max(every_seconds, 50 * checkpoint(clock)), clock
    bar.close()

    # ---- the result ---------------------------------------------------------------------------------------------
    if rundir is not None:
        checkpoint(st.train_seconds)  # the final state (weights, optimizer), so the run can be continued or checked
    last, at = st.metrics[-1], st.metrics[st.reached_at] if st.reached_at is not None else None
    flops = sum(n * _step_flops(model, splits, shape, loss_fn, device) for shape, n in _shapes(run_cfg, splits, total, st.step).items())
    peak = measure.peak_flops(device, prec.dtype)
    on_demand, spot = prices.cost_usd(st.train_seconds, price)
    result = Result(
        recipe=cfg.name, seed=tc.seed, target=tc.target, reached_target=at is not None,
        seconds_to_target=at["train_seconds"] if at else None, train_seconds=st.train_seconds,
        wall_seconds=wall_base + time.perf_counter() - t_wall, test_acc=last["test_acc"],
        test_acc_at_target=at["test_acc"] if at else None, val_acc=last["val_acc"], steps=st.step,
        samples=st.samples, epochs=st.samples / n_train, flops=flops,
        utilisation=measure.utilisation(flops, st.train_seconds, peak), peak_flops=peak, precision=prec.name,
        compile=choices.compile, channels_last=choices.channels_last, device=measure.device_name(device),
        instance=price.instance, cost_usd_on_demand=on_demand, cost_usd_spot=spot, price_date=price.date,
        price_source=price.source, torch_version=torch.__version__, weights_sha256=weights_sha256(model),
        restarts=len(st.restarts), seconds_lost_to_restarts=sum(r["lost_seconds"] for r in st.restarts),
        peak_lr=run_cfg.optim.lr,
        run_dir=str(rundir.path) if rundir is not None else None, metrics=st.metrics)
    if rundir is not None:
        rundir.finish(result.to_json(), choices.notes, st.metrics)
    return result


# ---------------------------------------------------------------------------------------------------------------------
# Evaluation


class Interrupted(Exception):
    """A stop signal arrived during an evaluation (raised between chunks)."""


@torch.no_grad()
def evaluate(model: nn.Module, x: Tensor, y: Tensor, precision: Precision, tta: str = "none",
             chunk: int = 2048, stop: Any = None) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of `model` on (x, y), in eval mode, with test-time augmentation `tta`.
    If `stop` becomes truthy (a signal flag), raise Interrupted at the next chunk rather than finish."""
    was_training = model.training
    model.eval()
    correct = torch.zeros((), device=x.device, dtype=torch.long)
    loss_sum = torch.zeros((), device=x.device)
    for i in range(0, len(x), chunk):
        if stop:
            model.train(was_training)
            raise Interrupted
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


def _methods(cfg: Config, splits: Splits, model: nn.Module, device: torch.device) -> list[Method]:
    """The step methods this config turns on, in the order they act on a batch."""
    mc, out = cfg.methods, []  # type: ignore[var-annotated]
    if splits.augment != "none" and cfg.data.shift > 0:
        out.append(Augment(splits.augment, cfg.data.shift, device, derive_seed(cfg.train.seed, "augment")))
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


def _flush(pending: list[Tensor], st: RunState, lr: float) -> None:
    """Move the pending losses into the window's sum; raise TrainingDiverged if any is NaN or infinite.
    Called at fixed steps (multiples of NAN_CHECK_EVERY) and at checks, so a resumed run sums in the same order."""
    if not pending:
        return
    total = torch.stack(pending).float().sum().item()
    n = len(pending)
    pending.clear()
    if not math.isfinite(total):
        raise TrainingDiverged(f"the training loss became {total / n} by step {st.step} (lr {lr:.3g}); "
                               "lower optim.lr, set optim.grad_clip, or use precision fp32")
    st.loss_sum += total
    st.loss_n += n


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


def _progress_bar(total_steps: int, name: str, enabled: bool) -> Any:
    from quicktrain.progress import TrainProgress

    return TrainProgress(total_steps, description=name, enabled=enabled)
