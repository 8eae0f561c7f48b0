"""`quicktrain tune`: budgeted hyperparameter search with Optuna instead of a grid.

TPE proposes (Bergstra et al. 2011) and Hyperband prunes (Li et al. 2018) on intermediate validation accuracy; the
trials run in this process (no process per trial). Two objectives:
- `time` (default): train-clock seconds to the recipe's target. A trial trains up to `seeds` seeds of the candidate
  and scores the median time if the mean *validation* accuracy reached target + margin (a margin, because the recipe
  must hit the target on average, not once), else 10,000 s plus the shortfall. The seeds are the pruning resource:
  after each seed the score so far is reported, so Hyperband can drop a hopeless candidate after one seed.
- `accuracy`: validation accuracy at the end of the candidate's own budget, with checks at 1/4, 1/2, 3/4 of it as the
  pruning resource.
The recipe's own values are the first trial, so the search starts from the hand-set point. Compute is accounted in
training steps and train-clock seconds over every run, pruned ones included. Test accuracy is never read.

Confirmation: the search's best score is the luckiest of hundreds of noisy 3-seed measurements (the winner's curse).
Measured: a 600 s study on mnist1d picked a 2.3-epoch candidate that had scored 95% mean validation on its 3 seeds
and then reached only 93.3% mean test accuracy over 20 fresh seeds; its 8 runners-up all confirmed at 94.0-94.3%
validation on 10 fresh seeds, below the 95% they had passed. So the last CONFIRM_SHARE of the budget is kept back:
the recipe's own values, then the candidates in order of their search score, are each rerun on `confirm_seeds` fresh
seeds (never the search's) and scored by the same objective, until CONFIRM_PASSES candidates have met the target,
the reserve is spent, or CONFIRM_MAX have been tried. For the time objective a candidate confirms only if its mean
validation accuracy *less two standard errors* over those seeds reaches target + margin: going down a ranking tests
many candidates, and without that allowance the best of 50 again won by luck (measured: confirmed at 95.4%
validation on 10 seeds, then 94.6% validation and 94.2% test over 20 others). The best confirmed one is returned; if
nothing beats the recipe's own values, those come back, and the log says so.
"""

from __future__ import annotations

import json
import math
import os
import random
import statistics
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

from quicktrain import prices
from quicktrain.config import Config, apply_overrides, dumps
from quicktrain.data import load_data
from quicktrain.errors import TrainingDiverged, UserError
from quicktrain.loop import train
from quicktrain.search_space import grid, parse_budget, sample
from quicktrain.tune_storage import open_storage

MISS = 1e4  # score of a trial that misses the target, plus its shortfall
CONFIRM_PASSES = 4  # confirmation stops once this many candidates (besides the recipe) met the target on fresh seeds
CONFIRM_MAX = 50  # ... or this many were tried
CONFIRM_SHARE = 0.15  # of a time, dollar or steps budget, kept back for the confirmation
CONFIRM_SEED0 = 1000  # confirmation seeds start here: disjoint from the search's seeds 0, 1, 2, ...
CONFIRM_Z = 2.0  # a confirmed candidate's mean validation, less 2 standard errors over its seeds, must reach the bar


@dataclass
class TuneResult:
    best_params: dict[str, Any] | None
    best_value: float | None
    trials_complete: int
    trials_pruned: int
    trials_failed: int
    compute_steps: int
    compute_seconds: float
    best_recipe_path: str | None
    study_name: str
    objective: str
    search_best_value: float | None = None  # the study's best, before confirmation
    confirmation: list[dict[str, Any]] | None = None  # each confirmed candidate: label, params, value, val_mean

    def to_json(self) -> dict[str, Any]:
        return self.__dict__.copy()


class _Objective:
    """Runs one candidate; records its compute on the trial (pruned or not) so budgets count everything."""

    def __init__(self, base: Config, space: dict[str, Any], splits: Any, kind: str, seeds: int, margin: float) -> None:
        self.base, self.space, self.splits = base, space, splits
        self.kind, self.seeds, self.margin = kind, seeds, margin

    def __call__(self, trial: Any) -> float:
        cfg = apply_overrides(self.base, sample(trial, self.space))
        steps, seconds = [0], [0.0]
        trial.set_user_attr("worker", os.getpid())

        def account(record: dict[str, Any]) -> None:
            steps[-1], seconds[-1] = record["step"], record["train_seconds"]

        try:
            return self._time(trial, cfg, steps, seconds, account) if self.kind == "time" \
                else self._accuracy(trial, cfg, account)
        except TrainingDiverged:  # a candidate whose loss blew up is the worst kind of result, not a crash
            trial.set_user_attr("diverged", True)
            return 2 * MISS if self.kind == "time" else 0.0
        finally:
            trial.set_user_attr("compute_steps", int(sum(steps)))
            trial.set_user_attr("compute_seconds", float(sum(seconds)))

    def _accuracy(self, trial: Any, cfg: Config, account: Callable[[dict[str, Any]], None]) -> float:
        import optuna

        every = {"train.eval_every_steps": max(1, cfg.train.steps // 4)} if cfg.train.steps else \
            {"train.eval_every": cfg.train.epochs / 4}
        cfg = apply_overrides(cfg, {"train.target": 0.0, "train.eval_from": 0.0, **every})
        checks = [0]

        def on_eval(record: dict[str, Any]) -> None:
            account(record)
            checks[0] += 1
            trial.report(quality_of(record, cfg), checks[0])
            if checks[0] < 4 and trial.should_prune():
                raise optuna.TrialPruned()

        return quality(train(replace(cfg, train=replace(cfg.train, seed=0)), data=self.splits, on_eval=on_eval,
                             progress=False))

    def _time(self, trial: Any, cfg: Config, steps: list[int], seconds: list[float],
              account: Callable[[dict[str, Any]], None]) -> float:
        import optuna

        cfg = apply_overrides(cfg, {"train.stop_on_target": False})  # a seed that reaches early still trains its budget
        runs = []
        for seed in range(self.seeds):
            if seed:
                steps.append(0)
                seconds.append(0.0)
            runs.append(train(replace(cfg, train=replace(cfg.train, seed=seed)), data=self.splits, on_eval=account,
                              progress=False))
            value = time_score(runs, cfg.train.target, self.margin)
            trial.report(value, seed + 1)
            if seed + 1 < self.seeds and trial.should_prune():
                raise optuna.TrialPruned()
        return value


def quality(result: Any) -> float:
    """A run's final validation figure as a higher-is-better number: the accuracy, or minus the loss of a
    next-token run (so one "maximize" study serves both tasks)."""
    return result.val_acc if getattr(result, "metric", "acc") == "acc" else -result.val_value


def quality_of(record: dict[str, Any], cfg: Config) -> float:
    return -record["val_loss"] if cfg.data.language else record["val_acc"]


def time_score(runs: list[Any], target: float, margin: float, z: float = 0.0) -> float:
    """Median train seconds if the mean validation accuracy, less `z` standard errors, reached target + margin;
    else MISS plus the shortfall. For a next-token run (a loss target) the same on minus the loss: the mean loss,
    plus `z` standard errors, must reach target - margin."""
    vals = [quality(r) for r in runs]
    goal = target + margin if getattr(runs[0], "metric", "acc") == "acc" else -(target - margin)
    mean_val = statistics.fmean(vals)
    if z and len(vals) > 1:
        mean_val -= z * statistics.stdev(vals) / len(vals) ** 0.5
    if mean_val >= goal:
        return statistics.median(r.train_seconds for r in runs)
    return MISS * (1 + goal - mean_val)


def confirm(base: Config, splits: Any, candidates: list[tuple[str, dict[str, Any]]], kind: str, seeds: int,
            margin: float, log: Callable[[str], None] = print, *, deadline: float | None = None,
            max_steps: float | None = None) -> list[dict[str, Any]]:
    """Rerun candidates (the first is the recipe's own values) on `seeds` fresh seeds, scored by the objective, until
    CONFIRM_PASSES of the others met the target or the reserve (`deadline` on time.monotonic, `max_steps`) is spent.
    The recipe and one candidate are always confirmed."""
    out: list[dict[str, Any]] = []
    passes, lm = 0, base is not None and base.data.language
    for label, params in candidates[: CONFIRM_MAX + 1]:
        spent = sum(c["steps"] for c in out)
        if len(out) >= 2 and ((deadline is not None and time.monotonic() >= deadline)
                              or (max_steps is not None and spent >= max_steps)):
            log("  confirmation: the reserved budget is spent")
            break
        out.append(_confirm_one(base, splits, label, params, kind, seeds, margin))
        c = out[-1]
        shown = "diverged" if c["val_mean"] is None else f"loss {c['val_mean']:.4f}" if lm else \
            f"{100 * c['val_mean']:.2f}%"
        log(f"  confirm {label}: {c['value']:.4g} (mean validation {shown} over {seeds} fresh seeds)")
        passes += label != "recipe" and (kind == "accuracy" or c["value"] < MISS)
        if passes >= CONFIRM_PASSES:
            break
    return out


def _confirm_one(base: Config, splits: Any, label: str, params: dict[str, Any], kind: str, seeds: int,
                 margin: float) -> dict[str, Any]:
    cfg = apply_overrides(base, params)
    cfg = apply_overrides(cfg, {"train.stop_on_target": False} if kind == "time" else {"train.target": 0.0})
    runs = []
    try:
        for s in range(seeds):
            runs.append(train(replace(cfg, train=replace(cfg.train, seed=CONFIRM_SEED0 + s)), data=splits,
                              progress=False))
    except TrainingDiverged:
        value = 2 * MISS if kind == "time" else 0.0
    else:
        value = time_score(runs, cfg.train.target, margin, CONFIRM_Z) if kind == "time" else \
            statistics.fmean(quality(r) for r in runs)
    return {"label": label, "params": params, "value": value,
            "val_mean": statistics.fmean(r.val_value for r in runs) if len(runs) == seeds else None,
            "steps": sum(r.steps for r in runs), "seconds": sum(r.train_seconds for r in runs)}


def _stopper(kind: str, amount: float) -> Callable[[Any, Any], None]:
    """A callback that stops the study once a steps budget (over all workers' trials) is spent."""

    def callback(study: Any, trial: Any) -> None:
        if kind == "steps" and sum(t.user_attrs.get("compute_steps", 0)
                                   for t in study.get_trials(deepcopy=False)) >= amount:
            study.stop()

    return callback


def tune(recipe: Any, budget: str, *, space: dict[str, Any] | None = None, storage: str | None = None,
         study_name: str | None = None, objective: str = "time", trials: int | None = None, seeds: int = 3,
         margin: float = 0.01, seed: int | None = 0, run_dir: str | Path | None = None, instance: str | None = None,
         heartbeat: int = 10, confirm_seeds: int = 10, log: Callable[[str], None] = print) -> TuneResult:
    """Search the recipe's space within `budget` ('600s', '20000steps', '0.50usd'), confirm the best candidates on
    `confirm_seeds` fresh seeds (0: no confirmation), and write the best confirmed config as a recipe file in
    `run_dir`. Several processes may call this with the same `storage` and `study_name` to share a study."""
    import optuna

    from quicktrain.recipes import load_recipe
    from quicktrain.search_space import recipe_space

    base = load_recipe(recipe)
    if objective not in ("time", "accuracy"):
        raise UserError(f"--objective must be time or accuracy (got {objective!r})")
    if seeds < 1 or not 0 <= margin < 1:
        raise UserError(f"--seeds must be >= 1 and --margin in [0, 1) (got {seeds}, {margin})")
    if confirm_seeds < 0:
        raise UserError(f"--confirm-seeds must be >= 0 (got {confirm_seeds})")
    space = space if space is not None else recipe_space(recipe, base)
    kind, amount = parse_budget(budget)
    timeout = amount if kind == "s" else None
    if kind == "usd":
        price = prices.lookup(instance or prices.DEFAULT_INSTANCE, prices.load_prices())
        timeout = amount / price.on_demand * 3600.0
    search_share = 1.0 - CONFIRM_SHARE if confirm_seeds else 1.0
    deadline = time.monotonic() + timeout if timeout is not None else None  # the whole budget, confirmation included
    timeout = timeout * search_share if timeout is not None else None
    store = open_storage(storage, heartbeat)
    name = study_name or f"{base.name}-{objective}"
    worker_seed = seed if storage is None or seed is None else seed * 1000 + os.getpid() % 1000  # workers must differ
    direction = "minimize" if objective == "time" else "maximize"
    max_resource = seeds if objective == "time" else 4
    try:
        study = optuna.create_study(storage=store, study_name=name, direction=direction, load_if_exists=True,
                                    sampler=optuna.samplers.TPESampler(seed=worker_seed),
                                    pruner=optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max_resource,
                                                                          reduction_factor=3))
    except Exception as exc:  # e.g. an existing study with another direction
        raise UserError(f"study {name!r} in {storage}: {str(exc).splitlines()[0][:200]}") from None
    if not study.trials:  # the recipe's own values first (those inside the space): start from the hand-set point
        own = {k: _current(base, k) for k in space}
        study.enqueue_trial({k: v for k, v in own.items() if _inside(space[k], v)}, skip_if_exists=True)
    splits = None if base.data.language else load_data(base.data)  # token data: each run opens its files
    callbacks: list[Any] = [_stopper(kind, amount * search_share)]
    if trials is not None:
        from optuna.study import MaxTrialsCallback
        from optuna.trial import TrialState

        callbacks.append(MaxTrialsCallback(trials, states=(TrialState.COMPLETE, TrialState.PRUNED)))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    log(f"study {name!r}: objective {objective}, budget {budget}, {len(space)} parameters, "
        f"storage {storage or 'memory'}")
    study.optimize(_Objective(base, space, splits, objective, seeds, margin), timeout=timeout, callbacks=callbacks,
                   catch=(), gc_after_trial=False)
    confirmed = None
    if confirm_seeds:
        log(f"confirming the recipe's own values and the best candidates on {confirm_seeds} fresh seeds")
        search_steps = sum(t.user_attrs.get("compute_steps", 0) for t in study.get_trials(deepcopy=False))
        confirmed = confirm(base, splits, _candidates(study, objective), objective, confirm_seeds, margin, log,
                            deadline=deadline, max_steps=amount - search_steps if kind == "steps" else None)
    return _finish(study, base, space, objective, run_dir, budget, log, confirmed)


def _candidates(study: Any, objective: str) -> list[tuple[str, dict[str, Any]]]:
    """The recipe's own values, then the distinct completed trials, best first (at most CONFIRM_MAX)."""
    from optuna.trial import TrialState

    done = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE and t.value is not None]
    done.sort(key=lambda t: t.value, reverse=objective != "time")
    out: list[tuple[str, dict[str, Any]]] = [("recipe", {})]
    seen: list[dict[str, Any]] = []
    for t in done:
        if t.params not in seen:
            seen.append(t.params)
            out.append((f"trial {t.number}", dict(t.params)))
        if len(out) > CONFIRM_MAX:
            break
    return out


def _inside(spec: tuple[Any, ...], value: Any) -> bool:
    if spec[0] == "choice":
        return value in spec[1]
    return isinstance(value, (int, float)) and spec[1] <= value <= spec[2]


def _current(cfg: Config, key: str) -> Any:
    value: Any = cfg
    for part in key.split("."):
        value = getattr(value, part)
    return value


def _finish(study: Any, base: Config, space: dict[str, Any], objective: str, run_dir: str | Path | None, budget: str,
            log: Callable[[str], None], confirmed: list[dict[str, Any]] | None = None) -> TuneResult:
    from optuna.trial import TrialState

    from quicktrain.tune_report import write_tune_report

    trials = study.get_trials(deepcopy=False)
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    best = study.best_trial if done else None
    out = (Path(run_dir) if run_dir is not None
           else Path("runs") / "tune" / time.strftime(f"{study.study_name}-%Y%m%d-%H%M%S"))
    chosen: dict[str, Any] | None = None  # label, params, value
    if confirmed:
        pick = min if objective == "time" else max
        chosen = pick(confirmed, key=lambda c: c["value"])  # ties go to the earliest: the recipe's own values
        if chosen["label"] == "recipe":
            log("nothing the search found beat the recipe's own values on confirmation; returning them")
    elif best is not None:
        chosen = {"label": f"trial {best.number}", "params": dict(best.params), "value": best.value}
    recipe_path = None
    if chosen is not None:
        tuned = replace(apply_overrides(base, chosen["params"]), name=f"{base.name}_tuned")
        recipe_path = write_recipe(out / f"{tuned.name}.py", tuned, chosen, objective, study.study_name, budget)
    write_tune_report(out, study, space, objective, confirmed, lm=base.data.language)
    count = lambda s: sum(t.state == s for t in trials)  # noqa: E731
    extra = confirmed or []
    result = TuneResult(
        best_params=chosen["params"] if chosen else None, best_value=chosen["value"] if chosen else None,
        trials_complete=count(TrialState.COMPLETE), trials_pruned=count(TrialState.PRUNED),
        trials_failed=count(TrialState.FAIL),
        compute_steps=sum(t.user_attrs.get("compute_steps", 0) for t in trials) + sum(c["steps"] for c in extra),
        compute_seconds=(sum(t.user_attrs.get("compute_seconds", 0.0) for t in trials)
                         + sum(c["seconds"] for c in extra)),
        best_recipe_path=str(recipe_path) if recipe_path else None, study_name=study.study_name, objective=objective,
        search_best_value=best.value if best else None, confirmation=confirmed)
    log(f"{result.trials_complete} complete, {result.trials_pruned} pruned, {result.trials_failed} failed; "
        f"best {result.best_value} with {result.best_params}")
    return result


def write_recipe(path: Path, cfg: Config, chosen: dict[str, Any], objective: str, study: str, budget: str) -> Path:
    """The best config as a recipe file `quicktrain run PATH` accepts (the whole config, so it never drifts)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    params = json.dumps(chosen["params"], indent=1, sort_keys=True, default=str)
    path.write_text(
        f'"""Tuned by `quicktrain tune` (study {study!r}, objective {objective}, budget {budget}), '
        f'{time.strftime("%Y-%m-%d")}.\n\nBest ({chosen["label"]}): value {chosen["value"]}; '
        f'its parameters:\n{params}\n"""\n\n'
        "import json\n\nfrom quicktrain.config import from_dict\n\n"
        f"CONFIG = from_dict(json.loads({dumps(cfg)!r}))\n")
    return path


def compare_grid(recipe: Any, *, space: dict[str, Any] | None = None, levels: int = 3, study_seeds: int = 3,
                 tolerance: float = 0.005, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Grid search against TPE + Hyperband on the same space with the same compute accounting (training steps),
    objective: validation accuracy at the candidate's budget. Reports how much compute each needed to get within
    `tolerance` (0.5 points) of the grid's best."""
    import optuna

    from quicktrain.recipes import load_recipe
    from quicktrain.search_space import recipe_space

    base = load_recipe(recipe)
    space = space if space is not None else recipe_space(recipe, base)
    splits = None if base.data.language else load_data(base.data)
    points = grid(space, levels)
    log(f"grid: {len(points)} points")
    results = []
    for i, point in enumerate(points):
        cfg = apply_overrides(base, {**point, "train.target": 0.0, "train.eval_from": 1.0})
        r = train(replace(cfg, train=replace(cfg.train, seed=0)), data=splits, progress=False)
        results.append((r.val_acc, r.steps))
        if (i + 1) % 50 == 0:
            log(f"  grid {i + 1}/{len(points)}: best so far {100 * max(a for a, _ in results):.2f}%")
    grid_best, grid_steps = max(a for a, _ in results), sum(s for _, s in results)
    goal = grid_best - tolerance
    orders = []
    for s in range(3):  # a grid has no natural order: how soon it gets there in random orders
        order = results[:]
        random.Random(s).shuffle(order)
        spent = 0
        for acc, st in order:
            spent += st
            if acc >= goal:
                break
        orders.append(spent)
    searches = []
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for s in range(study_seeds):
        objective = _Objective(base, space, splits, "accuracy", 1, 0.0)
        study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=s),
                                    pruner=optuna.pruners.HyperbandPruner(min_resource=1, max_resource=4,
                                                                          reduction_factor=3))
        spent, hit = 0, None
        while spent < grid_steps and hit is None:
            study.optimize(objective, n_trials=1)
            t = study.trials[-1]
            spent += t.user_attrs.get("compute_steps", 0)
            if t.value is not None and t.value >= goal:
                hit = spent
        searches.append({"study_seed": s, "steps_to_goal": hit, "trials": len(study.trials),
                         "fraction_of_grid": hit / grid_steps if hit else None})
        log(f"  search seed {s}: {'reached' if hit else 'did not reach'} {100 * goal:.2f}% after {spent} steps "
            f"({100 * spent / grid_steps:.1f}% of the grid), {len(study.trials)} trials")
    fractions = [x["fraction_of_grid"] if x["fraction_of_grid"] is not None else math.inf for x in searches]
    return {"grid_points": len(points), "grid_best_val": grid_best, "goal_val": goal, "grid_steps": grid_steps,
            "grid_steps_to_goal_random_order_median": statistics.median(orders),
            "search": searches, "search_fraction_of_grid_median": statistics.median(fractions)}


__all__ = ["TuneResult", "compare_grid", "tune", "write_recipe"]
