"""Spot notices and interrupts: SIGTERM (what schedulers, SkyPilot and preemptible VMs send), SIGINT (Ctrl-C) and
SIGUSR1 (a convenient "checkpoint and stop" for your own notice watcher).

The handler only records the signal; the loop polls the flag at every step boundary (and between evaluation
chunks), writes a checkpoint and raises `Preempted`, which the CLI turns into exit status 75 (EX_TEMPFAIL: "try
again"). Handlers are installed only in the main thread and the previous ones are restored afterwards, so a library
user's own handlers survive a call to `train`.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Iterator

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)


class StopFlag:
    """Set by a signal; falsy until then. `name` says which one."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def __bool__(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else ""


@contextmanager
def stop_on_signals(enabled: bool = True) -> Iterator[StopFlag]:
    flag = StopFlag()
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum: int, frame: object) -> None:
        flag.signum = signum  # nothing else: the loop saves at the next step boundary

    previous = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
    try:
        yield flag
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
