"""End-to-end wall time of `quicktrain run mnist1d` with the dataset (and the one-time measurements) cached: what a
user waits for, from typing the command to the JSON line, interpreter start and imports included.

    python benchmarks/wall_time.py [--runs 7] [recipe]

One warm-up run fills the caches; then each run is timed from spawn to exit, and its own wall_seconds (measured from
process start by quicktrain, up to the end of the final evaluation: before the report, plot and interpreter exit),
train_seconds and the FLOP utilisation are read from the JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time


def one(recipe: str, run_dir: str) -> dict[str, float]:
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "quicktrain", "run", recipe, "--no-progress", "--run-dir", run_dir],
                         check=True, capture_output=True, text=True).stdout
    outside = time.perf_counter() - t0
    result = json.loads(out.strip().splitlines()[-1])
    return {"outside": outside, "wall": result["wall_seconds"], "train": result["train_seconds"],
            "utilisation": result["utilisation"], "flops": result["flops"], "peak_flops": result["peak_flops"],
            "precision": result["precision"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("recipe", nargs="?", default="mnist1d")
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        one(args.recipe, f"{tmp}/warm")
        runs = [one(args.recipe, f"{tmp}/r{i}") for i in range(args.runs)]
    summary = {key: {"median": statistics.median(r[key] for r in runs), "min": min(r[key] for r in runs),
                     "max": max(r[key] for r in runs)} for key in ("outside", "wall", "train")}
    for key, label in (("outside", "spawn to exit"), ("wall", "reported wall_seconds"), ("train", "train clock")):
        s = summary[key]
        print(f"{label:22s} median {s['median']:.3f} s (min {s['min']:.3f}, max {s['max']:.3f}), n={args.runs}")
    util = [r["utilisation"] for r in runs if r["utilisation"] is not None]
    if util:
        print(f"FLOP utilisation      median {100 * statistics.median(util):.1f}% of the measured peak "
              f"({runs[0]['peak_flops'] / 1e9:.0f} GFLOP/s {runs[0]['precision']}); "
              f"{runs[0]['flops'] / 1e9:.2f} GFLOP of training steps a run")
    summary["utilisation"] = {"median": statistics.median(util), "min": min(util), "max": max(util)} if util else None
    summary["flops"], summary["peak_flops"], summary["precision"] = (runs[0]["flops"], runs[0]["peak_flops"],
                                                                     runs[0]["precision"])
    print(json.dumps({"benchmark": "wall_time", "recipe": args.recipe, "n": args.runs, **summary}))


if __name__ == "__main__":
    main()
