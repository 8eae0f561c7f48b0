"""Preemption for real: separate processes killed with SIGKILL (at random, and inside checkpoint writes) or stopped with
SIGTERM, then resumed. The result must equal an uninterrupted run bit for bit, the data order must be the same with
no sample repeated or skipped, and at most K + 1 steps may be lost per kill (K = steps between checkpoints)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from test_resume import assert_identical

CHILD = Path(__file__).with_name("preempt_child.py")
K = 3  # steps between checkpoints in the child

pytestmark = pytest.mark.slow


@dataclass
class Process:
    pid: int
    resumed_at: int = 0
    steps: dict[int, str] = field(default_factory=dict)
    writes_started: int = 0
    done: bool = False
    logs: list[str] = field(default_factory=list)


def parse(trace: Path) -> list[Process]:
    out: list[Process] = []
    for line in trace.read_text().splitlines():
        head, _, rest = line.partition(" ")
        if head == "P":
            out.append(Process(int(rest)))
        elif head == "R":
            out[-1].resumed_at = int(rest)
        elif head == "W+":
            out[-1].writes_started += 1
        elif head == "L":
            out[-1].logs.append(rest)
        elif head == "D":
            out[-1].done = True
        elif head.isdigit():
            out[-1].steps[int(head)] = rest
    return out


def order(processes: list[Process]) -> dict[int, str]:
    """The data order that made the final model: a later process's steps replace the lost ones of an earlier one."""
    merged: dict[int, str] = {}
    for p in processes:
        merged = {s: ids for s, ids in merged.items() if s <= p.resumed_at} | p.steps
    return merged


def start(run_dir: Path, trace: Path, slow: float = 0.0, extra: list[str] | None = None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, str(CHILD), str(run_dir), str(trace), "--steps-per-checkpoint", str(K),
                             "--slow-writes", str(slow), *(extra or [])], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for(trace: Path, proc: subprocess.Popen, predicate, timeout: float = 60.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        if trace.exists():
            procs = parse(trace)
            if procs and procs[-1].pid == proc.pid and predicate(procs[-1]):
                return True
        time.sleep(0.005)
    raise TimeoutError("child made no progress")


def straight_run(tmp: Path) -> tuple[Path, Path]:
    run_dir, trace = tmp / "straight", tmp / "straight.trace"
    proc = start(run_dir, trace)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    return run_dir, trace


def test_random_sigkills_resume_bitwise_identical(tmp_path: Path) -> None:
    rng = random.Random(1234)
    ref_dir, ref_trace = straight_run(tmp_path)
    run_dir, trace = tmp_path / "killed", tmp_path / "killed.trace"
    kills = ["random", "write", "random", "write", "random", "write"]
    for mode in kills:
        proc = start(run_dir, trace, slow=0.05)
        started = lambda p: len(p.steps) > 0  # noqa: E731
        if mode == "write":  # a checkpoint write has begun: kill inside it (slow disk: 50 ms before the manifest)
            before = [0]
            wait_for(trace, proc, started)
            before[0] = parse(trace)[-1].writes_started
            alive = wait_for(trace, proc, lambda p: p.writes_started > before[0])
            time.sleep(rng.uniform(0.0, 0.06))
        else:
            alive = wait_for(trace, proc, started)
            time.sleep(rng.uniform(0.0, 0.4))
        if alive or proc.poll() is None:
            proc.kill()
        proc.wait()
    proc = start(run_dir, trace)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err

    assert_identical(ref_dir, run_dir)
    procs = parse(trace)
    assert procs[-1].done and len(procs) == len(kills) + 1
    assert order(procs) == order(parse(ref_trace))  # same batches, same order
    total = max(order(procs))
    assert sorted(order(procs)) == list(range(1, total + 1))  # no step repeated or skipped in the final history
    for killed, successor in zip(procs, procs[1:]):
        last = max(killed.steps, default=killed.resumed_at)
        assert last - successor.resumed_at <= K + 1, (killed, successor.resumed_at)
    # some kills landed inside a write: the next process found a checkpoint without its manifest and fell back
    assert any("(an interrupted write)" in m for p in procs for m in p.logs)


def test_sigterm_checkpoints_at_once_and_loses_no_step(tmp_path: Path) -> None:
    ref_dir, _ = straight_run(tmp_path)
    run_dir, trace = tmp_path / "term", tmp_path / "term.trace"
    proc = start(run_dir, trace)
    assert wait_for(trace, proc, lambda p: len(p.steps) >= 40)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    elapsed = time.monotonic() - t0
    assert proc.returncode == 75, err
    assert elapsed < 5.0  # loose (a loaded 2-core machine took 2.3 s); "at once" is the resumed_at check below
    stopped = parse(trace)[-1]
    proc = start(run_dir, trace)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    resumed = parse(trace)[-1]
    assert resumed.resumed_at == max(stopped.steps)  # the emergency checkpoint is at the last step taken: none lost
    assert_identical(ref_dir, run_dir)


def test_kills_and_sigterm_resume_bitwise_in_bf16_channels_last(tmp_path: Path) -> None:
    """Across processes, with the choice an Intel Xeon's `auto` made (issue #8): bf16 + channels_last, on a net whose
    2-D kernels have several input channels (so the layout really changes the strides)."""
    extra = ["--precision", "bf16", "--channels-last", "on", "--model", "fastnet1d"]
    ref_dir, trace = tmp_path / "straight", tmp_path / "straight.trace"
    proc = start(ref_dir, trace, extra=extra)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    run_dir, trace = tmp_path / "cut", tmp_path / "cut.trace"
    for sig in (signal.SIGKILL, signal.SIGTERM, signal.SIGKILL):
        proc = start(run_dir, trace, extra=extra)
        n = 0 if not trace.exists() else max((max(p.steps, default=0) for p in parse(trace)), default=0)
        assert wait_for(trace, proc, lambda p: len(p.steps) >= 10 and max(p.steps) > n + 10)  # noqa: B023
        proc.send_signal(sig)
        proc.wait(timeout=30)
        assert proc.returncode in (-signal.SIGKILL, 75)
    proc = start(run_dir, trace, extra=extra)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert len(parse(trace)) == 4 and parse(trace)[-1].done
    assert_identical(ref_dir, run_dir)
