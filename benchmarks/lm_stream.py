"""Streamed vs resident token data: training throughput on the same data, and peak memory while training on a shard
set larger than the address space the process is allowed.

    python benchmarks/lm_stream.py [--steps 300] [--repeats 3] [--shard-gb 2] [--shards 4] [--limit-gb 6]

1. Throughput: the `stdlib_lm` recipe's model and batch on the built-in corpus, `data.stream=off` (tokens resident
   in memory) and `data.stream=on` (every window read from disk with pread), `--steps` training steps each, repeats
   interleaved; precision, layout and compile are forced to fp32 / off / off so that both time the same step.
2. Memory: `--shards` llm.c-format shards of `--shard-gb` GB each (sparse files: no disk is used; their tokens read
   as 0), and a child `quicktrain run stdlib_lm --data.path=...` under RLIMIT_AS = `--limit-gb` GB (an address-space
   limit smaller than the data, like `ulimit -v`), streaming, with a meta.pkl of vocabulary 256. Reported: the
   child's exit status, VmPeak and VmHWM (peak resident memory) from /proc, and the data size.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from quicktrain.config import apply_overrides
from quicktrain.measure import cpu_model
from quicktrain.recipes import load_recipe
from quicktrain.run import build_run

FORCED = {"system.precision": "fp32", "system.compile": "off", "system.channels_last": "off"}


def steps_per_second(stream: str, steps: int) -> float:
    cfg = apply_overrides(load_recipe("stdlib_lm"), {**FORCED, "data.stream": stream})
    run = build_run(cfg)
    bs = cfg.train.batch_size
    for _ in range(5):
        run.step(*run.next_batch(bs, 0.5))
    t0 = time.perf_counter()
    for _ in range(steps):
        run.step(*run.next_batch(bs, 0.5))
    return steps / (time.perf_counter() - t0)


def write_shards(folder: Path, n: int, gb: float) -> int:
    """n sparse llm.c shards (header: magic, version, count) + a small val shard; returns the bytes of train data."""
    tokens = int(gb * 2**30) // 2
    header = np.zeros(256, np.int32)
    header[:3] = (20240520, 1, tokens)
    for i in range(n):
        path = folder / f"big_train_{i:06d}.bin"
        with open(path, "wb") as f:
            f.write(header.tobytes())
        os.truncate(path, 1024 + 2 * tokens)
    val = folder / "big_val_000000.bin"
    header[2] = 1 << 20
    with open(val, "wb") as f:
        f.write(header.tobytes())
    os.truncate(val, 1024 + 2 * (1 << 20))
    import pickle

    (folder / "meta.pkl").write_bytes(pickle.dumps({"vocab_size": 256}))  # the recipe's byte-level model size
    return n * 2 * tokens


def memory_under_limit(shards: int, gb: float, limit_gb: float, steps: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp_:
        tmp = Path(tmp_)
        data_bytes = write_shards(tmp, shards, gb)
        limit = int(limit_gb * 2**30)
        probe = ("import runpy, sys, atexit\n"
                 "def report():\n"
                 "    s = dict(l.split(':', 1) for l in open('/proc/self/status'))\n"
                 "    print('MEM', s['VmPeak'].strip(), s['VmHWM'].strip(), file=sys.stderr, flush=True)\n"
                 "atexit.register(report)\n"
                 "sys.argv = ['quicktrain'] + sys.argv[1:]\n"
                 "from quicktrain.cli import main\n"
                 "raise SystemExit(main())\n")
        cmd = [sys.executable, "-c", probe, "run", "stdlib_lm", f"--data.path={tmp}", f"--train.steps={steps}",
               "--train.eval_every_steps=100", "--data.eval_tokens=16384",
               f"--run-dir={tmp / 'run'}", "--no-progress", "--system.compile=off"]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True,
                              preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (limit, limit)))
        mem = [line.split()[1:] for line in proc.stderr.splitlines() if line.startswith("MEM")]
        return {"data_gb": data_bytes / 2**30, "limit_gb": limit_gb, "returncode": proc.returncode,
                "seconds": time.perf_counter() - t0, "steps": steps,
                "vm_peak_kb": int(mem[-1][0]) if mem else None, "vm_hwm_kb": int(mem[-1][2]) if mem else None,
                "streamed": "streaming" in proc.stdout, "stderr_tail": proc.stderr[-600:] if proc.returncode else ""}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--shard-gb", type=float, default=2.0)
    ap.add_argument("--limit-gb", type=float, default=6.0)
    args = ap.parse_args()
    rates: dict[str, list[float]] = {"off": [], "on": []}
    for _ in range(args.repeats):
        for stream in ("off", "on"):
            rates[stream].append(steps_per_second(stream, args.steps))
    med = {k: statistics.median(v) for k, v in rates.items()}
    report = {"benchmark": "lm_stream", "cpu": cpu_model(), "torch": torch.__version__,
              "threads": torch.get_num_threads(), "steps": args.steps, "repeats": args.repeats,
              "resident_steps_per_s": rates["off"], "streamed_steps_per_s": rates["on"],
              "streamed_over_resident": med["on"] / med["off"],
              "memory": memory_under_limit(args.shards, args.shard_gb, args.limit_gb, 200)}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
