"""Reversible blocks (quicktrain.memory.reversible): gradients equal plain autograd of the same couplings, dropout
masks replay, BN statistics update once, the reconstruction check falls back, memory stays flat with depth (#10)."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import Tensor, nn

from quicktrain.config import ModelConfig
from quicktrain.memory.reversible import (Coupling, ReversibleSequence, configure_reversible, couple,
                                          reversible_fell_back)
from quicktrain.memory.tracking import saved_bytes
from quicktrain.models import build_model
from quicktrain.models.gpt import gpt
from quicktrain.tasks import next_token_loss


def plain_forward(model: nn.Module, x: Tensor) -> Tensor:
    """The same model with its ReversibleSequences run as ordinary autograd (the reference)."""
    seqs = [m for m in model.modules() if isinstance(m, ReversibleSequence)]
    saved = [s.forward for s in seqs]
    for s in seqs:
        s.forward = lambda x1, x2, *extra, s=s: s._loop(couple, x1, x2, extra)  # type: ignore[method-assign]
    try:
        return model(x)
    finally:
        for s, f in zip(seqs, saved):
            s.forward = f  # type: ignore[method-assign]


def grads(model: nn.Module, x: Tensor, y: Tensor, loss_fn: object, plain: bool) -> list[Tensor]:
    model.zero_grad(set_to_none=True)
    out = plain_forward(model, x) if plain else model(x)
    loss_fn(out, y).backward()  # type: ignore[operator]
    return [p.grad.clone() for p in model.parameters()]


def rel(a: Tensor, b: Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def revnet(depth: int = 4, dtype: torch.dtype = torch.float32) -> nn.Module:
    torch.manual_seed(0)
    cfg = ModelConfig(name="revnet1d", depth=depth, reversible=True, channels=(16,))
    return build_model(cfg, (1, 40), 10).to(dtype)


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float64, 1e-6), (torch.float32, 1e-4)])
def test_revnet_gradients_equal_plain_autograd(dtype: torch.dtype, tol: float) -> None:
    model = revnet(dtype=dtype)
    x, y = torch.randn(8, 1, 40, dtype=dtype), torch.randint(0, 10, (8,))
    ce = nn.functional.cross_entropy
    buffers = [b.clone() for b in model.buffers()]
    got = grads(model, x, y, ce, plain=False)
    after_rev = [b.clone() for b in model.buffers()]
    for b, v in zip(model.buffers(), buffers):
        b.copy_(v)
    want = grads(model, x, y, ce, plain=True)
    assert max(rel(g, w) for g, w in zip(got, want)) <= tol
    # BN running statistics: updated once per step (forward), not again by the recompute in backward
    for a, b in zip(after_rev, model.buffers()):
        assert torch.allclose(a.double(), b.double(), rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float64, 1e-6), (torch.float32, 1e-4)])
def test_reversible_gpt_gradients_equal_plain_autograd(dtype: torch.dtype, tol: float) -> None:
    torch.manual_seed(0)
    model = gpt(64, 16, layers=3, heads=2, width=32, zero_init=False, reversible=True).to(dtype)
    x, y = torch.randint(0, 64, (4, 16)), torch.randint(0, 64, (4, 16))
    got, want = grads(model, x, y, next_token_loss, False), grads(model, x, y, next_token_loss, True)
    assert max(rel(g, w) for g, w in zip(got, want)) <= tol


def test_reversible_gpt_keeps_the_plain_keys_and_init() -> None:
    torch.manual_seed(0)
    plain = gpt(64, 16, layers=2, heads=2, width=32)
    torch.manual_seed(0)
    rev = gpt(64, 16, layers=2, heads=2, width=32, reversible=True)
    keys = set(rev.state_dict()) - {"blocks._extra_state"}
    assert keys == set(plain.state_dict())
    assert all(torch.equal(v, rev.state_dict()[k]) for k, v in plain.state_dict().items())


def test_dropout_masks_replay_and_the_rng_stream_is_the_plain_one() -> None:
    torch.manual_seed(0)
    model = gpt(64, 16, layers=2, heads=2, width=32, zero_init=False, dropout=0.3, reversible=True).double()
    x, y = torch.randint(0, 64, (4, 16)), torch.randint(0, 64, (4, 16))
    torch.manual_seed(5)
    got = grads(model, x, y, next_token_loss, False)
    rng_rev = torch.get_rng_state()
    torch.manual_seed(5)
    want = grads(model, x, y, next_token_loss, True)
    assert max(rel(g, w) for g, w in zip(got, want)) <= 1e-6  # a different mask would differ by far more
    assert torch.equal(rng_rev, torch.get_rng_state())


class Noisy(nn.Module):
    """A residual function that is not a function: each call adds fresh noise, so reconstruction fails."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(8, 8)

    def forward(self, x: Tensor) -> Tensor:
        return self.lin(x) + 0.1 * torch.randn_like(x)


def test_a_failed_reconstruction_check_falls_back_to_checkpointing_and_resumes() -> None:
    torch.manual_seed(0)
    seq = ReversibleSequence([Coupling(Noisy(), Noisy()) for _ in range(3)], check_every=2, preserve_rng=False)
    x1, x2 = torch.randn(4, 8), torch.randn(4, 8)
    with pytest.warns(RuntimeWarning, match="reconstruction error"):
        sum(t.sum() for t in seq(x1, x2)).backward()  # call 0 is checked
    assert seq.fallback and seq.last_error is not None and seq.last_error > seq.tolerance
    assert reversible_fell_back(seq)
    for p in seq.parameters():  # from here on: checkpointed blocks, gradients by autograd
        p.grad = None
    sum(t.sum() for t in seq(x1, x2)).backward()
    assert all(p.grad is not None for p in seq.parameters())
    state = seq.state_dict()
    fresh = ReversibleSequence([Coupling(Noisy(), Noisy()) for _ in range(3)])
    fresh.load_state_dict(state)
    assert fresh.calls == seq.calls == 2 and fresh.fallback


def test_the_check_runs_on_its_cadence_and_passes_for_exact_blocks() -> None:
    model = revnet(depth=3, dtype=torch.float64)
    assert configure_reversible(model, check_every=3, tolerance=1e-9) == 1
    seq = next(m for m in model.modules() if isinstance(m, ReversibleSequence))
    x, y = torch.randn(4, 1, 40, dtype=torch.float64), torch.randint(0, 10, (4,))
    errors = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(4):
            seq.last_error = None
            grads(model, x, y, nn.functional.cross_entropy, False)
            errors.append(seq.last_error)
    assert [e is not None for e in errors] == [True, False, False, True]  # calls 0 and 3
    assert max(e for e in errors if e is not None) < 1e-9 and not seq.fallback


def test_saved_bytes_of_a_reversible_net_do_not_grow_with_depth() -> None:
    x, y = torch.randn(64, 1, 40), torch.randint(0, 10, (64,))

    def act(depth: int, reversible: bool) -> int:
        torch.manual_seed(0)
        model = build_model(ModelConfig(name="revnet1d", depth=depth, reversible=reversible), (1, 40), 10)
        return saved_bytes(lambda: nn.functional.cross_entropy(model(x), y), exclude=model)[1]

    assert act(16, True) <= 1.2 * act(4, True)
    assert act(16, False) >= 3 * act(4, False)
    assert act(16, True) * 5 <= act(16, False)


def test_extra_arguments_that_need_gradients_are_refused() -> None:
    seq = ReversibleSequence([Coupling(nn.Linear(4, 4), nn.Linear(4, 4))])
    with pytest.raises(ValueError, match="extra arguments"):
        seq(torch.randn(2, 4), torch.randn(2, 4), torch.randn(2, requires_grad=True))


def test_a_reversible_net_trains_from_the_config() -> None:
    """model.reversible reaches the builder; one training step changes the weights and keeps BN sane."""
    model = revnet(depth=2)
    before = copy.deepcopy(model.state_dict())
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(16, 1, 40), torch.randint(0, 10, (16,))
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items() if "weight" in k)
