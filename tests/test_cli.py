"""The CLI, called in-process: run, bench, --help, and every bad-input case (message and exit status)."""

import json
from pathlib import Path

import numpy as np
import pytest

from quicktrain.cli import main

TINY = """
from quicktrain.config import Config, DataConfig, MethodsConfig, Mnist1dArgs, ModelConfig, SystemConfig, TrainConfig
CONFIG = Config(
    name="{name}",
    tuned_for="",  # fixed constants: a test (or benchmark) of the loop itself, never adapted
    data=DataConfig(name="mnist1d", mnist1d=Mnist1dArgs(num_samples=1000)),
    model=ModelConfig(name="tiny1d"),
    train=TrainConfig(epochs={epochs}, batch_size=32, target=0.3, eval_every=0.5, eval_from=0.0),
    methods=MethodsConfig(tta=False),
    system=SystemConfig(precision="fp32", compile="off"),
)
"""


def recipe(tmp_path: Path, name: str = "tiny", epochs: float = 2.0) -> str:
    path = tmp_path / f"{name}.py"
    path.write_text(TINY.format(name=name, epochs=epochs))
    return str(path)


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_run_prints_a_json_line_last_and_writes_the_run_dir(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    code, out, err = cli(capsys, "run", recipe(tmp_path), "--seed", "1", "--run-dir", str(tmp_path / "r"),
                         "--instance", "g4dn.xlarge", "--no-progress", "--optim.lr=5e-3")
    assert code == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    for key in ("recipe", "seed", "target", "reached_target", "train_seconds", "wall_seconds", "test_acc", "steps",
                "instance", "cost_usd_on_demand", "cost_usd_spot"):
        assert key in result
    assert result["seed"] == 1 and result["instance"] == "g4dn.xlarge" and 0 <= result["test_acc"] <= 1
    assert result["wall_seconds"] >= result["train_seconds"] > 0
    assert "optim: name=adamw lr=0.005" in out  # the resolved config is printed first
    assert (tmp_path / "r" / "report.md").exists()


def test_bench_with_ablation(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    code, out, err = cli(capsys, "bench", recipe(tmp_path, "fast", 2.0), recipe(tmp_path, "slow", 0.5),
                         "--seeds", "2", "--ablate", "--out", str(tmp_path / "b"), "--no-progress")
    assert code == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert [r["recipe"] for r in summary["rows"]] == ["fast", "slow"]
    assert summary["rows"][0]["n"] == 2 and summary["headline"][0].startswith("fast vs slow")
    labels = [r["label"] for r in summary["ablation"]]
    assert labels[0] == "fast (all on)" and "− warmup + one-cycle schedule" in labels and "+ label smoothing" in labels
    assert "| recipe |" in out
    for name in ("bench.md", "bench.json", "bench_curves.png", "bench_ablation.png"):
        assert (tmp_path / "b" / name).exists()


def test_help(capsys) -> None:  # type: ignore[no-untyped-def]
    code, out, _ = cli(capsys, "--help")
    assert code == 0 and "run" in out and "bench" in out
    code, out, _ = cli(capsys, "run", "--help")
    assert code == 0 and "--run-dir" in out


def _npz(tmp_path: Path, name: str, **arrays: np.ndarray) -> str:
    path = tmp_path / name
    np.savez(path, **arrays)
    return str(path)


def bad_cases(tmp_path: Path) -> list[tuple[list[str], str]]:
    good_x = np.random.default_rng(0).normal(size=(50, 20)).astype(np.float32)
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(Path(_npz(tmp_path, "whole.npz", x=good_x, y=np.arange(50) % 3)).read_bytes()[:300])
    return [
        (["run", "nosuch"], "unknown recipe 'nosuch'"),
        (["run", "--data.name=imagenet"],
         "config key data.name: expected one of mnist1d, digits, mnist5k, cifar10, npz, custom, stdlib, tokens, "
         "got 'imagenet'"),
        (["run", "--optim.lrr=1"], "unknown config key 'optim.lrr'"),
        (["run", "--optim.lr=abc"], "config key optim.lr: expected float, got 'abc'"),
        (["run", "--train.batch_size=1.5"], "config key train.batch_size: expected int"),
        (["run", "--optim.lr=-1"], "config key optim.lr: must be > 0"),
        (["run", "--target", "1.5"], "config key train.target: must be in [0, 1]"),
        (["run", "--bogus"], "unrecognised argument '--bogus'"),
        (["run", "--seed", "x"], "invalid int value"),
        (["run", "--data.name=cifar10", f"--data.path={tmp_path / 'nodir'}"], str(tmp_path / "nodir")),
        (["run", "--data.name=npz", f"--data.path={truncated}"], str(truncated)),
        (["run", "--data.name=npz",
          f"--data.path={_npz(tmp_path, 'shape.npz', x=np.zeros((4, 2, 2, 2, 2)), y=np.zeros(4, int))}"], "shape.npz"),
        (["run", "--data.name=npz", "--data.num_classes=3",
          f"--data.path={_npz(tmp_path, 'labels.npz', x=good_x, y=np.full(50, 7))}"], "label 7 out of range"),
        (["run", "--instance", "p99.huge"], "unknown instance 'p99.huge'"),
        (["bench", "--seeds", "0"], "--seeds must be >= 1"),
    ]


def test_every_bad_input_is_one_line_and_exit_2(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    for args, fragment in bad_cases(tmp_path):
        code, out, err = cli(capsys, *args, "--no-progress")
        assert code == 2, (args, err)
        assert fragment in err, (args, err)
        assert err.startswith("quicktrain: error: ") and err.count("\n") == 1, (args, err)
        assert "Traceback" not in err + out


def test_diverging_run_exits_1_and_writes_no_result(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    code, out, err = cli(capsys, "run", recipe(tmp_path), "--optim.name=sgd", "--optim.lr=1e38",
                         "--optim.weight_decay=0", "--run-dir", str(tmp_path / "r"), "--no-progress")
    assert code == 1, err
    assert "training diverged" in err and "lower optim.lr" in err
    assert not (tmp_path / "r" / "report.md").exists() and not (tmp_path / "r" / "result.json").exists()
    assert not out.strip().splitlines()[-1].startswith("{")


def test_signal_exits_75_and_resume_finishes(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    import os
    import signal
    import threading

    run_dir = tmp_path / "r"
    timer = threading.Timer(3.0, lambda: os.kill(os.getpid(), signal.SIGTERM))  # a spot notice, mid-run
    timer.start()
    try:
        code, out, err = cli(capsys, "run", recipe(tmp_path, "long", 400.0), "--run-dir", str(run_dir), "--no-progress",
                             "--train.target=0", "--instance", "g5.xlarge")
    finally:
        timer.cancel()
    assert code == 75, err
    assert "stopped by SIGTERM: checkpointed at step" in err and "quicktrain resume" in err
    assert not out.strip().splitlines()[-1].startswith("{")
    code, out, err = cli(capsys, "resume", str(run_dir), "--no-progress")
    assert code == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert result["restarts"] == 1 and result["instance"] == "g5.xlarge" and len(result["weights_sha256"]) == 64
    code, _, err = cli(capsys, "resume", str(run_dir))
    assert code == 2 and "holds a finished run" in err


def test_resume_bad_inputs(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    code, _, err = cli(capsys, "resume", str(tmp_path / "nowhere"))
    assert code == 2 and "is not a quicktrain run directory" in err and err.count("\n") == 1
    code, _, err = cli(capsys, "resume", str(tmp_path), "--optim.lr=1")
    assert code == 2 and "resume takes no config overrides" in err
    # every checkpoint damaged: one line naming a file, exit 2
    from quicktrain.checkpoint import write_checkpoint

    run_dir = tmp_path / "damaged"
    code, _, err = cli(capsys, "run", recipe(tmp_path), "--run-dir", str(run_dir), "--no-progress")
    assert code == 0
    (run_dir / "result.json").unlink()
    write_checkpoint(run_dir / "checkpoints", 999, {"w": __import__("torch").ones(2)}, {"step": 999})
    for path in (run_dir / "checkpoints").iterdir():
        (path / "meta.json").write_bytes(b"garbage")
    code, _, err = cli(capsys, "resume", str(run_dir), "--no-progress")
    assert code == 2 and "no valid checkpoint in" in err and "meta.json" in err and err.count("\n") == 1


def test_checkpoint_write_failure_exits_1(tmp_path: Path, capsys, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import errno

    import quicktrain.checkpoint as ckpt

    def full_disk(directory, name, data):  # type: ignore[no-untyped-def]
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt, "_write_file", full_disk)
    code, out, err = cli(capsys, "run", recipe(tmp_path), "--run-dir", str(tmp_path / "r"), "--no-progress",
                         "--checkpoint.every_steps=5")
    assert code == 1 and "No space left on device" in err and "previous checkpoint is intact" in err
    assert not out.strip().splitlines()[-1].startswith("{")
