"""A run directory: what a run writes, and how it resumes from its own checkpoints.

    DIR/config.json      the config (written at the start)
    DIR/metrics.jsonl    one line per validation check (rewritten from the checkpoint on resume, so no duplicates)
    DIR/checkpoints/     crash-safe checkpoints (quicktrain.checkpoint), the newest `checkpoint.keep`
    DIR/result.json      written last; its presence means the run is complete
    DIR/report.md, accuracy.png
    DIR/.lock            held while a process trains here, so two processes never write one run

`RunDir.capture` / `restore` move the whole run state (model, optimizer, technique states, grad scaler, data cursor,
every RNG, the loop's counters, clocks and metrics) in and out of a checkpoint. Resuming with a different config,
dataset or torch version is an error unless forced: a silently different continuation is worse than none.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from quicktrain.checkpoint import read_latest, write_checkpoint
from quicktrain.config import Config, diff, from_dict, to_dict
from quicktrain.atomic import atomic_write
from quicktrain.errors import UserError
from quicktrain.state import flatten, load_optimizer_state, rng_state, set_rng_state, unflatten


@dataclass
class RunState:
    """The loop's counters: with the objects' state_dicts, everything that decides the rest of the run."""

    step: int = 0
    samples: int = 0
    train_seconds: float = 0.0  # train clock so far
    wall_seconds: float = 0.0  # wall clock so far (set at each save)
    next_eval: int = 0  # samples at which the next validation check is due
    lr: float = 0.0  # of the last step (recorded with each check)
    batch_size: int = 0  # of the last step
    size: int = 0  # input length or side of the last step
    peak_lr: float = 0.0  # the LR finder's suggestion when optim.lr_find is on (0: the config's optim.lr)
    loss_sum: float = 0.0  # training loss since the last check (flushed from `pending` every NAN_CHECK_EVERY steps)
    loss_n: int = 0
    metrics: list[dict[str, Any]] = field(default_factory=list)
    reached_at: int | None = None  # index in metrics of the first check at the target
    restarts: list[dict[str, Any]] = field(default_factory=list)  # {"step", "lost_seconds"} per resume
    stopped_by: str = ""  # what ended the run: target | budget | max_seconds | schedule | on_eval
    check_due: bool = False  # stopped where a validation check was due and not yet done: resume does it first
    lr_test: str = ""  # the deferred LR range test's decision (quicktrain.adapt), once made: "ran ..." | "not run ..."
    lr_test_seconds: float = 0.0  # adapt.lr_find=auto: the test's estimated cost, measured once before training


@dataclass
class Resumed:
    path: Path
    tensors: dict[str, torch.Tensor]
    meta: dict[str, Any]


class RunDir:
    def __init__(self, path: str | Path, cfg: Config, warn: Callable[[str], None]) -> None:
        self.path, self.cfg, self.warn = Path(path), cfg, warn
        self._metrics: Any = None
        self._lock: int | None = None
        if (self.path / "result.json").exists():
            raise UserError(f"run directory {self.path} holds a finished run (result.json); use a new --run-dir")
        self.path.mkdir(parents=True, exist_ok=True)
        self.checkpoints = self.path / "checkpoints"
        self._lock = _lock(self.path / ".lock")

    # ---- files ---------------------------------------------------------------------------------------------------

    def start(self, metrics: list[dict[str, Any]]) -> None:
        """config.json, and metrics.jsonl holding exactly the metrics so far (a resumed run drops any lines the
        interrupted process wrote after its last checkpoint)."""
        (self.path / "config.json").write_text(json.dumps(to_dict(self.cfg), indent=2, sort_keys=True) + "\n")
        atomic_write(self.path / "metrics.jsonl", "".join(json.dumps(m) + "\n" for m in metrics))
        self._metrics = open(self.path / "metrics.jsonl", "a")  # noqa: SIM115 (closed in close)

    def metric(self, record: dict[str, Any]) -> None:
        self._metrics.write(json.dumps(record) + "\n")
        self._metrics.flush()

    def finish(self, result: dict[str, Any], notes: dict[str, Any], metrics: list[dict[str, Any]]) -> None:
        from quicktrain.report import write_run_report

        write_run_report(self.path, result, to_dict(self.cfg), metrics)
        atomic_write(self.path / "result.json", json.dumps(result | {"autotune": notes}, indent=2) + "\n")  # last

    def close(self) -> None:
        if self._metrics is not None:
            self._metrics.close()
            self._metrics = None
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    # ---- checkpoints ---------------------------------------------------------------------------------------------

    def latest(self) -> Resumed | None:
        found = read_latest(self.checkpoints, self.warn)
        return Resumed(*found) if found is not None else None

    def check_compatible(self, meta: dict[str, Any], fingerprint: str, force: bool, machine: str = "") -> None:
        """Refuse to continue a run under different conditions, unless forced (then warn). `machine` is the device's
        name with its kernel features and threads (measure.device_name): another CPU model, ISA or thread count runs
        other kernels, so the continued run would not be the uninterrupted one bit for bit."""
        problems = []
        changed = {k: v for k, v in diff(from_dict(meta["config"]), self.cfg).items()
                   if not k.startswith("checkpoint.")}
        if changed:
            problems.append("config differs: " + ", ".join(f"{k} {a!r} -> {b!r}"
                                                           for k, (a, b) in sorted(changed.items())))
        if meta["fingerprint"] != fingerprint:
            problems.append("the dataset differs (fingerprint)")
        if meta["torch"] != torch.__version__:
            problems.append(f"torch {meta['torch']} -> {torch.__version__}")
        if machine and meta.get("machine", machine) != machine:  # checkpoints before issue #8 did not record it
            problems.append(f"the machine differs: {meta['machine']} -> {machine} (its kernels round differently, so "
                            f"the result will not equal an uninterrupted run's; precision stays "
                            f"{meta['choices']['precision']})")
        if problems and not force:
            raise UserError(f"cannot resume {self.path}: {'; '.join(problems)} (use --force to resume anyway)")
        for p in problems:
            self.warn(f"resuming {self.path} anyway (--force): {p}")

    def save(self, objects: dict[str, Any], st: RunState, pending: list[torch.Tensor], choices: dict[str, Any],
             fingerprint: str, machine: str = "") -> float:
        """Write a checkpoint of the run as it stands at a step boundary; return the seconds the write took."""
        t0 = time.perf_counter()
        tensors: dict[str, torch.Tensor] = {}
        state = {name: obj.state_dict() for name, obj in objects.items()}
        state["rng"] = rng_state()
        state["pending"] = torch.stack(pending).float() if pending else torch.zeros(0)
        meta = {"step": st.step, "kind": "run", "state": flatten(state, tensors), "loop": asdict(st),
                "config": to_dict(self.cfg), "fingerprint": fingerprint, "torch": torch.__version__,
                "choices": choices, "machine": machine, "saved_at": time.time()}
        write_checkpoint(self.checkpoints, st.step, tensors, meta, keep=self.cfg.checkpoint.keep)
        return time.perf_counter() - t0

    @staticmethod
    def restore(resumed: Resumed, objects: dict[str, Any], pending: list[torch.Tensor]) -> RunState:
        """Load every object's state and the RNGs (last, after everything that consumed randomness in setup);
        return the loop's counters with this restart recorded."""
        state = unflatten(resumed.meta["state"], resumed.tensors)
        for name, obj in objects.items():
            if isinstance(obj, torch.optim.Optimizer):
                load_optimizer_state(obj, state[name])  # and in its parameters' memory layout
            else:
                obj.load_state_dict(state[name])
        pending.extend(state["pending"].unbind(0))
        st = RunState(**resumed.meta["loop"])
        lost = max(0.0, time.time() - resumed.meta["saved_at"])
        st.restarts.append({"step": st.step, "lost_seconds": lost})
        st.wall_seconds += lost
        set_rng_state(state["rng"])
        return st


def _lock(path: Path) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise UserError(f"run directory {path.parent} is in use by another quicktrain process") from None
    return fd
