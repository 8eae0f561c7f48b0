"""DeviceBatches: order, drop-last, ramps and exact resume."""

from __future__ import annotations

import io

import pytest
import torch

from quicktrain.data.batches import DeviceBatches


def _data(n: int = 100) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.arange(n, dtype=torch.float32).view(n, 1, 1) * 2, torch.arange(n)


def test_shuffled_epoch_covers_every_example_once() -> None:
    x, y = _data()
    b = DeviceBatches(x, y, seed=0)
    ys = [b.next(10)[1] for _ in range(10)]
    assert sorted(torch.cat(ys).tolist()) == list(range(100))
    assert torch.cat(ys).tolist() != list(range(100))  # actually shuffled
    assert b.epoch == 1
    xb, yb = b.next(10)
    assert torch.equal(xb[:, 0, 0], yb.float() * 2)  # x and y stay paired


def test_epochs_differ_and_seeds_decide() -> None:
    x, y = _data()
    a, b, c = (DeviceBatches(x, y, seed=s) for s in (0, 0, 1))
    first = [a.next(50)[1] for _ in range(2)]
    assert not torch.equal(first[0], a.next(50)[1])  # a new permutation in epoch 2
    assert torch.equal(b.next(50)[1], first[0])
    assert not torch.equal(c.next(50)[1], first[0])


def test_sequential_equals_slicing() -> None:
    x, y = _data(10)
    b = DeviceBatches(x, y, seed=0, sequential=True)
    for start in (0, 3, 6):
        xb, yb = b.next(3)
        assert torch.equal(xb, x[start : start + 3]) and torch.equal(yb, y[start : start + 3])
    xb, _ = b.next(3)  # 9 + 3 > 10: drop the last example, start epoch 2
    assert torch.equal(xb, x[0:3]) and b.epoch == 1


def test_drop_last_and_changing_batch_size() -> None:
    x, y = _data(10)
    b = DeviceBatches(x, y, seed=0)
    assert [len(b.next(s)[1]) for s in (4, 4)] == [4, 4] and b.epoch == 0
    third = b.next(3)[1]  # only 2 left: a new epoch
    assert b.epoch == 1 and b.pos == 3 and len(set(third.tolist())) == 3
    b.next(7)  # exactly the end of the epoch counts at once
    assert b.epoch == 2 and b.pos == 0


@pytest.mark.parametrize("size", [0, 11])
def test_bad_batch_size(size: int) -> None:
    b = DeviceBatches(*_data(10), seed=0)
    with pytest.raises(ValueError, match="batch_size"):
        b.next(size)


@pytest.mark.parametrize("sequential", [False, True])
def test_resume_reproduces_the_batches(sequential: bool) -> None:
    x, y = _data(37)
    sizes = [5, 7, 3, 8, 8, 2, 9, 4, 6, 5, 5, 8, 1, 9]  # a ramp-like mix, crossing several epochs
    a = DeviceBatches(x, y, seed=4, sequential=sequential)
    for s in sizes[:5]:
        a.next(s)
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)  # as a checkpoint would
    rest = [a.next(s) for s in sizes[5:]]
    buf.seek(0)
    b = DeviceBatches(x, y, seed=999, sequential=sequential)
    b.load_state_dict(torch.load(buf, weights_only=True))
    for (xa, ya), s in zip(rest, sizes[5:]):
        xb, yb = b.next(s)
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert (a.epoch, a.pos) == (b.epoch, b.pos)


def test_state_dict_contents() -> None:
    b = DeviceBatches(*_data(10), seed=0)
    b.next(3)
    state = b.state_dict()
    assert set(state) == {"perm", "pos", "epoch", "generator"}
    assert state["perm"].dtype == torch.int64 and state["perm"].device.type == "cpu" and state["pos"] == 3
    assert state["generator"].dtype == torch.uint8
    with pytest.raises(ValueError, match="10"):
        DeviceBatches(*_data(12), seed=0).load_state_dict(state)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_same_order_on_cuda() -> None:
    x, y = _data()
    cpu, gpu = DeviceBatches(x, y, seed=3), DeviceBatches(x.cuda(), y.cuda(), seed=3)
    for _ in range(25):
        assert torch.equal(cpu.next(8)[1], gpu.next(8)[1].cpu())
