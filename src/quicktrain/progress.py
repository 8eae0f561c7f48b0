"""A training progress bar on stderr (stdout is reserved: its last line is the JSON result), cheap enough to call
every step of a loop whose steps take about a millisecond.

`update()` normally only stores its arguments and bumps a counter. Every `_every` calls it reads the clock, re-estimates
the call rate so the next clock read comes about 1/`CHECKS_PER_SECOND` s later, and redraws (rich, no background
thread) at most `REFRESH_PER_SECOND` times a second. When disabled, or when stderr is not a terminal (a log file, CI,
a pipe), nothing is drawn, rich is never imported, and `update()` never reads the clock.
"""

from __future__ import annotations

import math
import sys
import time
import weakref
from types import TracebackType
from typing import IO, Any

REFRESH_PER_SECOND = 10.0
CHECKS_PER_SECOND = 40.0  # clock reads per second: enough that a redraw is at most ~25 ms late
_MAX_EVERY = 1 << 20
_NEVER = sys.maxsize


class TrainProgress:
    """`with TrainProgress(total_steps) as bar: ... bar.update(step, val_acc=acc)`.

    `stream` is a text file (default: sys.stderr) or a `rich.console.Console`; a plain file is drawn on only when it
    is a terminal, a Console only when it says it is one (so `Console(force_terminal=True, file=...)` draws)."""

    def __init__(self, total_steps: int, description: str = "train", enabled: bool = True,
                 stream: IO[str] | Any = None, metric: str = "acc") -> None:
        self.total_steps = max(1, int(total_steps))
        self.metric = metric  # acc: shown as a percentage; loss (a next-token task): as nats per token
        self.description = description
        self._step = 0
        self._val_acc: float | None = None
        self._loss: Any = None
        self._calls = 0
        self._next_check = _NEVER  # disabled: the fast path in update() is all there is
        self._every = 1
        self._progress: Any = None
        self._task: Any = None
        console = _console(stream) if enabled else None
        if console is not None:
            self._start(console)

    @property
    def enabled(self) -> bool:
        """True when this bar is drawing."""
        return self._progress is not None

    def _start(self, console: Any) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        # auto_refresh=False: no refresh thread; we redraw from update(), which knows when it is worth it.
        # redirect_*=False: never swap sys.stdout/stderr, so stdout stays the clean JSON channel even mid-run.
        self._progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
            TextColumn("val {task.fields[acc]}"), TextColumn("loss {task.fields[loss]}"),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            console=console, auto_refresh=False, transient=False, redirect_stdout=False, redirect_stderr=False)
        self._task = self._progress.add_task(self.description, total=self.total_steps, acc="–", loss="–")
        self._progress.start()
        # a run that raises never reaches close(): still stop the display (it hides the cursor) at collection or exit
        self._finalizer = weakref.finalize(self, self._progress.stop)
        now = time.monotonic()
        self._last_check, self._last_check_calls, self._last_draw = now, 0, -math.inf
        self._next_check = 1

    def update(self, step: int, *, val_acc: float | None = None, loss: float | None = None,
               value: float | None = None) -> None:
        """Record the step just finished (and the latest validation figure in the bar's metric, `value` or its
        old name `val_acc`, and training loss, if given); redraw at most ~10 times a second."""
        self._step = step
        if value is not None or val_acc is not None:
            self._val_acc = value if value is not None else val_acc
        if loss is not None:
            self._loss = loss
        self._calls += 1
        if self._calls >= self._next_check:
            self._check()

    def _check(self) -> None:
        now = time.monotonic()
        elapsed = now - self._last_check
        done = self._calls - self._last_check_calls
        if elapsed > 0:
            # calls per second x seconds between clock reads; re-estimated at each read, so a slower phase
            # (evaluation, a larger batch) only delays one redraw
            self._every = min(_MAX_EVERY, max(1, int(done / elapsed / CHECKS_PER_SECOND)))
        else:
            self._every = min(_MAX_EVERY, self._every * 2)
        self._last_check, self._last_check_calls = now, self._calls
        self._next_check = self._calls + self._every
        if now - self._last_draw >= 1.0 / REFRESH_PER_SECOND:
            self._last_draw = now
            self._draw()

    def _draw(self) -> None:
        if self._step > self.total_steps:  # the step estimate was low (e.g. a batch-size ramp): grow, don't overflow
            self.total_steps = self._step
        acc = "–" if self._val_acc is None else f"{100 * self._val_acc:.2f}%" if self.metric == "acc" else \
            f"{self.metric} {self._val_acc:.4f}"
        loss = f"{float(self._loss):.4f}" if self._loss is not None else "–"
        self._progress.update(self._task, total=self.total_steps, completed=self._step, acc=acc, loss=loss)
        self._progress.refresh()

    def close(self) -> None:
        """Draw the final state and leave the bar on screen. Safe to call twice."""
        if self._progress is None:
            return
        self._draw()
        self._finalizer()  # stops the display, once
        self._progress = None
        self._next_check = _NEVER

    def __enter__(self) -> TrainProgress:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _console(stream: Any) -> Any:
    """A rich Console to draw on, or None when the stream is not an interactive terminal."""
    if stream is None:
        stream = sys.stderr
    if type(stream).__name__ == "Console" and hasattr(stream, "is_terminal"):  # a rich Console, without importing rich
        return stream if stream.is_terminal else None
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed file
        return None
    if not tty:
        return None
    from rich.console import Console

    return Console(file=stream)
