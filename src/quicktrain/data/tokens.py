"""Token data for language models, streamed from disk so a corpus of many GB needs neither RAM nor address space.

Two on-disk formats, both a flat uint16 token array: nanoGPT's (`train.bin`, `val.bin`: raw tokens, vocab_size in an
optional `meta.pkl`) and llm.c / modded-nanogpt shards (a 256-int32 header: magic 20240520, version 1, token count;
then the tokens). A file is an llm.c shard iff its first int32 is the magic; a raw nanoGPT file cannot start that way
for any vocab below 54985 (the magic reads as tokens 54984, 308).

Why pread, not np.memmap: a memmap held open keeps every page it touched resident (RssFile grows towards the file
size, which is why nanoGPT recreates its memmap each batch), and mapping a file needs address space as large as the
file, so it fails under `ulimit -v`. `TokenWindows` instead reads each window with one os.preadv into a reused
(B, T+1) buffer: no file page is ever mapped, and memory is bounded by the batch, not the file. Measured
(`python benchmarks/data_read.py`, 400 MB shard, 131,072 windows, page cache warm): a held memmap grew RssFile by
400 MB, TokenWindows by 0 kB; a batch costs 34 us at B=12, T=64 and 120 us at B=64, T=256, within 15% of the
resident variant and well under 1% of a CPU training step.

Why the window order is a keyed Feistel permutation: a permutation array of a multi-GB corpus' windows would itself be
hundreds of MB, and would have to be saved to resume. Window k of epoch e is perm_e(k), computed from (seed, epoch, k)
alone, so `state_dict` is three ints and a restored source yields exactly the same batches.
"""

from __future__ import annotations

import copy
import hashlib
import os
import pickle
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from quicktrain.data.corpus import bytes_per_token
from quicktrain.errors import DataError

SHARD_MAGIC = 20240520
SHARD_VERSION = 1
HEADER_BYTES = 256 * 4
ITEMSIZE = 2  # uint16 tokens, both formats
DEFAULT_VOCAB = 50257  # GPT-2: what llm.c shards hold, and nanoGPT's train.py fallback when meta.pkl is absent
META_MAX_BYTES = 16 << 20  # a meta.pkl is a few KB (shakespeare_char's is ~1 KB); refuse to parse anything huge
_PLAIN = (str, int, float, bool, type(None))


def _is_shard_name(path: Path) -> bool:
    return path.suffix == ".bin" and ("_train_" in path.name or "_val_" in path.name)


@dataclass(frozen=True)
class TokenFile:
    """One 1-D uint16 token array on disk: `n_tokens` tokens starting `offset` bytes into `path`. Never loaded whole.
    `vocab_size` (set by open_tokens) is what every read through TokenWindows / eval_windows checks ids against."""

    path: Path
    offset: int  # 0 for nanoGPT files, 1024 for llm.c shards
    n_tokens: int
    format: str  # "nanogpt" or "llmc"
    vocab_size: int | None = None

    def __len__(self) -> int:
        return self.n_tokens

    @property
    def nbytes(self) -> int:
        return self.n_tokens * ITEMSIZE

    @classmethod
    def open(cls, path: Path, shard: bool = False) -> TokenFile:
        """Validate `path` (reading only its first 1024 bytes). `shard=True`: it must be an llm.c shard (it is in a
        directory of shards); a name like *_train_*.bin or *_val_*.bin also implies it."""
        path = Path(path)
        try:
            size = path.stat().st_size
            with open(path, "rb") as f:
                head = f.read(HEADER_BYTES)
        except OSError as e:
            raise DataError(f"token file {path}: cannot read ({e.strerror or e})") from None
        if size == 0:
            raise DataError(f"token file {path} is empty")
        magic = int.from_bytes(head[:4], "little", signed=True) if len(head) >= 4 else None
        if magic == SHARD_MAGIC or shard or _is_shard_name(path):
            return cls._shard(path, size, head, magic)
        if size % ITEMSIZE:
            raise DataError(f"token file {path}: {size} bytes is odd, not a whole number of uint16 tokens")
        return cls(path, 0, size // ITEMSIZE, "nanogpt")

    @classmethod
    def _shard(cls, path: Path, size: int, head: bytes, magic: int | None) -> TokenFile:
        if len(head) < HEADER_BYTES:
            raise DataError(f"token file {path}: truncated llm.c header ({size} bytes, expected at least "
                            f"{HEADER_BYTES})")
        if magic != SHARD_MAGIC:
            raise DataError(f"token file {path}: not an llm.c shard (magic {magic}, expected {SHARD_MAGIC})")
        version, count = (int(v) for v in np.frombuffer(head[4:12], "<i4"))
        if version != SHARD_VERSION:
            raise DataError(f"token file {path}: llm.c shard version {version} is not supported (only version "
                            f"{SHARD_VERSION}, uint16 tokens)")
        if count <= 0 or HEADER_BYTES + count * ITEMSIZE != size:
            raise DataError(f"token file {path}: header says {count} tokens ({HEADER_BYTES + count * ITEMSIZE} "
                            f"bytes) but the file has {size} bytes")
        return cls(path, HEADER_BYTES, count, "llmc")

    def read(self, start: int, count: int) -> np.ndarray:
        """Tokens [start, start + count) as a uint16 array (opens, reads, closes: for one-off reads)."""
        out = np.empty(count, np.uint16)
        with open(self.path, "rb", buffering=0) as f:
            _pread_into(f.fileno(), out, self, start)
        return out

    def max_token(self, chunk_tokens: int = 1 << 24) -> int:
        """The largest token id, by a chunked scan with one reused buffer (32 MB at the default 16M tokens a chunk).
        It reads every byte, at disk speed when the page cache is cold, so it is not run at open: each batch's ids
        are checked instead."""
        buf, best = np.empty(min(chunk_tokens, self.n_tokens), np.uint16), 0
        with open(self.path, "rb", buffering=0) as f:
            for start in range(0, self.n_tokens, len(buf)):
                part = buf[:min(len(buf), self.n_tokens - start)]
                _pread_into(f.fileno(), part, self, start)
                best = max(best, int(part.max()))
        return best


def _pread_into(fd: int, out: np.ndarray, file: TokenFile, start: int) -> None:
    want = out.nbytes
    if os.preadv(fd, [memoryview(out).cast("B")], file.offset + start * ITEMSIZE) != want:
        raise DataError(f"token file {file.path}: short read at token {start} (file changed since it was opened?)")


# ---------------------------------------------------------------------------------------------------------------------
# meta.pkl without running code


class _NoGlobals(pickle.Unpickler):
    """Builds only what pickle's own opcodes make (str, int, float, bool, None, bytes, list, tuple, dict, set); every
    global -- a class, a callable for REDUCE/NEWOBJ/INST/OBJ, an extension code -- goes through find_class, which
    refuses, so nothing is ever called. persistent_load is not defined either (the base class refuses it)."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refusing global {module}.{name}")


def _plain(value: Any, depth: int = 0) -> bool:
    if depth > 32:
        return False
    if isinstance(value, _PLAIN):
        return True
    if isinstance(value, (list, tuple)):
        return all(_plain(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, (str, int)) and _plain(v, depth + 1) for k, v in value.items())
    return False


def read_meta(path: Path) -> dict[str, Any]:
    """nanoGPT's meta.pkl as a dict of plain values, never executing code from it. `vocab_size` must be an int > 0.
    Nested dicts may have int keys (nanoGPT's char-level `itos`)."""
    path = Path(path)
    try:
        if path.stat().st_size > META_MAX_BYTES:
            raise DataError(f"meta file {path}: larger than {META_MAX_BYTES >> 20} MB, not a nanoGPT meta.pkl")
        with open(path, "rb") as f:
            meta = _NoGlobals(f).load()
    except DataError:
        raise
    except OSError as e:
        raise DataError(f"meta file {path}: cannot read ({e.strerror or e})") from None
    except Exception as e:  # UnpicklingError, EOFError, ValueError...: anything a corrupt or hostile pickle raises
        why = f"{type(e).__name__}: {e}".splitlines()[0]
        raise DataError(f"meta file {path}: not a plain-data pickle ({why})") from None
    if not isinstance(meta, dict) or not all(isinstance(k, str) for k in meta) or not _plain(meta):
        raise DataError(f"meta file {path}: must be a dict with str keys of plain values (str, int, float, bool, None, "
                        f"list, tuple, dict)")
    vocab = meta.get("vocab_size")
    if type(vocab) is not int or vocab <= 0:
        raise DataError(f"meta file {path}: vocab_size must be an int > 0, got {vocab!r}"[:200])
    return meta


# ---------------------------------------------------------------------------------------------------------------------
# a directory of token files


@dataclass
class TokenData:
    """An opened token corpus. `fingerprint`: sha256 over, per file in order, its name, size, first 1024 bytes and 16
    samples of 4 KB spread evenly through it, plus meta.pkl's bytes. It changes with any rename, resize, header or
    vocab change and almost any edit, at a cost of ~17 small reads per file instead of hashing GBs."""

    train: list[TokenFile]
    val: list[TokenFile]
    vocab_size: int
    name: str
    fingerprint: str
    source: Path
    meta: dict[str, Any]
    bytes_per_token: float = 0.0

    def train_windows(self, context: int, seed: int, device: torch.device | str = "cpu") -> TokenWindows:
        return TokenWindows(self.train, context, seed, device, vocab_size=self.vocab_size)

    def eval_windows(self, context: int, max_tokens: int) -> Tensor:
        return eval_windows(self.val, context, max_tokens, vocab_size=self.vocab_size)


def _fingerprint(files: list[TokenFile], meta_path: Path | None) -> str:
    h = hashlib.sha256()
    for f in files:
        size = f.path.stat().st_size
        h.update(f"{f.path.name}\0{size}\0".encode())
        with open(f.path, "rb") as fh:
            h.update(fh.read(HEADER_BYTES))
            for k in range(16):
                fh.seek(size * k // 16)
                h.update(fh.read(4096))
    if meta_path is not None:
        h.update(meta_path.read_bytes())
    return h.hexdigest()


def _find_files(folder: Path) -> tuple[list[Path], list[Path], bool]:
    """(train files, val files, shard?) for a nanoGPT directory or a directory of llm.c shards."""
    nano = [folder / "train.bin", folder / "val.bin"]
    if any(p.exists() for p in nano):
        missing = [str(p) for p in nano if not p.is_file()]
        if missing:
            raise DataError(f"token directory {folder}: missing {', '.join(missing)}")
        return nano[:1], nano[1:], False
    train, val = sorted(folder.glob("*train*.bin")), sorted(folder.glob("*val*.bin"))
    if not train and not val:
        raise DataError(f"token directory {folder}: no train.bin/val.bin (nanoGPT) nor *train*.bin/*val*.bin "
                        f"(llm.c shards)")
    if not train or not val:
        raise DataError(f"token directory {folder}: has {'val' if val else 'train'} shards but no "
                        f"*{'train' if val else 'val'}*.bin")
    return train, val, True


def open_tokens(path: Path, vocab_size: int | None = None) -> TokenData:
    """Open a token directory: nanoGPT layout (train.bin, val.bin, optional meta.pkl) or llm.c shards (*train*.bin,
    *val*.bin, each sorted). vocab_size: the argument, else meta.pkl's, else 50257 (GPT-2). Token ids are not scanned
    here (a multi-GB scan costs seconds, see `TokenFile.max_token`); every batch and eval window is checked instead."""
    folder = Path(path)
    if not folder.is_dir():
        raise DataError(f"token directory {folder} does not exist" if not folder.exists()
                        else f"token data {folder}: expected a directory of .bin files, got a file")
    train_paths, val_paths, shard = _find_files(folder)
    train = [TokenFile.open(p, shard) for p in train_paths]
    val = [TokenFile.open(p, shard) for p in val_paths]
    meta_path = folder / "meta.pkl" if (folder / "meta.pkl").is_file() else None
    meta = read_meta(meta_path) if meta_path else {}
    vocab = vocab_size or meta.get("vocab_size") or DEFAULT_VOCAB
    train, val = [replace(f, vocab_size=vocab) for f in train], [replace(f, vocab_size=vocab) for f in val]
    return TokenData(train, val, vocab, folder.resolve().name, _fingerprint(train + val, meta_path), folder, meta,
                     bytes_per_token(folder, vocab))



# ---------------------------------------------------------------------------------------------------------------------
# window order: a pure function of (seed, epoch, position)


def _mix(z: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer (wrapping uint64 arithmetic): a cheap, well-mixed round function."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


class WindowOrder:
    """perm_e: [0, n) -> [0, n), a 4-round balanced Feistel network on the smallest even-bit domain 2^(2h) >= n, keyed
    by sha512(seed, epoch), with cycle walking (re-apply until the value lands below n): a bijection on [0, n) because a
    Feistel network is one on its domain. The domain is < 4n, so a position takes < 4 walks on average. Chosen over an
    affine map (a*k + b) mod n, which sends consecutive positions to windows a fixed stride apart (a lattice, not a
    shuffle). Also a per-epoch start offset in [0, context), so window boundaries move between epochs."""

    ROUNDS = 4
    BLOCK = 4096  # positions computed together: numpy's per-call overhead made 12 positions cost ~25-70 us alone

    def __init__(self, n: int, context: int, seed: int) -> None:
        self.n, self.context, self.seed = n, context, seed
        self.half = max(1, ((n - 1).bit_length() + 1) // 2)
        self._cached: tuple[int, list[np.uint64], int] | None = None
        self._block: tuple[int, int, np.ndarray] | None = None  # (epoch, block, perm values): a cache, 32 KB

    def _keys(self, epoch: int) -> tuple[list[np.uint64], int]:
        if self._cached is None or self._cached[0] != epoch:
            digest = hashlib.sha512(f"quicktrain.windows:{self.seed}:{epoch}".encode()).digest()
            words = [int.from_bytes(digest[i:i + 8], "little") for i in range(0, 40, 8)]
            self._cached = (epoch, [np.uint64(w) for w in words[:self.ROUNDS]], words[4] % self.context)
        return self._cached[1], self._cached[2]

    def offset(self, epoch: int) -> int:
        return self._keys(epoch)[1]

    def _feistel(self, x: np.ndarray, keys: list[np.uint64]) -> np.ndarray:
        half, mask = np.uint64(self.half), np.uint64((1 << self.half) - 1)
        left, right = x >> half, x & mask
        for k in keys:
            left, right = right, left ^ (_mix(right ^ k) & mask)
        return (left << half) | right

    def __call__(self, epoch: int, positions: np.ndarray) -> np.ndarray:
        """perm_epoch(positions), int64."""
        keys = self._keys(epoch)[0]
        y = self._feistel(positions.astype(np.uint64), keys)
        out = y >= np.uint64(self.n)
        while out.any():
            y[out] = self._feistel(y[out], keys)
            out = y >= np.uint64(self.n)
        return y.astype(np.int64)

    def positions(self, epoch: int, start: int, count: int) -> np.ndarray:
        """perm_epoch(start ... start + count - 1), through a cache of one BLOCK of consecutive positions."""
        parts, pos, end = [], start, start + count
        while pos < end:
            b = pos // self.BLOCK
            if self._block is None or self._block[:2] != (epoch, b):
                lo = b * self.BLOCK
                self._block = (epoch, b, self(epoch, np.arange(lo, min(self.n, lo + self.BLOCK), dtype=np.int64)))
            take = min(end, (b + 1) * self.BLOCK) - pos
            parts.append(self._block[2][pos - b * self.BLOCK:pos - b * self.BLOCK + take])
            pos += take
        return np.concatenate(parts)


class _Windows:
    """The batch logic TokenWindows and ResidentWindows share: n windows per epoch, drop-last, resumable from ints.

    File f of `lengths[f]` tokens holds (lengths[f] - context) // context windows, window i being tokens
    [o + i*T, o + i*T + T + 1) for the epoch's offset o < T: that many fit for every offset, so `n` is the same each
    epoch, and no window crosses a file boundary."""

    def __init__(self, lengths: list[int], context: int, seed: int, device: torch.device | str,
                 names: list[str]) -> None:
        if context < 1:
            raise ValueError(f"context must be >= 1, got {context}")
        self.context, self.seed, self.device, self.names = context, seed, torch.device(device), names
        self.counts = np.array([max(0, (n - context) // context) for n in lengths], np.int64)
        self.ends = np.cumsum(self.counts)
        self.n = int(self.ends[-1]) if len(self.ends) else 0
        if self.n == 0:
            raise DataError(f"context {context} is too long for the training data ({sum(lengths)} tokens) in "
                            f"{', '.join(names)}: no window of {2 * context} tokens fits in a file")
        self.order = WindowOrder(self.n, context, seed)
        self.epoch = 0  # completed epochs
        self.pos = 0  # windows of the current epoch already handed out
        self.rank, self.world = 0, 1  # under data parallel: this rank reads only its 1/world of each batch

    def set_part(self, rank: int, world: int) -> None:
        """Hand out only rank `rank`'s equal slice of every global batch (quicktrain.dist): the order and the
        cursor stay global, so the ranks together read exactly the windows one process would."""
        self.rank, self.world = rank, world

    def _locate(self, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """(file index, first token) of the next batch's windows (this rank's slice of them under data parallel);
        advances pos/epoch by the whole batch exactly like DeviceBatches."""
        if not 1 <= batch_size <= self.n:
            raise ValueError(f"batch_size {batch_size} must be in [1, {self.n}] (windows in the training data)")
        if self.pos + batch_size > self.n:  # drop-last
            self.epoch, self.pos = self.epoch + 1, 0
        epoch, start = self.epoch, self.pos
        self.pos += batch_size
        if self.pos == self.n:
            self.epoch, self.pos = self.epoch + 1, 0
        w = self.order.positions(epoch, start, batch_size)
        if self.world > 1:
            part = batch_size // self.world
            w = w[self.rank * part:(self.rank + 1) * part]
        f = np.searchsorted(self.ends, w, side="right")
        i = w - (self.ends[f] - self.counts[f])
        return f, self.order.offset(epoch) + i * self.context

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "pos": self.pos, "seed": self.seed, "n": self.n, "context": self.context}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if int(state["n"]) != self.n or int(state["context"]) != self.context:
            raise DataError(f"saved window order is for {state['n']} windows of context {state['context']}; the data "
                            f"in {', '.join(self.names)} has {self.n} of context {self.context} (data changed?)")
        self.seed, self.epoch, self.pos = int(state["seed"]), int(state["epoch"]), int(state["pos"])
        self.order = WindowOrder(self.n, self.context, self.seed)


def _check_ids(rows: np.ndarray, vocab: int | None, names: list[str], f: np.ndarray, starts: np.ndarray) -> None:
    if vocab is None or vocab > 65535:
        return
    top = rows.max(axis=1)
    if int(top.max()) >= vocab:
        r = int(np.argmax(top >= vocab))
        j = int(np.argmax(rows[r] >= vocab))
        raise DataError(f"token file {names[int(f[r])]}: token id {int(rows[r, j])} at token {int(starts[r]) + j} is "
                        f">= vocab_size {vocab} (wrong vocab_size in meta.pkl, or not a token file?)")


class TokenWindows(_Windows):
    """LM batches streamed from token files: `next(B)` -> (x, y) int64 (B, T) on the device, y = x shifted by one.

    Memory bound: one reused (B, T+1) uint16 read buffer plus the batch's int64 tensors (2*B*T*8 bytes) -- no file
    page is mapped, so RssFile does not grow and the address space needed is independent of the file size (works
    under `ulimit -v` smaller than the file). Cost: one os.preadv per window. Token ids >= vocab_size raise DataError.
    """

    def __init__(self, data: list[TokenFile], context: int, seed: int, device: torch.device | str = "cpu",
                 vocab_size: int | None = None) -> None:
        super().__init__([f.n_tokens for f in data], context, seed, device, [str(f.path) for f in data])
        self.files, self.vocab_size = list(data), vocab_size or _vocab_of(data)
        self._io = [open(f.path, "rb", buffering=0) for f in self.files]  # closed with the object (FileIO)
        self._fds = [f.fileno() for f in self._io]
        self._buf = np.empty((0, context + 1), np.uint16)

    def next(self, batch_size: int) -> tuple[Tensor, Tensor]:
        f, starts = self._locate(batch_size)
        rows = len(f)  # the batch, or this rank's slice of it
        if len(self._buf) != rows:
            self._buf = np.empty((rows, self.context + 1), np.uint16)
        for r in range(rows):
            file = self.files[int(f[r])]
            _pread_into(self._fds[int(f[r])], self._buf[r], file, int(starts[r]))
        _check_ids(self._buf, self.vocab_size, self.names, f, starts)
        x = torch.from_numpy(self._buf[:, :-1].astype(np.int64))  # astype of a slice: one contiguous copy each
        y = torch.from_numpy(self._buf[:, 1:].astype(np.int64))
        return x.to(self.device), y.to(self.device)

    def close(self) -> None:
        for f in self._io:
            f.close()

    def fork(self, seed: int) -> TokenWindows:
        """The same files in the order of another seed, from the start, with files of its own (the LR finder's)."""
        return TokenWindows(self.files, self.context, seed, self.device, self.vocab_size)

    def __deepcopy__(self, memo: dict[int, Any]) -> TokenWindows:
        """A copy with its own open files (sharing descriptors would let one copy close the other's)."""
        twin = TokenWindows(self.files, self.context, self.seed, self.device, self.vocab_size)
        twin.load_state_dict(self.state_dict())
        return twin


def _vocab_of(files: list[Any]) -> int | None:
    vocabs = [f.vocab_size for f in files if isinstance(f, TokenFile) and f.vocab_size]
    return min(vocabs) if vocabs else None


class ResidentWindows(_Windows):
    """The same windows in the same order as TokenWindows, from tokens held in memory on the device: for data that
    fits, and to check the streamed reader against. `tokens`: TokenFiles (read whole, once) or 1-D tensors, one per
    file. Stored as int32 (half of int64's device memory; ids are < 65536); ids are checked once, here."""

    def __init__(self, tokens: list[TokenFile] | list[Tensor], context: int, seed: int,
                 device: torch.device | str = "cpu", vocab_size: int | None = None,
                 names: list[str] | None = None) -> None:
        names = names or [str(t.path) if isinstance(t, TokenFile) else f"tokens[{i}]" for i, t in enumerate(tokens)]
        super().__init__([len(t) for t in tokens], context, seed, device, names)
        self.vocab_size = vocab_size or _vocab_of(tokens)
        parts = [torch.from_numpy(t.read(0, t.n_tokens).astype(np.int32)) if isinstance(t, TokenFile) else t
                 for t in tokens]
        for name, t in zip(names, parts):  # once here (in memory, cheap), not per batch (a host sync on a GPU)
            if self.vocab_size is not None and len(t) and int(t.max()) >= self.vocab_size:
                raise DataError(f"token file {name}: token id {int(t.max())} is >= vocab_size {self.vocab_size}")
        self.tokens = torch.cat([t.to(self.device, torch.int32) for t in parts])
        self.bases = np.concatenate([[0], np.cumsum([len(t) for t in tokens])[:-1]]).astype(np.int64)
        self._span = torch.arange(context + 1, device=self.device)

    @classmethod
    def from_files(cls, files: list[TokenFile], context: int, seed: int, device: torch.device | str = "cpu",
                   vocab_size: int | None = None) -> ResidentWindows:
        return cls(files, context, seed, device, vocab_size)

    def fork(self, seed: int) -> ResidentWindows:
        """The same tokens (shared, not copied) in the order of another seed, from the start (the LR finder's)."""
        twin = copy.copy(self)
        twin.seed, twin.epoch, twin.pos, twin.order = seed, 0, 0, WindowOrder(self.n, self.context, seed)
        return twin

    def next(self, batch_size: int) -> tuple[Tensor, Tensor]:
        f, starts = self._locate(batch_size)
        first = torch.from_numpy(self.bases[f] + starts).to(self.device)
        rows = self.tokens[first[:, None] + self._span]
        return rows[:, :-1].to(torch.int64), rows[:, 1:].to(torch.int64)


def eval_windows(files: list[TokenFile], context: int, max_tokens: int, vocab_size: int | None = None) -> Tensor:
    """Fixed evaluation windows: consecutive (N, T+1) rows from the start of the split (row k is tokens
    [k*T, k*T + T + 1) of its file, so the predicted tokens do not overlap), N = max(1, max_tokens // T) or as many as
    the files hold, files in order. int64 on the CPU; small by construction."""
    wanted, rows = max(1, max_tokens // context), []
    for file in files:
        take = min(wanted - len(rows), max(0, (file.n_tokens - 1) // context))
        if take:
            flat = file.read(0, take * context + 1)
            starts = np.arange(take, dtype=np.int64) * context
            block = flat[starts[:, None] + np.arange(context + 1)]
            _check_ids(block, vocab_size or file.vocab_size, [str(file.path)], np.zeros(take, np.int64), starts)
            rows.extend(block)
        if len(rows) == wanted:
            break
    if not rows:
        total = sum(f.n_tokens for f in files)
        raise DataError(f"context {context} is longer than the validation data ({total} tokens) in "
                        f"{', '.join(str(f.path) for f in files)}")
    return torch.from_numpy(np.stack(rows).astype(np.int64))
