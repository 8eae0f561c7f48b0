"""Token files (nanoGPT and llm.c formats), safe meta.pkl reading, and the streamed LM window source: its order is a
pure function of (seed, epoch, position), it resumes exactly, matches the resident variant, and keeps memory and
address space bounded on a sparse multi-GB shard."""

from __future__ import annotations

import copy
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from quicktrain.data.tokens import (HEADER_BYTES, SHARD_MAGIC, ResidentWindows, TokenFile, TokenWindows, WindowOrder,
                                    eval_windows, open_tokens, read_meta)
from quicktrain.errors import DataError, UserError


def write_nanogpt(folder: Path, train: np.ndarray, val: np.ndarray, meta: dict | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    train.astype(np.uint16).tofile(folder / "train.bin")
    val.astype(np.uint16).tofile(folder / "val.bin")
    if meta is not None:
        (folder / "meta.pkl").write_bytes(pickle.dumps(meta))
    return folder


def write_shard(path: Path, tokens: np.ndarray, magic: int = SHARD_MAGIC, version: int = 1,
                count: int | None = None) -> Path:
    header = np.zeros(256, np.int32)
    header[:3] = magic, version, len(tokens) if count is None else count
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header.tobytes() + tokens.astype(np.uint16).tobytes())
    return path


def sparse_shard(path: Path, n_tokens: int) -> Path:
    """A valid llm.c shard of n_tokens zero tokens that costs no disk: the header, then a hole."""
    write_shard(path, np.zeros(0), count=n_tokens)
    os.truncate(path, HEADER_BYTES + 2 * n_tokens)
    return path


def assert_one_line(err: pytest.ExceptionInfo, name: str) -> None:
    msg = str(err.value)
    assert isinstance(err.value, UserError) and "\n" not in msg and name in msg, msg


def status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


# ---------------------------------------------------------------------------------------------------------------------
# formats and validation


def test_nanogpt_layout_with_meta(tmp_path: Path) -> None:
    d = open_tokens(write_nanogpt(tmp_path / "shakespeare_char", np.arange(1000) % 65, np.arange(300) % 65,
                                  {"vocab_size": 65, "itos": {i: chr(65 + i) for i in range(65)}}))
    assert (d.vocab_size, d.name, d.train[0].format, d.train[0].n_tokens, d.val[0].n_tokens) == \
        (65, "shakespeare_char", "nanogpt", 1000, 300)
    assert d.meta["itos"][0] == "A" and len(d.fingerprint) == 64
    assert (len(d.train[0]), d.train[0].nbytes, d.train[0].vocab_size, d.bytes_per_token) == (1000, 2000, 65, 0.0)


def test_llmc_shards_sorted_default_vocab(tmp_path: Path) -> None:
    for i in (2, 1):
        write_shard(tmp_path / f"fineweb_train_{i:06d}.bin", np.full(500, i))
    write_shard(tmp_path / "fineweb_val_000000.bin", np.arange(400))
    d = open_tokens(tmp_path)
    assert [f.path.name for f in d.train] == ["fineweb_train_000001.bin", "fineweb_train_000002.bin"]
    assert d.vocab_size == 50257 and d.train[0].format == "llmc" and d.train[0].offset == HEADER_BYTES
    assert d.train[1].read(10, 3).tolist() == [2, 2, 2] and d.val[0].read(5, 2).tolist() == [5, 6]
    assert d.val[0].max_token(chunk_tokens=7) == 399


def _bad(tmp_path: Path, kind: str) -> Path:
    p = tmp_path / "data_train_000001.bin"
    if kind == "empty":
        p.write_bytes(b"")
    elif kind == "odd":
        p = tmp_path / "train.bin"
        p.write_bytes(b"abc")
    elif kind == "truncated":
        p.write_bytes(b"\x00" * 100)
    elif kind == "magic":
        write_shard(p, np.arange(10), magic=1234)
    elif kind == "short":
        write_shard(p, np.arange(10), count=20)
    elif kind == "long":
        write_shard(p, np.arange(10), count=5)
    elif kind == "version":
        write_shard(p, np.arange(10), version=2)
    elif kind == "truncated-magic":
        p.write_bytes(np.array([SHARD_MAGIC, 1, 5], np.int32).tobytes())
    return p


@pytest.mark.parametrize("kind", ["empty", "odd", "truncated", "magic", "short", "long", "version", "truncated-magic"])
def test_bad_token_file_is_one_line_data_error(tmp_path: Path, kind: str) -> None:
    p = _bad(tmp_path, kind)
    with pytest.raises(DataError) as err:
        TokenFile.open(p)
    assert_one_line(err, str(p))


def test_file_in_shard_directory_must_have_magic(tmp_path: Path) -> None:
    write_shard(tmp_path / "tiny_val.bin", np.arange(100))
    (np.arange(100, dtype=np.uint16)).tofile(tmp_path / "tiny_train.bin")  # raw tokens among shards
    with pytest.raises(DataError) as err:
        open_tokens(tmp_path)
    assert_one_line(err, "tiny_train.bin")


@pytest.mark.parametrize("case", ["no-dir", "a-file", "empty-dir", "no-val", "no-train-shards"])
def test_missing_files_name_them(tmp_path: Path, case: str) -> None:
    target, name = tmp_path / "absent", "absent"
    if case == "a-file":
        target.write_bytes(b"xx")
    elif case == "empty-dir":
        target.mkdir()
    elif case == "no-val":
        target.mkdir()
        np.arange(10, dtype=np.uint16).tofile(target / "train.bin")
        name = "val.bin"
    elif case == "no-train-shards":
        write_shard(target / "x_val_000000.bin", np.arange(10))
        name = "train"
    with pytest.raises(DataError) as err:
        open_tokens(target)
    assert_one_line(err, name)


# ---------------------------------------------------------------------------------------------------------------------
# meta.pkl: plain values only, never code


class _Evil:
    def __init__(self, sentinel: Path) -> None:
        self.sentinel = sentinel

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, (f"touch {self.sentinel}",))


@pytest.mark.parametrize("payload", ["evil-value", "evil-top", "class", "not-dict", "int-key", "vocab-str", "vocab-0",
                                     "vocab-bool", "garbage", "empty"])
def test_read_meta_refuses_anything_but_plain_data(tmp_path: Path, payload: str) -> None:
    sentinel, p = tmp_path / "PWNED", tmp_path / "meta.pkl"
    objects = {"evil-value": {"vocab_size": 65, "x": _Evil(sentinel)}, "evil-top": _Evil(sentinel),
               "class": {"vocab_size": 65, "p": Path("/")}, "not-dict": [1, 2], "int-key": {1: 2, "vocab_size": 3},
               "vocab-str": {"vocab_size": "65"}, "vocab-0": {"vocab_size": 0}, "vocab-bool": {"vocab_size": True}}
    if payload == "garbage":
        p.write_bytes(b"\x80\x04not a pickle")
    elif payload == "empty":
        p.write_bytes(b"")
    else:
        p.write_bytes(pickle.dumps(objects[payload]))
    with pytest.raises(DataError) as err:
        read_meta(p)
    assert_one_line(err, str(p))
    assert not sentinel.exists()


def test_malicious_meta_in_token_directory_never_runs(tmp_path: Path) -> None:
    folder = write_nanogpt(tmp_path / "d", np.arange(100), np.arange(100))
    sentinel = tmp_path / "PWNED"
    (folder / "meta.pkl").write_bytes(pickle.dumps({"vocab_size": _Evil(sentinel)}))
    with pytest.raises(DataError):
        open_tokens(folder)
    assert not sentinel.exists()
    assert read_meta_ok(folder)


def read_meta_ok(folder: Path) -> bool:
    (folder / "meta.pkl").write_bytes(pickle.dumps({"vocab_size": 7, "stoi": {"a": 0}, "t": (1.5, None, [True])}))
    return read_meta(folder / "meta.pkl")["vocab_size"] == 7


def test_token_id_over_vocab_is_caught_in_batches_and_eval(tmp_path: Path) -> None:
    bad = np.arange(4000) % 60
    bad[2345] = 70
    d = open_tokens(write_nanogpt(tmp_path / "d", bad, bad, {"vocab_size": 65}))
    w = TokenWindows(d.train, context=16, seed=0)  # the files carry open_tokens' vocab_size: no argument needed
    with pytest.raises(DataError) as err:
        for _ in range(2 * w.n):
            w.next(8)
    assert_one_line(err, "train.bin")
    assert "token id 70" in str(err.value)
    with pytest.raises(DataError) as err:
        eval_windows(d.val, 16, 4000)
    assert_one_line(err, "val.bin")
    with pytest.raises(DataError) as err:
        ResidentWindows(d.train, 16, 0)
    assert_one_line(err, "train.bin")


def test_fingerprint_tracks_header_size_and_meta(tmp_path: Path) -> None:
    folder = write_nanogpt(tmp_path / "d", np.arange(5000), np.arange(100), {"vocab_size": 6000})
    first = open_tokens(folder).fingerprint
    assert open_tokens(folder).fingerprint == first
    (folder / "meta.pkl").write_bytes(pickle.dumps({"vocab_size": 6001}))
    assert open_tokens(folder).fingerprint != first
    with open(folder / "train.bin", "r+b") as f:
        f.write(b"\x01\x00")
    second = open_tokens(folder).fingerprint
    assert second != first
    np.arange(5001, dtype=np.uint16).tofile(folder / "train.bin")
    assert open_tokens(folder).fingerprint not in (first, second)


# ---------------------------------------------------------------------------------------------------------------------
# window order


@pytest.mark.parametrize("n", [1, 2, 3, 5, 64, 1000, 4097, 10000])
def test_window_order_is_a_permutation_and_a_pure_function(n: int) -> None:
    order = WindowOrder(n, context=8, seed=3)
    perm = order(0, np.arange(n))
    assert sorted(perm.tolist()) == list(range(n))
    assert np.array_equal(WindowOrder(n, 8, 3)(0, np.arange(n)[::-1]), perm[::-1])  # any positions, any order
    if n >= 64:
        assert not np.array_equal(order(1, np.arange(n)), perm)
        assert not np.array_equal(WindowOrder(n, 8, 4)(0, np.arange(n)), perm)
    for start, count in [(0, n), (n // 3, n - n // 3), (max(0, n - 5), min(n, 5))]:  # the block cache, across blocks
        assert np.array_equal(order.positions(0, start, count), perm[start:start + count])
    offsets = {order.offset(e) for e in range(50)}
    assert offsets <= set(range(8)) and len(offsets) > 3


def two_files(tmp_path: Path) -> list[TokenFile]:
    """Two files of consecutive token ids in disjoint ranges, so a window's content says where it came from."""
    write_shard(tmp_path / "c_train_000001.bin", np.arange(0, 3001))
    write_shard(tmp_path / "c_train_000002.bin", np.arange(20000, 21999))
    return open_tokens_train(tmp_path)


def open_tokens_train(folder: Path) -> list[TokenFile]:
    write_shard(folder / "c_val_000000.bin", np.arange(500))
    return open_tokens(folder).train


def test_windows_are_contiguous_within_one_file_and_drop_last(tmp_path: Path) -> None:
    files = two_files(tmp_path)
    w = TokenWindows(files, context=32, seed=1, device="cpu")
    assert w.n == (3001 - 32) // 32 + (1999 - 32) // 32
    seen: set[int] = set()
    for _ in range(w.n // 10):
        x, y = w.next(10)
        rows = torch.cat([x, y[:, -1:]], 1)
        assert bool((rows.diff(dim=1) == 1).all())  # consecutive tokens of one file: no file boundary crossed
        assert torch.equal(x[:, 1:], y[:, :-1])
        seen.update(x[:, 0].tolist())
    assert len(seen) == w.n // 10 * 10 and w.epoch == 0  # distinct windows; the remainder is dropped next call
    w.next(10)
    assert (w.epoch, w.pos) == (1, 10)
    assert len({int(s) % 32 for s in seen if s < 20000}) == 1  # one start offset per epoch (file 1 starts at 0)


def test_state_round_trip_and_mid_epoch_resume(tmp_path: Path) -> None:
    files = two_files(tmp_path)
    a = TokenWindows(files, 16, seed=7)
    for _ in range(37):  # past the first epoch end (n = 310 windows)
        a.next(9)
    state = a.state_dict()
    assert all(type(v) is int for v in state.values()) and state["epoch"] == 1
    b = TokenWindows(files, 16, seed=0)
    b.load_state_dict(dict(state))
    for bs in [9] * 50 + [5, 17, 3] * 20:
        xa, ya = a.next(bs)
        xb, yb = b.next(bs)
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    c = copy.deepcopy(a)
    a.close()
    assert torch.equal(c.next(9)[0], b.next(9)[0])  # the copy reads through its own files
    with pytest.raises(DataError):
        TokenWindows(files, 8, seed=0).load_state_dict(state)


def test_streamed_equals_resident(tmp_path: Path) -> None:
    files = two_files(tmp_path)
    s, r = TokenWindows(files, 24, seed=5), ResidentWindows(files, 24, seed=5)
    tensors = [torch.from_numpy(f.read(0, f.n_tokens).astype(np.int64)) for f in files]
    r2 = ResidentWindows(tensors, 24, seed=5)
    assert s.n == r.n == r2.n
    for bs in [4, 11, 1, 30] * 30:
        xs, ys = s.next(bs)
        xr, yr = r.next(bs)
        assert torch.equal(xs, xr) and torch.equal(ys, yr) and torch.equal(r2.next(bs)[1], ys)
        assert xs.dtype == xr.dtype == torch.int64 and all(t.is_contiguous() for t in (xs, ys, xr, yr))
    assert s.state_dict() == r.state_dict()


def test_eval_windows(tmp_path: Path) -> None:
    write_shard(tmp_path / "e_val_000000.bin", np.arange(100))
    write_shard(tmp_path / "e_val_000001.bin", np.arange(1000, 1300))
    write_shard(tmp_path / "e_train_000001.bin", np.arange(100))
    val = open_tokens(tmp_path).val
    ev = eval_windows(val, context=32, max_tokens=10 ** 6)
    assert ev.shape == (3 + 9, 33) and ev.dtype == torch.int64
    assert ev[0, 0] == 0 and ev[1, 0] == 32 and ev[3, 0] == 1000 and torch.equal(ev, eval_windows(val, 32, 10 ** 6))
    assert eval_windows(val, 32, 64).shape == (2, 33)
    with pytest.raises(DataError) as err:
        eval_windows(val[:1], context=256, max_tokens=4096)
    assert_one_line(err, "e_val_000000.bin")
    assert "context 256 is longer than the validation data (100 tokens)" in str(err.value)


# ---------------------------------------------------------------------------------------------------------------------
# memory: a sparse multi-GB shard


def test_resident_memory_stays_bounded_on_a_multi_gb_file(tmp_path: Path) -> None:
    path = sparse_shard(tmp_path / "big_train_000001.bin", 2_000_000_000)  # 4 GiB, costs no disk
    w = TokenWindows([TokenFile.open(path)], context=256, seed=0)

    def train(steps: int) -> None:
        for _ in range(steps):
            x, y = w.next(64)
            (x.float().mean() + y.float().mean()).item()  # a stand-in for the step

    train(50)  # warm-up: the first touch of torch's and numpy's code pages counts as RssFile too
    before = {f: status_kb(f) for f in ("VmRSS", "RssAnon", "RssFile")}
    train(1500)  # 96k windows spread over the whole file: >= 375 MB of file pages were they mapped (4 KB a window)
    grown = {f: status_kb(f) - before[f] for f in before}
    assert grown["RssFile"] < 2048 and grown["RssAnon"] < 16 * 1024 and grown["VmRSS"] < 16 * 1024, grown


CHILD = textwrap.dedent("""
    import resource, sys
    import numpy as np
    from quicktrain.data.tokens import TokenFile, TokenWindows
    path = sys.argv[1]
    vm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmSize:")) * 1024
    limit = vm + (512 << 20)
    assert limit < int(sys.argv[2]), (limit, sys.argv[2])
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    try:
        np.memmap(path, dtype=np.uint16, mode="r")
        sys.exit("mapping the whole file should fail under the limit")
    except (OSError, ValueError, MemoryError):
        pass
    w = TokenWindows([TokenFile.open(path)], context=256, seed=0)
    for _ in range(200):
        x, y = w.next(64)
    print("ok", limit >> 20, x.shape)
""")


def test_works_under_an_address_space_limit_smaller_than_the_file(tmp_path: Path) -> None:
    size = HEADER_BYTES + 2 * 2_000_000_000
    path = sparse_shard(tmp_path / "big_train_000001.bin", 2_000_000_000)
    done = subprocess.run([sys.executable, "-c", CHILD, str(path), str(size)], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0 and done.stdout.startswith("ok"), done.stdout + done.stderr[-3000:]
