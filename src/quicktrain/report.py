"""A run's report: `report.md` (headline, the numbers, the config, the metrics) and `accuracy.png` in its directory.

Also the small formatters (seconds, percent, dollars, Markdown tables) that the CLI and `bench` print with, so every
table in the project writes a number the same way. Pure string code: matplotlib is imported only by `plots`, and only
when a plot is drawn.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from quicktrain.memory.tracking import describe as describe_memory

DASH = "–"  # what a missing or unknown value shows as
MAX_METRIC_ROWS = 30  # the metrics table is a summary; metrics.jsonl holds every row

# Result keys with a row of their own in the numbers table (or in the headline); any other scalar key is listed
# after them as-is, so a field added to Result later shows up without a change here.
_SHOWN = {
    "recipe", "seed", "target", "reached_target", "seconds_to_target", "train_seconds", "wall_seconds", "test_acc",
    "test_acc_at_target", "val_acc", "steps", "samples", "epochs", "flops", "utilisation", "peak_flops", "precision",
    "compile", "channels_last", "device", "instance", "cost_usd_on_demand", "cost_usd_spot", "price_date",
    "price_source", "torch_version", "git_commit", "run_dir", "metric", "val_loss", "test_loss", "test_loss_at_target",
}


# ---------------------------------------------------------------------------------------------------------------------
# Formatters


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def format_seconds(s: float | None) -> str:
    """'0.213 s', '12.4 s', '3 min 05 s', '2 h 03 min'; '–' for None or a non-number."""
    if not _finite(s):
        return DASH
    assert s is not None
    sign, s = ("-" if s < 0 else ""), abs(s)
    if s == 0:
        return "0 s"
    if s < 1e-3:  # sub-millisecond timings are real on a GPU; '0.000123 s' would hide the digits that matter
        return f"{sign}{_sig(s * 1e3, 3)} ms"
    if round(s, 1) < 60:
        return f"{sign}{_sig(s, 3)} s"
    whole = round(s)
    if whole < 3600:
        return f"{sign}{whole // 60} min {whole % 60:02d} s"
    minutes = round(s / 60)
    return f"{sign}{minutes // 60} h {minutes % 60:02d} min"


def format_pct(a: float | None, digits: int = 2) -> str:
    """A fraction as a percentage: 0.9461 -> '94.61%'."""
    return f"{100 * a:.{digits}f}%" if _finite(a) else DASH


def format_usd(x: float | None) -> str:
    """Dollars: '$1.50' from 10 cents up; below that three significant digits, since a fast run costs fractions of a
    cent and '$0.00' would say nothing: 0.0000123 -> '$0.0000123'."""
    if not _finite(x):
        return DASH
    assert x is not None
    sign, x = ("-" if x < 0 else ""), abs(x)
    if x == 0 or x >= 0.1:
        return f"{sign}${x:,.2f}"
    decimals = 2 - math.floor(math.log10(x))  # 3 significant digits
    text = f"{x:.{decimals}f}".rstrip("0")
    return f"{sign}${text}"


def _sig(x: float, digits: int) -> str:
    """`digits` significant digits in fixed notation (never '1e-05'), no trailing zeros."""
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(x)))) if x else 0
    text = f"{x:.{decimals}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def _format_flops(f: float | None) -> str:
    if not _finite(f):
        return DASH
    assert f is not None
    for scale, unit in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(f) >= scale:
            return f"{f / scale:.3g} {unit}FLOP"
    return f"{f:.3g} FLOP"


def _format_value(v: Any) -> str:
    """Any result/metrics value as a table cell."""
    if v is None:
        return DASH
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.4g}" if math.isfinite(v) else DASH
    return str(v)


def markdown_table(header: list[str], rows: list[list[str]], align: str | None = None) -> str:
    """A GitHub Markdown table, columns padded so it also reads as plain text. `align` has one letter per column:
    'l', 'r' or 'c' (missing letters mean 'l')."""
    ncols = max([len(header), *(len(r) for r in rows)])
    cells = [[_cell(c) for c in row] + [""] * (ncols - len(row)) for row in [header, *rows]]
    kinds = (align or "").ljust(ncols, "l")
    widths = [max(3, *(len(r[i]) for r in cells)) for i in range(ncols)]

    def line(row: list[str]) -> str:
        padded = [c.rjust(w) if k == "r" else c.center(w) if k == "c" else c.ljust(w)
                  for c, w, k in zip(row, widths, kinds)]
        return "| " + " | ".join(padded) + " |"

    rule = {"l": lambda w: ":" + "-" * (w - 1), "r": lambda w: "-" * (w - 1) + ":",
            "c": lambda w: ":" + "-" * (w - 2) + ":"}
    sep = "| " + " | ".join(rule.get(k, rule["l"])(w) for k, w in zip(kinds, widths)) + " |"
    return "\n".join([line(cells[0]), sep, *(line(r) for r in cells[1:])])


def _cell(value: Any) -> str:
    # a '|' inside a cell would end it, and a newline would end the row
    return str(value).replace("|", "\\|").replace("\n", " ")


# ---------------------------------------------------------------------------------------------------------------------
# The run report


def write_run_report(run_dir: Path, result: dict[str, Any], config: dict[str, Any],
                     metrics: list[dict[str, Any]]) -> None:
    """Write run_dir/report.md and run_dir/accuracy.png (loss.png for a next-token run) for one finished run."""
    from quicktrain.plots import plot_run

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    target = result.get("target")
    title = f"{result.get('recipe', 'run')} (seed {result.get('seed', DASH)})"
    lm = result.get("metric") == "loss"
    plot_run(metrics, run_dir / ("loss.png" if lm else "accuracy.png"), target=target if _finite(target) and target
             else None, title=title, metric=result.get("metric", "acc"))
    (run_dir / "report.md").write_text(run_report_markdown(result, config, metrics))


def run_report_markdown(result: dict[str, Any], config: dict[str, Any], metrics: list[dict[str, Any]]) -> str:
    """The text of report.md."""
    config_json = json.dumps(config, indent=2, sort_keys=True, default=str)
    parts = [
        f"# quicktrain run: {result.get('recipe', DASH)}", "",
        headline(result, metrics), "",
        *choices_section(result),
        "## Numbers", "", numbers_table(result), "",
        "## Config", "", "```json", config_json, "```", "",
        "## Metrics", "", metrics_table(metrics, metric=result.get("metric", "acc")), "",
        "![validation loss vs train clock](loss.png)" if result.get("metric") == "loss" else
        "![validation accuracy vs train clock](accuracy.png)", "",
    ]
    return "\n".join(parts)


def choices_section(result: dict[str, Any]) -> list[str]:
    """What the run chose instead of the recipe's constants, and why; what stopped a run short of its target."""
    lines = []
    if result.get("adapted"):
        lines += ["## Adaptive defaults", "",
                  f"The recipe's tuned constants did not apply ({'; '.join(result['adapted'])}), so the run chose by "
                  f"measurement: peak LR {result.get('peak_lr', 0):.3g} (the LR range test's where it ran or paid, "
                  "within `adapt.lr_floor` and `adapt.lr_max`, else `adapt.lr_floor`), trained until the target or "
                  "the `adapt.max_epochs` cap, warmup-stable-decay, checks and scores on a weight average "
                  "(`adapt.ema`; 0: the last weights), no augmentation "
                  "(quicktrain.adapt; `--adapt.mode=off` keeps the recipe's constants).", ""]
    if result.get("notes"):
        lines += ["## Target not reached", "", *[f"- {n}" for n in result["notes"]], ""]
    return lines


def _target_pct(target: Any) -> str:
    if not _finite(target):
        return DASH
    # '94.0%' for a round target, '97.25%' when one decimal would misstate it
    return format_pct(target, 1 if abs(round(100 * target, 1) - 100 * target) < 1e-9 else 2)


def _wall_at_target(result: dict[str, Any], metrics: list[dict[str, Any]]) -> float | None:
    """Wall clock at the check that reached the target (the result only has the train clock there)."""
    t = result.get("seconds_to_target")
    hit = next((m for m in metrics if t is not None and m.get("train_seconds") == t), None)
    return hit.get("wall_seconds") if hit else result.get("wall_seconds")


def _loss(v: Any) -> str:
    return f"{v:.4f}" if _finite(v) else DASH


def _lm_headline(result: dict[str, Any], metrics: list[dict[str, Any]]) -> str:
    """The headline of a next-token run: the target is a validation loss (nats per token), lower is better."""
    target = result.get("target")
    if result.get("reached_target"):
        test = result.get("test_loss_at_target")
        return (f"reached validation loss {_loss(target)} in {format_seconds(result.get('seconds_to_target'))} "
                f"(train clock) / {format_seconds(_wall_at_target(result, metrics))} wall; test loss {_loss(test)}")
    vals = [m["val_loss"] for m in metrics if _finite(m.get("val_loss"))]
    best = min(vals) if vals else result.get("val_loss")
    goal = f"did not reach validation loss {_loss(target)}" if _finite(target) and target > 0 else "trained"
    return (f"{goal} in {format_seconds(result.get('train_seconds'))} (train clock) / "
            f"{format_seconds(result.get('wall_seconds'))} wall; best validation loss {_loss(best)}, final test loss "
            f"{_loss(result.get('test_loss'))}")


def headline(result: dict[str, Any], metrics: list[dict[str, Any]]) -> str:
    """One sentence: reached (or not) the target, in what time on each clock, at what test accuracy (or loss)."""
    if result.get("metric") == "loss":
        return _lm_headline(result, metrics)
    target = _target_pct(result.get("target"))
    if result.get("reached_target"):
        test = result.get("test_acc_at_target")
        test = test if test is not None else result.get("test_acc")
        return (f"reached {target} validation accuracy in {format_seconds(result.get('seconds_to_target'))} "
                f"(train clock) / {format_seconds(_wall_at_target(result, metrics))} wall; "
                f"test accuracy {format_pct(test, 1)}")
    vals = [m["val_acc"] for m in metrics if _finite(m.get("val_acc"))]
    best = max(vals) if vals else result.get("val_acc")
    return (f"did not reach {target} validation accuracy in {format_seconds(result.get('train_seconds'))} "
            f"(train clock) / {format_seconds(result.get('wall_seconds'))} wall; best validation accuracy "
            f"{format_pct(best, 1)}, final test accuracy {format_pct(result.get('test_acc'), 1)}")


def numbers_table(result: dict[str, Any]) -> str:
    r = result.get
    util = r("utilisation")
    peak = r("peak_flops")
    peak_text = f"{peak / 1e9:.4g} GFLOP/s" if _finite(peak) else DASH
    flags = (f"{r('precision', DASH)} / compile {_format_value(r('compile'))} / "
             f"channels_last {_format_value(r('channels_last'))}")
    cost = (f"{format_usd(r('cost_usd_on_demand'))} on-demand, {format_usd(r('cost_usd_spot'))} spot on "
            f"{r('instance') or DASH} (prices of {r('price_date') or DASH}, source: {r('price_source') or DASH})")
    lm = r("metric") == "loss"
    figures = [["test loss (end, nats/token)", _loss(r("test_loss"))],
               ["test loss at target", _loss(r("test_loss_at_target"))],
               ["validation loss (end)", _loss(r("val_loss"))],
               ["next-token accuracy (test, end)", format_pct(r("test_acc"))]] if lm else [
        ["test accuracy (end)", format_pct(r("test_acc"))],
        ["test accuracy at target", format_pct(r("test_acc_at_target"))],
        ["validation accuracy (end)", format_pct(r("val_acc"))]]
    rows = [
        ["recipe / seed", f"{r('recipe', DASH)} / {_format_value(r('seed'))}"],
        ["target (validation)", (f"loss {_loss(r('target'))}" if r("target") else DASH) if lm else
         _target_pct(r("target"))],
        ["reached target", _format_value(r("reached_target"))],
        ["time to target (train clock)", format_seconds(r("seconds_to_target"))],
        ["train clock", format_seconds(r("train_seconds"))],
        ["wall clock", format_seconds(r("wall_seconds"))],
        *figures,
        ["steps / samples / epochs", f"{_format_value(r('steps'))} / {_format_value(r('samples'))} / "
                                     f"{_format_value(r('epochs'))}"],
        ["memory", describe_memory(r("memory") or {})],
        ["model FLOPs (train)", _format_flops(r("flops"))],
        ["utilisation vs measured peak", f"{format_pct(util, 1)} of {peak_text}"],
        ["precision / compile / channels_last", flags],
        ["device", str(r("device") or DASH)],
        ["cost", cost],
        ["torch", str(r("torch_version") or DASH)],
        ["git commit", str(r("git_commit") or DASH)],
    ]
    rows += [[k, _format_value(v)] for k, v in result.items()
             if k not in _SHOWN and (v is None or isinstance(v, (str, int, float, bool)))]
    return markdown_table(["", "value"], rows)


def _subsample(n: int, k: int) -> list[int]:
    """At most k indices out of range(n), evenly spread, always the first and the last."""
    if n <= k:
        return list(range(n))
    return sorted({round(i * (n - 1) / (k - 1)) for i in range(k)})


_METRIC_COLUMNS = (  # (key, header, formatter)
    ("step", "step", _format_value),
    ("epoch", "epoch", lambda v: f"{v:.2f}" if _finite(v) else DASH),
    ("train_seconds", "train s", lambda v: f"{v:.3f}" if _finite(v) else DASH),
    ("wall_seconds", "wall s", lambda v: f"{v:.2f}" if _finite(v) else DASH),
    ("lr", "lr", lambda v: f"{v:.3g}" if _finite(v) else DASH),
    ("batch_size", "batch", _format_value),
    ("size", "size", _format_value),
    ("train_loss", "train loss", lambda v: f"{v:.4f}" if _finite(v) else DASH),
    ("val_loss", "val loss", lambda v: f"{v:.4f}" if _finite(v) else DASH),
    ("val_acc", "val acc", format_pct),
    ("test_acc", "test acc", format_pct),
)
_LM_COLUMNS = _METRIC_COLUMNS[:-2] + (  # a next-token run: losses first; accuracy is next-token accuracy
    ("test_loss", "test loss", _loss),
    ("val_bpb", "val bits/byte", _loss),
    ("val_acc", "val next-token acc", format_pct),
)


def metrics_table(metrics: list[dict[str, Any]], max_rows: int = MAX_METRIC_ROWS, metric: str = "acc") -> str:
    """The checks as a table, evenly thinned to at most `max_rows` rows (metrics.jsonl has them all)."""
    if not metrics:
        return "(no evaluations were recorded)"
    columns = _LM_COLUMNS if metric == "loss" else _METRIC_COLUMNS
    keep = _subsample(len(metrics), max_rows)
    rows = [[fmt(metrics[i].get(key)) for key, _, fmt in columns] for i in keep]
    shown = f"{len(keep)} of {len(metrics)} checks shown; every check is in metrics.jsonl.\n\n"
    note = shown if len(keep) < len(metrics) else ""
    return note + markdown_table([h for _, h, _ in columns], rows, align="r" * len(columns))
