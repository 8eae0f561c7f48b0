"""PNG plots of runs: one run's accuracy curve, several recipes' curves side by side, and an ablation chart.

matplotlib is imported inside each function (with the Agg backend, so no display is needed) to keep `import
quicktrain` fast. Every function closes its figure, so a long `bench` does not accumulate them. Degenerate input (no
points, one point, a recipe that never reached the target, missing times) still gives a valid, labelled PNG.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DPI = 120
_BASELINE_COLOUR = "#1f5fa8"
_OTHER_COLOUR = "#8fb3de"
_DNF_COLOUR = "#b0b0b0"


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # headless: never needs a display, and never opens a window from a library call
    import matplotlib.pyplot as plt

    return plt


def _num(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else None


def _points(metrics: list[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    """(train seconds, value) for the checks where both are known: accuracies in %, losses as they are."""
    scale = 1.0 if key.endswith(("loss", "bpb")) else 100.0
    xs, ys = [], []
    for m in metrics:
        x, y = _num(m.get("train_seconds")), _num(m.get(key))
        if x is not None and y is not None:
            xs.append(x)
            ys.append(scale * y)
    return xs, ys


@dataclass(frozen=True)
class _Metric:
    """How a task's metric is drawn: accuracy in % (higher is better) or loss in nats per token (lower is better)."""

    name: str
    scale: float
    ylabel: str
    higher: bool
    legend: str  # where the legend goes: the corner the curves move away from

    def target_label(self, target: float) -> str:
        return f"target {100 * target:g}%" if self.higher else f"target {target:.4g}"

    def reached(self, y: float, target: float) -> bool:
        t = self.scale * target
        return y >= t - 1e-9 if self.higher else y <= t + 1e-12


_METRICS = {"acc": _Metric("acc", 100.0, "accuracy (%)", True, "lower right"),
            "loss": _Metric("loss", 1.0, "loss (nats per token)", False, "upper right")}


def _first_reach(xs: list[float], ys: list[float], target: float | None,
                 m: _Metric = _METRICS["acc"]) -> tuple[float, float] | None:
    if target is None:
        return None
    return next(((x, y) for x, y in zip(xs, ys) if m.reached(y, target)), None)


def _save(fig: Any, plt: Any, path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fig.tight_layout()
        fig.savefig(path, dpi=DPI, format="png")
    finally:
        plt.close(fig)


def _no_data(ax: Any, what: str = "no data") -> None:
    ax.text(0.5, 0.5, what, transform=ax.transAxes, ha="center", va="center", color="grey")


def plot_run(metrics: list[dict[str, Any]], path: Path, target: float | None = None, title: str = "",
             metric: str = "acc") -> None:
    """Validation (solid) and test (dashed) accuracy vs the train clock, the target as a horizontal line and a star
    where the validation figure first reached it. `metric="loss"` (a next-token run): the losses, train loss too."""
    m = _METRICS[metric]
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    lines = [("val", "validation", "-", 1.6), ("test", "test", "--", 1.2)] + \
        ([("train", "train", ":", 1.2)] if metric == "loss" else [])
    drawn = False
    for i, (split, label, ls, lw) in enumerate(lines):
        xs, ys = _points(metrics, f"{split}_{m.name}")
        style = {"marker": "o", "markersize": 3} if len(xs) < 40 else {}  # a lone point needs a marker to be seen
        if xs:
            ax.plot(xs, ys, color=f"C{i}", lw=lw, ls=ls, label=label, **style)
            drawn = True
    if not drawn:
        _no_data(ax)
    if target is not None:
        ax.axhline(m.scale * target, color="grey", lw=1, ls=":", label=m.target_label(target))
    hit = _first_reach(*_points(metrics, f"val_{m.name}"), target, m)
    if hit is not None:
        ax.plot(*hit, marker="*", markersize=14, color="C3", zorder=5, ls="none",
                label=f"reached at {hit[0]:.3g} s")
    ax.set_xlabel("train clock (s)")
    ax.set_ylabel(m.ylabel)
    ax.set_title(title or f"{m.ylabel.split(' (')[0]} vs train clock")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc=m.legend)
    _save(fig, plt, path)


def _time_span(runs: list[list[dict[str, Any]]], key: str = "val_acc") -> float | None:
    """The longest train clock over a recipe's runs (how far its curves reach)."""
    ends = [x for run in runs for x in _points(run, key)[0] if x > 0]
    return max(ends) if ends else None


def plot_curves(curves: dict[str, list[list[dict[str, Any]]]], path: Path, target: float | None = None,
                title: str = "", metric: str = "acc") -> None:
    """Validation accuracy vs the train clock for several recipes: one colour per recipe, one thin line per seed, a
    dot where each seed first reached the target. The time axis is logarithmic when the recipes' time spans differ by
    more than 10x (otherwise the fast recipe is a vertical line at the left edge). `metric="loss"`: validation loss
    (lower is better), the target a loss."""
    m = _METRICS[metric]
    key, target = f"val_{m.name}", target if m.higher or target else None  # a loss target of 0 is none
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    spans = [s for s in (_time_span(runs, key) for runs in curves.values()) if s is not None]
    log_x = len(spans) > 1 and max(spans) / min(spans) > 10
    handles, all_y = [], []
    for i, (name, runs) in enumerate(curves.items()):
        colour = f"C{i % 10}"
        for run in runs:
            xs, ys = _points(run, key)
            if log_x:  # a log axis cannot show t = 0
                xs, ys = [x for x in xs if x > 0], [y for x, y in zip(xs, ys) if x > 0]
            all_y += ys
            ax.plot(xs, ys, color=colour, lw=0.9, alpha=0.7, marker="o" if len(xs) == 1 else None, markersize=3)
            hit = _first_reach(xs, ys, target, m)
            if hit is not None:
                ax.plot(*hit, marker="o", markersize=4, color=colour, ls="none")
        label = f"{name} ({len(runs)} seed{'s' if len(runs) != 1 else ''})"
        handles.append(plt.Line2D([], [], color=colour, lw=2, label=label))
    if not all_y:
        _no_data(ax)
    if target is not None:
        ax.axhline(m.scale * target, color="grey", lw=1, ls=":")
        handles.append(plt.Line2D([], [], color="grey", lw=1, ls=":", label=m.target_label(target)))
        if m.higher and all_y and min(all_y) < 100 * target - 20:
            # the race is decided near the target: early low accuracies would squash that region flat
            ax.set_ylim(100 * target - 20, min(100.5, max(max(all_y), 100 * target) + 1.5))
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel("train clock (s)" + (", log scale" if log_x else ""))
    ax.set_ylabel(f"validation {m.ylabel}")
    ax.set_title(title or f"validation {m.ylabel.split(' (')[0]} vs train clock")
    ax.grid(alpha=0.3, which="both" if log_x else "major")
    if handles:
        ax.legend(handles=handles, loc=m.legend, fontsize=9)
    _save(fig, plt, path)


def plot_ablation(rows: list[dict[str, Any]], path: Path, title: str = "") -> None:
    """Two horizontal bar panels, one row per variant (the first is the baseline, drawn darker and in bold): the
    median time to target (a grey hatched 'DNF' bar at the run's budget where no seed reached it) and the test
    accuracy mean with ± std error bars."""
    plt = _pyplot()
    n = max(1, len(rows))
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 1.2 + 0.45 * n), sharey=True)
    if not rows:
        _no_data(left)
        _no_data(right)
    else:
        ypos = list(range(len(rows)))
        _time_panel(left, rows, ypos)
        _accuracy_panel(right, rows, ypos)
        left.set_yticks(ypos, [str(r.get("label", "")) for r in rows])
        left.get_yticklabels()[0].set_fontweight("bold")
        left.invert_yaxis()  # the baseline on top, the table's order below it
    left.set_title("median time to target (train clock)")
    right.set_title("test accuracy (mean ± std)")
    if title:
        fig.suptitle(title)
    _save(fig, plt, path)


def _time_panel(ax: Any, rows: list[dict[str, Any]], ypos: list[int]) -> None:
    times = [_num(r.get("median_seconds")) for r in rows]
    reached_max = max((t for t in times if t is not None), default=None)
    for y, r, t in zip(ypos, rows, times):
        colour = _BASELINE_COLOUR if y == 0 else _OTHER_COLOUR
        count = f"({r.get('reached', 0)}/{r.get('n', 0)})"
        if t is not None:
            ax.barh(y, t, color=colour)
            ax.text(t, y, f" {t:.3g} s {count}", va="center", fontsize=9)
        else:
            # no median exists: draw the budget it ran for (or the slowest finisher) so the row is visibly "longer"
            width = _num(r.get("median_train_seconds")) or reached_max or 1.0
            ax.barh(y, width, color=_DNF_COLOUR, hatch="//", edgecolor="grey")
            ax.text(width, y, f" DNF {count}", va="center", fontsize=9, fontweight="bold")
    ax.set_xlabel("seconds")
    ax.margins(x=0.3)  # room for the text at the bar ends
    ax.grid(axis="x", alpha=0.3)


def _accuracy_panel(ax: Any, rows: list[dict[str, Any]], ypos: list[int]) -> None:
    lows, highs = [], []
    for y, r in zip(ypos, rows):
        mean, std = _num(r.get("acc_mean")), _num(r.get("acc_std")) or 0.0
        if mean is None:
            ax.text(0.02, y, "no accuracy", va="center", fontsize=9, color="grey", transform=ax.get_yaxis_transform())
            continue
        colour = _BASELINE_COLOUR if y == 0 else _OTHER_COLOUR
        ax.barh(y, 100 * mean, xerr=100 * std, color=colour, capsize=3, ecolor="black")
        ax.text(100 * (mean + std), y, f" {100 * mean:.2f}%", va="center", fontsize=9)
        lows.append(100 * (mean - std))
        highs.append(100 * (mean + std))
    if lows:
        # differences are tenths of a percent: bars from 0 would all look the same, so zoom on the spread
        spread = max(highs) - min(lows)
        pad = max(0.5, 0.25 * spread)
        ax.set_xlim(max(0.0, min(lows) - pad), min(100.0, max(highs) + 2 * pad) if max(highs) < 100 else 100.5)
        base = _num(rows[0].get("acc_mean"))
        if base is not None:
            ax.axvline(100 * base, color=_BASELINE_COLOUR, lw=1, ls="--")
    ax.set_xlabel("test accuracy (%)")
    ax.grid(axis="x", alpha=0.3)


def plot_tune_history(points: list[tuple[int, float]], path: Path, minimize: bool = True, title: str = "") -> None:
    """Objective value of each completed trial and the best so far, by trial number."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=DPI)
    if points:
        xs, ys = zip(*sorted(points))
        shown = [y for y in ys if y < 1e3] if minimize else list(ys)  # misses score 1e4+: keep them off the scale
        ax.scatter([x for x, y in zip(xs, ys) if (y < 1e3 or not minimize)], shown or [0], s=12, alpha=0.6,
                   label="trial")
        best, run = [], None
        for y in ys:
            run = y if run is None else (min(run, y) if minimize else max(run, y))
            best.append(run)
        ax.step(xs, best, where="post", color="C3", label="best so far")
        if minimize and shown:
            ax.set_ylim(0, max(shown) * 1.05)
    ax.set_xlabel("trial")
    ax.set_ylabel("seconds to target" if minimize else "validation accuracy")
    ax.set_title(title or "search history")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_importance(importances: dict[str, float], path: Path, title: str = "") -> None:
    """fANOVA importance of each searched parameter, as horizontal bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(importances)[::-1]
    fig, ax = plt.subplots(figsize=(6, 0.45 * len(names) + 1.2), dpi=DPI)
    ax.barh(names, [importances[n] for n in names], color="C0")
    ax.set_xlabel("importance")
    ax.set_title(title or "parameter importance (fANOVA)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_lr_find(found: Any, path: Path, recipe_lr: float | None = None) -> None:
    """The LR range test: raw and smoothed loss against the sweep's LR (log scale), with each rule's suggestion and
    the recipe's own LR drawn where they fall on the sweep's axis (labels give them at the recipe's batch size)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=DPI)
    ax.plot(found.lrs, found.losses, color="0.75", lw=1, label="loss")
    ax.plot(found.lrs, found.smoothed, color="C0", lw=2, label="smoothed loss")
    for i, (rule, lr) in enumerate(found.suggestions.items()):
        ax.axvline(lr / found.batch_lr_factor, color=f"C{i + 1}", ls="--", lw=1, label=f"{rule}: {lr:.3g}")
    if recipe_lr:
        ax.axvline(recipe_lr / found.batch_lr_factor, color="k", ls=":", lw=1, label=f"recipe: {recipe_lr:.3g}")
    finite = [v for v in found.smoothed if math.isfinite(v)]
    if finite:
        ax.set_ylim(min(finite) * 0.9, min(max(finite), 3 * finite[0]) * 1.1)
    ax.set_xscale("log")
    ax.set_xlabel(f"learning rate at the sweep's batch of {found.sweep_batch_size}")
    ax.set_ylabel("training loss")
    ax.set_title(f"LR range test: suggested {found.suggested_lr:.3g} ({found.rule}, {found.confidence} confidence)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_noise(history: list[dict[str, float]], metrics: list[dict[str, Any]], path: Path, batch_size: int,
               title: str = "", metric: str = "acc") -> None:
    """The gradient noise scale over training (quicktrain.noise): smoothed B_simple (line) and the single
    measurements' ratios (dots, where positive) against samples seen, log scale; the batch the run used for
    reference; the validation metric on the right axis."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    xs = [h["samples"] for h in history if _num(h.get("b_simple")) is not None and h["b_simple"] > 0]
    ys = [h["b_simple"] for h in history if _num(h.get("b_simple")) is not None and h["b_simple"] > 0]
    raw = [(h["samples"], h["b_raw"]) for h in history if _num(h.get("b_raw")) is not None and h["b_raw"] > 0]
    if raw:
        ax.scatter(*zip(*raw), s=8, color="C0", alpha=0.3, label="one measurement")
    if xs:
        ax.plot(xs, ys, color="C0", lw=1.8, label="B_simple (smoothed)")
        ax.set_yscale("log")
    else:
        _no_data(ax, "no positive estimate yet")
    ax.axhline(batch_size, color="grey", lw=1, ls="--", label=f"batch size {batch_size}")
    ax.set_xlabel("samples seen")
    ax.set_ylabel("gradient noise scale B_simple (examples)")
    ax.grid(alpha=0.3, which="both")
    checks = [(m["samples"], m[f"val_{metric}"]) for m in metrics if f"val_{metric}" in m]
    if checks:
        right = ax.twinx()
        right.plot(*zip(*checks), color="C1", lw=1.2, alpha=0.8, marker="o", markersize=3,
                   label=f"validation {metric}")
        right.set_ylabel(f"validation {metric}")
        right.legend(loc="lower right")
    ax.legend(loc="upper left")
    ax.set_title(title or "gradient noise scale")
    _save(fig, plt, path)
