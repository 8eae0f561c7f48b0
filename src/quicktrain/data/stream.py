"""Classification data that does not fit in memory, streamed through a torch DataLoader instead of being refused.

`load_stream(cfg, data)` -> `StreamedSplits`: the training part stays the user's Dataset (never materialised); val and
test are materialised tensors, at most `EVAL_CAP` examples each (a larger held-out split is evaluated on a fixed,
deterministic subset of it), and `sample` holds the first `SAMPLE` training examples for shape checks, the `auto` race
and FLOP counting. `StreamBatches` is the batch source, with DeviceBatches' interface.

Order: for a map-style Dataset, example k of epoch e is perm_e(k) of `WindowOrder(n, 1, seed)` (the keyed Feistel
permutation the token streams use), a pure function of (seed, epoch, position): no permutation array, `state_dict` is
a few ints, and after `load_state_dict` the very next batch is the one the uninterrupted run would have drawn. For an
IterableDataset or DataLoader the order is the iterable's own (see `_IterSource`).

Workers: a worker process only calls `dataset[i]` and collates; indices are chosen in this process, so workers never
change the numbers as long as `__getitem__` is a pure function of its index. A `__getitem__` that draws random numbers
(e.g. torchvision random transforms) gets worker-dependent draws: batches then differ with the number of workers and
between a run and its resume. Put random augmentation in `data.augment` (on the device, seeded) instead.

Measured (`python benchmarks/data_read.py`, docs/BENCHMARKS.md, "Token data and streamed classification"; batch
128 from an in-memory TensorDataset, 1 thread): 1x40 resident DeviceBatches 146k batches/s, streamed 2.6k/s with 0
workers, 0.5k/s with 2; 3x32x32 resident 4.9k/s, streamed 618/s (0 workers), 376/s (2). So the resident path stays
the default where data fits, and workers only pay where items are slow to make and there are cores to spare.
Memory: tests/test_stream.py bounds VmRSS growth over 300 streamed batches of a 4.9 GB computed dataset (< 32 MB).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, IterableDataset, Subset, default_collate

from quicktrain.config import DataConfig
from quicktrain.data.prepare import as_x, as_y, check_pair, holdout, num_classes_of, resolve_augment, to_layout
from quicktrain.data.tokens import WindowOrder
from quicktrain.data.types import Split, fingerprint
from quicktrain.errors import DataError

PYTHON = "data passed from Python"
EVAL_CAP = 10_000  # val/test examples kept (each): 10k of 3x32x32 float32 is 123 MB, evaluated in seconds
SAMPLE = 256  # training examples materialised for shape checks, the auto race and FLOP counting
_CHUNK = 256  # examples a plain IterableDataset is collated in


@dataclass
class StreamedSplits:
    """Splits whose training part is streamed: `data` is the training source (a map-style Dataset -- a Subset of the
    user's when val/test were held out of it --, an IterableDataset or a DataLoader); `sample`, `val`, `test` are
    small CPU tensors. `fingerprint`: sha256 over the source's class name and length, the split settings, the
    sample/val/test tensors and 16 training items spread evenly through it -- cheap (no pass over the data), and it
    changes with the length, the split and almost any edit, but not with an edit that misses all those items."""

    data: Any
    sample: Split
    val: Split
    test: Split
    num_classes: int
    n_train: int
    name: str
    fingerprint: str
    augment: str
    kind: str  # "map" (a Dataset, shuffled by index) or "iterable" (its own order)
    held_out: str  # how val/test were made, for what the run prints, e.g. "held out 5,000 of 60,000 (capped 10,000)"
    source: Any = None  # always None: data passed from Python

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.sample.x.shape[1:])

    @property
    def ndim(self) -> int:
        return self.sample.x.dim() - 2


# ---------------------------------------------------------------------------------------------------------------------
# collating, checks


def _collate(items: list[Any]) -> tuple[Tensor, Tensor, tuple[bool, int, int]]:
    """(x float32 in the library's layout, y int64, (finite, min label, max label)). Runs in the workers, so the
    checks cost the main process three scalars, not a pass over the batch."""
    if not all(isinstance(it, (tuple, list)) and len(it) == 2 for it in items):
        bad = next(it for it in items if not (isinstance(it, (tuple, list)) and len(it) == 2))
        raise DataError(f"{PYTHON}: a Dataset item is a {type(bad).__name__}, expected an (x, y) pair")
    x, y = default_collate(items)
    return _normalise(x, y)


def _normalise(x: Any, y: Any) -> tuple[Tensor, Tensor, tuple[bool, int, int]]:
    x = to_layout(as_x(x, PYTHON, "x"), PYTHON, False)
    y = as_y(y, PYTHON, "y")
    return x, y, (bool(torch.isfinite(x).all()), int(y.min()), int(y.max()))


def _check(info: tuple[bool, int, int], y: Tensor, num_classes: int | None, epoch: int, pos: int) -> None:
    finite, lo, hi = info
    if not finite:
        raise DataError(f"{PYTHON}: a training batch (epoch {epoch}, examples {pos}..{pos + len(y) - 1}) contains "
                        f"NaN or infinite values")
    if num_classes is not None and (lo < 0 or hi >= num_classes):
        j = int(torch.nonzero((y < 0) | (y >= num_classes))[0])
        raise DataError(f"{PYTHON}: label {int(y[j])} of training example {pos + j} (epoch {epoch}) is out of range "
                        f"[0, {num_classes}) (num_classes is fixed from the first examples, val and test)")


def default_workers() -> int:
    """Worker processes: 0 on <= 2 cores (measured there: 2 workers were 1.6-5x slower than 0 on in-memory items, see
    the module docstring), else min(4, cores - 1): one core stays for the training process."""
    cores = os.cpu_count() or 1
    return 0 if cores <= 2 else min(4, cores - 1)


# ---------------------------------------------------------------------------------------------------------------------
# the batch source


class _Plan:
    """The batch sampler: index batches of `size` from the pure order, starting at (epoch, pos), drop-last exactly as
    DeviceBatches. Mutated (epoch, pos, size) before each `iter(loader)`, which re-reads it (workers persist)."""

    def __init__(self, n: int, seed: int, sequential: bool) -> None:
        self.n, self.sequential = n, sequential
        self.order = WindowOrder(n, 1, seed)
        self.epoch, self.pos, self.size = 0, 0, 1

    def indices(self, epoch: int, start: int, count: int) -> np.ndarray:
        if self.sequential:
            return np.arange(start, start + count, dtype=np.int64)
        return self.order.positions(epoch, start, count)

    def __iter__(self) -> Iterator[list[int]]:
        e, p, b = self.epoch, self.pos, self.size
        while True:
            e, p = _advance(e, p, b, self.n)
            yield self.indices(e, p, b).tolist()
            e, p = _after(e, p, b, self.n)


def _advance(epoch: int, pos: int, size: int, n: int) -> tuple[int, int]:
    """Where a batch of `size` starts: drop-last, a batch that would run past the end starts the next epoch."""
    return (epoch + 1, 0) if pos + size > n else (epoch, pos)


def _after(epoch: int, pos: int, size: int, n: int) -> tuple[int, int]:
    """The cursor after a batch starting at (epoch, pos); an exact end of epoch counts at once (as DeviceBatches)."""
    pos += size
    return (epoch + 1, 0) if pos == n else (epoch, pos)


class StreamBatches:
    """Training batches streamed from a Dataset (or an IterableDataset / DataLoader) to the device; the interface of
    DeviceBatches: `next(batch_size)`, `n`, `epoch`, `pos`, `state_dict`, `load_state_dict`, `fork`.

    Map-style: a DataLoader with `workers` persistent processes, `prefetch` batches each in flight, pinned memory on
    CUDA, over a batch sampler drawn from the pure order. A batch size different from the iterator's (a ramp) or a
    restored state re-creates the iterator at the cursor (workers persist; the prefetched batches are dropped), so
    batches never depend on the history of sizes (a change costs one iterator restart: the prefetched batches).
    `batch_size_hint`: the size the workers start prefetching at construction. An iterable
    source brings its own workers: `workers`, `prefetch` and `pin_memory` apply only to the map-style loader.
    Labels outside [0, num_classes) and non-finite x raise a one-line DataError.
    """

    def __init__(self, source: Any, seed: int, device: torch.device | str = "cpu", batch_size_hint: int = 128,
                 workers: int | None = None, prefetch: int = 2, pin_memory: bool | None = None, *,
                 num_classes: int | None = None, sequential: bool = False, n: int | None = None) -> None:
        self.source, self.seed, self.device = source, seed, torch.device(device)
        self.workers = default_workers() if workers is None else workers
        self.prefetch, self.num_classes, self.sequential = prefetch, num_classes, sequential
        self.pin = self.device.type == "cuda" if pin_memory is None else pin_memory
        self.hint = batch_size_hint
        self.iterable = _is_iterable(source)
        self.n = n if n is not None else _length(source)
        if self.n < 1:
            raise DataError(f"{PYTHON}: the training data is empty")
        self.epoch, self.pos = 0, 0  # completed epochs; examples of this epoch already handed out
        self._at: tuple[int, int, int] | None = None  # (epoch, pos, size) the live iterator's next batch has
        self._it: Iterator[Any] | None = None
        if self.iterable:
            self._src = _IterSource(source, seed, self.n)
        else:
            self._plan = _Plan(self.n, seed, sequential)
            # own generator: iter(loader) draws the workers' base seed from it, not from the global RNG (which
            # dropout uses), so restarting the iterator at a resume or a batch-size change moves no other numbers
            self._loader = DataLoader(source, batch_sampler=self._plan, num_workers=self.workers, generator=_gen(seed),
                                      collate_fn=_collate, pin_memory=self.pin, persistent_workers=self.workers > 0,
                                      prefetch_factor=prefetch if self.workers > 0 else None)
            if self.workers > 0:  # start the workers now, so the first batches are ready when training starts
                self._restart(0, 0, max(1, min(batch_size_hint, self.n)))

    def next(self, batch_size: int) -> tuple[Tensor, Tensor]:
        """The next `batch_size` examples (x, y) on the device, exactly those the uninterrupted run would draw."""
        if not 1 <= batch_size <= self.n:
            raise ValueError(f"batch_size {batch_size} must be in [1, {self.n}] (the training split's size)")
        epoch, start = _advance(self.epoch, self.pos, batch_size, self.n)
        if self._at != (epoch, start, batch_size):
            self._restart(epoch, start, batch_size)
        try:
            x, y, info = _fetch(self._it)  # type: ignore[arg-type]
            _check(info, y, self.num_classes, epoch, start)
        except Exception:
            self.close()  # now: left to the garbage collector, stopping workers after an error took 5 s
            raise
        self.epoch, self.pos = _after(epoch, start, batch_size, self.n)
        self._at = (*_advance(self.epoch, self.pos, batch_size, self.n), batch_size)  # where the iterator is now
        return x.to(self.device, non_blocking=self.pin), y.to(self.device, non_blocking=self.pin)

    def _restart(self, epoch: int, pos: int, size: int) -> None:
        if self.iterable:
            self._it = self._src.batches(epoch, pos, size)
        else:
            self._plan.epoch, self._plan.pos, self._plan.size = epoch, pos, size
            self._it = iter(self._loader)
        self._at = (epoch, pos, size)

    def fork(self, seed: int) -> StreamBatches:
        """The same data in the order of another seed, from the start (the LR finder's), with its own workers."""
        return StreamBatches(self.source, seed, self.device, self.hint, self.workers, self.prefetch, self.pin,
                             num_classes=self.num_classes, sequential=self.sequential, n=self.n)

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "pos": self.pos, "seed": self.seed, "n": self.n, "kind": "stream"}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("kind") != "stream" or int(state["n"]) != self.n:
            raise DataError(f"{PYTHON}: the saved batch order is for {state.get('n', '?')} streamed examples, this "
                            f"training data has {self.n} (data changed?)")
        if int(state["seed"]) != self.seed:
            self.seed = int(state["seed"])
            if self.iterable:
                self._src = _IterSource(self.source, self.seed, self.n)
            else:
                self._plan.order = WindowOrder(self.n, 1, self.seed)
        self.epoch, self.pos = int(state["epoch"]), int(state["pos"])
        self._at, self._it = None, None

    def close(self) -> None:
        """Stop the worker processes now (they also stop when this object is collected)."""
        self._it = None
        if not self.iterable and getattr(self._loader, "_iterator", None) is not None:
            self._loader._iterator._shutdown_workers()  # type: ignore[union-attr]
            self._loader._iterator = None


def _fetch(it: Iterator[Any]) -> Any:
    """next(it), with a DataError raised in a worker (which the DataLoader re-raises with its traceback in the
    message) brought back to its one line."""
    try:
        return next(it)
    except DataError as e:
        lines = [ln for ln in str(e).splitlines() if ln.startswith("quicktrain.errors.DataError: ")]
        if not lines:
            raise
        raise DataError(lines[-1].removeprefix("quicktrain.errors.DataError: ")) from None


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _is_iterable(data: Any) -> bool:
    return isinstance(data, (IterableDataset, DataLoader))


def _length(data: Any) -> int:
    """Examples per epoch. A DataLoader: len(dataset), or batches * batch_size when it drops the last batch."""
    try:
        if isinstance(data, DataLoader):
            if data.batch_size is not None and data.drop_last:
                return len(data) * data.batch_size
            return len(data.dataset)  # type: ignore[arg-type]
        return len(data)
    except TypeError:
        raise DataError(f"{PYTHON}: the training {type(data).__name__} has no len(); give it __len__ (examples per "
                        f"epoch), which defines epochs and the schedule") from None


class _IterSource:
    """Epochs of an IterableDataset or DataLoader, re-batched to any size.

    Order: the iterable's own. Epoch e is a fresh `iter()` made under a torch RNG seeded from (seed, e) -- and a
    DataLoader's own `generator`, if it has one, is re-seeded from (seed, e) too -- so a DataLoader with
    shuffle=True, and any iterable that draws its order from torch's RNG when it starts, repeats its order for the
    same (seed, epoch). Randomness it draws later, or from another RNG (numpy, random), is not controlled: exact resume
    then needs an iterable that is deterministic per epoch. Resume at (e, pos) re-creates epoch e and skips pos
    examples: it costs reading pos examples (the whole pipeline, with the loader's workers), up to one epoch.
    An epoch that ends before `n` examples raises DataError; examples beyond `n` are not used.
    """

    def __init__(self, data: Any, seed: int, n: int) -> None:
        self.data, self.seed, self.n = data, seed, n

    def _epoch_seed(self, epoch: int) -> int:
        digest = hashlib.sha256(f"quicktrain.stream:{self.seed}:{epoch}".encode()).digest()
        return int.from_bytes(digest[:8], "little") >> 1

    def chunks(self, epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        """The raw (x, y) chunks of epoch `epoch`, in the iterable's order (a plain IterableDataset is collated in
        chunks of _CHUNK examples)."""
        loader = self.data if isinstance(self.data, DataLoader) else DataLoader(self.data, batch_size=_CHUNK)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self._epoch_seed(epoch))
            if loader.generator is not None:
                loader.generator.manual_seed(self._epoch_seed(epoch))
            it = iter(loader)
            first = next(it, None)  # a sampler draws its seed on the first next(): inside the seeded RNG
        for item in ([first] if first is not None else []), it:
            for b in item:
                if not (isinstance(b, (tuple, list)) and len(b) == 2):
                    raise DataError(f"{PYTHON}: the training iterable yields a {type(b).__name__}, expected (x, y)")
                yield b[0], b[1]

    def batches(self, epoch: int, pos: int, size: int) -> Iterator[tuple[Tensor, Tensor, tuple[bool, int, int]]]:
        """Batches of `size` from example `pos` of epoch `epoch` on, through later epochs (drop-last)."""
        while True:
            parts, have, skip = [], 0, pos
            for x, y in self.chunks(epoch):
                if skip >= len(y):
                    skip -= len(y)
                    continue
                x, y, skip = x[skip:], y[skip:], 0
                parts.append((x, y))
                have += len(y)
                while have >= size and pos + size <= self.n:
                    xb, yb, parts, have = _take(parts, size)
                    yield _normalise(xb, yb)
                    pos += size
                if pos + size > self.n:
                    break
            else:
                if pos + size <= self.n:
                    raise DataError(f"{PYTHON}: the training iterable ended after {pos + have} examples in epoch "
                                    f"{epoch}, but its length says {self.n}")
            epoch, pos = epoch + 1, 0


def _take(parts: list[tuple[Any, Any]], size: int) -> tuple[Tensor, Tensor, list[tuple[Any, Any]], int]:
    x = torch.cat([torch.as_tensor(p[0]) for p in parts])
    y = torch.cat([torch.as_tensor(p[1]).reshape(-1) for p in parts])
    rest = [(x[size:], y[size:])] if len(y) > size else []
    return x[:size], y[:size], rest, len(y) - size


def stream_batches(splits: StreamedSplits, seed: int, device: torch.device, say: Any = lambda _m: None,
                   workers: int | None = None, prefetch: int = 2, sequential: bool = False) -> tuple[Any, str]:
    """The training batch source of streamed splits, and the path taken ("streamed"), which the result records."""
    batches = StreamBatches(splits.data, seed, device, workers=workers, prefetch=prefetch, n=splits.n_train,
                            num_classes=splits.num_classes, sequential=sequential)
    how = f"{batches.workers} workers" if splits.kind == "map" else "the iterable's own order and workers"
    say(f"data: streaming {splits.n_train:,} training examples through a DataLoader ({how}); {splits.held_out}")
    return batches, "streamed"


# ---------------------------------------------------------------------------------------------------------------------
# loading


def is_stream_input(data: Any) -> bool:
    """Data only this module reads: an IterableDataset, a DataLoader, or a {"train", "val", "test"} dict."""
    return _is_iterable(data) or isinstance(data, dict)


def dataset_mb(ds: Any) -> float:
    """A map-style Dataset's size as float32, from its first item (what load.py compares with resident_max_mb)."""
    item = ds[0]
    x = item[0] if isinstance(item, (tuple, list)) else item
    return float(np.prod(np.shape(x))) * 4 * len(ds) / 2**20


def load_stream(cfg: DataConfig, data: Any, workers: int | None = None) -> StreamedSplits:
    """Streamed splits of a map-style Dataset (val and test held out by index exactly as load.py holds them out of
    tensors: same fractions, same `split_seed`; the held-out index lists cost 8 bytes an example) or of
    {"train": Dataset | IterableDataset | DataLoader, "val": ..., "test": ...} (val/test: a Dataset, an iterable or an
    (x, y) pair). Val and test keep at most EVAL_CAP examples each (the first of each held-out list, which is
    shuffled). num_classes is cfg's if > 0, else inferred from the sample, val and test: a larger label met later
    while streaming is a DataError naming it."""
    if cfg.stream == "off":
        what = "a dict of splits" if isinstance(data, dict) else f"a {type(data).__name__}"
        raise DataError(f"{PYTHON}: data.stream=off, but {what} can only be streamed; set data.stream=auto or pass "
                        f"tensors or a map-style Dataset")
    workers = default_workers() if workers is None else workers
    if isinstance(data, dict):
        missing = [k for k in ("train", "val", "test") if k not in data]
        if missing or set(data) - {"train", "val", "test"}:
            raise DataError(f"{PYTHON}: a dict of data needs exactly the keys train, val, test; got {sorted(data)}")
        train, held = data["train"], "val/test as given"
        val, test = (_materialise(data[k], k, workers) for k in ("val", "test"))
    elif _is_iterable(data):
        raise DataError(f"{PYTHON}: a {type(data).__name__} alone has no index to hold val/test out by; pass "
                        f"data={{'train': it, 'val': ds_or_(x, y), 'test': ds_or_(x, y)}}")
    else:
        train, val, test, held = _held_out(cfg, data, workers)
    n = _length(train)
    sample = _materialise(train, "train", 0, SAMPLE)
    for name, s in (("sample", sample), ("val", val), ("test", test)):
        check_pair(s.x, s.y, PYTHON, name)
        if s.x.shape[1:] != sample.x.shape[1:]:
            raise DataError(f"{PYTHON}: {name} examples have shape {tuple(s.x.shape[1:])} but training examples have "
                            f"{tuple(sample.x.shape[1:])}")
    num_classes = num_classes_of([sample.y, val.y, test.y], cfg.num_classes, PYTHON)
    augment = resolve_augment(cfg.augment, "custom", sample.x.dim() - 2, tuple(sample.x.shape[1:]))
    kind = "iterable" if _is_iterable(train) else "map"
    return StreamedSplits(train, sample, val, test, num_classes, n, "custom", _fingerprint(cfg, train, n, sample, val,
                          test), augment, kind, f"{held}, evaluated on {len(val):,} val / {len(test):,} test examples "
                          f"(at most {EVAL_CAP:,} each)")


def _held_out(cfg: DataConfig, ds: Any, workers: int) -> tuple[Any, Split, Split, str]:
    """load.py's `_split` on indices: test = first test_fraction of a split_seed permutation, val likewise of the
    rest with split_seed + 1; only the first EVAL_CAP of each are read."""
    n = len(ds)
    rest, test_idx = holdout(n, cfg.test_fraction, cfg.split_seed, PYTHON, "test")
    rest2, val_idx = holdout(len(rest), cfg.val_fraction, cfg.split_seed + 1, PYTHON, "validation")
    val_idx, train_idx = rest[val_idx], rest[rest2]
    val, test = (_materialise(Subset(ds, i[:EVAL_CAP].tolist()), k, workers) for k, i in
                 (("val", val_idx), ("test", test_idx)))
    note = f"held out {len(val_idx):,} val and {len(test_idx):,} test of {n:,} examples"
    return _Part(ds, train_idx.numpy()), val, test, note


class _Part(Subset):
    """A Subset over a numpy index array (8 bytes an example; a list of ints would be ~36) that passes the user's
    Dataset Python ints, as a DataLoader over the Dataset itself would (numpy ints fail `isinstance(i, int)`)."""

    def __getitem__(self, i: int) -> Any:
        return self.dataset[int(self.indices[i])]

    def __getitems__(self, idx: list[int]) -> list[Any]:
        ids = [int(self.indices[i]) for i in idx]
        many = getattr(self.dataset, "__getitems__", None)
        return many(ids) if callable(many) else [self.dataset[i] for i in ids]


def _materialise(data: Any, key: str, workers: int, cap: int = EVAL_CAP) -> Split:
    """The first `cap` examples of a Dataset, an iterable or an (x, y) pair, as a Split (through a DataLoader with
    `workers` for a Dataset: decoding 10k items one by one in this process would take as long as an epoch of many)."""
    if isinstance(data, (tuple, list)) and len(data) == 2:
        x = to_layout(as_x(data[0], PYTHON, f"{key} x"), PYTHON, False, f"{key} x")
        y = as_y(data[1], PYTHON, f"{key} y")
        return Split(x[:cap].contiguous(), y[:cap].contiguous())
    if _is_iterable(data):
        it = _IterSource(data, 0, cap).chunks(0)
        parts, have = [], 0
        for x, y in it:
            parts.append((x, y))
            have += len(y)
            if have >= cap:
                break
        if not parts:
            raise DataError(f"{PYTHON}: the {key} iterable is empty")
        x, y, _, _ = _take(parts, min(cap, have))
        x, y, _ = _normalise(x, y)
        return Split(x, y)
    if not isinstance(data, Dataset) or not hasattr(data, "__len__"):
        raise DataError(f"{PYTHON}: {key} must be a Dataset, an IterableDataset, a DataLoader or an (x, y) pair; got "
                        f"{type(data).__name__}")
    if len(data) == 0:
        raise DataError(f"{PYTHON}: the {key} Dataset is empty")
    part = data if len(data) <= cap else Subset(data, range(cap))
    loader = DataLoader(part, batch_size=256, num_workers=workers, collate_fn=_collate, generator=_gen(0))
    xs, ys = zip(*[(x, y) for x, y, _ in loader])
    return Split(torch.cat(xs), torch.cat(ys))


def _fingerprint(cfg: DataConfig, train: Any, n: int, sample: Split, val: Split, test: Split) -> str:
    h = hashlib.sha256()
    base = train.dataset if isinstance(train, (Subset, DataLoader)) else train
    h.update(f"{type(base).__module__}.{type(base).__qualname__}\0{n}\0{cfg.split_seed}\0{cfg.val_fraction}\0"
             f"{cfg.test_fraction}\0".encode())
    h.update(fingerprint(sample, val, test).encode())
    if not _is_iterable(train):
        spread = _materialise(Subset(train, [n * k // 16 for k in range(16)]), "train", 0)
        h.update(fingerprint(spread, spread, spread).encode())
    return h.hexdigest()
