"""What `quicktrain tune` writes: tune.md (trials table, parameter importance), trials.json and two plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

MAX_ROWS = 40


def importances(study: Any) -> dict[str, float]:
    """Optuna's fANOVA parameter importances, or {} when there are too few completed trials to estimate them.

    The evaluator is named, not left to Optuna's default, which changed to PED-ANOVA in Optuna 5 (and warns, then
    reports equal importances, on the few trials a short budget gives); seeded so a report is reproducible."""
    import optuna

    try:
        evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
        return dict(optuna.importance.get_param_importances(study, evaluator=evaluator))
    except (RuntimeError, ValueError, ZeroDivisionError):
        return {}


def write_tune_report(out: Path, study: Any, space: dict[str, Any], objective: str,
                      confirmed: list[dict[str, Any]] | None = None, lm: bool = False) -> None:
    """tune.md, trials.json, confirmation.json and the plots. `lm`: a next-token recipe, whose "accuracy"
    objective is minus the validation loss and whose mean validation is a loss."""
    from optuna.trial import TrialState

    from quicktrain.plots import plot_importance, plot_tune_history
    from quicktrain.report import markdown_table

    out.mkdir(parents=True, exist_ok=True)
    trials = study.get_trials(deepcopy=False)
    rows = [{"number": t.number, "state": t.state.name, "value": t.value, "params": t.params,
             "compute_steps": t.user_attrs.get("compute_steps", 0),
             "compute_seconds": t.user_attrs.get("compute_seconds", 0.0),
             "retry_of": t.system_attrs.get("failed_trial")} for t in trials]
    (out / "trials.json").write_text(json.dumps(rows, indent=1, default=str) + "\n")
    imp = importances(study)
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    minimize = objective == "time"
    ranked = sorted(done, key=lambda t: t.value if minimize else -t.value)[:MAX_ROWS]
    keys = list(space)
    header = ["trial", "value", *[k.split(".")[-1] for k in keys], "steps"]
    body = [[str(t.number), f"{t.value:.4g}", *[_fmt(t.params.get(k)) for k in keys],
             str(t.user_attrs.get("compute_steps", 0))] for t in ranked]
    goal = ("train-clock seconds to the target (lower is better)" if minimize
            else "minus the validation loss (higher is better)" if lm else "validation accuracy (higher is better)")
    lines = [f"# quicktrain tune: {study.study_name}", "",
             f"Objective: {goal}. "
             f"{len(done)} complete, {sum(t.state == TrialState.PRUNED for t in trials)} pruned, "
             f"{sum(t.state == TrialState.FAIL for t in trials)} failed.", "",
             f"## Best {len(ranked)} trials", "", markdown_table(header, body), ""]
    if confirmed:
        pick = min if minimize else max
        winner = pick(confirmed, key=lambda c: c["value"])["label"]
        lines += ["## Confirmation on fresh seeds", "",
                  "The best candidates and the recipe's own values, rerun on seeds the search never used; the best "
                  "confirmed one is the tuned recipe (a search's best score is partly luck).", "",
                  markdown_table(["candidate", "confirmed value", "mean validation", "chosen"],
                                 [[c["label"], f"{c['value']:.4g}",
                                   "diverged" if c["val_mean"] is None else
                                   f"loss {c['val_mean']:.4f}" if lm else f"{100 * c['val_mean']:.2f}%",
                                   "yes" if c["label"] == winner else ""] for c in confirmed]), ""]
        (out / "confirmation.json").write_text(json.dumps(confirmed, indent=1, default=str) + "\n")
    if imp:
        lines += ["## Parameter importance (fANOVA)", "",
                  markdown_table(["parameter", "importance"], [[k, f"{v:.3f}"] for k, v in imp.items()]), ""]
    (out / "tune.md").write_text("\n".join(lines))
    plot_tune_history([(t.number, t.value) for t in done], out / "tune_history.png", minimize=minimize)
    if imp:
        plot_importance(imp, out / "tune_importance.png")


def _fmt(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)
