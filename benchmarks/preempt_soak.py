"""Preemption soak: many SIGKILLs and SIGTERMs on MNIST-1D runs, each run resumed until it finishes, then checked
bit for bit against an uninterrupted run (final weights, optimizer and technique state, metrics without clocks).

    python benchmarks/preempt_soak.py [--kills 50] [--terms 50] [--per-run 5] [--full]

Kills land at random moments and, half of them, inside checkpoint writes (the child sleeps 50 ms inside each write,
standing for a slow disk). Records: runs that ended identical, steps lost per kill (K = 3 steps between checkpoints),
seconds from SIGTERM to exit, interrupted writes found and skipped on resume, and a damage pass that truncates and
flips bytes in committed checkpoints and counts how many are detected before anything is parsed.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import statistics
import sys
import time
from pathlib import Path
from tempfile import TemporaryDirectory

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from test_preemption import K, order, parse, start, wait_for  # noqa: E402
from test_resume import assert_identical  # noqa: E402

import torch  # noqa: E402

from quicktrain.checkpoint import CorruptCheckpoint, list_checkpoints, read_checkpoint  # noqa: E402
from quicktrain.measure import cpu_model  # noqa: E402


def finish(run_dir: Path, trace: Path, extra: list[str]) -> None:
    proc = start(run_dir, trace, extra=extra)
    _, err = proc.communicate(timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(err)


def one_run(tmp: Path, name: str, mode: str, count: int, rng: random.Random, extra: list[str]) -> dict:
    run_dir, trace = tmp / name, tmp / f"{name}.trace"
    lost, exit_seconds = [], []
    for i in range(count):
        proc = start(run_dir, trace, slow=0.05, extra=extra)
        alive = wait_for(trace, proc, lambda p: len(p.steps) > 0, timeout=120)
        if mode == "kill" and i % 2:  # inside a checkpoint write
            n = parse(trace)[-1].writes_started
            alive = wait_for(trace, proc, lambda p: p.writes_started > n, timeout=120)
            time.sleep(rng.uniform(0.0, 0.06))
        else:
            time.sleep(rng.uniform(0.0, 1.0))
        if proc.poll() is None:
            t0 = time.monotonic()
            proc.send_signal(signal.SIGKILL if mode == "kill" else signal.SIGTERM)
            proc.wait()
            exit_seconds.append(time.monotonic() - t0)
            if mode == "term" and proc.returncode not in (75, 0):
                raise RuntimeError(f"SIGTERM exit status {proc.returncode}")
        del alive
    finish(run_dir, trace, extra)
    procs = parse(trace)
    for killed, successor in zip(procs, procs[1:]):
        lost.append(max(killed.steps, default=killed.resumed_at) - successor.resumed_at)
    interrupted = sum("(an interrupted write)" in m for p in procs for m in p.logs)
    return {"run_dir": run_dir, "trace": trace, "lost": lost, "exit_seconds": exit_seconds,
            "interrupted_writes_found": interrupted, "signals": len(procs) - 1}


def damage_pass(run_dir: Path, rng: random.Random, n: int = 200) -> tuple[int, int]:
    """Truncate or flip a byte of a committed checkpoint file n times; count the damage detected before parsing."""
    _, path = list_checkpoints(run_dir / "checkpoints")[0]
    files = [p for p in path.iterdir() if p.is_file()]
    detected = 0
    for _ in range(n):
        f = rng.choice(files)
        data = f.read_bytes()
        if rng.random() < 0.5:
            bad = data[: rng.randrange(len(data))]
        else:
            i = rng.randrange(len(data))
            bad = data[:i] + bytes([data[i] ^ (1 << rng.randrange(8))]) + data[i + 1:]
        f.write_bytes(bad)
        try:
            read_checkpoint(path)
        except CorruptCheckpoint:
            detected += 1
        f.write_bytes(data)
    return detected, n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kills", type=int, default=50)
    ap.add_argument("--terms", type=int, default=50)
    ap.add_argument("--per-run", type=int, default=5)
    ap.add_argument("--full", action="store_true")
    ap.add_argument("--precision", default="fp32", help="forced in the child: fp32 | bf16 | fp16")
    ap.add_argument("--channels-last", default="off", help="forced in the child: on | off")
    ap.add_argument("--compile", default="off", help="forced in the child: on | off")
    ap.add_argument("--model", default="", help="the child's model (tiny2d: a 2-D net on digits)")
    args = ap.parse_args()
    rng = random.Random(2026)
    extra = ["--full"] * args.full + ["--precision", args.precision, "--channels-last", args.channels_last,
                                       "--compile", args.compile] + (["--model", args.model] if args.model else [])
    report: dict = {"benchmark": "preempt_soak", "K": K, "full": args.full, "precision": args.precision,
                    "channels_last": args.channels_last, "compile": args.compile, "model": args.model or "tiny1d",
                    "cpu": cpu_model(), "torch": torch.__version__}
    with TemporaryDirectory() as tmp_:
        tmp = Path(tmp_)
        ref_dir, ref_trace = tmp / "ref", tmp / "ref.trace"
        finish(ref_dir, ref_trace, extra)
        for mode, total in (("kill", args.kills), ("term", args.terms)):
            runs, identical, order_ok = [], 0, 0
            for r in range(0, total, args.per_run):
                run = one_run(tmp, f"{mode}{r}", mode, min(args.per_run, total - r), rng, extra)
                try:
                    assert_identical(ref_dir, run["run_dir"])
                    identical += 1
                except AssertionError as exc:
                    print(f"  {mode} run {r}: NOT identical: {exc}", flush=True)
                order_ok += order(parse(run["trace"])) == order(parse(ref_trace))
                runs.append(run)
                print(f"  {mode} run {r // args.per_run}: lost {run['lost']}, interrupted writes found "
                      f"{run['interrupted_writes_found']}", flush=True)
            lost = [x for run in runs for x in run["lost"]]
            secs = [x for run in runs for x in run["exit_seconds"]]
            report[mode] = {"signals": sum(r["signals"] for r in runs), "runs": len(runs), "runs_identical": identical,
                            "runs_same_data_order": order_ok, "steps_lost_max": max(lost),
                            "steps_lost_median": statistics.median(lost),
                            "steps_lost_mean": statistics.fmean(lost), "exit_seconds_max": max(secs),
                            "exit_seconds_median": statistics.median(secs),
                            "interrupted_writes_found": sum(r["interrupted_writes_found"] for r in runs)}
        detected, n = damage_pass(ref_dir, rng)
        report["damage"] = {"injected": n, "detected_before_parsing": detected}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
