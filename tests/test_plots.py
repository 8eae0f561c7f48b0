"""Each plot writes a valid PNG for normal and for degenerate input, and leaves no figure open."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from quicktrain.plots import plot_ablation, plot_curves, plot_run

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def curve(n: int, seconds: float, top: float, test: bool = True) -> list[dict[str, Any]]:
    return [{"step": i, "train_seconds": seconds * (i + 1) / n, "val_acc": top * (1 - math.exp(-3 * (i + 1) / n)),
             "test_acc": top * (1 - math.exp(-3 * (i + 1) / n)) - 0.003 if test else None} for i in range(n)]


def assert_png(path: Path) -> None:
    assert path.read_bytes().startswith(PNG_MAGIC)


@pytest.fixture(autouse=True)
def _no_figure_leaks() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    before = len(plt.get_fignums())
    yield
    assert len(plt.get_fignums()) == before


@pytest.mark.parametrize("metrics, target", [
    (curve(40, 2.0, 0.97), 0.94),  # reaches the target
    (curve(40, 2.0, 0.90, test=False), 0.94),  # never reaches it, no test accuracy
    (curve(1, 0.1, 0.95), 0.94),  # one point
    ([], 0.94),  # no checks at all
    ([{"train_seconds": None, "val_acc": 0.5, "test_acc": None}, {"train_seconds": 1.0, "val_acc": None}], None),
])
def test_plot_run(tmp_path: Path, metrics: list[dict[str, Any]], target: float | None) -> None:
    path = tmp_path / "sub" / "accuracy.png"
    plot_run(metrics, path, target=target, title="run")
    assert_png(path)


def test_plot_curves(tmp_path: Path) -> None:
    curves = {"fast": [curve(20, 0.2, 0.95), curve(25, 0.25, 0.951)], "plain": [curve(30, 6.0, 0.93)] * 3}
    plot_curves(curves, tmp_path / "log.png", target=0.94, title="bench")  # 30x apart: log x axis
    plot_curves({"a": [curve(10, 1.0, 0.95)], "b": [curve(10, 2.0, 0.96)]}, tmp_path / "lin.png", target=0.94)
    assert_png(tmp_path / "log.png")
    assert_png(tmp_path / "lin.png")


@pytest.mark.parametrize("curves", [
    {},
    {"empty": []},
    {"one point": [curve(1, 0.5, 0.95)], "never": [curve(10, 5.0, 0.5)]},
    {"no times": [[{"train_seconds": None, "val_acc": 0.9}]], "zero time": [[{"train_seconds": 0.0, "val_acc": 0.9}]]},
])
def test_plot_curves_degenerate(tmp_path: Path, curves: dict[str, list[list[dict[str, Any]]]]) -> None:
    plot_curves(curves, tmp_path / "c.png", target=0.94)
    assert_png(tmp_path / "c.png")


def row(label: str, seconds: float | None, reached: int, acc: float, std: float, **extra: Any) -> dict[str, Any]:
    return {"label": label, "median_seconds": seconds, "reached": reached, "n": 5, "acc_mean": acc, "acc_std": std,
            **extra}


def test_plot_ablation(tmp_path: Path) -> None:
    rows = [row("fast (all on)", 0.21, 5, 0.945, 0.002), row("− label smoothing", 0.34, 5, 0.941, 0.003),
            row("− one-cycle", None, 0, 0.90, 0.01, median_train_seconds=0.8), row("+ tta", 0.19, 4, 0.946, 0.0)]
    plot_ablation(rows, tmp_path / "ablation.png", title="ablation")
    assert_png(tmp_path / "ablation.png")


@pytest.mark.parametrize("rows", [
    [],
    [row("only", 0.2, 5, 0.95, 0.0)],
    [row("never", None, 0, 0.5, 0.0), row("also never", None, 0, 0.4, 0.1)],  # no time anywhere
    [row("baseline", 0.2, 5, 1.0, 0.0), {"label": "no accuracy", "median_seconds": None, "reached": 0, "n": 0,
                                         "acc_mean": None, "acc_std": None}],
])
def test_plot_ablation_degenerate(tmp_path: Path, rows: list[dict[str, Any]]) -> None:
    plot_ablation(rows, tmp_path / "a.png")
    assert_png(tmp_path / "a.png")
