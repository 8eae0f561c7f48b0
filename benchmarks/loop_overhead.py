"""Per-step time of quicktrain's loop against a bare PyTorch loop: same tiny model, same optimizer (fused AdamW),
same device-resident batches, same batch size, fp32, constant LR, no techniques.

    python benchmarks/loop_overhead.py [--steps 3000] [--repeats 7]

Runs alternate (bare, quicktrain, bare, ...) so drift on the machine hits both alike; prints median/min/max
seconds per step for each and the overhead of the median. quicktrain's figure is its train clock / steps, which also
contains its one validation check at the end (so the overhead is, if anything, overstated).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch
import torch.nn.functional as F

from quicktrain import (Config, DataConfig, MethodsConfig, ModelConfig, OptimConfig, ScheduleConfig, SystemConfig,
                        TrainConfig, train)
from quicktrain.data import load_data
from quicktrain.models import MODELS


def bare_loop(splits, steps: int, batch: int, seed: int) -> float:  # type: ignore[no-untyped-def]
    torch.manual_seed(seed)
    model = MODELS["tiny1d"](splits.input_shape, splits.num_classes)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
    x, y = splits.train.x, splits.train.y
    n = len(x)
    g = torch.Generator().manual_seed(seed)
    perm, pos = torch.randperm(n, generator=g), 0
    t0 = time.perf_counter()
    for _ in range(steps):
        if pos + batch > n:
            perm, pos = torch.randperm(n, generator=g), 0
        idx = perm[pos : pos + batch]
        pos += batch
        loss = F.cross_entropy(model(x.index_select(0, idx)), y.index_select(0, idx))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return (time.perf_counter() - t0) / steps


def quicktrain_loop(splits, steps: int, batch: int, seed: int) -> float:  # type: ignore[no-untyped-def]
    cfg = Config(
        name="overhead",
        tuned_for="",  # fixed constants: a test (or benchmark) of the loop itself, never adapted
        data=DataConfig(augment="none"),
        model=ModelConfig(name="tiny1d"),
        optim=OptimConfig(name="adamw", lr=1e-3, weight_decay=0.0, no_decay_1d=False),
        schedule=ScheduleConfig(kind="constant"),
        train=TrainConfig(epochs=steps * batch / len(splits.train), batch_size=batch, target=0.0, eval_every=1e9,
                          seed=seed),
        methods=MethodsConfig(tta=False),
        system=SystemConfig(precision="fp32", compile="off", channels_last="off"),
    )
    result = train(cfg, data=splits, progress=False)
    return result.train_seconds / result.steps


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    splits = load_data(DataConfig())
    bare_loop(splits, 200, args.batch, 0)  # warm-up both paths (allocator, kernels)
    quicktrain_loop(splits, 200, args.batch, 0)
    bare, ours = [], []
    for r in range(args.repeats):
        bare.append(bare_loop(splits, args.steps, args.batch, r))
        ours.append(quicktrain_loop(splits, args.steps, args.batch, r))
    med_b, med_q = statistics.median(bare), statistics.median(ours)
    out = {
        "benchmark": "loop_overhead", "model": "tiny1d", "batch": args.batch, "steps": args.steps, "n": args.repeats,
        "bare_us_per_step": {"median": 1e6 * med_b, "min": 1e6 * min(bare), "max": 1e6 * max(bare)},
        "quicktrain_us_per_step": {"median": 1e6 * med_q, "min": 1e6 * min(ours), "max": 1e6 * max(ours)},
        "overhead_pct": 100 * (med_q / med_b - 1),
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
    }
    print(f"bare loop:        {1e6 * med_b:.1f} us/step (min {1e6 * min(bare):.1f}, max {1e6 * max(bare):.1f})")
    print(f"quicktrain loop:  {1e6 * med_q:.1f} us/step (min {1e6 * min(ours):.1f}, max {1e6 * max(ours):.1f})")
    print(f"overhead: {out['overhead_pct']:+.1f}% (median vs median, n={args.repeats})")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
