"""Batch size and steps to a target (#11): the knee (critical batch), the gradient noise scale against it, a
noise-driven batch ramp against fixed batches, and LARS/LAMB against tuned AdamW/Nesterov at a large batch.

    python benchmarks/batch_scaling.py knee --data mnist1d [--seeds 3] [--threads 1]
    python benchmarks/batch_scaling.py ramp --data mnist1d
    python benchmarks/batch_scaling.py optimizers --data mnist1d [--batch 512]

Protocol (after Shallue et al. 2019 and McCandlish et al. 2018), all on the validation split:
- knee: for each batch size B, constant-LR AdamW (the recipe's model, augmentation and weight decay; no TTA, so a
  check is cheap and can be frequent) at LRs lr_ref * sqrt(B / 128) * {1/2, 1, 2} (--lr-factors); steps to the
  target is the step of the first validation check at or above it (checks every max(1, 256 / B) steps; 512 / B
  on mnist5k), median over seeds; each B keeps its best LR (fewest median steps among LRs that reach the target on
  every seed; LRs run from the grid's middle outwards and a run past 4x the best median so far stops there, as
  not reaching). Then the fit
  S(B) = S_min + E_min / B (McCandlish et al. eq. 2.11, least squares on 1/B) gives B_crit = E_min / S_min, the
  knee: the batch at which a run takes 2 S_min steps and 2 E_min examples.
- noise: `quicktrain noise-scale` on the same setup at B = 128 and its best LR, every 2 steps; B_simple at the
  check that reached the target, median over seeds; compared with B_crit (bar: within 2x).
- ramp: schedule.batch_ramp=noise from 16 up to a cap (the smallest measured B at or above B_crit), LR the cap's
  best times sqrt(B_t / cap) (lr_batch_rule auto = sqrt for AdamW); compared with the fixed batches' frontier:
  the steps a fixed batch needs when it uses as many examples as the ramp did (log-log interpolation between the
  measured batch sizes). Also the most any ramp could gain in McCandlish et al.'s model, from the measured B_simple
  (`sqrt_ramp_gain`).
- optimizers: at one large batch, AdamW, SGD-Nesterov, LARS and LAMB, each over its own LR grid (Nado et al. 2021
  tuned the baselines as carefully as LARS/LAMB: so here), median steps to the target of each one's best LR.
Writes docs/results/batch_scaling/<data>_<part>.json (and .png for knee).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from quicktrain import train
from quicktrain.config import Config, apply_overrides
from quicktrain.measure import device_name
from quicktrain.recipes import load_recipe

OUT = Path("docs/results/batch_scaling")
SETUPS = {  # recipe, target (validation accuracy), lr_ref at batch 128, budget in examples (a cap), examples
    "mnist1d": ("mnist1d", 0.90, 4e-3, 400_000, 256),  # between checks (a check costs more on the 2-D net)
    "mnist5k": ("mnist5k", 0.96, 1e-3, 200_000, 512),  # a first run's best LR at batch 16 sat on 2e-3's grid edge
}
BATCHES = (16, 32, 64, 128, 256, 512, 1024)


def config(data: str, batch: int, lr: float, seed: int, **extra: Any) -> Config:
    recipe, target, _, budget, spacing = SETUPS[data]
    every = max(1, spacing // batch)
    overrides = {"train.batch_size": batch, "optim.lr": lr, "train.seed": seed, "train.target": target,
                 "train.steps": budget // batch, "train.eval_every_steps": every, "train.eval_from": 0.0,
                 "train.stop_on_target": True, "schedule.kind": "constant", "methods.tta": False,
                 "adapt.mode": "off", "system.precision": "fp32", "system.compile": "off",
                 "system.channels_last": "off", **extra}
    return apply_overrides(load_recipe(recipe), overrides)


def steps_to_target(cfg: Config, limit: int | None = None) -> dict[str, Any]:
    """Train until the target (or the budget, or `limit` steps: a run already past 4x the best LR's steps at
    this batch is far from competitive, so it stops there, as not reaching)."""
    r = train(cfg, progress=False, on_eval=(lambda m: m["step"] > limit) if limit else None)
    hit = next((m for m in r.metrics if m["val_acc"] >= cfg.train.target), None)
    return {"reached": hit is not None, "steps": hit["step"] if hit else None,
            "samples": hit["samples"] if hit else None, "train_seconds": r.train_seconds,
            "test_acc": hit["test_acc"] if hit else r.test_acc, "noise": r.noise,
            "b_simple": [h["b_simple"] for h in r.noise_history if h["b_simple"]]}


def sqrt_ramp_gain(b: list[float]) -> float | None:
    """McCandlish et al.'s model: progress per step at batch B is 1 / (1 + B_noise / B). At equal examples, a batch
    proportional to B_noise takes exactly the steps of a fixed batch; the best ramp (B proportional to sqrt(B_noise),
    from the Lagrangian) cuts the steps above S_min by mean(sqrt(B_noise))^2 / mean(B_noise) <= 1 (Cauchy-Schwarz),
    which is this, over a run's measurements."""
    if not b:
        return None
    return statistics.mean(math.sqrt(v) for v in b) ** 2 / statistics.mean(b)


def sweep(data: str, batch: int, lrs: list[float], seeds: int, **extra: Any) -> dict[str, Any]:
    """Every LR x seed at one batch; the best LR is the one with the fewest median steps that always reached. The
    LRs run from the middle of the grid outwards, and a run stops at 4x the best median so far."""
    order = sorted(lrs, key=lambda lr: abs(lrs.index(lr) - (len(lrs) - 1) / 2))
    runs: dict[float, list[dict[str, Any]]] = {}
    best_so_far: float | None = None
    for lr in order:
        limit = int(4 * best_so_far) if best_so_far else None
        runs[lr] = [steps_to_target(config(data, batch, lr, s, **extra), limit) for s in range(seeds)]
        if all(r["reached"] for r in runs[lr]):
            med = statistics.median(r["steps"] for r in runs[lr])
            best_so_far = med if best_so_far is None else min(best_so_far, med)
    runs = {lr: runs[lr] for lr in lrs}
    ok = {lr: statistics.median(r["steps"] for r in rs) for lr, rs in runs.items() if all(r["reached"] for r in rs)}
    best = min(ok, key=ok.get) if ok else None
    row = {"batch": batch, "lrs": {f"{lr:.3g}": rs for lr, rs in runs.items()}, "best_lr": best,
           "median_steps": ok.get(best) if best else None}
    if best is not None:
        steps = [r["steps"] for r in runs[best]]
        row |= {"min_steps": min(steps), "max_steps": max(steps), "median_samples": row["median_steps"] * batch}
    print(json.dumps({k: v for k, v in row.items() if k != "lrs"}), flush=True)
    return row


def fit_knee(rows: list[dict[str, Any]]) -> dict[str, float]:
    """S = S_min + E_min / B by least squares on (1/B, S); B_crit = E_min / S_min."""
    pts = [(1.0 / r["batch"], r["median_steps"]) for r in rows if r.get("median_steps")]
    n = len(pts)
    mx, my = sum(p[0] for p in pts) / n, sum(p[1] for p in pts) / n
    slope = sum((x - mx) * (y - my) for x, y in pts) / sum((x - mx) ** 2 for x, _ in pts)
    s_min, e_min = my - slope * mx, slope
    return {"s_min": s_min, "e_min": e_min, "b_crit": e_min / s_min if s_min > 0 else math.inf}


def knee(data: str, seeds: int, batches: list[int], factors: list[float], rows_only: bool = False) -> dict[str, Any]:
    lr_ref = SETUPS[data][2]
    rows = [sweep(data, b, [lr_ref * math.sqrt(b / 128) * f for f in factors], seeds) for b in batches]
    if rows_only:  # more LRs for some rows of an earlier run (its grid's edge), no fit and no noise scale
        return {"data": data, "target": SETUPS[data][1], "rows": rows}
    fit = fit_knee(rows)
    ref = next(r for r in rows if r["batch"] == 128)
    noise = [steps_to_target(config(data, 128, ref["best_lr"], s, **{"noise.every": 2})) for s in range(seeds)]
    at = [r["noise"].get("b_simple_at_target") for r in noise if r["reached"]]
    b_simple = statistics.median(b for b in at if b is not None) if any(b is not None for b in at) else None
    out = {"data": data, "target": SETUPS[data][1], "rows": rows, "fit": fit, "b_simple_at_target": at,
           "b_simple_median": b_simple,
           "ratio_b_simple_to_b_crit": b_simple / fit["b_crit"] if b_simple and fit["b_crit"] else None}
    print(json.dumps({k: v for k, v in out.items() if k != "rows"}), flush=True)
    plot_knee(out, OUT / f"{data}_knee.png")
    return out


def plot_knee(out: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in out["rows"] if r.get("median_steps")]
    bs = [r["batch"] for r in rows]
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    ax.errorbar(bs, [r["median_steps"] for r in rows],
                yerr=[[r["median_steps"] - r["min_steps"] for r in rows], [r["max_steps"] - r["median_steps"]
                                                                             for r in rows]],
                marker="o", capsize=3, label="measured (median, min-max over seeds)")
    fit = out["fit"]
    grid = [2 ** (i / 4) for i in range(int(4 * math.log2(min(bs))), int(4 * math.log2(max(bs))) + 1)]
    ax.plot(grid, [fit["s_min"] + fit["e_min"] / b for b in grid], ls="--", color="grey",
            label=f"S_min + E_min/B, B_crit = {fit['b_crit']:.0f}")
    ax.axvline(fit["b_crit"], color="grey", lw=1)
    if out.get("b_simple_median"):
        ax.axvline(out["b_simple_median"], color="C3", lw=1.5,
                   label=f"B_simple at target = {out['b_simple_median']:.0f}")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch size")
    ax.set_ylabel(f"steps to {100 * out['target']:.0f}% validation")
    ax.set_title(f"{out['data']}: steps to target vs batch size")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def ramp(data: str, seeds: int, cap: int, start: int = 16, every: int = 2, decay: float = 0.9) -> dict[str, Any]:
    """The ramp from `start` up to `cap` (0: the smallest measured batch at or above B_crit), whose tuned LR is the
    schedule's peak; smaller batches get it times sqrt(B / cap). B_simple measured every `every` steps, smoothed
    with `decay`."""
    k = json.loads((OUT / f"{data}_knee.json").read_text())
    rows = [r for r in k["rows"] if r.get("median_steps")]
    top = next(r for r in rows if r["batch"] == cap) if cap else \
        min((r for r in rows if r["batch"] >= k["fit"]["b_crit"]), key=lambda r: r["batch"])
    runs = [steps_to_target(config(data, top["batch"], top["best_lr"], s, **{
        "schedule.batch_ramp": "noise", "schedule.batch_ramp_from": start, "noise.every": every, "noise.decay": decay}))
        for s in range(seeds)]
    done = [r for r in runs if r["reached"]]
    steps = statistics.median(r["steps"] for r in done) if done else None
    samples = statistics.median(r["samples"] for r in done) if done else None
    # the fixed-batch frontier at the ramp's examples: log-log interpolation of steps against examples
    pts = sorted((r["median_samples"], r["median_steps"], r["batch"]) for r in rows)
    frontier = None
    if samples is not None:
        for (e0, s0, _), (e1, s1, _) in zip(pts, pts[1:]):
            if e0 <= samples <= e1:
                t = math.log(samples / e0) / math.log(e1 / e0) if e1 > e0 else 0.0
                frontier = math.exp(math.log(s0) + t * (math.log(s1) - math.log(s0)))
    best_fixed = min(rows, key=lambda r: r["median_steps"])
    gains = [g for g in (sqrt_ramp_gain(r["b_simple"]) for r in runs) if g is not None]
    out = {"data": data, "cap": top["batch"], "lr": top["best_lr"], "start": start, "every": every, "decay": decay,
           "runs": runs, "median_steps": steps,
           "median_samples": samples, "ideal_excess_step_ratio": statistics.median(gains) if gains else None,
           "fixed_steps_at_same_samples": frontier, "best_fixed": {k2: best_fixed[k2] for k2 in
                                                                   ("batch", "median_steps", "median_samples")},
           "reached": f"{len(done)}/{len(runs)}"}
    print(json.dumps({k2: v for k2, v in out.items() if k2 != "runs"}), flush=True)
    return out


def optimizers(data: str, seeds: int, batch: int) -> dict[str, Any]:
    grids = {  # each optimizer's LR grid at this batch (Nado et al.: tune the baselines too); a first run with
        # narrower grids had its best LR on an edge for sgd, lars and lamb, so each grid spans 32x around its best
        "adamw": [1e-3, 2e-3, 4e-3, 8e-3, 1.6e-2, 3.2e-2],
        "sgd": [0.0125, 0.025, 0.05, 0.1, 0.2, 0.4],
        "lars": [2.0, 4.0, 8.0, 16.0, 32.0, 64.0],
        "lamb": [4e-3, 8e-3, 1.6e-2, 3.2e-2, 6.4e-2, 0.128],
    }
    out: dict[str, Any] = {"data": data, "batch": batch, "optimizers": {}}
    for name, lrs in grids.items():
        print(name, flush=True)
        out["optimizers"][name] = sweep(data, batch, lrs, seeds, **{"optim.name": name})
    print(json.dumps({n: {k: r[k] for k in ("best_lr", "median_steps")} for n, r in out["optimizers"].items()}))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("part", choices=("knee", "ramp", "optimizers"))
    ap.add_argument("--data", choices=tuple(SETUPS), default="mnist1d")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--batch", type=int, default=512, help="optimizers: the large batch; ramp: its cap (512 = the "
                    "default: the smallest measured batch at or above B_crit)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--start", type=int, default=16, help="ramp: the first batch")
    ap.add_argument("--every", type=int, default=2, help="ramp: steps between noise measurements")
    ap.add_argument("--decay", type=float, default=0.9, help="ramp: the noise estimates' moving-average decay")
    ap.add_argument("--tag", default="", help="appended to the output file's name")
    ap.add_argument("--batches", type=int, nargs="+", default=list(BATCHES), help="knee: the batch sizes")
    ap.add_argument("--rows-only", action="store_true", help="knee: only the rows (no fit, no noise scale)")
    ap.add_argument("--lr-factors", type=float, nargs="+", default=[0.5, 1.0, 2.0],
                    help="knee: LRs tried at each batch, as multiples of lr_ref * sqrt(B / 128)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    if args.part == "knee":
        out = knee(args.data, args.seeds, args.batches, args.lr_factors, args.rows_only)
    elif args.part == "ramp":
        out = ramp(args.data, args.seeds, args.batch if args.batch != 512 else 0, args.start, args.every, args.decay)
    else:
        out = optimizers(args.data, args.seeds, args.batch)
    out |= {"device": device_name(torch.device("cpu")), "cpu": platform.processor(), "torch": torch.__version__,
            "threads": args.threads, "seconds": time.perf_counter() - t0,
            "command": "python benchmarks/batch_scaling.py " + " ".join(sys.argv[1:])}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{args.data}_{args.part}{args.tag}.json").write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
