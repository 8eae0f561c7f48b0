"""`quicktrain bench`: recipes x seeds in one process, on the same machine and the same data, side by side.

Produces a DAWNBench-style table (time to target: median, min, max and how many seeds reached it; final test
accuracy mean ± std; $ at on-demand and spot prices), a headline ("fast vs plain: N× faster and M× cheaper"), and with
`ablate` one row per technique toggled on the first recipe. Written as bench.md, bench.json and PNGs.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from quicktrain import prices
from quicktrain.config import Config, apply_overrides
from quicktrain.data import load_data
from quicktrain.loop import Result, train
from quicktrain.methods.registry import TECHNIQUES


def summarise(label: str, results: list[Result]) -> dict[str, Any]:
    """One table row: time to the recipe's target over the seeds that reached it, accuracy over all seeds."""
    target = results[0].target
    times = [r.seconds_to_target for r in results if r.seconds_to_target is not None]
    accs = [r.test_acc for r in results]
    test_times = [t for t in (_first_test_time(r) for r in results) if t is not None]
    median = statistics.median(times) if times else None
    r0 = results[0]
    secs = r0.train_seconds
    price = (r0.cost_usd_on_demand / secs, r0.cost_usd_spot / secs) if secs else (0.0, 0.0)
    return {
        "label": label, "recipe": r0.recipe, "target": target, "n": len(results), "reached": len(times),
        "median_seconds": median, "min_seconds": min(times) if times else None,
        "max_seconds": max(times) if times else None,
        "median_seconds_to_test_target": statistics.median(test_times) if test_times else None,
        "test_reached": len(test_times),
        "acc_mean": statistics.fmean(accs), "acc_std": statistics.pstdev(accs) if len(accs) > 1 else 0.0,
        "val_mean": statistics.fmean(r.val_acc for r in results),
        "acc_min": min(accs), "acc_max": max(accs),
        "median_train_seconds": statistics.median(r.train_seconds for r in results),
        "usd_on_demand": median * price[0] if median is not None else None,
        "usd_spot": median * price[1] if median is not None else None,
        "precision": r0.precision, "compile": r0.compile, "device": r0.device, "instance": r0.instance,
    }


def _first_test_time(result: Result) -> float | None:
    """Train clock at the first check whose *test* accuracy reached the target (reported for baselines whose
    published figure is a test accuracy; never used to stop or tune)."""
    target = result.target
    return next((m["train_seconds"] for m in result.metrics
                 if m["test_acc"] is not None and m["test_acc"] >= target), None)


def headline(rows: list[dict[str, Any]]) -> list[str]:
    """'fast vs plain: N× faster and M× cheaper to the target on this hardware': the first row against each other row
    with the same target (a ratio between different targets would mean nothing). Where the other recipe's published
    figure is a test accuracy (the mnist1d reference), the ratio to its first time at the target on *test* follows."""
    first, lines = rows[0], []
    for other in rows[1:]:
        if other["target"] != first["target"]:
            continue
        a, b = first["median_seconds"], other["median_seconds"]
        name = f"{first['label']} vs {other['label']}"
        if a is None:
            lines.append(f"{first['label']} did not reach the target; no speed-up to report against {other['label']}")
        elif b is None:
            lines.append(f"{name}: {other['label']} did not reach the target in {other['n']} seeds (median budget "
                         f"{other['median_train_seconds']:.3g} s): more than {other['median_train_seconds'] / a:.0f}× "
                         "faster on this hardware")
        else:
            cheaper = other["usd_on_demand"] / first["usd_on_demand"] if first["usd_on_demand"] else b / a
            line = (f"{name}: {b / a:.1f}× faster and {cheaper:.1f}× cheaper to the target on this hardware "
                    f"(median {a:.3g} s vs {b:.3g} s)")
            t = other["median_seconds_to_test_target"]
            if t is not None:
                line += f"; {t / a:.1f}× against {other['label']}'s first time at the target on test (median {t:.3g} s)"
            lines.append(line)
    return lines


def _run_interleaved(configs: list[Config], seeds: int, data_for: Callable[[Config], Any], instance: str | None,
                     prices_path: str | None, progress: bool, log: Callable[[str], None]) -> list[list[Result]]:
    """Seed-major order (seed 0 of every config, then seed 1, ...), so that drift in the machine's speed during a
    long bench (seen here: 30% for minutes) falls on every recipe alike instead of on whichever ran last."""
    results: list[list[Result]] = [[] for _ in configs]
    for seed in range(seeds):
        for cfg, out in zip(configs, results):
            r = train(replace(cfg, train=replace(cfg.train, seed=seed)), data=data_for(cfg), instance=instance,
                      prices_path=prices_path, progress=progress)
            out.append(r)
            to_target = f"{r.seconds_to_target:.3f} s" if r.seconds_to_target is not None else "not reached"
            log(f"  {cfg.name} seed {seed}: {to_target}, test {100 * r.test_acc:.2f}%, train {r.train_seconds:.3f} s")
    return results


def run_bench(configs: list[Config], seeds: int = 5, ablate: bool = False, out_dir: Path | None = None,
              instance: str | None = None, prices_path: str | None = None, progress: bool = False,
              log: Callable[[str], None] = print) -> dict[str, Any]:
    prices.lookup(instance or prices.DEFAULT_INSTANCE, prices.load_prices(prices_path))  # fail before training
    configs = list(configs)
    data_cache: dict[Any, Any] = {}

    def data_for(cfg: Config) -> Any:
        if cfg.data not in data_cache:
            data_cache[cfg.data] = load_data(cfg.data)
        return data_cache[cfg.data]

    seen: dict[str, int] = {}
    for i, cfg in enumerate(configs):  # `bench mnist1d mnist1d` is legal: keep the rows apart
        seen[cfg.name] = seen.get(cfg.name, 0) + 1
        if seen[cfg.name] > 1:
            configs[i] = replace(cfg, name=f"{cfg.name}#{seen[cfg.name]}")
    target = configs[0].train.target
    variants: list[tuple[str, Config]] = [(cfg.name, cfg) for cfg in configs]
    if ablate:
        base = configs[0]
        for t in TECHNIQUES:  # one ablation row per registered technique
            label, change = t.variant(base)
            variants.append((label, replace(apply_overrides(base, change), name=f"{base.name} {label}")))
    log(f"{len(variants)} configurations x {seeds} seeds, interleaved by seed")
    all_results = _run_interleaved([c for _, c in variants], seeds, data_for, instance, prices_path, progress, log)
    runs = {cfg.name: rs for (_, cfg), rs in zip(variants, all_results)}
    summaries = [summarise(label, rs) for (label, _), rs in zip(variants, all_results)]
    rows = summaries[: len(configs)]
    ablation = [rows[0] | {"label": f"{configs[0].name} (all on)"}, *summaries[len(configs):]] if ablate else []

    summary = {"target": target, "seeds": seeds, "rows": rows, "ablation": ablation, "headline": headline(rows)}
    table = bench_table(rows)
    log(table)
    for line in summary["headline"]:
        log(line)
    if ablation:
        log(bench_table(ablation))
    if out_dir is not None:
        _write(out_dir, summary, runs, table)
        summary["out_dir"] = str(out_dir)
    return summary


def bench_table(rows: list[dict[str, Any]]) -> str:
    from quicktrain.report import format_pct, format_seconds, format_usd, markdown_table

    header = ["recipe", "target (val)", "reached", "time to target: median [min, max]", "val acc (mean)",
              "test acc (mean ± std)", "$ on-demand", "$ spot"]
    body = []
    for r in rows:
        spread = (f"{format_seconds(r['median_seconds'])} [{format_seconds(r['min_seconds'])}, "
                  f"{format_seconds(r['max_seconds'])}]") if r["median_seconds"] is not None else "not reached"
        body.append([r["label"], format_pct(r["target"], 1), f"{r['reached']}/{r['n']}", spread,
                     format_pct(r["val_mean"]),
                     f"{100 * r['acc_mean']:.2f}% ± {100 * r['acc_std']:.2f}", format_usd(r["usd_on_demand"]),
                     format_usd(r["usd_spot"])])
    return markdown_table(header, body, align="lrrrrrrr")


def _write(out_dir: Path, summary: dict[str, Any], runs: dict[str, list[Result]], table: str) -> None:
    from quicktrain.plots import plot_ablation, plot_curves

    out_dir.mkdir(parents=True, exist_ok=True)
    full = summary | {"runs": {name: [r.to_json() | {"metrics": r.metrics} for r in rs] for name, rs in runs.items()}}
    (out_dir / "bench.json").write_text(json.dumps(full, indent=1) + "\n")
    lines = ["# quicktrain bench", "", table, "", *[f"- {h}" for h in summary["headline"]], ""]
    if summary["ablation"]:
        lines += ["## Ablation", "", bench_table(summary["ablation"]), ""]
    (out_dir / "bench.md").write_text("\n".join(lines))
    main = {row["recipe"]: [r.metrics for r in runs[row["recipe"]]] for row in summary["rows"]}
    plot_curves(main, out_dir / "bench_curves.png", target=summary["target"],
                title="validation accuracy vs train clock")
    if summary["ablation"]:
        plot_ablation(summary["ablation"], out_dir / "bench_ablation.png", title="ablation")
