"""Budgeted search: spaces, budgets, outputs, and several worker processes on one study (journal and PostgreSQL),
including a worker killed mid-trial whose trial must end FAIL and be retried."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from quicktrain.config import Config
from quicktrain.errors import ConfigError, UserError
from quicktrain.search_space import check_space, default_space, grid, parse_budget

RECIPE = """
from quicktrain.config import Config, DataConfig, MethodsConfig, Mnist1dArgs, ModelConfig, SystemConfig, TrainConfig
CONFIG = Config(
    name="tinytune",
    tuned_for="",  # fixed constants: a test (or benchmark) of the loop itself, never adapted
    data=DataConfig(name="mnist1d", mnist1d=Mnist1dArgs(num_samples=1000)),
    model=ModelConfig(name="tiny1d"),
    train=TrainConfig(epochs={epochs}, batch_size=32, target=0.3, eval_from=1.0),
    methods=MethodsConfig(tta=False),
    system=SystemConfig(precision="fp32", compile="off", channels_last="off"),
)
SEARCH_SPACE = {space}
"""
SPACE = {"optim.lr": ("log", 1e-3, 1e-1), "train.batch_size": ("choice", [16, 32])}


def recipe_file(tmp: Path, epochs: float = 2.0, space: object = SPACE, name: str = "tinytune") -> str:
    path = tmp / f"{name}.py"
    path.write_text(RECIPE.format(epochs=epochs, space=repr(space)))
    return str(path)


def test_budgets() -> None:
    assert parse_budget("600s") == ("s", 600.0)
    assert parse_budget("20000steps") == ("steps", 20000.0)
    assert parse_budget("0.50usd") == ("usd", 0.5)
    for bad in ("600", "ten s", "-5s", "0s", "5 hours"):
        with pytest.raises(UserError, match="budget"):
            parse_budget(bad)


@pytest.mark.parametrize(
    ("space", "fragment"),
    [
        ({"optim.lrr": ("log", 1e-3, 1e-1)}, "search space key 'optim.lrr': not a config key"),
        ({"optim.lr": ("uniform", 1, 2)}, "spec must start with one of"),
        ({"optim.lr": ("log", 0.0, 1.0)}, "a log range needs low > 0"),
        ({"optim.lr": ("float", 2.0, 1.0)}, "low < high"),
        ({"train.batch_size": ("choice", [])}, "non-empty list"),
        ({"train.target": ("float", 0.5, 1.5)}, "config key train.target: must be in [0, 1]"),
        ({}, "non-empty dict"),
    ],
)
def test_bad_spaces_name_the_key(space: dict, fragment: str) -> None:
    with pytest.raises(ConfigError) as err:
        check_space(space, Config())
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_default_space_and_grid() -> None:
    space = check_space(default_space(Config()), Config())
    assert set(space) == {"optim.lr", "optim.weight_decay", "train.batch_size", "schedule.warmup",
                          "methods.label_smoothing", "train.epochs"}
    points = grid(space, levels=3)
    assert len(points) == 3**5 * len(space["train.batch_size"][1])
    lrs = sorted({p["optim.lr"] for p in points})
    assert lrs[1] == pytest.approx((lrs[0] * lrs[2]) ** 0.5)  # geometric levels for a log range


def test_tune_in_process_writes_a_runnable_recipe(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    from test_cli import cli

    code, out, err = cli(capsys, "tune", recipe_file(tmp_path), "--budget", "1500steps", "--objective", "time",
                         "--seeds", "2", "--margin", "0", "--confirm-seeds", "2", "--run-dir", str(tmp_path / "t"))
    assert code == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    for key in ("best_params", "best_value", "trials_complete", "trials_pruned", "compute_steps", "best_recipe_path"):
        assert key in result
    trials = json.loads((tmp_path / "t" / "trials.json").read_text())
    search_steps = sum(t["compute_steps"] for t in trials)
    assert search_steps >= 0.85 * 1500 and result["trials_complete"] >= 1  # 15% of the budget kept for confirmation
    assert trials[0]["params"]["optim.lr"] == pytest.approx(0.04)  # the recipe's own values go first
    # confirmation: the recipe's own values and the best distinct trials, rerun on fresh seeds; the best confirmed wins
    confirmed = result["confirmation"]
    assert confirmed[0]["label"] == "recipe" and len(confirmed) >= 2
    assert result["best_value"] == min(c["value"] for c in confirmed)
    assert result["compute_steps"] == search_steps + sum(c["steps"] for c in confirmed)
    assert "Confirmation on fresh seeds" in (tmp_path / "t" / "tune.md").read_text()
    assert set(result["best_params"]) in (set(SPACE), set())  # {}: the recipe's own values were confirmed best
    for name in ("tune.md", "trials.json", "tune_history.png", "confirmation.json"):
        assert (tmp_path / "t" / name).exists()
    code, out, err = cli(capsys, "run", result["best_recipe_path"], "--no-progress", "--run-dir", str(tmp_path / "r"))
    assert code == 0, err
    run = json.loads(out.strip().splitlines()[-1])
    assert run["recipe"] == "tinytune_tuned"
    assert run["peak_lr"] == pytest.approx(result["best_params"].get("optim.lr", 0.04))


def test_a_diverging_candidate_is_a_bad_trial_not_a_crash(tmp_path: Path) -> None:
    from quicktrain.tuning import tune

    space = {"optim.name": ("choice", ["sgd"]), "optim.lr": ("log", 1e30, 1e36)}  # every candidate blows up
    result = tune(recipe_file(tmp_path, space=space, name="diverge"), "300steps", objective="accuracy", trials=3,
                  run_dir=tmp_path / "t", confirm_seeds=1, log=lambda m: None)
    assert result.trials_complete >= 3 and result.search_best_value == 0.0
    trials = json.loads((tmp_path / "t" / "trials.json").read_text())
    assert all(t["state"] == "COMPLETE" for t in trials)
    # nothing the search found beats the recipe's own values on confirmation, so those come back
    assert result.best_params == {} and result.best_value > 0.0
    assert [c["val_mean"] for c in result.confirmation[1:]] == [None] * (len(result.confirmation) - 1)  # diverged


def test_confirmation_candidates_are_the_recipe_then_the_best_distinct_trials() -> None:
    from quicktrain import tuning

    class Trial:  # what _candidates reads from Optuna's trials
        def __init__(self, number: int, value: float, lr: float) -> None:
            from optuna.trial import TrialState

            self.number, self.value, self.params, self.state = number, value, {"optim.lr": lr}, TrialState.COMPLETE

    study = type("S", (), {"get_trials": lambda self, deepcopy=False: [Trial(0, 0.5, 0.04), Trial(1, 0.1, 0.2),
                                                                       Trial(2, 0.3, 0.01), Trial(3, 0.1, 0.2)]})()
    candidates = tuning._candidates(study, "time")
    assert candidates == [("recipe", {}), ("trial 1", {"optim.lr": 0.2}), ("trial 2", {"optim.lr": 0.01}),
                          ("trial 0", {"optim.lr": 0.04})]  # recipe first, then by value, duplicates once


def test_tune_bad_inputs_exit_2(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    from test_cli import cli

    good = recipe_file(tmp_path)
    cases = [
        (["tune", good, "--storage", "mysql://x"], "use sqlite:///PATH, journal:PATH or postgresql://"),
        (["tune", good, "--storage", "postgresql://qt:secret@127.0.0.1:1/none"], "cannot connect"),
        (["tune", good, "--storage", "journal:"], "give a file"),
        (["tune", good, "--budget", "lots"], "budget 'lots'"),
        (["tune", recipe_file(tmp_path, space={"optim.lr": ("log", -1, 1)}, name="bad")], "a log range needs low > 0"),
        (["tune", good, "--optim.lr=1"], "tune takes no config overrides"),
    ]
    for args, fragment in cases:
        code, _, err = cli(capsys, *args)
        assert code == 2, (args, err)
        assert fragment in err and err.count("\n") == 1 and "secret" not in err, (args, err)


# ---- several workers on one study ------------------------------------------------------------------------------------


def worker(recipe: str, storage: str, study: str, trials: int, extra: tuple[str, ...] = ()) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "quicktrain", "tune", recipe, "--storage", storage, "--study-name",
                             study, "--trials", str(trials), "--objective", "accuracy", "--budget", "300s",
                             "--heartbeat", "1", "--confirm-seeds", "0", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=Path(recipe).parent,  # its runs/ go to the test's temp dir, not the repository
                            # one thread each: two workers at torch's default (a thread per core) oversubscribe a
                            # 2-core CI machine; the two-worker test once took ~5 min there, near its 300 s limit
                            env={**os.environ, "OMP_NUM_THREADS": "1"})


def load(storage: str, study: str):  # type: ignore[no-untyped-def]
    import optuna

    from quicktrain.tune_storage import open_storage

    return optuna.load_study(study_name=study, storage=open_storage(storage, heartbeat=1))


def _postgres() -> str | None:
    return os.environ.get("QUICKTRAIN_TEST_POSTGRES")


STORAGE_KINDS = ["journal", "postgresql"]


def _storage(kind: str, tmp_path: Path) -> str:
    if kind == "journal":
        return f"journal:{tmp_path / 'study.log'}"
    url = _postgres()
    if url is None:
        pytest.skip("PostgreSQL: set QUICKTRAIN_TEST_POSTGRES (.ci/run installs and starts a server and sets it)")
    return url


@pytest.mark.slow
@pytest.mark.parametrize("kind", STORAGE_KINDS)
def test_two_workers_share_a_study(tmp_path: Path, kind: str) -> None:
    from optuna.trial import TrialState

    storage, study = _storage(kind, tmp_path), f"two-{uuid.uuid4().hex[:8]}"
    recipe = recipe_file(tmp_path, epochs=30.0)  # ~0.5 s a trial: longer than a worker's start-up, so both take part
    procs = [worker(recipe, storage, study, 10) for _ in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    trials = load(storage, study).get_trials()
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) >= 10
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers))
    assert len({t.user_attrs["worker"] for t in finished}) == 2  # both workers took part
    assert not [t for t in trials if t.state == TrialState.RUNNING]


@pytest.mark.slow
@pytest.mark.parametrize("kind", STORAGE_KINDS)
def test_a_killed_workers_trial_fails_and_is_retried(tmp_path: Path, kind: str) -> None:
    from optuna.trial import TrialState

    storage, study = _storage(kind, tmp_path), f"kill-{uuid.uuid4().hex[:8]}"
    recipe = recipe_file(tmp_path, epochs=60.0)  # a few seconds a trial, so it can be caught running
    victim = worker(recipe, storage, study, 3)
    deadline = time.monotonic() + 120
    running = []
    while not running and time.monotonic() < deadline:
        time.sleep(0.2)
        try:
            running = [t for t in load(storage, study).get_trials() if t.state == TrialState.RUNNING]
        except KeyError:  # the study does not exist yet
            continue
    assert running, "no trial started"
    time.sleep(0.5)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    killed = running[0].number
    time.sleep(3.5)  # past the grace period (3 heartbeats of 1 s)
    survivor = worker(recipe, storage, study, 3)
    _, err = survivor.communicate(timeout=600)
    assert survivor.returncode == 0, err
    trials = {t.number: t for t in load(storage, study).get_trials()}
    assert trials[killed].state == TrialState.FAIL
    retries = [t for t in trials.values() if t.system_attrs.get("failed_trial") == killed]
    assert retries and retries[0].state in (TrialState.COMPLETE, TrialState.PRUNED)
    assert retries[0].params == trials[killed].params
    assert not [t for t in trials.values() if t.state == TrialState.RUNNING]


# ---- workers racing to create the schema -----------------------------------------------------------------------------


def test_the_schema_race_is_retried_and_other_errors_are_not(monkeypatch: pytest.MonkeyPatch) -> None:
    import optuna

    from quicktrain import tune_storage

    calls: list[int] = []

    def racing(*args: object, **kwargs: object) -> str:
        calls.append(1)
        if len(calls) < 3:
            raise RuntimeError('(psycopg.errors.UniqueViolation) duplicate key value violates unique constraint "x"')
        return "storage"

    monkeypatch.setattr(optuna.storages, "RDBStorage", racing)
    monkeypatch.setattr(tune_storage.time, "sleep", lambda s: None)
    assert tune_storage.open_storage("postgresql://u@h/db") == "storage" and len(calls) == 3

    def refused(*args: object, **kwargs: object) -> str:
        calls.append(1)
        raise RuntimeError("connection refused")

    calls.clear()
    monkeypatch.setattr(optuna.storages, "RDBStorage", refused)
    with pytest.raises(UserError, match="cannot connect: connection refused"):
        tune_storage.open_storage("postgresql://u:pw@h/db")
    assert len(calls) == 1


@pytest.mark.slow
def test_workers_starting_together_on_an_empty_postgres_database() -> None:
    url = _postgres()
    if url is None:
        pytest.skip("PostgreSQL: set QUICKTRAIN_TEST_POSTGRES (.ci/run installs and starts a server and sets it)")
    import psycopg

    admin, name = url, f"race_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        fresh = url.rsplit("/", 1)[0] + "/" + name
        code = f"from quicktrain.tune_storage import open_storage; open_storage({fresh!r}, heartbeat=1)"
        procs = [subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True) for _ in range(4)]
        errors = [p.communicate(timeout=120)[1] for p in procs]
        assert [p.returncode for p in procs] == [0] * 4, errors
    finally:
        with psycopg.connect(admin.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_confirmation_goes_down_the_ranking_until_enough_candidates_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    from quicktrain import tuning

    values = {"recipe": 0.5, "t1": tuning.MISS * 1.01, "t2": tuning.MISS * 1.02, "t3": 0.3, "t4": 0.2, "t5": 0.4,
              "t6": 0.25, "t7": 0.1}

    def fake(base, splits, label, params, kind, seeds, margin):  # type: ignore[no-untyped-def]
        return {"label": label, "params": params, "value": values[label], "val_mean": 0.9, "steps": 100, "seconds": 1.0}

    monkeypatch.setattr(tuning, "_confirm_one", fake)
    candidates = [(k, {}) for k in values]
    got = tuning.confirm(None, None, candidates, "time", 2, 0.01, log=lambda m: None)  # type: ignore[arg-type]
    assert [c["label"] for c in got] == ["recipe", "t1", "t2", "t3", "t4", "t5", "t6"]  # 4 passes besides the recipe
    # a spent reserve stops it, but the recipe and one candidate are always confirmed
    got = tuning.confirm(None, None, candidates, "time", 2, 0.01, log=lambda m: None, max_steps=0)  # type: ignore[arg-type]
    assert [c["label"] for c in got] == ["recipe", "t1"]
    got = tuning.confirm(None, None, candidates, "time", 2, 0.01, log=lambda m: None, max_steps=300)  # type: ignore[arg-type]
    assert len(got) == 3


def test_time_score_and_the_confirmation_allowance() -> None:
    from types import SimpleNamespace as Run

    from quicktrain.tuning import MISS, time_score

    runs = [Run(val_acc=v, train_seconds=t) for v, t in [(0.95, 1.0), (0.97, 2.0), (0.96, 3.0)]]
    assert time_score(runs, 0.94, 0.01) == 2.0  # mean 0.96 >= 0.95: the median time
    assert time_score(runs, 0.95, 0.01) == 2.0  # exactly at the bar
    assert time_score(runs, 0.96, 0.01) == pytest.approx(MISS * 1.01)  # 1 point short
    # less two standard errors (0.01 / sqrt(3) each): 0.96 - 0.0115 < 0.95, so it does not confirm
    assert time_score(runs, 0.94, 0.01, z=2.0) > MISS
    assert time_score(runs, 0.93, 0.01, z=2.0) == 2.0
