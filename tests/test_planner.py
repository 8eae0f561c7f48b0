"""The memory planner (quicktrain.memory.planner), the out-of-memory backoff and their wiring into a run (#10).

Memory here is what LiveBytes counts on CPU (live tensor storage); a cap is simulated with CapMode."""

from __future__ import annotations

import copy
import json
from dataclasses import replace

import pytest
import torch
from torch import Tensor, nn

from quicktrain import train
from quicktrain.config import Config, DataConfig, MemoryConfig, TrainConfig
from quicktrain.errors import UserError
from quicktrain.memory.backoff import Backoff, CapMode
from quicktrain.memory.checkpointing import apply_checkpointing
from quicktrain.memory.planner import (Variant, best_micro, copy_builder, fit_line, micro_sizes, plan_memory,
                                       resolve_cap, step_peak, variants)
from quicktrain.precision import Precision
from quicktrain.run import build_run, plan_memory_for
from quicktrain.step import backward_pass

F, K, B = 6, 2, 512  # activations, not weights, dominate a step: what the planner has to trade
CPU = torch.device("cpu")


class DeepRes(nn.Module):
    """A residual MLP whose blocks are an nn.ModuleList (what checkpointing wraps), with BN and dropout."""

    def __init__(self, width: int = 64, depth: int = 6, dropout: float = 0.0, bn: bool = False) -> None:
        super().__init__()
        self.inp = nn.Linear(F, width)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Linear(width, width), nn.BatchNorm1d(width) if bn else nn.Identity(), nn.ReLU(),
                          nn.Dropout(dropout), nn.Linear(width, width)) for _ in range(depth))
        self.out = nn.Linear(width, K)

    def forward(self, x: Tensor) -> Tensor:
        h = self.inp(x.flatten(1))
        for block in self.blocks:
            h = h + block(h)
        return self.out(h)


def batch(n: int = B, seed: int = 0) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, F, generator=g)
    return x, (x[:, 0] > 0).long()


def loss_fn(out: Tensor, y: Tensor) -> Tensor:
    return nn.functional.cross_entropy(out, y)


def adam(m: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.AdamW(m.parameters(), lr=1e-3)


def measured_peak(model: nn.Module, v: Variant, micro: int, x: Tensor, y: Tensor) -> int:
    m = copy_builder(model, apply_checkpointing)(v)
    return step_peak(m, adam(m), Precision(v.precision, CPU), loss_fn, x, y, micro)


def test_fit_line_and_best_micro() -> None:
    assert fit_line([1, 2, 4], [3, 5, 9]) == pytest.approx((1.0, 2.0))
    assert fit_line([8], [5.0]) == (5.0, 0.0)
    assert best_micro(10, (100.0, 10.0), 200.0) == 10  # 100 + 10*10 fits
    assert best_micro(10, (100.0, 10.0), 160.0) == 5  # balanced ceil(10/k): 10 no, 5 yes
    assert best_micro(10, (100.0, 10.0), 105.0) == 0  # not even micro-batch 1
    assert micro_sizes(64) == [4, 8, 16] and micro_sizes(2) == [1, 2] and micro_sizes(1) == [1]


def test_resolve_cap() -> None:
    assert resolve_cap("", CPU) is None and resolve_cap("auto", CPU) is None  # no cap on CPU by default
    assert resolve_cap("2GiB", CPU) == 2 * 1024 ** 3 and resolve_cap("512MB", CPU) == 512 * 10 ** 6


@pytest.mark.parametrize("fraction", [0.97, 0.85, 0.75])
def test_plan_fits_under_every_cap_and_predicts_its_peak(fraction: float) -> None:
    torch.manual_seed(0)
    model, (x, y) = DeepRes(), batch()
    plain = measured_peak(model, Variant("fp32", "off", False), 0, x, y)
    cap = int(plain * fraction)
    plan = plan_memory(cap, copy_builder(model, apply_checkpointing), adam, loss_fn, x, y,
                       variants(["fp32"], False))
    c = plan.choice
    assert c is not None and c.micro_batch < B, plan.table()  # the whole batch plain does not fit: it planned
    got = measured_peak(model, c.variant, c.micro_batch, x, y)
    assert got <= cap, plan.table()
    assert abs(c.peak - got) <= 0.10 * got, (c.peak, got)
    settings = plan.memory()
    assert settings["planned"] and settings["micro_batch"] == c.micro_batch and settings["precision"] == "fp32"


def test_a_generous_cap_keeps_plain_and_measures_nothing_else() -> None:
    model, (x, y) = DeepRes(depth=2), batch()
    plan = plan_memory(2 ** 30, copy_builder(model, apply_checkpointing), adam, loss_fn, x, y,
                       variants(["fp32", "bf16"], False))
    assert len(plan.candidates) == 1 and plan.choice is plan.candidates[0]
    assert plan.memory()["micro_batch"] == 0 and plan.memory()["precision"] is None  # precision left to `auto`


def test_a_cap_below_micro_batch_one_with_full_checkpointing_says_the_minimum() -> None:
    model, (x, y) = DeepRes(), batch()
    with pytest.raises(UserError) as err:
        plan_memory(1024, copy_builder(model, apply_checkpointing), adam, loss_fn, x, y, variants(["fp32"], False))
    msg = str(err.value)
    assert "\n" not in msg and "system.memory" in msg and "smallest plan needs" in msg and "micro-batch 1" in msg


def test_backoff_on_a_simulated_oom_redoes_the_same_batch_exactly() -> None:
    """A cap between micro-batch B/2 and the whole batch: the first attempt runs out, the retry at B/2 gives the
    gradients, BN statistics and RNG stream of a pass at B/2 alone, and each example is forwarded once in the
    successful attempt."""
    torch.manual_seed(0)
    model, (x, y) = DeepRes(dropout=0.2, bn=True), batch()
    p = Precision("fp32", CPU)
    ref = copy.deepcopy(model)
    whole = measured_peak(model, Variant("fp32", "off", False), 0, x, y)
    half = measured_peak(model, Variant("fp32", "off", False), B // 2, x, y)
    assert half < whole
    cap = (whole + half) // 2
    seen: list[int] = []
    model.inp.register_forward_hook(lambda _m, inp, _o: seen.append(len(inp[0])))
    torch.manual_seed(1)
    backoff = Backoff(0)
    with CapMode(cap, [*model.parameters(), *model.buffers(), x, y]):
        loss = backoff.run(lambda m: backward_pass(model, p, loss_fn, x, y, m), model, B)
    after_rng = torch.get_rng_state()
    assert backoff.events == [{"from": B, "to": B // 2}] and backoff.micro == B // 2
    torch.manual_seed(1)
    ref_loss = backward_pass(ref, p, loss_fn, x, y, B // 2)
    assert torch.equal(after_rng, torch.get_rng_state())
    assert torch.allclose(loss, ref_loss)
    for (name, a), b in zip(model.named_parameters(), ref.parameters()):
        assert a.grad is not None and torch.equal(a.grad, b.grad), name
    for a, b in zip(model.buffers(), ref.buffers()):
        assert torch.equal(a, b)
    assert sum(seen[-2:]) == B  # the successful attempt saw the batch once, in two halves


def test_backoff_gives_up_at_micro_batch_one() -> None:
    model, (x, y) = DeepRes(depth=1), batch(4)
    with pytest.raises(torch.OutOfMemoryError), CapMode(1, []):
        Backoff(0).run(lambda m: backward_pass(model, Precision("fp32", CPU), loss_fn, x, y, m), model, 4)


@pytest.fixture
def cfg(tiny_cfg: Config) -> Config:
    return replace(tiny_cfg, data=DataConfig(name="custom", augment="none"),
                   train=TrainConfig(epochs=0.5, batch_size=B, target=0.0, eval_every=0.5, eval_from=0.0))


def plain_peak_of_run(cfg: Config) -> int:
    torch.manual_seed(0)
    run = build_run(cfg, DeepRes(), batch(2000))
    x, y = run.batches.next(B)
    return step_peak(run.model, run.optimizer, run.precision, run.task.loss, x, y, 0)


def test_a_planned_run_equals_the_same_settings_given_explicitly(cfg: Config) -> None:
    """The planner measures on copies under a restored RNG: a run it planned is bitwise the run configured with
    its choice; the choice and the memory line are in the result."""
    cap = int(plain_peak_of_run(cfg) * 0.85)
    torch.manual_seed(0)
    planned = train(replace(cfg, system=replace(cfg.system, memory=str(cap))), model=DeepRes(), data=batch(2000))
    mem = planned.memory
    assert mem["planned"] and mem["cap"] == cap and 0 < mem["micro_batch"] < B
    assert mem["params"] > 0 and mem["optimizer"] > 0 and mem["activations"] > 0 and mem["backoffs"] == []
    torch.manual_seed(0)
    given = train(replace(cfg, memory=MemoryConfig(micro_batch=mem["micro_batch"], checkpoint=mem["checkpoint"])),
                  model=DeepRes(), data=batch(2000))
    assert given.weights_sha256 == planned.weights_sha256
    assert given.memory["planned"] is False and given.memory["micro_batch"] == mem["micro_batch"]


def test_the_plan_is_saved_with_the_checkpoint_and_kept_on_resume(cfg: Config, tmp_path: object) -> None:
    cap = int(plain_peak_of_run(cfg) * 0.85)
    run_cfg = replace(cfg, system=replace(cfg.system, memory=str(cap)))
    torch.manual_seed(0)
    first = train(run_cfg, model=DeepRes(), data=batch(2000), run_dir=tmp_path)
    metas = sorted((tmp_path / "checkpoints").glob("*/meta.json"))  # type: ignore[operator]
    assert metas, "a finished run leaves its final checkpoint"
    assert json.loads(metas[-1].read_text())["choices"]["memory"]["micro_batch"] == first.memory["micro_batch"]


def test_plan_memory_for_tables_every_variant_and_needs_a_cap(cfg: Config) -> None:
    cap = int(plain_peak_of_run(cfg) * 0.85)
    plan = plan_memory_for(replace(cfg, system=replace(cfg.system, memory=str(cap))), DeepRes(), batch(2000))
    assert [str(c.variant) for c in plan.candidates] == ["fp32, checkpoint off", "fp32, checkpoint selective",
                                                         "fp32, checkpoint full"]
    assert "<- chosen" in plan.table()
    with pytest.raises(UserError, match="needs a cap"):
        plan_memory_for(replace(cfg, system=replace(cfg.system, memory="")), DeepRes(), batch(2000))


def test_a_cap_too_small_from_the_command_line_is_one_line_exit_2(tmp_path: object,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from pathlib import Path

    from quicktrain.cli import main

    run_dir = Path(str(tmp_path)) / "r"
    code = main(["run", "mnist1d", "--system.memory=4KiB", "--data.mnist1d.num_samples=1000", "--no-progress",
                 "--system.precision=fp32", "--system.compile=off", "--system.channels_last=off",
                 "--run-dir", str(run_dir)])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(err) == 1
    assert err[0].startswith("quicktrain: error: config key system.memory: 4.0 KiB is below what the smallest plan "
                             "needs")
    assert not run_dir.exists()  # bad input leaves nothing behind
