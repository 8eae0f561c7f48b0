"""Exploration for issue #13 ("Defaults that transfer"): candidate *adaptive* default policies vs `plain`, on user
models and data the fast recipe was never tuned on (benchmarks/user_models.py, combos of benchmarks/generality.py).

A small loop of its own (plain torch plus quicktrain's pure pieces: `find_lr`, `param_groups`), so every policy,
plain included, pays the same per-step overhead. Per combo and seed, the policies run one after another in the same
process (seed-major: seed 0 of every policy, then seed 1, ...), fp32, no augmentation, each from the same initial
weights (torch.manual_seed(seed) before building the model) and the same data order generator.

Time to target = train clock (training steps + validation checks + the LR finder where used, + BN re-estimation for
schedule-free) at the first validation check whose accuracy >= the combo's target. Runs stop there (or at the cap:
plain's epoch budget for the combo); the test accuracy reported is the one at that check (never used to decide).

Policies (`POLICIES`; `--policies` selects):
- plain:        Adam 1e-3 constant, batch 128, check every epoch (the `plain` recipe's optimisation).
- adam_find:    Adam, peak LR = LR range test (minimum/10 rule, quicktrain.find_lr, its time counted), no warmup.
- find_b{128,256}: AdamW at the finder's LR, linear warmup over half an epoch, then constant.
- wsd_b{128,256}[_h]: as find_b*, plus warmup-stable-decay: when the validation accuracy has not improved by >= 0.5
                point over the last 2 checks, decay linearly to 0 over max(1 epoch, 20% of the steps so far); if the
                target is still not met at the end of the decay, re-warm to half the previous peak and repeat.
                `_h`: checks every half epoch.
- wsd_plainlr:  WSD at batch 128 with Adam's 1e-3 as the peak (no finder): separates schedule from LR.
- sf_b128[_x3]: schedulefree.AdamWScheduleFree at the finder's LR (x3: 3x it), warmup half an epoch,
                optimizer.eval() at checks; BatchNorm statistics re-estimated with the eval weights (its docs).

    .venv/bin/python benchmarks/adaptive_explore.py                       # every combo and policy, 3 seeds
    .venv/bin/python benchmarks/adaptive_explore.py --combos gru/mnist1d --policies plain wsd_b128 --seeds 1
    .venv/bin/python benchmarks/adaptive_explore.py --calibrate --combos mlp/digits   # plain's validation curve

Writes docs/results/generality/adaptive_explore.json (every run, with its curve) and prints markdown tables.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import statistics
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import user_models  # noqa: E402
from generality import COMBOS, EXTRA, Combo  # noqa: E402

import quicktrain as qt  # noqa: E402

OUT_DIR = Path(__file__).resolve().parent.parent / "docs" / "results" / "generality"


@dataclass(frozen=True)
class Policy:
    opt: str = "adamw"  # adam | adamw | sf (schedule-free AdamW)
    lr: float = 0.0  # fixed peak LR; 0 = LR range test (minimum/10)
    lr_mult: float = 1.0  # multiplies the finder's suggestion
    batch: int = 128
    warmup: float = 0.5  # epochs
    wsd: bool = False
    eval_every: float = 1.0  # epochs
    plateau_gain: float = 0.005  # WSD: improvement over the last `plateau_checks` checks below this = plateau
    plateau_checks: int = 2
    decay_frac: float = 0.2  # WSD: decay length as a fraction of steps so far (at least decay_min epochs)
    decay_min: float = 1.0


POLICIES: dict[str, Policy] = {
    "plain": Policy(opt="adam", lr=1e-3, warmup=0.0),
    "adam_find": Policy(opt="adam", warmup=0.0),
    "find_b128": Policy(),
    "find_b256": Policy(batch=256),
    "wsd_b128": Policy(wsd=True),
    "wsd_b128_h": Policy(wsd=True, eval_every=0.5),
    "wsd_b256": Policy(batch=256, wsd=True),
    "wsd_b256_h": Policy(batch=256, wsd=True, eval_every=0.5),
    "wsd_plainlr": Policy(opt="adam", lr=1e-3, wsd=True, warmup=0.0),
    "sf_b128": Policy(opt="sf"),
    "sf_b128_x3": Policy(opt="sf", lr_mult=3.0),
}
DEFAULT_POLICIES = ["plain", "adam_find", "find_b128", "wsd_b128", "wsd_b128_h", "wsd_b256_h", "wsd_plainlr",
                    "sf_b128"]


def find_lr_for(policy: Policy, model: nn.Module, splits: Any, seed: int) -> qt.LRFindResult:
    cfg = qt.apply_overrides(qt.load_recipe("plain"), {
        "data.name": "custom", "data.augment": "none", "optim.name": "adam" if policy.opt == "adam" else "adamw",
        "optim.weight_decay": 0.0, "train.batch_size": policy.batch, "train.seed": seed, "system.precision": "fp32"})
    return qt.find_lr(cfg, model, splits)


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    was = model.training
    model.eval()
    correct = sum(int((model(x[i:i + 2048]).argmax(-1) == y[i:i + 2048]).sum()) for i in range(0, len(x), 2048))
    model.train(was)
    return correct / max(1, len(x))


def has_bn(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


@torch.no_grad()
def reestimate_bn(model: nn.Module, x: torch.Tensor, bs: int, batches: int = 8) -> None:
    """schedulefree's docs: BN running statistics must come from the eval (averaged) weights, so recompute them in
    train mode after optimizer.eval(). Here: a cumulative average (momentum None) over the first `batches` batches."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    for i in range(min(batches, max(1, len(x) // bs))):
        model(x[i * bs:(i + 1) * bs])
    for m, mom in zip(bns, saved):
        m.momentum = mom


def run(policy: Policy, combo: Combo, splits: Any, seed: int, stop_on_target: bool = True) -> dict[str, Any]:
    torch.manual_seed(seed)
    model = user_models.MODELS[combo.model](splits.input_shape, splits.num_classes)
    x, y = splits.train.x, splits.train.y
    xv, yv, xt, yt = splits.val.x, splits.val.y, splits.test.x, splits.test.y
    n, bs = len(x), policy.batch
    spe = math.ceil(n / bs)  # steps per epoch
    clock, finder = 0.0, None
    if policy.lr > 0:
        peak = policy.lr
    else:
        finder = find_lr_for(policy, model, splits, seed)
        clock += finder.seconds
        peak = finder.suggested_lr * policy.lr_mult
    warm = max(0, round(policy.warmup * spe))
    if policy.opt == "sf":
        import schedulefree

        opt: Any = schedulefree.AdamWScheduleFree(model.parameters(), lr=peak, warmup_steps=warm, weight_decay=0.0)
    elif policy.opt == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=peak)
    else:
        opt = torch.optim.AdamW(qt.param_groups(model, 0.0), lr=peak, fused=True)
    gen = torch.Generator().manual_seed(seed)
    eval_steps = max(1, round(policy.eval_every * spe))
    cap_steps = int(combo.epochs * spe)
    bn = has_bn(model)
    step, perm, pos = 0, torch.randperm(n, generator=gen), 0
    cur_peak, seg_start = peak, 0  # WSD: the peak of the current stable phase, and the step it started at
    decay_start, decay_len = None, 0
    curve: list[dict[str, Any]] = []
    reached_at = None
    decays: list[int] = []
    model.train()
    if policy.opt == "sf":
        opt.train()
    while step < cap_steps:
        t0 = time.perf_counter()
        for _ in range(min(eval_steps, cap_steps - step)):
            if policy.opt != "sf":
                f = min(1.0, (step - seg_start + 1) / warm) if warm and step - seg_start < warm else 1.0
                if decay_start is not None:
                    f *= max(0.0, 1.0 - (step - decay_start) / decay_len)
                for g in opt.param_groups:
                    g["lr"] = cur_peak * f
            if pos + bs > n:
                perm, pos = torch.randperm(n, generator=gen), 0
            idx = perm[pos:pos + bs]
            pos += bs
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
        if policy.opt == "sf":
            opt.eval()
            if bn:
                reestimate_bn(model, x, bs)
        val = accuracy(model, xv, yv)
        clock += time.perf_counter() - t0
        test = accuracy(model, xt, yt)  # not timed, never decides
        if policy.opt == "sf":
            opt.train()
        curve.append({"step": step, "epoch": step / spe, "seconds": clock, "val": val, "test": test,
                      "lr": opt.param_groups[0]["lr"]})
        if val >= combo.target and reached_at is None:
            reached_at = len(curve) - 1
            if stop_on_target:
                break
        if policy.wsd:
            if decay_start is None:
                vals = [c["val"] for c in curve[seg_start_check(curve, seg_start):]]
                k = policy.plateau_checks
                if len(vals) > k and max(vals[-k:]) < max(vals[:-k]) + policy.plateau_gain:
                    decay_start = step
                    decay_len = max(round(policy.decay_min * spe), round(policy.decay_frac * step))
                    decays.append(step)
            elif step >= decay_start + decay_len:  # decayed to 0 without the target: re-warm to half the peak
                cur_peak, seg_start, decay_start = cur_peak / 2, step, None
    last = curve[-1]
    at = curve[reached_at] if reached_at is not None else None
    return {"combo": combo.name, "policy": None, "seed": seed, "peak_lr": peak,
            "finder": finder.to_json() if finder else None, "reached": at is not None,
            "seconds_to_target": at["seconds"] if at else None, "test_at_target": at["test"] if at else None,
            "epochs": last["epoch"], "seconds": last["seconds"], "final_val": last["val"], "final_test": last["test"],
            "best_val": max(c["val"] for c in curve), "decays_at_step": decays, "curve": curve}


def seg_start_check(curve: list[dict[str, Any]], seg_start: int) -> int:
    """Index of the first check after the current stable phase began (checks before it belong to an old phase)."""
    return next((i for i, c in enumerate(curve) if c["step"] > seg_start), len(curve))


def _med(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} [{min(values):.2f}, {max(values):.2f}]" if values else "-"


def summarise(runs: list[dict[str, Any]], policies: list[str], combos: list[Combo]) -> str:
    lines = ["| combo | target | policy | peak LR (median) | reached | time to target s, median [min, max] | "
             "ratio vs plain | test acc at target | epochs |", "|---|---|---|---|---|---|---|---|---|"]
    ratio_table: dict[str, dict[str, float | None]] = {p: {} for p in policies}
    for c in combos:
        base = [r["seconds_to_target"] for r in runs
                if r["combo"] == c.name and r["policy"] == "plain" and r["reached"]]
        for p in policies:
            rs = [r for r in runs if r["combo"] == c.name and r["policy"] == p]
            if not rs:
                continue
            t = [r["seconds_to_target"] for r in rs if r["reached"]]
            ratio = statistics.median(t) / statistics.median(base) if t and base and len(t) == len(rs) else None
            ratio_table[p][c.name] = ratio
            acc = [r["test_at_target"] for r in rs if r["reached"]]
            lines.append(f"| {c.name} | {c.target:.0%} | {p} | {statistics.median(r['peak_lr'] for r in rs):.2g} | "
                         f"{len(t)}/{len(rs)} | {_med(t)} | {f'{ratio:.2f}' if ratio else '-'} | " +
                         (f"{statistics.mean(acc) * 100:.1f} |" if acc else "- |") +
                         f" {statistics.median(r['epochs'] for r in rs):.1f} |")
    lines += ["", "Ratio (median time to target / plain's; '-' = not every seed reached it):", "",
              "| policy | " + " | ".join(c.name for c in combos) + " | faster in | worst |",
              "|---|" + "---|" * (len(combos) + 2)]
    for p in policies:
        vals = [ratio_table[p].get(c.name) for c in combos]
        ok = [v for v in vals if v is not None]
        lines.append(f"| {p} | " + " | ".join(f"{v:.2f}" if v is not None else "-" for v in vals) +
                     f" | {sum(v < 1 for v in ok)}/{len(vals)} | {max(ok) if ok else float('nan'):.2f} |")
    return "\n".join(lines)


def write(path: str, runs: list[dict[str, Any]]) -> None:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"argv": sys.argv[1:], "torch": torch.__version__, "threads": torch.get_num_threads(),
                               "policies": {k: v.__dict__ for k, v in POLICIES.items()}, "runs": runs}, indent=1))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--combos", nargs="*", default=[c.name for c in COMBOS])
    ap.add_argument("--policies", nargs="*", default=DEFAULT_POLICIES, choices=list(POLICIES))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--calibrate", action="store_true", help="run plain for the combo's whole budget, print its curve")
    ap.add_argument("--epochs", type=float, default=0, help="override every combo's cap (epochs); 0 = the combo's")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch intra-op threads; 0 = torch's default. On a shared 2-core machine use 1: with other "
                         "jobs running, 2 threads were 2-25x slower a step (oversubscription), 1 thread was stable")
    ap.add_argument("--out", default=str(OUT_DIR / "adaptive_explore.json"))
    ap.add_argument("--summarise", action="store_true", help="only print the tables of an existing --out file")
    args = ap.parse_args(argv)
    if args.summarise:
        runs = json.loads(Path(args.out).read_text())["runs"]
        names = list(dict.fromkeys(r["combo"] for r in runs))
        print(summarise(runs, list(dict.fromkeys(r["policy"] for r in runs)),
                        [c for c in COMBOS + EXTRA if c.name in names]))
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    combos = [c for c in COMBOS + EXTRA if c.name in args.combos]
    if args.epochs:
        combos = [replace(c, epochs=args.epochs) for c in combos]
    data = {d: user_models.load(d) for d in sorted({c.data for c in combos})}
    runs: list[dict[str, Any]] = []
    policies = ["plain"] if args.calibrate else args.policies
    for c in combos:
        for seed, p in itertools.product(range(args.seeds), policies):
            r = run(POLICIES[p], c, data[c.data], seed, stop_on_target=not args.calibrate)
            r["policy"] = p
            runs.append(r)
            t = f"{r['seconds_to_target']:.2f}s" if r["reached"] else "not reached"
            print(f"{c.name} seed {seed} {p}: lr {r['peak_lr']:.3g} {t} ep {r['epochs']:.1f} "
                  f"val {r['final_val']:.3f} test {r['final_test']:.3f}"
                  + (f" decays {r['decays_at_step']}" if r["decays_at_step"] else ""), flush=True)
            if args.calibrate:
                print("   val: " + " ".join(f"{e['val']:.2f}" for e in r["curve"]) +
                      f"  ({r['seconds'] / r['epochs']:.3f} s/epoch)", flush=True)
        write(args.out, runs)  # after every combo, so an interrupted run keeps what it measured
    if not args.calibrate:
        print(summarise(runs, policies, combos))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
