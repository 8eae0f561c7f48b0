"""Gradient accumulation equals the big batch (even and uneven splits, classification and tokens), ghost BN's
momentum, no_sync on every micro-batch but the last."""

from __future__ import annotations

import contextlib
import copy

import pytest
import torch
from torch import nn

from quicktrain.memory.accumulate import ghost_momentum, micro_count, split_batch
from quicktrain.precision import Precision
from quicktrain.step import backward_pass, train_step
from quicktrain.tasks import NextToken

CE = nn.functional.cross_entropy


def _grads(model: nn.Module) -> list[torch.Tensor]:
    return [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("batch,micro", [(12, 4), (10, 4), (10, 3), (7, 1), (8, 8), (8, 0), (5, 9)])
def test_split_sizes_balanced_and_weights_sum_to_one(batch: int, micro: int) -> None:
    x, y = torch.randn(batch, 3), torch.arange(batch)
    chunks = split_batch(x, y, micro)
    sizes = [len(c[0]) for c in chunks]
    assert len(chunks) == micro_count(batch, micro)
    assert sum(sizes) == batch and max(sizes) - min(sizes) <= 1 and (micro <= 0 or max(sizes) <= micro)
    assert sum(w for *_, w in chunks) == pytest.approx(1.0)
    assert torch.equal(torch.cat([c[1] for c in chunks]), y)


@pytest.mark.parametrize("micro", [4, 3, 5, 1])  # 12 = 4+4+4 (even), 3x4, 5+4+3? no: balanced 4+4+4 / 3+3+3+3 ...
def test_accumulated_gradient_equals_big_batch_classification(micro: int) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 4)).double()
    x, y = torch.randn(11, 6, dtype=torch.float64), torch.randint(0, 4, (11,))  # 11: every micro here is uneven
    ref = copy.deepcopy(model)
    fp32 = Precision("fp32", torch.device("cpu"))
    big = backward_pass(ref, fp32, CE, x, y)
    acc = backward_pass(model, fp32, CE, x, y, micro_batch=micro)
    torch.testing.assert_close(acc, big, rtol=1e-12, atol=0)
    for g, r in zip(_grads(model), _grads(ref)):
        torch.testing.assert_close(g, r, rtol=1e-10, atol=1e-14)


def test_accumulated_gradient_weights_tokens_for_next_token_task() -> None:
    torch.manual_seed(1)
    vocab, t = 13, 6
    model = nn.Sequential(nn.Embedding(vocab, 8), nn.Linear(8, vocab)).double()
    x, y = torch.randint(0, vocab, (7, t)), torch.randint(0, vocab, (7, t))
    ref = copy.deepcopy(model)
    fp32, loss = Precision("fp32", torch.device("cpu")), NextToken(1.0).loss
    backward_pass(ref, fp32, loss, x, y)
    backward_pass(model, fp32, loss, x, y, micro_batch=3)  # 3 + 2 + 2 windows of 6 tokens
    for g, r in zip(_grads(model), _grads(ref)):
        torch.testing.assert_close(g, r, rtol=1e-10, atol=1e-14)


def test_train_step_with_micro_batches_equals_big_batch_step() -> None:
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3)).double()
    ref = copy.deepcopy(model)
    opt, ref_opt = torch.optim.AdamW(model.parameters(), lr=1e-2), torch.optim.AdamW(ref.parameters(), lr=1e-2)
    fp32 = Precision("fp32", torch.device("cpu"))
    for _ in range(3):
        x, y = torch.randn(10, 5, dtype=torch.float64), torch.randint(0, 3, (10,))
        train_step(ref, ref_opt, fp32, CE, x, y, grad_clip=1.0)
        train_step(model, opt, fp32, CE, x, y, grad_clip=1.0, micro_batch=4)
    for p, r in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(p, r, rtol=1e-9, atol=1e-12)


def test_ghost_momentum_k_updates_equal_one_and_are_restored() -> None:
    bn = nn.BatchNorm1d(3, momentum=0.1)
    with ghost_momentum(bn, 4):
        m = bn.momentum
    assert (1 - m) ** 4 == pytest.approx(0.9, rel=1e-12)
    assert bn.momentum == 0.1
    cumulative = nn.BatchNorm1d(3, momentum=None)
    with ghost_momentum(cumulative, 4):
        assert cumulative.momentum is None
    with ghost_momentum(bn, 1):
        assert bn.momentum == 0.1


def test_ghost_bn_running_mean_tracks_one_update_per_step() -> None:
    """A constant-statistics input: k ghost updates with m' move the running mean as far as one update with m."""
    torch.manual_seed(3)
    net = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4, momentum=0.1))
    ref = copy.deepcopy(net)
    fp32 = Precision("fp32", torch.device("cpu"))
    x = torch.randn(4, 4).repeat(4, 1)  # every micro-batch of 4 has the big batch's statistics
    y = torch.zeros(16, 4)
    mse = nn.functional.mse_loss
    backward_pass(ref, fp32, mse, x, y)
    backward_pass(net, fp32, mse, x, y, micro_batch=4, ghost_bn=True)
    torch.testing.assert_close(net[1].running_mean, ref[1].running_mean, rtol=1e-5, atol=1e-7)
    plain = copy.deepcopy(ref)
    plain[1].reset_running_stats()
    backward_pass(plain, fp32, mse, x, y, micro_batch=4, ghost_bn=False)  # 4 updates of m: too far
    assert not torch.allclose(plain[1].running_mean, ref[1].running_mean, rtol=1e-3)


class _CountingDDP(nn.Module):
    """Stands in for DistributedDataParallel: counts which forwards ran inside no_sync."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module, self.synced, self._in_no_sync = module, [], False

    @contextlib.contextmanager
    def no_sync(self):  # type: ignore[no-untyped-def]
        self._in_no_sync = True
        try:
            yield
        finally:
            self._in_no_sync = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.synced.append(not self._in_no_sync)
        return self.module(x)


@pytest.mark.parametrize("batch,micro,k", [(12, 4, 3), (10, 4, 3), (8, 8, 1), (9, 2, 5)])
def test_no_sync_on_every_micro_batch_but_the_last(batch: int, micro: int, k: int) -> None:
    net = _CountingDDP(nn.Linear(3, 2))
    backward_pass(net, Precision("fp32", torch.device("cpu")), CE, torch.randn(batch, 3),
                  torch.randint(0, 2, (batch,)), micro_batch=micro)
    assert net.synced == [False] * (k - 1) + [True]
