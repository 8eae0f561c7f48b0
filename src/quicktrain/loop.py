"""THE training loop: `train(cfg, model, data) -> Result`. Setup (`build_run`), then one loop, read top to bottom.

Clocks (README, "What is measured, and how"):
- train clock: the training steps plus the validation checks that decide stopping (synchronised on CUDA at the
  points where it is read), plus the LR finder's sweep when the run uses one. Not in it: data loading, model
  construction, the `auto` race (always outside, see quicktrain.run), test-set evaluation (reporting only), writing
  files.
- wall clock: everything, from `wall_origin` (the CLI passes the process start) or from the call.
Time to target is the train clock at the first validation check that reaches the target; the test split is
evaluated at every check for the record and never decides anything.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import asdict, replace
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

import torch
from torch import Tensor, nn

from quicktrain import measure, prices
from quicktrain.adapt import adapted, describe, guard_notes, lr_test_pays, peak_from_test, untuned
from quicktrain.checkpointer import Checkpointer, Follower, NullCheckpointer
from quicktrain.config import Config, check_config
from quicktrain.dist import Dist, ended_together, setup as setup_dist
from quicktrain.errors import TrainingDiverged
from quicktrain.lr_find import estimate_seconds, sweep_for_run
from quicktrain.methods.progressive_resize import resize
from quicktrain.methods.registry import examples, full_size, input_size
from quicktrain.optim import set_lr
from quicktrain.recipes import load_recipe
from quicktrain.result import Result
from quicktrain.run import Run, build_run
from quicktrain.rundir import RunDir, RunState
from quicktrain.schedules import make_schedule
from quicktrain.memory.backoff import restore, snapshot
from quicktrain.memory.tracking import memory_line, saved_bytes
from quicktrain.noise import NoiseScale
from quicktrain.runtime import sync
from quicktrain.signals import stop_on_signals
from quicktrain.sync_bn import SyncBatchNorm
from quicktrain.state import weights_sha256
from quicktrain.tasks import Interrupted, evaluate

NAN_CHECK_EVERY = 32  # steps between non-finite-loss checks (each check is a host sync on CUDA)
__all__ = ["evaluate", "train"]


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
    d = setup_dist(cfg.system, cfg.train.batch_size)  # under torchrun: this rank's place; rank 0 alone writes
    say = (log or (lambda _msg: None)) if d.is_main else (lambda _msg: None)
    reasons = untuned(cfg, model, data)  # the recipe's constants do not apply: choose by measurement instead
    if reasons:
        say(describe(cfg, reasons))
    rundir = RunDir(run_dir, cfg, warn=say) if run_dir is not None and d.is_main else None
    try:
        with stop_on_signals(run_dir is not None and cfg.checkpoint.on_signal) as stop:
            ckpt = _checkpointer(run_dir, rundir, stop, force, say, d)
            run = build_run(adapted(cfg) if reasons else cfg, model, data, choices=ckpt.saved_choices(), say=say,
                            dist=d)
            run.adapted = bool(reasons)
            price = prices.lookup(instance or prices.DEFAULT_INSTANCE, prices.load_prices(prices_path))
            st = _loop(run, ckpt, on_eval, progress and d.is_main, origin, say)
            result = _result(run, st, ckpt, price, reasons)
            for note in result.notes:
                say(note)
            ckpt.finish(st, result.to_json(), run.choices.notes)
            if d.on:
                ended_together()  # quicktrain.dist: the ranks meet once more at exit
            return result
    finally:
        if rundir is not None:
            rundir.close()


def _checkpointer(run_dir: str | Path | None, rundir: RunDir | None, stop: Any, force: bool,
                  say: Callable[[str], None], d: Dist) -> NullCheckpointer:
    if run_dir is None:
        return NullCheckpointer(stop)
    return Checkpointer(rundir, stop, force, say, d) if rundir is not None else Follower(run_dir, stop, d)


def _loop(run: Run, ckpt: NullCheckpointer, on_eval: Callable[[dict[str, Any]], bool | None] | None,
          progress: bool, origin: float, say: Callable[[str], None]) -> RunState:
    """Train until the target, the budget or a stop; return the loop's counters and metrics."""
    tc, total = run.cfg.train, run.total
    pending: list[Tensor] = []  # this window's losses, checked for NaN every NAN_CHECK_EVERY steps
    interval = run.interval
    key = "val_" + run.task.metric  # what the target, the bar and the schedule's plateau watch
    st = ckpt.begin(run, RunState(next_eval=max(interval, int(tc.eval_from * total))), pending, origin)
    if run.cfg.optim.lr_find and ckpt.resumed is None:  # a resumed run keeps the LR it found
        found = sweep_for_run(run)
        # adaptive runs stay within [adapt.lr_floor, adapt.lr_max]; every rank trains with rank 0's
        st.peak_lr = run.dist.broadcast_json(peak_from_test(found.suggested_lr, run.cfg) if run.adapted
                                             else found.suggested_lr)
        st.train_seconds = found.seconds  # its cost is time to train
        say(f"lr-find: suggested peak LR {found.suggested_lr:.3g} ({found.confidence} confidence, "
            f"{found.seconds:.2f} s); using {st.peak_lr:.3g}")
    # Hot path: ~0.6 ms a step on a tiny net, so the loop does nothing per step that can be done afterwards (the
    # FLOP count is replayed from the schedule). docs/BENCHMARKS.md, "Loop overhead".
    defer = run.defers_lr_test  # the LR range test, if and when it pays
    if defer and ckpt.resumed is None:
        _defer_lr_test(run, st, say)
    if st.peak_lr:
        run.schedule.peak = st.peak_lr
    at, lr = run.schedule.at, -1.0
    every = run.cfg.noise.every if run.noise is not None else 0  # gradient noise scale measurements
    timed = tc.max_seconds > 0 or ckpt.saves
    # under data parallel, with a time budget or signal handlers (a run directory), every rank must stop at one step
    agree = run.dist.on and (tc.max_seconds > 0 or ckpt.path is not None)
    bar = _progress_bar(math.ceil(total / tc.batch_size), run.cfg.name, progress, run.task.metric)
    last_val = st.metrics[-1][key] if st.metrics else None
    run.model.train()
    sync(run.device)
    t_seg = time.perf_counter()
    while True:
        # a run stopped at a step boundary where a check was due (or during the check) does that check first on
        # resume, before any step: else its checks, and everything they decide, would come one step late
        if st.samples < total and not st.check_due:
            p = st.samples / total
            bs, new_lr = at(p)
            if new_lr != lr:
                lr = st.lr = new_lr
                set_lr(run.optimizer, lr)
            x, y = run.next_batch(bs, p)
            st.batch_size, st.size = bs, x.shape[-1]
            measure = (st.step + 1, st.samples + bs) if every and (st.step + 1) % every == 0 else None
            pending.append(run.step(x, y, measure))
            st.step += 1
            st.samples += bs
            for hook in run.after_step:
                hook(run.model, st.step)
            if st.step % NAN_CHECK_EVERY == 0:
                _flush(pending, st, run.dist)
            bar.update(st.step, value=last_val)
        st.check_due = False
        # ---- at the step boundary: a stop signal, a validation check, a periodic checkpoint ----------------------
        # the clock is read per step only when something depends on it (a time budget, timed checkpoints)
        clock = st.train_seconds + time.perf_counter() - t_seg if timed else st.train_seconds
        stop, over_time = bool(ckpt.stop), 0 < tc.max_seconds <= clock
        if agree:  # a signal that reached one rank, or one rank's clock, stops them all at this step
            stop, over_time = run.dist.agree(stop, over_time)
        if stop:
            st.check_due = st.samples >= st.next_eval or st.samples >= total
            ckpt.preempt(st, st.train_seconds + time.perf_counter() - t_seg)
        done = st.samples >= total or over_time
        if st.samples >= st.next_eval or done:
            _flush(pending, st, run.dist)
            record = _check(run, st, ckpt, t_seg)
            st.metrics.append(record)
            st.loss_sum, st.loss_n, last_val = 0.0, 0, record[key]
            ckpt.metric(record)
            value = record[key]
            reached = run.task.reached(value, tc.target)
            if reached and st.reached_at is None:
                st.reached_at = len(st.metrics) - 1
            open_ = tc.target > 0 and st.reached_at is None  # a decay that ends short of it re-warms
            run.schedule.observe(value, st.samples, run.task.higher_is_better, open_)
            stop = bool(on_eval(record)) if on_eval is not None else False  # every record, the final one too
            if done or stop or (reached and tc.stop_on_target) or run.schedule.exhausted:
                st.stopped_by = _why(st, run, reached, stop, clock)
                break
            if defer and not st.lr_test and len(st.metrics) in (1, run.cfg.adapt.decide_check):
                _deferred_lr_test(run, st, say)
            st.next_eval += interval
            run.model.train()
            sync(run.device)
            t_seg, clock = time.perf_counter(), st.train_seconds
        if ckpt.saves:
            ckpt.maybe_save(st, clock)
    bar.close()
    return st


def _defer_lr_test(run: Run, st: RunState, say: Callable[[str], None]) -> None:
    """adapt.lr_find=auto, before training: keep the weights the LR range test will sweep from, and train as plain
    Adam does (the floor LR, no warmup) until the first check, where the test runs if it is cheap
    (`_deferred_lr_test`). An epoch at plain Adam's LR is never wasted, and it times the run's own epoch."""
    run.start_weights.capture(run.model)
    run.schedule.rewarm_to(run.schedule.peak, 0, warm=False)
    say(f"lr-find: deferred; training at {run.schedule.peak:.3g} until the first check")


def _deferred_lr_test(run: Run, st: RunState, say: Callable[[str], None]) -> None:
    """adapt.lr_find=auto (quicktrain.adapt), at the first check: run the LR range test if it costs at most
    adapt.first_epochs epochs of the run's own (timed) steps; else at check adapt.decide_check, if the time the
    checks project to the target exceeds adapt.pays times its cost (`lr_test_pays`). The test sweeps from the weights
    before training; the run warms up to its LR from where it is. Decided once and recorded (a timing choice, like
    `auto`; rank 0's under data parallel); its time, the estimate's included, is on the train clock."""
    a, t0, first = run.cfg.adapt, time.perf_counter(), len(st.metrics) == 1
    if first:
        st.lr_test_seconds = estimate_seconds(run)  # a few steps of a copy at the sweep's batch
    epochs = st.metrics[-1]["epoch"]
    epoch_s = st.train_seconds / max(epochs, 1e-12)
    cost = f"it costs {st.lr_test_seconds:.3g} s, {st.lr_test_seconds / max(epoch_s, 1e-12):.2g} epochs of training"
    if first:
        go, why = st.lr_test_seconds <= a.first_epochs * epoch_s, cost
    else:
        go, why = lr_test_pays(st.metrics, run.cfg.train.target, st.train_seconds, st.lr_test_seconds, a.pays)
    go, why = run.dist.broadcast_json([go, why])
    st.train_seconds += time.perf_counter() - t0
    if first and not go:
        say(f"lr-find: deferred again ({cost} > {a.first_epochs:g}): decided at check {a.decide_check}")
        return
    if not go:
        st.lr_test = f"not run at epoch {epochs:.3g}: {why}"
    else:
        found = sweep_for_run(run, start=run.start_weights.weights or None)  # from the weights before training
        peak = run.dist.broadcast_json(peak_from_test(found.suggested_lr, run.cfg))
        st.train_seconds += found.seconds
        if peak > run.schedule.peak:
            run.schedule.rewarm_to(peak, st.samples)
        st.peak_lr = run.schedule.peak
        st.lr_test = (f"ran at epoch {epochs:.3g} ({why}): suggested {found.suggested_lr:.3g}, "
                      f"peak LR now {st.peak_lr:.3g}")
    run.start_weights.clear()
    say(f"lr-find (deferred): {st.lr_test}")


def _check(run: Run, st: RunState, ckpt: NullCheckpointer, t_seg: float) -> dict[str, Any]:
    """A validation check (on the train clock, which it stops) and the test split's figures (off it, for the record).
    A signal during the check saves the state as it was before it and stops."""
    run.dist.share_buffers(run.eval_model)  # per-rank BN statistics: every shard is scored with rank 0's
    try:  # under data parallel a check is not cut short: one rank's signal is acted on at the step boundary
        val = run.task.evaluate(run.eval_model, *run.val, run.precision, stop=None if run.dist.on else ckpt.stop,
                                dist=run.dist)
    except Interrupted:
        st.check_due = True  # resume redoes this check before its next step
        ckpt.preempt(st, st.train_seconds + time.perf_counter() - t_seg)
    sync(run.device)
    st.train_seconds += time.perf_counter() - t_seg
    test = run.task.evaluate(run.eval_model, *run.test, run.precision, dist=run.dist)
    return {"step": st.step, "samples": st.samples, "epoch": st.samples / run.n_train,
            "progress": min(1.0, st.samples / run.total), "train_seconds": st.train_seconds,
            "wall_seconds": ckpt.wall(), "lr": st.lr, "batch_size": st.batch_size, "size": st.size,
            "train_loss": st.loss_sum / max(1, st.loss_n), **{f"val_{k}": v for k, v in val.items()},
            **{f"test_{k}": v for k, v in test.items()}}


def _why(st: RunState, run: Run, reached: bool, stopped: bool, clock: float) -> str:
    """What ended the run, for the result and the never-worse-than-plain guard."""
    tc = run.cfg.train
    if reached and tc.stop_on_target:
        return "target"
    if stopped:
        return "on_eval"
    if run.schedule.exhausted:
        return "schedule"
    return "max_seconds" if 0 < tc.max_seconds <= clock and st.samples < run.total else "budget"


def _with_peak_lr(cfg: Config, peak_lr: float) -> Config:
    return replace(cfg, optim=replace(cfg.optim, lr=peak_lr)) if peak_lr else cfg


def _flush(pending: list[Tensor], st: RunState, dist: Dist) -> None:
    """Move the pending losses into the window's sum; raise TrainingDiverged if any is NaN or infinite.
    Called at fixed steps (multiples of NAN_CHECK_EVERY) and at checks, so a resumed run sums in the same order.
    Under data parallel the ranks' losses are averaged first: every rank sees the same sum, and stops together."""
    if not pending:
        return
    local = torch.stack(pending).float().sum()
    total = (dist.sum(local) / dist.world).item() if dist.on else local.item()
    n = len(pending)
    pending.clear()
    if not math.isfinite(total):
        raise TrainingDiverged(f"the training loss became {total / n} by step {st.step} (lr {st.lr:.3g}); "
                               "lower optim.lr, set optim.grad_clip, or use precision fp32")
    st.loss_sum += total
    st.loss_n += n


# ---------------------------------------------------------------------------------------------------------------------
# The result


def _result(run: Run, st: RunState, ckpt: NullCheckpointer, price: Any, adapted_for: list[str]) -> Result:
    cfg, ch = _with_peak_lr(run.cfg, st.peak_lr), run.choices
    last, at = st.metrics[-1], st.metrics[st.reached_at] if st.reached_at is not None else None
    flops = sum(n * _step_flops(run, shape) for shape, n in _shapes(cfg, run, st.step).items())
    d = run.dist
    peak = measure.peak_flops(run.device, run.precision.dtype) * d.world  # every rank's device
    on_demand, spot = prices.cost_usd(st.train_seconds * d.nodes, price)  # `instance` is one machine of d.nodes
    return Result(
        recipe=cfg.name, seed=cfg.train.seed, target=cfg.train.target, reached_target=at is not None,
        seconds_to_target=at["train_seconds"] if at else None, train_seconds=st.train_seconds,
        wall_seconds=ckpt.wall(), test_acc=last["test_acc"], test_acc_at_target=at["test_acc"] if at else None,
        val_acc=last["val_acc"], steps=st.step, samples=st.samples, epochs=st.samples / run.n_train, flops=flops,
        utilisation=measure.utilisation(flops, st.train_seconds, peak), peak_flops=peak, precision=run.precision.name,
        compile=ch.compile, channels_last=ch.channels_last, device=measure.device_name(run.device),
        instance=price.instance, cost_usd_on_demand=on_demand, cost_usd_spot=spot, price_date=price.date,
        price_source=price.source, torch_version=torch.__version__, weights_sha256=weights_sha256(run.model),
        restarts=len(st.restarts), seconds_lost_to_restarts=sum(r["lost_seconds"] for r in st.restarts),
        world_size=d.world, nodes=d.nodes, threads=torch.get_num_threads() if run.device.type == "cpu" else 0,
        sync_bn=any(isinstance(m, SyncBatchNorm) for m in run.model.modules()),
        metric=run.task.metric, val_loss=last.get("val_loss"), test_loss=last.get("test_loss"),
        test_loss_at_target=at.get("test_loss") if at else None, data_path=run.data_path, memory=_memory(run),
        noise=_noise(run, at), noise_history=run.noise.history if run.noise is not None else [],
        peak_lr=cfg.optim.lr, run_dir=ckpt.path, stopped_by=st.stopped_by,
        adapted=adapted_for + ([f"LR range test {st.lr_test}"] if st.lr_test else []),
        notes=guard_notes(run.cfg, st.metrics, st.stopped_by, st.reached_at is not None, bool(adapted_for)),
        metrics=st.metrics)


def _memory(run: Run) -> dict[str, Any]:
    """The run's memory line: what the model and optimizer hold, the activations one micro-batch saves for
    backward (one extra training-mode forward after the run, its RNG, BN statistics and counters restored), the
    device's peak on CUDA, and the memory settings used."""
    mc = run.cfg.memory
    n = min(mc.micro_batch or run.cfg.train.batch_size, len(run.val[0]))
    x, y = run.layout(run.val[0][:n]), run.val[1][:n]
    was_training, snap = run.model.training, snapshot(run.model)
    run.model.train()
    with run.precision.autocast():
        _, act = saved_bytes(lambda: run.task.loss(run.model(x), y), exclude=run.model)
    restore(snap)
    run.model.train(was_training)
    peak = torch.cuda.max_memory_allocated(run.device) if run.device.type == "cuda" else 0
    line = memory_line(run.model, run.optimizer, act, peak)
    backoffs = run.backoff.events if run.backoff is not None else []
    return {**asdict(line), **run.choices.memory, "backoffs": backoffs}


def _noise(run: Run, at: dict[str, Any] | None) -> dict[str, Any]:
    """The noise scale's summary: its last smoothed B_simple, and the one at the check that reached the target
    (McCandlish et al. compare the critical batch for a target with B_simple measured there)."""
    if run.noise is None:
        return {}
    h = run.noise.history
    upto = [m for m in h if at is not None and m["step"] <= at["step"]]
    return {"every": run.cfg.noise.every, "measurements": len(h), "b_simple": run.noise.b_simple,
            "b_simple_at_target": upto[-1]["b_simple"] if upto else None}


def _shapes(cfg: Config, run: Run, steps: int) -> Counter[tuple[int, int]]:
    """How many steps ran at each (batch size, input size): the loop's schedule replayed, not tracked per step (a
    noise-driven batch ramp from its recorded measurements: a measurement in step k sets the batch from step k+1)."""
    replay = NoiseScale() if run.noise is not None else None
    marks = [(int(h["step"]), h["b_simple"]) for h in run.noise.history] if run.noise is not None else []
    schedule = make_schedule(cfg, run.total, run.n_train, noise=replay, multiple=run.dist.world).at
    full = full_size(run.splits)
    counts: Counter[tuple[int, int]] = Counter()
    samples, i = 0, 0
    for k in range(1, steps + 1):
        while replay is not None and i < len(marks) and marks[i][0] < k:
            replay.peak = max(replay.peak, marks[i][1]) if marks[i][1] is not None else replay.peak
            i += 1
        p = samples / run.total
        bs = schedule(p)[0]
        counts[(bs, input_size(cfg, p, full))] += 1
        samples += bs
    return counts


def _step_flops(run: Run, shape: tuple[int, int]) -> float:
    n, size = shape
    ex = examples(run.splits)  # the training split, or the sample held in memory (streamed and token data)
    m = min(n, len(ex.x))  # FLOPs are linear in the batch: a batch larger than the sample is counted pro rata
    x, y = resize(ex.x[:m].to(run.device), size), ex.y[:m].to(run.device)
    y = y[:, :x.shape[1]] if y.ndim == 2 else y  # token targets are cropped with their inputs
    return measure.count_train_flops(run.model, x, y, run.task.loss) * n / m


def _progress_bar(total_steps: int, name: str, enabled: bool, metric: str) -> Any:
    from quicktrain.progress import TrainProgress

    return TrainProgress(total_steps, description=name, enabled=enabled, metric=metric)
