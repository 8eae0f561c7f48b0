"""FLOP counting against closed forms, without side effects on the model; the peak-rate cache; utilisation; clocks."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from quicktrain import measure


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_flops_of_one_linear_layer() -> None:
    # Forward: 2*N*in*out. Backward: only the weight gradient (2*N*in*out); the input needs none. So 2x forward.
    model = nn.Linear(10, 20, bias=False)
    x, y = torch.randn(4, 10), torch.randint(0, 20, (4,))
    assert measure.count_train_flops(model, x, y, F.cross_entropy) == 2 * (2 * 4 * 10 * 20)


def test_flops_of_two_layers() -> None:
    # The second layer also passes a gradient back to its input: backward = 2x forward for it, 1x for the first.
    model = nn.Sequential(nn.Linear(10, 20, bias=False), nn.ReLU(), nn.Linear(20, 5, bias=False))
    x, y = torch.randn(4, 10), torch.randint(0, 5, (4,))
    first, second = 2 * 4 * 10 * 20, 2 * 4 * 20 * 5
    assert measure.count_train_flops(model, x, y, F.cross_entropy) == 2 * first + 3 * second


def test_flop_count_leaves_the_model_alone() -> None:
    model = nn.Sequential(nn.Conv1d(1, 4, 3), nn.BatchNorm1d(4), nn.ReLU(), nn.Flatten(), nn.Dropout(0.5),
                          nn.Linear(4 * 38, 3))
    model.eval()
    model[1].running_mean.fill_(0.3)  # non-default stats, which a train-mode forward would move
    before = _state(model)
    model(torch.randn(2, 1, 40)).sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    x, y = torch.randn(8, 1, 40), torch.randint(0, 3, (8,))
    rng = torch.get_rng_state()  # dropout's draws in the counting pass must not shift the run's random stream
    flops = measure.count_train_flops(model, x, y, F.cross_entropy)
    assert flops > 0
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(torch.equal(g, p.grad) for g, p in zip(grads, model.parameters()))
    assert not model.training
    assert torch.equal(rng, torch.get_rng_state())


def test_flop_count_with_no_grads_present() -> None:
    model = nn.Linear(3, 2)
    measure.count_train_flops(model, torch.randn(2, 3), torch.tensor([0, 1]), F.cross_entropy)
    assert all(p.grad is None for p in model.parameters())


def test_flops_of_reversible_blocks_count_the_recompute() -> None:
    # The reversible backward calls autograd.grad inside a custom Function, which torch's per-module flop tracker
    # cannot follow (it raised). Each coupling's F and G run once forward and once more in backward to rebuild
    # their inputs, so a reversible step costs forward + recompute + backward: 4x forward for the couplings.
    from quicktrain.memory.reversible import Coupling, ReversibleSequence

    width, n = 8, 4
    seq = ReversibleSequence(Coupling(nn.Linear(width, width, bias=False), nn.Linear(width, width, bias=False))
                             for _ in range(3))

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.blocks = seq

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.cat(self.blocks(*x.chunk(2, dim=1)), dim=1)

    x, y = torch.randn(n, 2 * width), torch.randint(0, 2 * width, (n,))
    forward = 6 * 2 * n * width * width  # six linears
    assert measure.count_train_flops(Net(), x, y, F.cross_entropy) == 4 * forward


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("QUICKTRAIN_CACHE", str(tmp_path))
    return tmp_path / "peak_flops.json"


def test_peak_flops_measures_then_caches(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = torch.device("cpu")
    start = time.perf_counter()
    first = measure.peak_flops(cpu, torch.float32)
    assert time.perf_counter() - start < 3.0
    assert first > 1e8  # any machine that runs PyTorch beats 0.1 GFLOP/s
    assert cache.exists()

    def fail(*args: object) -> float:
        raise AssertionError("measured again instead of reading the cache")

    monkeypatch.setattr(measure, "_measure", fail)
    assert measure.peak_flops(cpu, torch.float32) == first


def test_peak_flops_keyed_by_dtype_and_threads(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[torch.dtype] = []
    monkeypatch.setattr(measure, "_measure", lambda device, dtype: calls.append(dtype) or 1e9 * len(calls))
    cpu = torch.device("cpu")
    assert measure.peak_flops(cpu, torch.float32, threads=1) == 1e9
    assert measure.peak_flops(cpu, torch.bfloat16, threads=1) == 2e9
    assert measure.peak_flops(cpu, torch.float32, threads=1) == 1e9
    assert measure.peak_flops(cpu, torch.float32, threads=2) == 3e9
    assert len(json.loads(cache.read_text())) == 3


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", ""])
def test_corrupt_cache_is_measured_again(cache: Path, monkeypatch: pytest.MonkeyPatch, content: str) -> None:
    cache.write_text(content)
    monkeypatch.setattr(measure, "_measure", lambda device, dtype: 5e9)
    assert measure.peak_flops(torch.device("cpu"), torch.float32) == 5e9
    assert list(json.loads(cache.read_text()).values())[0]["flops"] == 5e9


def test_bad_cache_entry_is_measured_again(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(measure, "_measure", lambda device, dtype: 5e9)
    measure.peak_flops(torch.device("cpu"), torch.float32)
    data = json.loads(cache.read_text())
    cache.write_text(json.dumps({k: {"flops": -1} for k in data}))
    monkeypatch.setattr(measure, "_measure", lambda device, dtype: 6e9)
    assert measure.peak_flops(torch.device("cpu"), torch.float32) == 6e9


def test_utilisation() -> None:
    assert measure.utilisation(2e9, 2.0, 1e10) == pytest.approx(0.1)
    assert measure.utilisation(1e9, 0.0, 1e10) is None
    assert measure.utilisation(1e9, 1.0, 0.0) is None


def test_process_age_positive_and_increasing() -> None:
    first = measure.process_age()
    assert first > 0
    time.sleep(0.05)
    second = measure.process_age()
    assert second - first == pytest.approx(0.05, abs=0.03)


def test_device_name() -> None:
    name = measure.device_name(torch.device("cpu"))
    assert name.endswith(f"({torch.get_num_threads()} threads)") and len(name) > len(" (1 threads)")
