"""The `auto` choices: how the race decides (margin, disqualification, interleaving), caching, and compile's gate.

The rules are tested with fixed step times (a monkeypatched `_race`), so they do not depend on this machine's speed;
one test races for real to check that the measurement runs and returns a raced candidate."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from quicktrain import autotune


def tiny() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    model = nn.Sequential(nn.Conv2d(1, 4, (1, 3)), nn.Flatten(), nn.LazyLinear(3))
    x = torch.randn(8, 1, 1, 10)
    model(x)  # materialise the lazy layer
    return model, x, torch.randint(0, 3, (8,))


def make_opt(m: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(m.parameters(), lr=0.1)


def fixed_race(speeds: dict[tuple[str, bool], float], calls: list | None = None):  # type: ignore[no-untyped-def]
    def race(model, make_opt, x, y, loss_fn, precision, channels_last=False, steps=10, warmup=3):  # type: ignore[no-untyped-def]
        if calls is not None:
            calls.append((precision, channels_last))
        t = speeds[(precision, channels_last)]
        return [] if math.isinf(t) else [t] * steps
    return race


def choose(monkeypatch: pytest.MonkeyPatch, speeds: dict, calls: list | None = None) -> tuple[str, bool]:
    monkeypatch.setattr(autotune, "_race", fixed_race(speeds, calls))
    model, x, y = tiny()
    choice, timings = autotune.choose_layout(model, make_opt, x, y, F.cross_entropy, ["fp32", "bf16"], [False, True])
    assert set(timings) == {"fp32", "fp32 channels_last", "bf16", "bf16 channels_last"}
    return choice


def test_the_fastest_wins_only_by_the_margin(monkeypatch: pytest.MonkeyPatch) -> None:
    base = {("fp32", False): 1.0, ("fp32", True): 0.99, ("bf16", False): 1.2, ("bf16", True): 0.7}
    assert choose(monkeypatch, base) == ("bf16", True)
    assert choose(monkeypatch, {**base, ("bf16", True): 0.97}) == ("fp32", False)  # 3% is within the noise margin
    assert choose(monkeypatch, {**base, ("bf16", True): 0.97, ("fp32", True): 0.9}) == ("fp32", True)


def test_a_candidate_with_a_non_finite_loss_never_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    speeds = {("fp32", False): 1.0, ("fp32", True): 0.99, ("bf16", False): 1.2, ("bf16", True): math.inf}
    assert choose(monkeypatch, speeds) == ("fp32", False)


def test_candidates_take_turns(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list = []
    choose(monkeypatch, {("fp32", False): 1.0, ("fp32", True): 1.0, ("bf16", False): 1.0, ("bf16", True): 1.0}, calls)
    one_round = [("fp32", False), ("fp32", True), ("bf16", False), ("bf16", True)]
    assert calls == one_round * autotune.ROUNDS  # interleaved, so a drift in the machine's speed hits all alike


def test_a_precision_that_disagrees_with_fp32_is_not_raced(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(autotune, "_agrees", lambda *a: False)
    calls: list = []
    monkeypatch.setattr(autotune, "_race", fixed_race({("fp32", False): 1.0, ("fp32", True): 0.5}, calls))
    model, x, y = tiny()
    choice, _ = autotune.choose_layout(model, make_opt, x, y, F.cross_entropy, ["fp32", "bf16"], [False, True])
    assert choice == ("fp32", True) and {p for p, _ in calls} == {"fp32"}


def test_a_real_race_measures_every_candidate() -> None:
    model, x, y = tiny()
    before = [p.detach().clone() for p in model.parameters()]
    choice, timings = autotune.choose_layout(model, make_opt, x, y, F.cross_entropy, ["fp32", "bf16"], [False, True])
    assert choice in {("fp32", False), ("fp32", True), ("bf16", False), ("bf16", True)}
    assert all(0 < t < 1 for t in timings.values()), timings
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # raced on copies


def test_choices_are_cached_per_setup(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("QUICKTRAIN_CACHE", str(tmp_path))
    calls: list = []
    speeds = {("fp32", False): 1.0, ("fp32", True): 0.5, ("bf16", False): 1.0, ("bf16", True): 0.9}
    monkeypatch.setattr(autotune, "_race", fixed_race(speeds, calls))
    settings = SimpleNamespace(precision="auto", channels_last="auto", compile="off")
    model, x, y = tiny()
    first = autotune.autotune(settings, model, make_opt, x, y, F.cross_entropy, 100, "key-a")
    n = len(calls)
    again = autotune.autotune(settings, model, make_opt, x, y, F.cross_entropy, 100, "key-a")
    assert (first.precision, first.channels_last) == (again.precision, again.channels_last) == ("fp32", True)
    assert n > 0 and len(calls) == n  # the second call read the cache
    autotune.autotune(settings, model, make_opt, x, y, F.cross_entropy, 100, "key-b")
    assert len(calls) > n  # another setup is measured afresh


def test_compile_is_not_tried_when_it_cannot_pay(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_compile(*a: object, **k: object) -> None:
        raise AssertionError("compile must not be tried")

    monkeypatch.setattr(torch, "compile", no_compile)
    model, x, y = tiny()
    steps = int(autotune.COMPILE_MIN_SECONDS / 0.01) - 1  # projected just under the threshold at 10 ms a step
    use, notes = autotune.choose_compile(model, make_opt, x, y, F.cross_entropy, "fp32", 0.01, steps)
    assert use is False and notes["projected_seconds"] < autotune.COMPILE_MIN_SECONDS
