"""Activation memory and step time vs depth for plain, checkpointed (full, selective) and reversible revnet1d (#10).

    python benchmarks/memory_depth.py [--depths 8 16 32 64] [--width 64] [--batch 128] [--threads 1] [--repeats 5]

For each depth and mode, on MNIST-1D-shaped input (batch x 1 x 40, random values: memory and time do not depend on
them), with AdamW:
- activations: bytes saved for backward by one training forward (quicktrain.memory.tracking.saved_bytes, each
  storage once, parameters and buffers left out). Selective checkpointing keeps its op outputs in a cache of its
  own, not through the saved-tensor hooks, so this column undercounts it; the next one does not;
- peak activation memory: the LiveBytes peak of a whole steady-state step (every live tensor storage) less the
  model's state (parameters, buffers, gradients, optimizer state) and the batch: what the step holds beyond
  them at its worst moment. The bars are read on this one;
- step time: median over `--repeats` rounds of 3 steps, modes interleaved within each depth, after 2 warm-up steps;
- FLOPs of a step (forward + backward, recompute included): quicktrain.measure.count_train_flops.
Bars (issue #10): reversible at depth 64 <= 1.2x its depth 8; checkpointing >= 3x lower than plain at depth 32 with
<= 40% more step time. Writes docs/results/memory_depth.json and memory_depth.png.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from quicktrain.config import ModelConfig
from quicktrain.measure import count_train_flops, device_name
from quicktrain.memory.checkpointing import apply_checkpointing
from quicktrain.memory.planner import step_peak
from quicktrain.memory.tracking import fmt_bytes, optimizer_bytes, saved_bytes, tensor_bytes
from quicktrain.models import build_model
from quicktrain.precision import Precision
from quicktrain.step import train_step

MODES = ("plain", "checkpoint full", "checkpoint selective", "reversible")
CE = nn.functional.cross_entropy
CPU = torch.device("cpu")


def make(mode: str, depth: int, width: int) -> nn.Module:
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="revnet1d", depth=depth, channels=(width,), reversible=mode == "reversible"),
                        (1, 40), 10)
    if mode.startswith("checkpoint"):
        apply_checkpointing(model, mode.split()[1])  # type: ignore[arg-type]
    return model


def one_depth(depth: int, width: int, batch: int, repeats: int) -> list[dict[str, Any]]:
    x, y = torch.randn(batch, 1, 40), torch.randint(0, 10, (batch,))
    prec = Precision("fp32", CPU)
    setups = {}
    rows = {}
    for mode in MODES:
        model = make(mode, depth, width)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        _, act = saved_bytes(lambda m=model: CE(m(x), y), exclude=model)
        model.zero_grad(set_to_none=True)
        peak = step_peak(model, opt, prec, CE, x, y, 0)
        # what the step holds beyond the model's state: parameters, buffers, gradients, optimizer state, the batch
        state = tensor_bytes([*model.parameters(), *model.buffers(), x, y]) + optimizer_bytes(opt) \
            + sum(p.numel() * p.element_size() for p in model.parameters())
        flops = count_train_flops(model, x, y, CE)  # forward + backward, the recompute included
        for _ in range(2):
            train_step(model, opt, prec, CE, x, y, model=model)
        setups[mode] = (model, opt)
        rows[mode] = {"depth": depth, "mode": mode, "activations": act, "step_peak": peak,
                      "activation_peak": peak - state,
                      "flops": flops, "params": sum(p.numel() for p in model.parameters()),
                      "times": []}
    for _ in range(repeats):  # interleaved: slow drift of a shared machine hits every mode alike
        for mode, (model, opt) in setups.items():
            t0 = time.perf_counter()
            for _ in range(3):
                train_step(model, opt, prec, CE, x, y, model=model)
            rows[mode]["times"].append((time.perf_counter() - t0) / 3)
    out = []
    for mode in MODES:
        r = rows[mode]
        r["step_s"] = statistics.median(r["times"])
        r["step_s_min"], r["step_s_max"] = min(r["times"]), max(r["times"])
        r["time_vs_plain"] = r["step_s"] / rows["plain"]["step_s"] if mode != "plain" else 1.0
        r["activations_vs_plain"] = rows["plain"]["activations"] / r["activations"]
        r["activation_peak_vs_plain"] = rows["plain"]["activation_peak"] / r["activation_peak"]
        r["flops_vs_plain"] = r["flops"] / rows["plain"]["flops"]
        out.append(r)
        print(f"depth {depth:>3} {mode:<21} saved {fmt_bytes(r['activations']):>10}  activation peak "
              f"{fmt_bytes(r['activation_peak']):>10} ({r['activation_peak_vs_plain']:.1f}x less)  step "
              f"{1e3 * r['step_s']:8.1f} ms "
              f"({r['time_vs_plain']:.2f}x)  flops {r['flops_vs_plain']:.2f}x", flush=True)
    return out


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for mode in MODES:
        rs = [r for r in rows if r["mode"] == mode]
        ax1.plot([r["depth"] for r in rs], [r["activation_peak"] / 2**20 for r in rs], marker="o", label=mode)
        ax2.plot([r["depth"] for r in rs], [1e3 * r["step_s"] for r in rs], marker="o", label=mode)
    for ax, label in ((ax1, "peak activation memory of a step (MiB)"), (ax2, "step time (ms, median)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("depth (residual blocks)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    ax1.legend()
    fig.suptitle("revnet1d, width 64, batch 128, MNIST-1D-shaped input, CPU fp32")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--depths", type=int, nargs="+", default=[8, 16, 32, 64])
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default="docs/results/memory_depth.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = [r for d in args.depths for r in one_depth(d, args.width, args.batch, args.repeats)]
    by = {(r["mode"], r["depth"]): r for r in rows}
    lo, hi = min(args.depths), max(args.depths)
    summary: dict[str, Any] = {"reversible_deepest_vs_shallowest": by[("reversible", hi)]["activation_peak"]
                               / by[("reversible", lo)]["activation_peak"]}
    if 32 in args.depths:
        for policy in ("full", "selective"):
            r = by[(f"checkpoint {policy}", 32)]
            summary[f"checkpoint_{policy}_at_32"] = {"memory_x_lower": r["activation_peak_vs_plain"],
                                                     "time_x": r["time_vs_plain"]}
    result = {"device": device_name(CPU), "cpu": platform.processor(), "torch": torch.__version__,
              "threads": args.threads, "width": args.width, "batch": args.batch, "summary": summary, "rows": rows}
    print(json.dumps(summary), flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    plot(rows, out.with_suffix(".png"))


if __name__ == "__main__":
    main()
