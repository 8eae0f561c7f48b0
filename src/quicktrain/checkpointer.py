"""Who saves the run, and when: checkpoint cadence, the preemption path and the run directory's files, owned by one
object. `Checkpointer` writes to a run directory; `NullCheckpointer` (no run directory) does nothing, so the loop
has no `if rundir is None` anywhere.

Cadence: every `checkpoint.every_seconds` of train clock, stretched to 50x the last write's duration (so writing
costs at most ~2% of the train clock), optionally every `checkpoint.every_steps`, and at once when a stop signal
arrived (then `Preempted` is raised after the write).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, NoReturn

from torch import Tensor

from quicktrain import measure
from quicktrain.autotune import Choices
from quicktrain.checkpoint import read_checkpoint
from quicktrain.dist import SINGLE, Dist, ended_together
from quicktrain.errors import Preempted
from quicktrain.rundir import Resumed, RunDir, RunState
from quicktrain.signals import StopFlag


# What a resume promises, by device. CPU: tested bitwise for every forced choice (tests/test_resume_choices.py).
# CUDA: not verified in this version (no GPU in CI); some CUDA kernels (atomics in index_add, scatter, some
# convolution backward algorithms) differ run to run even without a restart unless deterministic algorithms are on.
_EXACT = {False: "continues bit for bit", True: "on CUDA bitwise continuation is not verified"}


class NullCheckpointer:
    """No run directory: nothing is written or resumed; a stop signal is not caught (the handlers are off)."""

    resumed: Any = None
    path: str | None = None
    saves = False  # whether maybe_save can write anything (the loop skips the call per step when not)

    def __init__(self, stop: StopFlag | None = None) -> None:
        self.stop = stop if stop is not None else StopFlag()

    def saved_choices(self) -> Choices | None:
        """A resumed run keeps the original run's `auto` choices."""
        return Choices(**self.resumed.meta["choices"], notes={}) if self.resumed is not None else None

    def begin(self, run: Any, fresh: RunState, pending: list[Tensor], wall_origin: float) -> RunState:
        self.wall_base, self.t_wall = 0.0, wall_origin
        return fresh

    def wall(self) -> float:
        """Wall seconds of this run so far (a resumed run's include the earlier processes')."""
        return self.wall_base + time.perf_counter() - self.t_wall

    def metric(self, record: dict[str, Any]) -> None:
        return None

    def maybe_save(self, st: RunState, clock: float) -> None:
        return None

    def preempt(self, st: RunState, clock: float) -> NoReturn:
        raise Preempted(f"{self.stop.name}: stopped at step {st.step} (no run directory, nothing saved)")

    def finish(self, st: RunState, result: dict[str, Any], notes: dict[str, Any]) -> None:
        return None


class Checkpointer(NullCheckpointer):
    def __init__(self, rundir: RunDir, stop: StopFlag, force: bool, say: Callable[[str], None],
                 dist: Dist = SINGLE) -> None:
        super().__init__(stop)
        self.rundir, self.force, self.say, self.dist = rundir, force, say, dist
        self.path = str(rundir.path)
        self.resumed = rundir.latest()
        dist.broadcast_json(str(self.resumed.path) if self.resumed else None)  # the one every rank resumes from
        kc = rundir.cfg.checkpoint
        self.every_steps, self.every_seconds = kc.every_steps, kc.every_seconds
        self.saves = bool(kc.every_steps or kc.every_seconds)
        self.min_gap, self.last_save = kc.every_seconds, 0.0

    def begin(self, run: Any, fresh: RunState, pending: list[Tensor], wall_origin: float) -> RunState:
        """Check and restore a resumed run (or start a fresh one); write config.json and metrics.jsonl."""
        self.run, self.pending = run, pending
        st = fresh
        if self.resumed is not None:
            self.rundir.check_compatible(self.resumed.meta, run.splits.fingerprint, self.force,
                                         measure.device_name(run.device))
            st = RunDir.restore(self.resumed, run.stateful(), pending)
            ch = self.resumed.meta["choices"]
            self.say(f"resumed from {self.resumed.path} at step {st.step} "
                     f"({st.restarts[-1]['lost_seconds']:.1f} s since it was written; the original run's precision "
                     f"{ch['precision']}, channels_last {ch['channels_last']}, compile {ch['compile']}: "
                     f"{_EXACT[run.device.type == 'cuda']})")
        self.wall_base, self.t_wall = (st.wall_seconds, time.perf_counter()) if self.resumed else (0.0, wall_origin)
        self.last_save = st.train_seconds
        self.rundir.start(st.metrics)
        return st

    def save(self, st: RunState, clock: float) -> float:
        """Write a checkpoint of the state at this step boundary (`clock`: the train clock now); return its seconds."""
        snapshot = RunState(**{**st.__dict__, "train_seconds": clock, "wall_seconds": self.wall()})
        ch = self.run.choices
        choices = {"precision": ch.precision, "channels_last": ch.channels_last, "compile": ch.compile,
                   "memory": ch.memory}
        return self.rundir.save(self.run.stateful(), snapshot, self.pending, choices, self.run.splits.fingerprint,
                                measure.device_name(self.run.device))

    def metric(self, record: dict[str, Any]) -> None:
        self.rundir.metric(record)

    def maybe_save(self, st: RunState, clock: float) -> None:
        due_steps = self.every_steps and st.step % self.every_steps == 0
        if due_steps or (self.every_seconds and clock - self.last_save >= self.min_gap):
            self.min_gap, self.last_save = max(self.every_seconds, 50 * self.save(st, clock)), clock

    def preempt(self, st: RunState, clock: float) -> NoReturn:
        self.save(st, clock)
        self.dist.barrier()  # the other ranks exit only once the checkpoint is whole
        ended_together()
        raise Preempted(f"{self.stop.name or 'a stop signal on another rank'}: checkpointed at step {st.step} in "
                        f"{self.rundir.path}")

    def finish(self, st: RunState, result: dict[str, Any], notes: dict[str, Any]) -> None:
        """The final state (weights, optimizer), so the run can be continued or checked; then report and result."""
        self.save(st, st.train_seconds)
        self.rundir.finish(result, notes, st.metrics)


class Follower(NullCheckpointer):
    """A rank other than 0 under data parallel (quicktrain.dist): it writes nothing, resumes from the checkpoint rank 0
    chose (read and verified from the shared run directory) and, on a stop, waits until rank 0's checkpoint is
    written before it stops too."""

    def __init__(self, run_dir: str | Path, stop: StopFlag, dist: Dist) -> None:
        super().__init__(stop)
        self.dist, self.path = dist, str(run_dir)
        path = dist.broadcast_json(None)
        self.resumed = Resumed(Path(path), *read_checkpoint(Path(path))) if path else None

    def begin(self, run: Any, fresh: RunState, pending: list[Tensor], wall_origin: float) -> RunState:
        st = RunDir.restore(self.resumed, run.stateful(), pending) if self.resumed is not None else fresh
        self.wall_base, self.t_wall = (st.wall_seconds, time.perf_counter()) if self.resumed else (0.0, wall_origin)
        return st

    def preempt(self, st: RunState, clock: float) -> NoReturn:
        self.dist.barrier()
        ended_together()
        raise Preempted(f"{self.stop.name or 'a stop signal on another rank'}: stopped at step {st.step}; rank 0 "
                        f"checkpointed")
