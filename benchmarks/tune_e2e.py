"""End to end: does the search replace hand tuning? `quicktrain tune mnist1d --budget 600s` (objective: time to 94%)
returns a recipe; it is then benched against the hand-set `mnist1d` recipe, 20 seeds each, interleaved.

    python benchmarks/tune_e2e.py [--budget 600s] [--seeds 20] [--out DIR]

Both steps run the CLI as a user would; the tuning never reads test accuracy (the bench reports it).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path


def cli(*args: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "quicktrain", *args], check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--budget", default="600s")
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--out", default="runs/tune_e2e")
    args = ap.parse_args()
    out = Path(args.out)
    tuned = cli("tune", "mnist1d", "--budget", args.budget, "--objective", "time", "--run-dir", str(out / "tune"))
    print(json.dumps({k: tuned[k] for k in ("best_params", "best_value", "trials_complete", "trials_pruned",
                                            "compute_steps", "compute_seconds", "best_recipe_path")}), flush=True)
    bench = cli("bench", "mnist1d", tuned["best_recipe_path"], "--seeds", str(args.seeds), "--out", str(out / "bench"),
                "--no-progress")
    for row in bench["rows"]:
        print(f"{row['label']:14s} reached {row['reached']}/{row['n']}, median {row['median_seconds']:.3f} s, "
              f"test {100 * row['acc_mean']:.2f}% ± {100 * row['acc_std']:.2f}")
    print("\n".join(bench["headline"]))
    print(json.dumps({"tune": tuned, "bench_rows": bench["rows"], "headline": bench["headline"]}))


if __name__ == "__main__":
    main()
