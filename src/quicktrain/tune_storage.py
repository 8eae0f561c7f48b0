"""Where a study lives, and the heartbeat that turns a killed worker's trial into a retried one.

    (none)                      in memory: one process
    sqlite:///PATH              one worker (SQLite locks the whole file)
    journal:PATH                several worker processes on one machine (Optuna's JournalFileBackend)
    postgresql://USER:PW@HOST/DB   a cluster

Every persistent storage runs a heartbeat: a running trial refreshes a timestamp every `heartbeat` seconds, and any
worker that starts a trial first fails the trials whose timestamp is older than 3 heartbeats (Optuna's
`fail_stale_trials`); `RetryHeartbeatStaleTrialCallback` then puts the failed trial's parameters back in the queue, so
a killed worker's trial is retried and none stays RUNNING. Optuna's RDB storages have this built in; its journal
storage does not, so `HeartbeatJournalStorage` adds it through Optuna's own `BaseHeartbeat` interface.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from quicktrain.errors import UserError

HEARTBEAT_KEY = "quicktrain:heartbeat"
MAX_RETRY = 3


def _journal_class() -> type:
    from optuna.storages import JournalStorage
    from optuna.storages._heartbeat import BaseHeartbeat
    from optuna.trial import TrialState

    class HeartbeatJournalStorage(JournalStorage, BaseHeartbeat):
        def __init__(self, backend: Any, interval: int, callback: Callable[..., None]) -> None:
            super().__init__(backend)
            self._interval, self._callback = interval, callback

        def record_heartbeat(self, trial_id: int) -> None:
            self.set_trial_system_attr(trial_id, HEARTBEAT_KEY, time.time())

        def _get_stale_trial_ids(self, study_id: int) -> list[int]:
            now, grace = time.time(), 3 * self._interval
            stale = []
            for t in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
                last = t.system_attrs.get(HEARTBEAT_KEY)
                if last is None and t.datetime_start is not None:
                    last = t.datetime_start.timestamp()
                if last is not None and now - last > grace:
                    stale.append(t._trial_id)
            return stale

        def get_heartbeat_interval(self) -> int | None:
            return self._interval

        def get_heartbeat_stale_trial_callback(self) -> Callable[..., None] | None:
            return self._callback

    return HeartbeatJournalStorage


def open_storage(url: str | None, heartbeat: int = 10) -> Any:
    """An Optuna storage for `url`; a bad URL or an unreachable server is a one-line UserError (exit 2)."""
    import warnings

    import optuna

    with warnings.catch_warnings():  # heartbeats and the retry callback are "experimental" in Optuna since 2.8
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return _open(url, heartbeat)


def _open(url: str | None, heartbeat: int) -> Any:
    import optuna
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    if heartbeat < 1:
        raise UserError(f"--heartbeat must be >= 1 second (got {heartbeat})")
    retry = RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)
    if not url:
        return optuna.storages.InMemoryStorage()
    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend

        path = url.removeprefix("journal:").removeprefix("//")
        if not path:
            raise UserError(f"storage URL {url!r}: give a file, e.g. journal:runs/study.log")
        try:
            return _journal_class()(JournalFileBackend(path), heartbeat, retry)
        except OSError as exc:
            raise UserError(f"storage URL {url!r}: cannot open {path}: {exc.strerror or exc}") from None
    if url.startswith(("sqlite:", "postgresql:", "postgresql+", "postgres:")):
        url = url.replace("postgres://", "postgresql://", 1)
        return _rdb(url, heartbeat, retry)
    raise UserError(f"storage URL {url!r}: use sqlite:///PATH, journal:PATH or postgresql://USER:PASSWORD@HOST/DB")


def _rdb(url: str, heartbeat: int, retry: Any, attempts: int = 5) -> Any:
    """Optuna's RDBStorage. Workers that start together on an empty database race to create its tables; the loser
    gets a unique-key violation (seen in CI on PostgreSQL 15), so that one case is retried once the winner is done."""
    import optuna

    for attempt in range(attempts):
        try:
            return optuna.storages.RDBStorage(url, heartbeat_interval=heartbeat, grace_period=3 * heartbeat,
                                              heartbeat_stale_trial_callback=retry,
                                              engine_kwargs={"pool_pre_ping": True})
        except Exception as exc:  # sqlalchemy raises many kinds; all but the race mean "cannot use this storage"
            text = str(exc).strip()
            if attempt + 1 < attempts and _is_schema_race(text):
                time.sleep(0.2 * (attempt + 1))
                continue
            reason = text.splitlines()[0] if text else type(exc).__name__
            raise UserError(f"storage URL {_redact(url)!r}: cannot connect: {reason[:200]}") from None
    raise AssertionError("unreachable")


def _is_schema_race(message: str) -> bool:
    """A concurrent CREATE TABLE / version-row insert by another worker, as PostgreSQL and SQLite word it."""
    lowered = message.lower()
    return "duplicate key" in lowered or "already exists" in lowered or "unique constraint" in lowered


def _redact(url: str) -> str:
    """The URL without its password, for messages."""
    import re

    return re.sub(r"(//[^:/@]+:)[^@]*@", r"\1***@", url)
