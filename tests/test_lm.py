"""The next-token task end to end, on generated token shards: a tiny GPT learns in seconds through the one loop,
resume is bitwise (resident and streamed), streamed and resident give the same numbers, bad input is one line and
exit 2 with nothing written, `sample` and `prepare-text` work from the command line."""

from __future__ import annotations

import inspect
import json
import math
import pickle
from pathlib import Path

import numpy as np
import pytest

from test_resume import _stop_after, assert_identical

from quicktrain import loop, step
from quicktrain.cli import main
from quicktrain.config import Config, DataConfig, GPTArgs, ModelConfig, OptimConfig, ScheduleConfig, SystemConfig
from quicktrain.config import MethodsConfig, TrainConfig, apply_overrides
from quicktrain.errors import Preempted
from quicktrain.loop import train
from quicktrain.recipes import load_recipe

VOCAB = 16


def markov_tokens(n: int, seed: int) -> np.ndarray:
    """A first-order Markov chain over VOCAB states where each state has two likely successors: about 1 nat of
    entropy per token against log(16) = 2.77 for a model that learned nothing."""
    rng = np.random.default_rng(1234)  # the chain is fixed; `seed` only draws the walk
    nxt = rng.integers(0, VOCAB, size=(VOCAB, 2))
    walk = np.random.default_rng(seed)
    out = np.empty(n, dtype=np.uint16)
    s = 0
    for i in range(n):
        s = int(nxt[s, walk.integers(0, 2)]) if walk.random() < 0.95 else int(walk.integers(0, VOCAB))
        out[i] = s
    return out


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("shards")
    markov_tokens(40_000, 0).tofile(d / "train.bin")
    markov_tokens(4_000, 1).tofile(d / "val.bin")
    (d / "meta.pkl").write_bytes(pickle.dumps({"vocab_size": VOCAB}))
    return d


def lm_cfg(path: Path, **overrides: object) -> Config:
    cfg = Config(
        name="tiny_lm", tuned_for="",
        data=DataConfig(name="tokens", path=str(path), context=16, eval_tokens=512, augment="none"),
        model=ModelConfig(name="gpt", gpt=GPTArgs(layers=1, heads=2, width=32)),
        optim=OptimConfig(name="adamw", lr=1e-2, betas=(0.9, 0.95), grad_clip=1.0),
        schedule=ScheduleConfig(kind="onecycle", warmup=0.1),
        train=TrainConfig(steps=120, batch_size=16, target=0.0, eval_every_steps=40, eval_from=0.0),
        methods=MethodsConfig(tta=False),
        system=SystemConfig(precision="fp32", compile="off", channels_last="off"),
    )
    return apply_overrides(cfg, dict(overrides))


def test_tiny_gpt_learns_a_generated_corpus_to_a_loss_target(shards: Path) -> None:
    result = train(lm_cfg(shards, **{"train.target": 1.6}), progress=False)
    assert result.metric == "loss" and result.reached_target and result.stopped_by == "target"
    assert result.val_loss <= 1.6 < 0.6 * math.log(VOCAB)
    assert result.test_loss is not None and result.test_loss < 0.7 * math.log(VOCAB)
    assert all({"val_loss", "val_acc", "test_loss"} <= m.keys() for m in result.metrics)
    assert result.flops > 0 and result.data_path == "resident"


@pytest.mark.parametrize("stream", ["off", "on"])
def test_lm_resume_is_bitwise(shards: Path, tmp_path: Path, stream: str) -> None:
    cfg = lm_cfg(shards, **{"data.stream": stream, "checkpoint.every_steps": 7, "checkpoint.every_seconds": 0.0,
                            "methods.resize_from": 0.5, "optim.name": "muon"})
    train(cfg, run_dir=tmp_path / "straight", progress=False)
    with pytest.raises(Preempted):
        train(cfg, run_dir=tmp_path / "cut", progress=False, on_eval=_stop_after(1))
    result = train(cfg, run_dir=tmp_path / "cut", progress=False)
    assert result.restarts == 1 and result.data_path == ("streamed" if stream == "on" else "resident")
    assert_identical(tmp_path / "straight", tmp_path / "cut")


def test_streamed_and_resident_train_the_same_numbers(shards: Path) -> None:
    a = train(lm_cfg(shards, **{"data.stream": "off", "train.steps": 30}), progress=False)
    b = train(lm_cfg(shards, **{"data.stream": "on", "train.steps": 30}), progress=False)
    assert (a.data_path, b.data_path) == ("resident", "streamed")
    assert a.weights_sha256 == b.weights_sha256 and a.val_loss == b.val_loss


def test_the_loop_and_the_step_know_no_task() -> None:
    """What differs between classification and next-token prediction lives in the task object (tasks.py), the data
    source (data/lm.py) and build_run's one branch; the loop and the step never name either."""
    for module in (loop, step):
        text = inspect.getsource(module)
        for word in ("NextToken", "Classification(", "language", "vocab", "argmax"):
            assert word not in text, (module.__name__, word)


def test_lm_recipes_load_and_nanogpt_is_nanogpts_cpu_configuration() -> None:
    ng = load_recipe("nanogpt")
    g = ng.model.gpt
    shape = (g.layers, g.heads, g.width, ng.data.context, ng.train.batch_size, ng.train.steps)
    assert shape == (4, 4, 128, 64, 12, 2000)
    assert (ng.optim.name, ng.optim.lr, ng.optim.betas, ng.optim.weight_decay, ng.optim.grad_clip) == \
        ("adamw", 1e-3, (0.9, 0.99), 0.1, 1.0)
    assert ng.schedule.kind == "cosine" and ng.schedule.warmup * 2000 == pytest.approx(100)
    assert ng.schedule.end_frac == pytest.approx(0.1)  # cosine to 1e-4
    assert not (g.rotary or g.qk_norm or g.relu2 or g.zero_init) and g.tied_head and g.dropout == 0.0
    assert ng.system.precision == "fp32" and ng.system.compile == "off"
    fast = load_recipe("stdlib_lm")
    assert fast.data.language and fast.model.name == "gpt"


def _write_bad(d: Path, kind: str) -> None:
    markov_tokens(4000, 0).tofile(d / "train.bin")
    markov_tokens(400, 1).tofile(d / "val.bin")
    (d / "meta.pkl").write_bytes(pickle.dumps({"vocab_size": VOCAB}))
    if kind == "vocab":
        (d / "meta.pkl").write_bytes(pickle.dumps({"vocab_size": 8}))  # ids up to 15 are out of range
    elif kind == "meta_code":
        class Evil:
            def __reduce__(self):  # type: ignore[no-untyped-def]
                return (print, ("unpickled",))
        (d / "meta.pkl").write_bytes(pickle.dumps(Evil()))
    elif kind == "short_val":
        markov_tokens(10, 1).tofile(d / "val.bin")


@pytest.mark.parametrize(("kind", "fragment"), [
    ("vocab", "is >= vocab_size 8"), ("meta_code", "meta.pkl"), ("short_val", "val.bin"),
])
def test_bad_token_data_is_one_line_exit_2_and_nothing_written(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                               kind: str, fragment: str) -> None:
    data = tmp_path / "data"
    data.mkdir()
    _write_bad(data, kind)
    run_dir = tmp_path / "run"
    code = main(["run", "stdlib_lm", f"--data.path={data}", "--data.context=16", f"--run-dir={run_dir}",
                 "--train.steps=5", "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and fragment in err and "Traceback" not in err, err
    assert not run_dir.exists()


def test_prepare_text_run_then_sample_from_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    src = tmp_path / "corpus.txt"
    src.write_text("".join(f"def f{i % 7}(x):\n    return x + {i % 3}\n" for i in range(400)))
    shards = tmp_path / "bytes"
    assert main(["prepare-text", str(src), str(shards)]) == 0
    run_dir = tmp_path / "run"
    cfg_args = [f"--data.path={shards}", "--data.context=16", "--data.eval_tokens=256", "--model.gpt.layers=1",
                "--model.gpt.width=32", "--model.gpt.heads=2", "--train.steps=20", "--train.batch_size=8",
                "--train.eval_every_steps=10", "--system.precision=fp32", "--system.compile=off"]
    assert main(["run", "stdlib_lm", f"--run-dir={run_dir}", "--no-progress", *cfg_args]) == 0
    out = capsys.readouterr().out
    assert json.loads(out.strip().splitlines()[-1])["metric"] == "loss"
    report = (run_dir / "report.md").read_text()
    assert "validation loss" in report and (run_dir / "loss.png").is_file()
    capsys.readouterr()
    assert main(["sample", str(run_dir), "--prompt", "def", "--tokens", "12", "--seed", "3"]) == 0
    first = capsys.readouterr().out
    assert main(["sample", str(run_dir), "--prompt", "def", "--tokens", "12", "--seed", "3"]) == 0
    assert capsys.readouterr().out == first and first.startswith("def")  # deterministic given the seed


def test_prepare_text_writes_nanogpt_layout_and_refuses_non_utf8_under_bpe(tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture) -> None:
    src = tmp_path / "corpus.txt"
    src.write_text("def f(x):\n    return x + 1\n" * 200)
    out = tmp_path / "bytes"
    assert main(["prepare-text", str(src), str(out)]) == 0
    assert {p.name for p in out.iterdir()} >= {"train.bin", "val.bin", "meta.pkl"}
    n = (out / "train.bin").stat().st_size + (out / "val.bin").stat().st_size
    assert n == 2 * src.stat().st_size  # one uint16 per byte
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"ok \xff\xfe not utf-8")
    capsys.readouterr()
    assert main(["prepare-text", str(bad), str(tmp_path / "bpe"), "--tokenizer", "bpe", "--vocab-size", "300"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "bad.txt" in err and not (tmp_path / "bpe").exists()


def test_lr_find_bench_target_from_and_ablation_work_for_a_next_token_recipe(shards: Path, tmp_path: Path) -> None:
    from quicktrain.bench import run_bench
    from quicktrain.lr_find import find_lr

    cfg = lm_cfg(shards, **{"train.steps": 16, "train.eval_every_steps": 8})
    found = find_lr(cfg)
    assert found.suggested_lr > 0 and found.steps >= 3
    base = apply_overrides(cfg, {"optim.name": "adamw"})
    other = apply_overrides(base, {"name": "baseline", "train.steps": 24})
    summary = run_bench([base, other], seeds=1, ablate=True, out_dir=tmp_path / "bench", log=lambda _m: None,
                        target_from="baseline")
    rows = {r["label"]: r for r in summary["ablation"]}
    assert {"+ Muon for hidden 2-D weights", "− rotary embeddings", "− QK-norm", "− ReLU² MLP",
            "− zero-initialised projections", "− untied head"} <= set(rows)
    assert not any("label smoothing" in k or "test-time" in k or "channels_last" in k for k in rows)
    base_row, baseline = summary["rows"]
    assert baseline["reached"] == 1 and base_row["metric"] == "loss"
    assert base_row["target"] == pytest.approx(baseline["val_mean"])  # the baseline's final loss is the target
    assert (tmp_path / "bench" / "bench_curves.png").is_file()


def test_a_dataset_bigger_than_memory_trains_streamed_and_resumes_bitwise(tiny_cfg: Config, tmp_path: Path) -> None:
    """Classification data over data.resident_max_mb goes through a DataLoader (not refused), says so, and a run
    stopped mid-way resumes on the very next batch."""
    import torch
    from torch.utils.data import TensorDataset

    from quicktrain.data import load_data

    splits = load_data(tiny_cfg.data)
    ds = TensorDataset(torch.cat([splits.train.x, splits.val.x]), torch.cat([splits.train.y, splits.val.y]))
    cfg = apply_overrides(tiny_cfg, {"data.name": "custom", "data.resident_max_mb": 0.01, "train.epochs": 1.0,
                                     "checkpoint.every_steps": 5, "checkpoint.every_seconds": 0.0})
    logs: list[str] = []
    train(cfg, data=ds, run_dir=tmp_path / "straight", progress=False, log=logs.append)
    assert any("streaming" in m for m in logs)
    with pytest.raises(Preempted):
        train(cfg, data=ds, run_dir=tmp_path / "cut", progress=False, on_eval=_stop_after(1))
    result = train(cfg, data=ds, run_dir=tmp_path / "cut", progress=False)
    assert result.data_path == "streamed" and result.restarts == 1
    assert_identical(tmp_path / "straight", tmp_path / "cut")


def test_every_ablation_row_of_a_muon_recipe_keeps_muon_unless_it_is_the_muon_row() -> None:
    """Regression: the weight-decay row switched a Muon recipe to AdamW, so it measured Muon, not decay."""
    from quicktrain.methods.registry import TECHNIQUES

    base = load_recipe("stdlib_lm")
    for t in (t for t in TECHNIQUES if t.applies(base)):
        label, change = t.variant(base)
        cfg = apply_overrides(base, change)
        assert (cfg.optim.name == "muon") == (t.key != "optim.name"), label
