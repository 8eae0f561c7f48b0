"""Streaming classification data that does not fit (quicktrain.data.stream): the streamed path replaces the refusal,
its batches are exactly those of the pure order function, resume is bitwise exact, and memory stays bounded."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset

from quicktrain.config import DataConfig
from quicktrain.data import stream
from quicktrain.data.load import load_data
from quicktrain.data.stream import StreamBatches, StreamedSplits, stream_batches
from quicktrain.data.tokens import WindowOrder
from quicktrain.data.types import Splits
from quicktrain.errors import DataError

TINY = DataConfig(name="custom", resident_max_mb=0.01)  # every dataset below is "too big": it streams


class Computed(Dataset):
    """Examples computed from the index: as large as `n` says, with no memory behind it."""

    def __init__(self, n: int, shape: tuple[int, ...] = (1, 40), classes: int = 10) -> None:
        self.n, self.shape, self.classes = n, shape, classes
        self.bad: int | None = None  # an index whose label is out of range

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        assert type(i) is int, type(i)  # what a DataLoader over the Dataset itself would pass
        x = torch.arange(self.shape[-1], dtype=torch.float32).add(i % 997).mul(0.01).expand(self.shape)
        return x.contiguous(), 99 if i == self.bad else (i * 7) % self.classes


class Stream(IterableDataset):
    """An iterable in a fixed order, with a length."""

    def __init__(self, n: int) -> None:
        self.items = Computed(n)

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return (self.items[i] for i in range(len(self.items)))


def _one_line(e: pytest.ExceptionInfo[DataError]) -> str:
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def _reference(ds: Dataset, n: int, seed: int, sizes: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The batches of the pure order drawn by hand from the materialised data, with DeviceBatches' drop-last."""
    xs = torch.stack([ds[i][0] for i in range(n)])
    ys = torch.tensor([ds[i][1] for i in range(n)])
    order, epoch, pos, out = WindowOrder(n, 1, seed), 0, 0, []
    for b in sizes:
        if pos + b > n:
            epoch, pos = epoch + 1, 0
        idx = torch.from_numpy(order.positions(epoch, pos, b))
        out.append((xs[idx], ys[idx]))
        pos += b
        if pos == n:
            epoch, pos = epoch + 1, 0
    return out


SIZES = [64, 64, 100, 7, 128, 128, 128, 33, 64, 128, 128, 128, 128, 128, 50]  # a ramp, odd sizes, two epoch ends (700)


def test_a_dataset_too_big_streams_instead_of_being_refused() -> None:
    sp = load_data(TINY, Computed(1000))
    assert isinstance(sp, StreamedSplits) and sp.kind == "map" and sp.name == "custom" and sp.source is None
    assert (sp.n_train, len(sp.val), len(sp.test)) == (720, 80, 200)
    assert sp.input_shape == (1, 40) and sp.num_classes == 10 and sp.augment == "shift" and len(sp.sample) == 256
    assert sp.fingerprint == load_data(TINY, Computed(1000)).fingerprint != load_data(TINY, Computed(1001)).fingerprint
    said: list[str] = []
    batches, path = stream_batches(sp, 0, torch.device("cpu"), said.append, workers=0)
    assert path == "streamed" and batches.n == 720
    assert re.match(r"data: streaming 720 training examples through a DataLoader \(0 workers\)", said[0])


def test_held_out_splits_equal_the_resident_ones() -> None:
    ds = Computed(1000)
    resident = load_data(DataConfig(name="custom"), ds)
    streamed = load_data(TINY, ds)
    assert isinstance(resident, Splits) and isinstance(streamed, StreamedSplits)
    for a, b in ((resident.val, streamed.val), (resident.test, streamed.test)):
        assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert torch.equal(resident.train.x[:256], streamed.sample.x)
    assert torch.equal(resident.train.y, torch.tensor([streamed.data[i][1] for i in range(720)]))


def test_val_and_test_are_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stream, "EVAL_CAP", 50)
    sp = load_data(TINY, Computed(1000))
    assert (sp.n_train, len(sp.val), len(sp.test)) == (720, 50, 50) and "at most 50 each" in sp.held_out


@pytest.mark.parametrize("workers", [0, 2])
def test_streamed_batches_are_those_of_the_order_function(workers: int) -> None:
    ds = Computed(700)
    got = StreamBatches(ds, seed=3, workers=workers, num_classes=10)
    for (x, y), (rx, ry) in zip([got.next(b) for b in SIZES], _reference(ds, 700, 3, SIZES)):
        assert torch.equal(x, rx) and torch.equal(y, ry)
    assert (got.epoch, got.pos) == (2, 128 + 50)
    got.close()


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_mid_epoch_gives_the_very_next_batches(workers: int) -> None:
    ds = Computed(700)
    a = StreamBatches(ds, seed=5, workers=workers)
    for b in SIZES[:5]:
        a.next(b)
    state = a.state_dict()
    want = [a.next(b) for b in SIZES[5:]]
    b2 = StreamBatches(ds, seed=99, workers=workers)  # a different seed: the state's seed wins
    b2.next(16)
    b2.load_state_dict(state)
    for (x, y), (wx, wy) in zip([b2.next(b) for b in SIZES[5:]], want):
        assert torch.equal(x, wx) and torch.equal(y, wy)
    a.close(), b2.close()


def test_a_state_for_other_data_is_refused_and_fork_reorders() -> None:
    a = StreamBatches(Computed(700), seed=1, workers=0)
    with pytest.raises(DataError) as e:
        a.load_state_dict(StreamBatches(Computed(600), seed=1, workers=0).state_dict())
    assert "600 streamed examples" in _one_line(e)
    f = a.fork(2)
    assert (f.n, f.epoch, f.pos) == (700, 0, 0) and not torch.equal(f.next(64)[1], a.next(64)[1])


def test_sequential_keeps_data_order() -> None:
    x, y = StreamBatches(Computed(700), seed=1, workers=0, sequential=True).next(8)
    assert y.tolist() == [(i * 7) % 10 for i in range(8)]


def test_an_iterable_with_val_and_test_streams_in_its_own_order() -> None:
    val = Computed(300)
    sp = load_data(TINY, {"train": Stream(500), "val": val, "test": (torch.randn(20, 40), torch.arange(20) % 10)})
    assert isinstance(sp, StreamedSplits) and sp.kind == "iterable" and sp.n_train == 500
    assert (len(sp.val), len(sp.test), sp.test.x.shape[1:]) == (300, 20, (1, 40))
    batches, _ = stream_batches(sp, 0, torch.device("cpu"))
    ref = Computed(500)
    assert torch.equal(batches.next(128)[0], torch.stack([ref[i][0] for i in range(128)]))
    sizes = [128, 128, 100, 160, 64]  # 128 + 128 + 100 = 356: the 4th batch (160) runs past 500 and starts epoch 1
    a = StreamBatches(Stream(500), seed=0)
    for b in sizes[:3]:
        a.next(b)
    assert (a.epoch, a.pos) == (0, 356)
    state, want = a.state_dict(), [a.next(b) for b in sizes[3:]]
    b2 = StreamBatches(Stream(500), seed=0)
    b2.load_state_dict(state)
    assert all(torch.equal(g[0], w[0]) for g, w in zip([b2.next(b) for b in sizes[3:]], want))
    assert (b2.epoch, b2.pos) == (1, 224)


@pytest.mark.parametrize("own_generator", [True, False])
def test_a_shuffling_dataloader_resumes_exactly(own_generator: bool) -> None:
    def loader() -> DataLoader:
        gen = torch.Generator().manual_seed(int(torch.randint(1 << 30, ()))) if own_generator else None
        return DataLoader(Computed(500), batch_size=50, shuffle=True, generator=gen)  # global RNG when gen is None

    a = StreamBatches(loader(), seed=4)
    assert a.n == 500
    a.next(70), a.next(70)
    state, want = a.state_dict(), [a.next(70) for _ in range(8)]  # into epoch 1
    torch.rand(7)  # the global RNG moved on, as it does in a resumed process
    b = StreamBatches(loader(), seed=4)
    b.load_state_dict(state)
    got = [b.next(70) for _ in range(8)]
    assert all(torch.equal(g[0], w[0]) and torch.equal(g[1], w[1]) for g, w in zip(got, want))


def test_an_iterable_without_val_and_test_is_one_line() -> None:
    for data in (Stream(100), DataLoader(Computed(100), batch_size=10)):
        with pytest.raises(DataError) as e:
            load_data(TINY, data)
        assert "data={'train': it, 'val':" in _one_line(e)
    with pytest.raises(DataError) as e:
        load_data(TINY, {"train": Stream(100), "val": Computed(10)})
    assert "keys train, val, test" in _one_line(e)


def test_a_label_out_of_range_while_streaming_is_one_line() -> None:
    ds = Computed(1000)
    sp = load_data(TINY, ds)
    assert isinstance(sp, StreamedSplits)
    ds.bad = int(sp.data.indices[300])  # a training example outside the sample: found only while streaming
    batches, _ = stream_batches(sp, 0, torch.device("cpu"), workers=0)
    order = WindowOrder(720, 1, 0).positions(0, 0, 720).tolist()
    with pytest.raises(DataError) as e:
        for _ in range(720 // 64):
            batches.next(64)
    msg = _one_line(e)
    assert f"label 99 of training example {order.index(300)} (epoch 0) is out of range [0, 10)" in msg


def test_stream_off_keeps_the_refusal() -> None:
    with pytest.raises(DataError) as e:
        load_data(DataConfig(name="custom", resident_max_mb=0.01, stream="off"), Computed(1000))
    assert "too large to keep on the device" in _one_line(e)
    with pytest.raises(DataError) as e:
        data = {"train": Stream(9), "val": Computed(9), "test": Computed(9)}
        load_data(DataConfig(name="custom", stream="off"), data)
    assert "data.stream=off" in _one_line(e)


def test_stream_on_streams_what_would_fit() -> None:
    assert isinstance(load_data(DataConfig(name="custom", stream="on"), Computed(1000)), StreamedSplits)
    assert isinstance(load_data(DataConfig(name="custom"), Computed(1000)), Splits)


def _rss_mb() -> float:
    text = Path("/proc/self/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", text).group(1)) / 1024  # type: ignore[union-attr]


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="VmRSS is read from /proc")
def test_streaming_gigabytes_keeps_memory_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stream, "EVAL_CAP", 1000)
    ds = Computed(400_000, (3, 32, 32))  # 4.9 GB as float32, none of it in memory
    sp = load_data(DataConfig(name="custom"), ds)  # the default resident_max_mb (2 GB) is exceeded
    batches, _ = stream_batches(sp, 0, torch.device("cpu"), workers=0)
    batches.next(128)
    before = _rss_mb()
    for _ in range(300):  # 38k examples, 470 MB read
        batches.next(128)
    assert _rss_mb() - before < 32


def test_a_bad_item_in_a_worker_is_one_line() -> None:
    class NotPairs(Computed):
        def __getitem__(self, i: int) -> torch.Tensor:  # type: ignore[override]
            return torch.zeros(3)

    with pytest.raises(DataError) as e:
        StreamBatches(NotPairs(100), seed=0, workers=1).next(10)
    assert _one_line(e) == "data passed from Python: a Dataset item is a Tensor, expected an (x, y) pair"


def test_a_dict_with_a_map_style_train_streams_by_index() -> None:
    sp = load_data(TINY, {"train": Computed(500), "val": Computed(60), "test": Computed(40)})
    assert isinstance(sp, StreamedSplits) and sp.kind == "map"
    assert (sp.n_train, len(sp.val), len(sp.test)) == (500, 60, 40)
    x, y = stream_batches(sp, 2, torch.device("cpu"), workers=0)[0].next(32)
    (rx, ry), = _reference(Computed(500), 500, 2, [32])
    assert torch.equal(x, rx) and torch.equal(y, ry)


def test_streamed_splits_pass_through_load_data() -> None:
    sp = load_data(TINY, Computed(1000))
    assert load_data(TINY, sp) is sp
    assert load_data(DataConfig(name="custom", augment="none"), sp).augment == "none"


@pytest.mark.parametrize("workers", [0, 2])
def test_streaming_leaves_the_global_rng_alone(workers: int) -> None:
    """Dropout draws from the global RNG: an iterator restarted at a resume or a size change must not move it."""
    torch.manual_seed(0)
    want = torch.rand(3)
    torch.manual_seed(0)
    sp = load_data(TINY, Computed(1000))
    for source in (sp.data, Stream(300), DataLoader(Computed(300), batch_size=30, shuffle=True)):
        b = StreamBatches(source, seed=1, workers=workers)
        b.next(16), b.next(17)
        b.load_state_dict(b.state_dict())
        b.next(17), b.fork(3).next(8)
        b.close()
    assert torch.equal(torch.rand(3), want)


def test_a_state_survives_the_checkpoint_format() -> None:
    import json

    from quicktrain.state import flatten, unflatten

    a = StreamBatches(Computed(700), seed=8, workers=0)
    a.next(100)
    tensors: dict[str, torch.Tensor] = {}
    state = unflatten(json.loads(json.dumps(flatten(a.state_dict(), tensors))), tensors)
    b = StreamBatches(Computed(700), seed=8, workers=0)
    b.load_state_dict(state)
    assert torch.equal(a.next(50)[0], b.next(50)[0])
