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
from quicktrain.errors import UserError
from quicktrain.loop import Result, train
from quicktrain.methods.registry import TECHNIQUES


def summarise(label: str, results: list[Result]) -> dict[str, Any]:
    """One table row: time to the recipe's target over the seeds that reached it, accuracy over all seeds."""
    target = statistics.median(r.target for r in results)  # per-seed targets under --target-from
    times = [r.seconds_to_target for r in results if r.seconds_to_target is not None]
    accs = [r.test_value for r in results]  # the target's metric: accuracy, or loss for a next-token task
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
        "val_mean": statistics.fmean(r.val_value for r in results), "metric": r0.metric,
        "acc_min": min(accs), "acc_max": max(accs),
        "median_train_seconds": statistics.median(r.train_seconds for r in results),
        "usd_on_demand": median * price[0] if median is not None else None,
        "usd_spot": median * price[1] if median is not None else None,
        "precision": r0.precision, "compile": r0.compile, "device": r0.device, "instance": r0.instance,
    }


def _first_test_time(result: Result) -> float | None:
    """Train clock at the first check whose *test* accuracy reached the target (reported for baselines whose
    published figure is a test accuracy; never used to stop or tune)."""
    target, key = result.target, "test_" + result.metric
    if not target:
        return None
    return next((m["train_seconds"] for m in result.metrics if m.get(key) is not None
                 and (m[key] >= target if result.higher_is_better else m[key] <= target)), None)


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
            if t is not None and other.get("metric", "acc") == "acc":  # not for losses: val and test windows differ
                line += f"; {t / a:.1f}× against {other['label']}'s first time at the target on test (median {t:.3g} s)"
            lines.append(line)
    return lines


def _run_interleaved(configs: list[Config], seeds: int, data_for: Callable[[Config], Any], instance: str | None,
                     prices_path: str | None, progress: bool, log: Callable[[str], None],
                     target_from: int | None = None) -> list[list[Result]]:
    """Seed-major order (seed 0 of every config, then seed 1, ...), so that drift in the machine's speed during a
    long bench (seen here: 30% for minutes) falls on every recipe alike instead of on whichever ran last.

    With `target_from` (an index into configs), that config runs first in each seed and its final validation value
    becomes that seed's target for every other config (e.g. nanoGPT's loss after its 2000 steps, L*); its own time
    to the target is read off its checks afterwards (the first check at or past its final value)."""
    results: list[list[Result]] = [[] for _ in configs]
    order = list(range(len(configs)))
    if target_from is not None:
        order.remove(target_from)
        order.insert(0, target_from)
    for seed in range(seeds):
        goal = None
        for i in order:
            cfg = configs[i]
            tc = replace(cfg.train, seed=seed, **({"target": goal} if goal is not None else {}))
            r = train(replace(cfg, train=tc), data=data_for(cfg), instance=instance, prices_path=prices_path,
                      progress=progress)
            if i == target_from:
                goal = _own_target(r)
            results[i].append(r)
            to_target = f"{r.seconds_to_target:.3f} s" if r.seconds_to_target is not None else "not reached"
            figure = f"test loss {r.test_value:.4f}" if r.metric == "loss" else f"test {100 * r.test_acc:.2f}%"
            log(f"  {cfg.name} seed {seed}: {to_target}, {figure}, train {r.train_seconds:.3f} s")
    return results


def _own_target(r: Result) -> float:
    """Make a run's final validation value its target, post hoc: reached at its first check that got there."""
    key, goal = "val_" + r.metric, r.val_value
    hit = next(m for m in r.metrics if (m[key] >= goal if r.higher_is_better else m[key] <= goal))
    r.target, r.reached_target, r.seconds_to_target = goal, True, hit["train_seconds"]
    r.test_acc_at_target = hit.get("test_acc")
    r.test_loss_at_target = hit.get("test_loss")
    return goal


def run_bench(configs: list[Config], seeds: int = 5, ablate: bool = False, out_dir: Path | None = None,
              instance: str | None = None, prices_path: str | None = None, progress: bool = False,
              log: Callable[[str], None] = print, target_from: str | None = None) -> dict[str, Any]:
    """`target_from`: the name of one of `configs` whose final validation value, seed by seed, is every other
    config's target (see _run_interleaved)."""
    prices.lookup(instance or prices.DEFAULT_INSTANCE, prices.load_prices(prices_path))  # fail before training
    configs = list(configs)
    data_cache: dict[Any, Any] = {}

    def data_for(cfg: Config) -> Any:
        if cfg.data.language:  # token data is opened by the run itself (memory-mapped, nothing to share)
            return None
        if cfg.data not in data_cache:
            data_cache[cfg.data] = load_data(cfg.data)
        return data_cache[cfg.data]

    seen: dict[str, int] = {}
    for i, cfg in enumerate(configs):  # `bench mnist1d mnist1d` is legal: keep the rows apart
        seen[cfg.name] = seen.get(cfg.name, 0) + 1
        if seen[cfg.name] > 1:
            configs[i] = replace(cfg, name=f"{cfg.name}#{seen[cfg.name]}")
    names = [c.name for c in configs]
    if target_from is not None and target_from not in names:
        raise UserError(f"--target-from {target_from}: not one of the benched recipes ({', '.join(names)})")
    source = names.index(target_from) if target_from is not None else None
    target = configs[0].train.target
    variants: list[tuple[str, Config]] = [(cfg.name, cfg) for cfg in configs]
    if ablate:
        base = configs[0]
        for t in (t for t in TECHNIQUES if t.applies(base)):  # one ablation row per technique that applies
            label, change = t.variant(base)
            variants.append((label, replace(apply_overrides(base, change), name=f"{base.name} {label}")))
    log(f"{len(variants)} configurations x {seeds} seeds, interleaved by seed")
    all_results = _run_interleaved([c for _, c in variants], seeds, data_for, instance, prices_path, progress, log,
                                   source)
    runs = {cfg.name: rs for (_, cfg), rs in zip(variants, all_results)}
    summaries = [summarise(label, rs) for (label, _), rs in zip(variants, all_results)]
    rows = summaries[: len(configs)]
    ablation = [rows[0] | {"label": f"{configs[0].name} (all on)"}, *summaries[len(configs):]] if ablate else []

    target = rows[0]["target"] if source is not None else target
    summary = {"target": target, "target_from": target_from, "seeds": seeds, "rows": rows, "ablation": ablation,
               "headline": headline(rows)}
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

    lm = rows[0].get("metric") == "loss"
    what = "loss" if lm else "acc"
    header = ["recipe", f"target (val {what})", "reached", "time to target: median [min, max]", f"val {what} (mean)",
              f"test {what} (mean ± std)", "$ on-demand", "$ spot"]
    body = []
    for r in rows:
        spread = (f"{format_seconds(r['median_seconds'])} [{format_seconds(r['min_seconds'])}, "
                  f"{format_seconds(r['max_seconds'])}]") if r["median_seconds"] is not None else "not reached"
        if lm:
            figures = [f"{r['target']:.4f}", f"{r['val_mean']:.4f}", f"{r['acc_mean']:.4f} ± {r['acc_std']:.4f}"]
        else:
            figures = [format_pct(r["target"], 1), format_pct(r["val_mean"]),
                       f"{100 * r['acc_mean']:.2f}% ± {100 * r['acc_std']:.2f}"]
        body.append([r["label"], figures[0], f"{r['reached']}/{r['n']}", spread, figures[1], figures[2],
                     format_usd(r["usd_on_demand"]), format_usd(r["usd_spot"])])
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
    lm = summary["rows"][0].get("metric") == "loss"
    plot_curves(main, out_dir / "bench_curves.png", target=summary["target"],
                title="validation loss vs train clock" if lm else "validation accuracy vs train clock",
                metric="loss" if lm else "acc")
    if summary["ablation"]:
        plot_ablation(summary["ablation"], out_dir / "bench_ablation.png", title="ablation")
