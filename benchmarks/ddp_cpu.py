"""Data parallel on this CPU (#11): 2 ranks (gloo, torchrun) against 1 process, same global batch.

    python benchmarks/ddp_cpu.py curves [--seeds 3]
    python benchmarks/ddp_cpu.py throughput [--seeds 3]
    python benchmarks/ddp_cpu.py latency [--seeds 3]

curves: the validation curve of `quicktrain run` under `torchrun --standalone --nproc-per-node 2` and in one process,
at the same global batch, checks every quarter epoch: mnist1d (batch norm synced, augmentation, TTA; the recipe's
constants) and the built-in language model (stdlib_lm's GPT, token windows read rank by rank; 100 steps, checks every
20). Reported: the largest relative difference of the validation loss over the checks (and at the first check), the
largest difference of the accuracy, and the final test figures. The control: the same one process with 2 threads,
whose matmuls sum in another order too: data parallel should differ from one process no more than that does.

throughput: the same runs' training throughput (examples per second of train clock, one check at the end) for
1 process x 1 thread, 1 process x 2 threads and 2 ranks x 1 thread (batch norm per rank, system.sync_bn=auto's
choice at these batches, and synced), seeds interleaved: mnist1d (fastnet1d, batch
192), mnist5k (resnet2d, batch 128) and stdlib_lm (GPT, batch 16 x 256 tokens).
latency: what one collective costs here, and what synced batch norm costs a step: 2 processes (gloo, 1 thread
each, spawned) time an all-reduce of 129 float64 (one BN layer's statistics at 64 channels; 500 calls after 20
untimed) and a training step of resnet2d (mnist5k's net, global batch 128, SGD) with per-rank and with synced batch
norm (10 steps after 3 untimed); each repeated --seeds times.
Writes docs/results/ddp_cpu_<part>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

OUT = Path("docs/results")
FIXED = ["--system.precision=fp32", "--system.compile=off", "--system.channels_last=off", "--no-progress",
         "--adapt.mode=off"]
CURVES = {
    "mnist1d": ["mnist1d", "--train.eval_every=0.25", "--train.eval_from=0", "--train.stop_on_target=false",
                "--system.sync_bn=on"],
    "stdlib_lm": ["stdlib_lm", "--train.steps=100", "--train.eval_every_steps=20", "--train.eval_from=0",
                  "--train.stop_on_target=false"],
}
SPEED = {
    "mnist1d": ["mnist1d", "--train.target=0", "--train.epochs=10"],
    "mnist5k": ["mnist5k", "--train.target=0", "--train.epochs=2"],
    "stdlib_lm": ["stdlib_lm", "--train.target=0", "--train.steps=60", "--train.eval_every_steps=60"],
}


def run(args: list[str], ranks: int, threads: int, run_dir: Path) -> dict[str, Any]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={ranks}"] \
        if ranks > 1 else [sys.executable]
    cmd = [*launch, "-m", "quicktrain", "run", *args, *FIXED, f"--system.threads={threads}", "--run-dir",
           str(run_dir)]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{res.stderr[-3000:]}")
    result = json.loads(res.stdout.strip().splitlines()[-1])
    result["metrics"] = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return result


def differences(a: list[dict[str, Any]], b: list[dict[str, Any]], label: str) -> dict[str, Any]:
    return {f"steps_equal_{label}": [m["step"] for m in a] == [m["step"] for m in b],
            f"max_rel_val_loss_{label}": max(abs(x["val_loss"] / y["val_loss"] - 1) for x, y in zip(a, b)),
            f"first_rel_val_loss_{label}": abs(a[0]["val_loss"] / b[0]["val_loss"] - 1),
            f"max_abs_val_acc_{label}": max(abs(x["val_acc"] - y["val_acc"]) for x, y in zip(a, b))}


def curves(seeds: int, tmp: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, args in CURVES.items():
        rows = []
        for seed in range(seeds):
            one = run([*args, f"--train.seed={seed}"], 1, 1, tmp / f"{name}-1-{seed}")
            two = run([*args, f"--train.seed={seed}"], 2, 1, tmp / f"{name}-2-{seed}")
            # the control: the same process with 2 threads sums in another order too (matmul blocking)
            threads = run([*args, f"--train.seed={seed}"], 1, 2, tmp / f"{name}-1x2-{seed}")
            key = "test_loss" if name == "stdlib_lm" else "test_acc"
            rows.append({"seed": seed, "checks": len(one["metrics"]),
                         **differences(one["metrics"], two["metrics"], "ranks"),
                         **differences(one["metrics"], threads["metrics"], "threads"),
                         "test_one": one[key], "test_two_ranks": two[key], "test_two_threads": threads[key]})
            print(name, json.dumps(rows[-1]), flush=True)
        out[name] = rows
    return out


def throughput(seeds: int, tmp: Path) -> dict[str, Any]:
    setups = {"1 process x 1 thread": (1, 1, []), "1 process x 2 threads": (1, 2, []),
              "2 ranks x 1 thread": (2, 1, []),  # system.sync_bn=auto: each rank's BN statistics at these batches
              "2 ranks x 1 thread, BN synced": (2, 1, ["--system.sync_bn=on"])}
    out: dict[str, Any] = {}
    for name, args in SPEED.items():
        todo = {k: v for k, v in setups.items() if "synced" not in k or name != "stdlib_lm"}  # the GPT has no BN
        per: dict[str, list[float]] = {k: [] for k in todo}
        for seed in range(seeds):  # interleaved: drift of a shared machine hits every setup alike
            for i, (label, (ranks, threads, extra)) in enumerate(todo.items()):
                r = run([*args, *extra, f"--train.seed={seed}"], ranks, threads, tmp / f"{name}-{i}-{seed}")
                per[label].append(r["samples"] / r["train_seconds"])
                print(name, label, f"{per[label][-1]:.0f} examples/s", flush=True)
        out[name] = {k: {"median": statistics.median(v), "min": min(v), "max": max(v), "runs": v}
                     for k, v in per.items()}
    return out


def _latency_worker(rank: int, store: str, repeats: int, out: str) -> None:
    import time

    import torch
    import torch.distributed as dist

    from quicktrain.config import ModelConfig
    from quicktrain.models import build_model
    from quicktrain.sync_bn import convert_sync_bn

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    res: dict[str, list[float]] = {"allreduce_129_f64_ms": [], "step_per_rank_bn_ms": [], "step_synced_bn_ms": []}
    for _ in range(repeats):
        t = torch.zeros(129, dtype=torch.float64)
        for _ in range(20):
            dist.all_reduce(t)
        t0 = time.perf_counter()
        for _ in range(500):
            dist.all_reduce(t)
        res["allreduce_129_f64_ms"].append((time.perf_counter() - t0) / 500 * 1e3)
        for key, synced in (("step_per_rank_bn_ms", False), ("step_synced_bn_ms", True)):
            torch.manual_seed(0)
            model = build_model(ModelConfig(name="resnet2d", channels=(16, 32, 64)), (1, 28, 28), 10)
            if synced:
                convert_sync_bn(model)
            net = torch.nn.parallel.DistributedDataParallel(model, broadcast_buffers=False)
            opt = torch.optim.SGD(net.parameters(), lr=0.01)
            x, y = torch.randn(64, 1, 28, 28), torch.randint(0, 10, (64,))
            for i in range(13):
                if i == 3:
                    t0 = time.perf_counter()
                opt.zero_grad()
                torch.nn.functional.cross_entropy(net(x), y).backward()
                opt.step()
            res[key].append((time.perf_counter() - t0) / 10 * 1e3)
    if rank == 0:
        Path(out).write_text(json.dumps(res))
    dist.destroy_process_group()


def latency(repeats: int, tmp: Path) -> dict[str, Any]:
    import torch.multiprocessing as mp

    out = tmp / "latency.json"
    mp.start_processes(_latency_worker, args=(str(tmp / "store"), repeats, str(out)), nprocs=2, start_method="spawn")
    runs = json.loads(out.read_text())
    return {k: {"median": statistics.median(v), "min": min(v), "max": max(v), "runs": v} for k, v in runs.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("part", choices=("curves", "throughput", "latency"))
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        part = {"curves": curves, "throughput": throughput, "latency": latency}[args.part]
        data = part(args.seeds, Path(tmp))
    import torch

    result = {"part": args.part, "seeds": args.seeds, "cpu": platform.processor(), "torch": torch.__version__,
              "cores": os.cpu_count(), "command": f"python benchmarks/ddp_cpu.py {args.part} --seeds {args.seeds}",
              "results": data}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"ddp_cpu_{args.part}.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(data, indent=1))


if __name__ == "__main__":
    main()
