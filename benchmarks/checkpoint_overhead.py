"""Checkpoint overhead on MNIST-1D: the fast recipe trained for longer (so that checkpoints happen), with no run
directory, with the default checkpoint interval, and with much shorter intervals, runs interleaved.

    python benchmarks/checkpoint_overhead.py [--epochs 200] [--repeats 5]

Reports the median train clock of each variant, the overhead against no checkpoints, how many checkpoints each
wrote, and the median seconds a write takes (safetensors + JSON + manifest, three fsyncs and a directory fsync).
The final checkpoint, written after the train clock stops, is not counted.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import quicktrain.rundir as rundir
from quicktrain import apply_overrides, load_recipe, train
from quicktrain.data import load_data

VARIANTS = {
    "no run directory": None,
    "default (every 30 s)": {},
    "every 1 s": {"checkpoint.every_seconds": 1.0},
    "every 10 steps": {"checkpoint.every_steps": 10},
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=float, default=200.0)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    base = apply_overrides(load_recipe("mnist1d"), {"train.epochs": args.epochs, "train.target": 0.0})
    splits = load_data(base.data)
    writes: list[float] = []
    real = rundir.write_checkpoint

    def timed(*a, **k):  # type: ignore[no-untyped-def]
        t0 = time.perf_counter()
        out = real(*a, **k)
        writes.append(time.perf_counter() - t0)
        return out

    rundir.write_checkpoint = timed  # type: ignore[assignment]
    times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    counts: dict[str, list[int]] = {v: [] for v in VARIANTS}
    all_writes: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        train(apply_overrides(base, {"train.epochs": 10.0}), data=splits, progress=False)  # warm-up: kernels, caches
        for r in range(args.repeats):
            for v, (name, overrides) in enumerate(VARIANTS.items()):
                writes.clear()
                run_dir = None if overrides is None else Path(tmp) / f"repeat{r}-variant{v}"
                result = train(apply_overrides(base, overrides or {}), data=splits, run_dir=run_dir, progress=False)
                times[name].append(result.train_seconds)
                counts[name].append(max(0, len(writes) - 1))  # minus the final one, written after the clock stops
                all_writes += writes
                print(f"{name:22s} train {result.train_seconds:.2f} s, {counts[name][-1]} checkpoints", flush=True)
    base_t = statistics.median(times["no run directory"])
    out = {"benchmark": "checkpoint_overhead", "epochs": args.epochs, "n": args.repeats,
           "median_write_seconds": statistics.median(all_writes) if all_writes else None, "variants": {}}
    for name in VARIANTS:
        med = statistics.median(times[name])
        out["variants"][name] = {"median_train_seconds": med, "min": min(times[name]), "max": max(times[name]),
                                 "checkpoints": statistics.median(counts[name]),
                                 "overhead_pct": 100 * (med / base_t - 1)}
        print(f"{name:22s} median {med:.2f} s [{min(times[name]):.2f}, {max(times[name]):.2f}], "
              f"{statistics.median(counts[name]):.0f} checkpoints, overhead {100 * (med / base_t - 1):+.1f}%")
    print(f"median checkpoint write: {1e3 * out['median_write_seconds']:.1f} ms")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
