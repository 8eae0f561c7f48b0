"""`quicktrain noise-scale RECIPE`: train the recipe while measuring the gradient noise scale (quicktrain.noise), then
report B_simple over training, a plot, and a recommended batch size.

The recommendation is B_simple where the run reached its target (at the end if it did not), rounded to a power of
two: McCandlish et al. (2018) find the critical batch size for reaching a loss close to B_simple measured at that
loss. Training at it costs about twice the fewest possible steps and twice the fewest possible examples; below it a
bigger batch cuts the steps almost in proportion, above it the extra examples mostly go to waste. Measured against
steps-to-target sweeps in docs/BENCHMARKS.md ("Critical batch size").
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from quicktrain.config import Config

__all__ = ["measure_noise_scale", "recommend"]


def recommend(b_simple: float | None) -> int | None:
    """The power of two nearest to `b_simple` (on a log scale), at least 1; None without an estimate."""
    if b_simple is None or not math.isfinite(b_simple) or b_simple <= 0:
        return None
    return int(2 ** round(math.log2(max(1.0, b_simple))))


def measure_noise_scale(cfg: Config, every: int, out: Path, progress: bool = True,
                        log: Callable[[str], None] = lambda _m: None) -> dict[str, Any]:
    """Train `cfg` with a measurement every `every` steps; write noise.json and noise.png in `out`; return the
    summary (what the command prints as its JSON line)."""
    from quicktrain.dist import setup
    from quicktrain.loop import train
    from quicktrain.plots import plot_noise

    cfg = replace(cfg, noise=replace(cfg.noise, every=every))
    result = train(cfg, progress=progress, log=log)
    noise = result.noise
    at = noise.get("b_simple_at_target") if result.reached_target else noise.get("b_simple")
    summary = {"recipe": cfg.name, "batch_size": cfg.train.batch_size, "every": every,
               "measurements": noise.get("measurements", 0), "reached_target": result.reached_target,
               "b_simple_at_target": noise.get("b_simple_at_target"), "b_simple_final": noise.get("b_simple"),
               "b_simple": at, "recommended_batch_size": recommend(at), "steps": result.steps,
               "train_seconds": result.train_seconds, "world_size": result.world_size, "out": str(out)}
    if setup(cfg.system).is_main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "noise.json").write_text(json.dumps({**summary, "history": result.noise_history,
                                                    "metrics": result.metrics}, indent=1) + "\n")
        plot_noise(result.noise_history, result.metrics, out / "noise.png", cfg.train.batch_size,
                   title=f"{cfg.name}: gradient noise scale ({time.strftime('%Y-%m-%d')})", metric=result.metric)
    return summary


def table(history: list[dict[str, float]], rows: int = 12) -> str:
    """Every k-th measurement as a text table (step, samples, B_simple smoothed and raw)."""
    if not history:
        return "no measurements (the run was shorter than one measurement interval)"
    k = max(1, len(history) // rows)
    lines = [f"{'step':>7} {'samples':>9} {'B_simple':>10} {'raw':>10}"]
    def num(v: float | None) -> str:
        return f"{v:>10.1f}" if v is not None else f"{'–':>10}"

    for h in history[k - 1::k]:
        lines.append(f"{int(h['step']):>7} {int(h['samples']):>9} {num(h['b_simple'])} {num(h['b_raw'])}")
    return "\n".join(lines)
