"""report.md + accuracy.png from a fake run, and the formatters on edge values."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from quicktrain.report import (format_pct, format_seconds, format_usd, markdown_table, metrics_table,
                               write_run_report)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def fake_metrics(n: int = 50, reach_at: int | None = 20) -> list[dict[str, Any]]:
    rows = []
    for i in range(n):
        val = 0.5 + 0.44 * min(1.0, i / reach_at) if reach_at else 0.5 + 0.3 * i / n
        rows.append({"step": 10 * (i + 1), "samples": 5120 * (i + 1), "epoch": 0.1 * (i + 1), "progress": (i + 1) / n,
                     "train_seconds": 0.01 * (i + 1), "wall_seconds": 2.9 + 0.02 * (i + 1), "lr": 1e-3,
                     "batch_size": 512, "size": 40, "train_loss": 1.0 / (i + 1), "val_acc": val,
                     "val_loss": None if i == 0 else 0.3, "test_acc": val + 0.006})
    return rows


def fake_result(reached: bool = True) -> dict[str, Any]:
    return {
        "recipe": "mnist1d", "seed": 0, "target": 0.94, "reached_target": reached,
        "seconds_to_target": 0.21 if reached else None, "train_seconds": 0.5, "wall_seconds": 3.9, "test_acc": 0.9461,
        "test_acc_at_target": 0.946 if reached else None, "val_acc": 0.95, "steps": 500, "samples": 256000,
        "epochs": 50.0, "flops": 1.23e12, "utilisation": 0.12, "peak_flops": 2.5e11, "precision": "fp32",
        "compile": False, "channels_last": False, "device": "cpu (2 threads)", "instance": "c6i.large",
        "cost_usd_on_demand": 1.18e-5, "cost_usd_spot": 4.2e-6, "price_date": "2025-01-15",
        "price_source": "aws.amazon.com/ec2/pricing", "torch_version": "2.13.0", "git_commit": None,
        "run_dir": "/tmp/x", "some_new_key": 7, "nested_extra": {"a": 1},
    }


CONFIG = {"name": "mnist1d", "train": {"target": 0.94, "batch_size": 512}, "optim": {"lr": 0.002}}


def test_report_reached(tmp_path: Path) -> None:
    metrics = fake_metrics()
    metrics[20]["train_seconds"] = 0.21  # the check that reached the target
    metrics[20]["wall_seconds"] = 3.1
    write_run_report(tmp_path, fake_result(True), CONFIG, metrics)
    text = (tmp_path / "report.md").read_text()
    assert ("reached 94.0% validation accuracy in 0.21 s (train clock) / 3.1 s wall; test accuracy 94.6%"
            in text)
    cost = next(line for line in text.splitlines() if line.startswith("| cost"))
    assert "c6i.large" in cost and "2025-01-15" in cost and "$0.0000118" in cost and "$0.0000042" in cost
    assert "aws.amazon.com/ec2/pricing" in cost
    assert "| git commit" in text and "some_new_key" in text  # a missing optional key and an unknown extra one
    block = re.search(r"```json\n(.*?)\n```", text, re.S)
    assert block is not None and json.loads(block.group(1)) == CONFIG
    assert "(accuracy.png)" in text
    assert (tmp_path / "accuracy.png").read_bytes().startswith(PNG_MAGIC)


def test_report_not_reached_and_sparse_result(tmp_path: Path) -> None:
    result = {"recipe": "plain", "target": 0.94, "reached_target": False, "train_seconds": 12.34,
              "wall_seconds": 185.0, "test_acc": 0.9012}
    write_run_report(tmp_path / "run", result, {}, fake_metrics(5, reach_at=None))
    text = (tmp_path / "run" / "report.md").read_text()
    assert "did not reach 94.0% validation accuracy in 12.3 s (train clock) / 3 min 05 s wall" in text
    assert "final test accuracy 90.1%" in text
    assert "| device" in text and "–" in text
    assert (tmp_path / "run" / "accuracy.png").read_bytes().startswith(PNG_MAGIC)


def test_report_without_metrics(tmp_path: Path) -> None:
    write_run_report(tmp_path, fake_result(False), CONFIG, [])
    assert "no evaluations" in (tmp_path / "report.md").read_text()
    assert (tmp_path / "accuracy.png").read_bytes().startswith(PNG_MAGIC)


def test_metrics_table_is_thinned_keeping_first_and_last() -> None:
    metrics = fake_metrics(200)
    lines = [ln for ln in metrics_table(metrics).splitlines() if ln.startswith("|")]
    body = lines[2:]
    assert len(body) <= 30
    steps = [int(ln.split("|")[1]) for ln in body]
    assert steps[0] == metrics[0]["step"] and steps[-1] == metrics[-1]["step"]
    assert steps == sorted(set(steps))
    assert len(metrics_table(fake_metrics(7)).splitlines()) == 2 + 7  # short runs are not thinned


@pytest.mark.parametrize("value, text", [
    (None, "–"), (float("nan"), "–"), (0, "0 s"), (0.0, "0 s"), (0.2134, "0.213 s"), (12.44, "12.4 s"),
    (1.0, "1 s"), (59.99, "1 min 00 s"), (185, "3 min 05 s"), (3599.6, "1 h 00 min"), (7380, "2 h 03 min"),
    (0.00042, "0.42 ms"), (3.6e7, "10000 h 00 min"),
])
def test_format_seconds(value: float | None, text: str) -> None:
    assert format_seconds(value) == text


@pytest.mark.parametrize("value, text", [
    (None, "–"), (0, "0.00%"), (0.9461, "94.61%"), (1.0, "100.00%"), (1e-6, "0.00%"), (float("inf"), "–"),
])
def test_format_pct(value: float | None, text: str) -> None:
    assert format_pct(value) == text


@pytest.mark.parametrize("value, text", [
    (None, "–"), (0, "$0.00"), (0.0000123, "$0.0000123"), (1.5, "$1.50"), (0.05, "$0.05"), (0.0123456, "$0.0123"),
    (0.1, "$0.10"), (1234567.891, "$1,234,567.89"), (1e-12, "$0.000000000001"), (float("nan"), "–"),
])
def test_format_usd(value: float | None, text: str) -> None:
    assert format_usd(value) == text


def test_markdown_table() -> None:
    table = markdown_table(["name", "n", "x"], [["a|b", "1"], ["long name", "12345", "z"]], align="lrc")
    lines = table.splitlines()
    assert len(lines) == 4 and len({len(ln) for ln in lines}) == 1  # padded to a grid
    cells = [c.strip() for c in lines[1].strip("|").split("|")]
    assert cells[0].startswith(":") and not cells[0].endswith(":")
    assert cells[1].endswith(":") and not cells[1].startswith(":")
    assert cells[2].startswith(":") and cells[2].endswith(":")
    assert "a\\|b" in lines[2]  # a pipe inside a cell is escaped
    assert lines[3].split("|")[2] == " 12345 "
    plain = markdown_table(["a"], [])
    assert plain.splitlines()[1] == "| :-- |"
