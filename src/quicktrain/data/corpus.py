"""Text corpora as token files: a built-in corpus that every machine already has, and `prepare-text` for any other.

Why the standard library: a language-model run needs text, and the running Python's own stdlib source is present
everywhere quicktrain runs -- no download, no licence question, tens of MB of real (code) text. Its tokens are its
bytes (vocab 256), so nothing needs training; the build is cached under cache_dir()/corpus, keyed by the file listing.

Both writers produce nanoGPT's layout (train.bin, val.bin: uint16 tokens; meta.pkl: {'vocab_size': V}) in a temp
directory that is renamed into place at the end, so a failure (a file that is not UTF-8 under BPE, a full disk)
leaves nothing behind and a reader never sees half a corpus. meta.pkl is read back with tokens.read_meta, which never
runs code.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import sys
import sysconfig
import tempfile
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from quicktrain.cache import cache_dir, read_json
from quicktrain.errors import ConfigError, DataError

TRAIN_FRACTION = 0.9
BPE_DEFAULT_VOCAB = 4096
FORMAT_VERSION = 1  # bump when the corpus layout changes, so old cached builds are not reused


# ---------------------------------------------------------------------------------------------------------------------
# writing a nanoGPT-layout directory atomically


def _write_tokens(path: Path, tokens: np.ndarray) -> None:
    with open(path, "wb") as f:
        f.write(np.ascontiguousarray(tokens, dtype=np.uint16).tobytes())
        f.flush()
        os.fsync(f.fileno())


def _write_layout(tmp: Path, train: np.ndarray, val: np.ndarray, meta: dict[str, Any]) -> None:
    _write_tokens(tmp / "train.bin", train)
    _write_tokens(tmp / "val.bin", val)
    (tmp / "meta.pkl").write_bytes(pickle.dumps(meta, protocol=4))  # a plain dict: read_meta reads it without globals


def _temp_beside(final: Path) -> Path:
    final.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp"))


def _publish(tmp: Path, final: Path) -> None:
    """Rename the finished temp dir into place. If another process got there first, keep theirs."""
    try:
        os.rename(tmp, final)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not final.is_dir():
            raise


def _split(n: int) -> int:
    return int(n * TRAIN_FRACTION)


# ---------------------------------------------------------------------------------------------------------------------
# the standard-library corpus


def _skipped(name: str) -> bool:
    return name.startswith("test") or name == "site-packages"


def stdlib_files(root: Path) -> list[Path]:
    """All *.py under `root`, sorted by relative path, skipping any path with a component starting with 'test'
    (test/, tests/, test_*.py; idlelib/idle_test is kept, the rule is literal) or named site-packages. Skipped
    directories are pruned, not walked: listing takes ~0.1 s, not the time to walk site-packages."""
    keep = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if not _skipped(d)]
        keep.extend(Path(folder, n) for n in names if n.endswith(".py") and not _skipped(n))
    return sorted((p for p in keep if p.is_file()), key=lambda p: p.relative_to(root).as_posix())


def _listing_key(root: Path, files: list[Path]) -> str:
    h = hashlib.sha256(f"{FORMAT_VERSION}\0{sys.version}\0".encode())
    for p in files:
        h.update(f"{p.relative_to(root).as_posix()}\0{p.stat().st_size}\0".encode())
    return h.hexdigest()[:16]


def _intact(folder: Path, expected: dict[str, Any]) -> bool:
    """A cached build is reused iff its fingerprint.json matches and the bins have the sizes it records."""
    found = read_json(folder / "fingerprint.json")
    if not found or any(found.get(k) != v for k, v in expected.items()):
        return False
    n = int(found.get("bytes", -1))
    sizes = {"train.bin": 2 * _split(n), "val.bin": 2 * (n - _split(n))}
    return all((folder / f).is_file() and (folder / f).stat().st_size == s for f, s in sizes.items()) \
        and (folder / "meta.pkl").is_file()


def stdlib_corpus(cache: Path | None = None) -> Path:
    """The byte-level corpus of this Python's standard library source, built once into
    `cache_dir()/corpus/stdlib-<pyver>-<key>/` (nanoGPT layout, vocab 256) and reused while intact. `key` hashes the
    file listing (relative paths and sizes); fingerprint.json also records the sha256 of the concatenated bytes."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = stdlib_files(root)
    if not files:
        raise DataError(f"standard library directory {root}: no .py files found to build the stdlib corpus from")
    pyver = f"{sys.version_info.major}.{sys.version_info.minor}"
    key = _listing_key(root, files)
    final = (cache or cache_dir()) / "corpus" / f"stdlib-{pyver}-{key}"
    expected = {"format": FORMAT_VERSION, "python": sys.version, "files": len(files), "key": key}
    if _intact(final, expected):
        return final
    data = b"".join(p.read_bytes() for p in files)
    tokens = np.frombuffer(data, np.uint8).astype(np.uint16)
    tmp = _temp_beside(final)
    try:
        _write_layout(tmp, tokens[:_split(len(tokens))], tokens[_split(len(tokens)):], {"vocab_size": 256})
        fingerprint = {**expected, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(), "root": str(root)}
        (tmp / "fingerprint.json").write_text(json.dumps(fingerprint, indent=1, sort_keys=True))
        if final.exists():  # present but not intact: replace it
            shutil.rmtree(final)
        _publish(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


# ---------------------------------------------------------------------------------------------------------------------
# prepare-text: any corpus -> nanoGPT layout


def _sources(src: Path) -> list[Path]:
    if src.is_file():
        return [src]
    if not src.is_dir():
        raise DataError(f"text corpus {src} does not exist")
    files = sorted((p for p in src.rglob("*") if p.is_file()
                    and not any(c.startswith(".") for c in p.relative_to(src).parts)),
                   key=lambda p: p.relative_to(src).as_posix())
    if not files:
        raise DataError(f"text corpus {src}: the directory has no (non-hidden) files")
    return files


def _texts(files: list[Path]) -> list[str]:
    out = []
    for p in files:
        try:
            out.append(p.read_bytes().decode("utf-8"))
        except UnicodeDecodeError as e:
            raise DataError(f"text file {p}: not UTF-8 (byte {e.start}); BPE needs UTF-8 text, use tokenizer "
                            f"'bytes' for arbitrary bytes") from None
    return out


def _bpe(text_train: str, vocab_size: int) -> Any:
    try:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    except ImportError:
        raise ConfigError("tokenizer 'bpe' needs the tokenizers package (pip install tokenizers)") from None

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=[], show_progress=False)
    tok.train_from_iterator(_chunks(text_train), trainer)
    return tok


def _chunks(text: str, size: int = 1 << 20) -> Iterable[str]:
    """~1 MB pieces cut after a newline (so BPE training and encoding can batch), covering `text` exactly."""
    start = 0
    while start < len(text):
        cut = text.find("\n", start + size)
        end = len(text) if cut < 0 else cut + 1
        yield text[start:end]
        start = end


def _encode(tok: Any, text: str) -> np.ndarray:
    parts = [np.asarray(e.ids, np.uint16) for e in tok.encode_batch(list(_chunks(text)))]
    return np.concatenate(parts) if parts else np.zeros(0, np.uint16)


def _check_args(tokenizer: str, vocab_size: int) -> int:
    if tokenizer == "bytes":
        if vocab_size not in (0, 256):
            raise ConfigError(f"vocab_size {vocab_size}: the bytes tokenizer's vocabulary is always 256")
        return 256
    if tokenizer != "bpe":
        raise ConfigError(f"tokenizer {tokenizer!r}: expected 'bytes' or 'bpe'")
    vocab = vocab_size or BPE_DEFAULT_VOCAB
    if not 257 <= vocab <= 65536:
        raise ConfigError(f"vocab_size {vocab}: BPE needs 257..65536 (256 byte tokens plus merges; uint16 ids)")
    return vocab


def prepare_text(src: Path, out: Path, tokenizer: str = "bytes", vocab_size: int = 0) -> dict[str, Any]:
    """Tokenize a UTF-8 text file or a directory of files (sorted by relative path, hidden ones skipped,
    concatenated) into nanoGPT's layout in `out`: first 90% train, last 10% val. 'bytes': tokens are the bytes (any
    bytes accepted), vocab 256. 'bpe': a byte-level BPE of `vocab_size` (default 4096) trained on the train part only,
    saved as out/tokenizer.json. `out` must not exist or be empty; nothing is written on failure."""
    src, out = Path(src), Path(out)
    vocab = _check_args(tokenizer, vocab_size)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError(f"output directory {out} exists and is not empty; remove it or choose another")
    files = _sources(src)
    if tokenizer == "bytes":
        data = b"".join(p.read_bytes() for p in files)
        cut, tok = _split(len(data)), None
        train = np.frombuffer(data[:cut], np.uint8).astype(np.uint16)
        val = np.frombuffer(data[cut:], np.uint8).astype(np.uint16)
        n_bytes, meta = len(data), {"vocab_size": 256}
    else:
        text = "".join(_texts(files))
        cut = _split(len(text))
        tok = _bpe(text[:cut], vocab)
        train, val = _encode(tok, text[:cut]), _encode(tok, text[cut:])
        n_bytes, meta = len(text.encode()), {"vocab_size": tok.get_vocab_size(), "tokenizer": "bpe"}
    if len(train) < 2 or len(val) < 2:
        raise DataError(f"text corpus {src}: too small ({n_bytes} bytes) to split into train and val")
    summary = {"src": str(src), "out": str(out), "files": len(files), "bytes": n_bytes, "tokenizer": tokenizer,
               "vocab_size": meta["vocab_size"], "train_tokens": len(train), "val_tokens": len(val)}
    tmp = _temp_beside(out)
    try:
        _write_layout(tmp, train, val, meta)
        if tok is not None:
            tok.save(str(tmp / "tokenizer.json"))
        (tmp / "prepare.json").write_text(json.dumps(summary, indent=1, sort_keys=True))
        if out.is_dir():
            out.rmdir()  # empty (checked above)
        os.rename(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return summary


def bytes_per_token(folder: Path, vocab_size: int) -> float:
    """Text bytes per token of a token directory, to turn loss into bits per byte: 1 for byte tokens (vocab 256),
    prepare.json's ratio for data prepare_text made, else 0 (unknown)."""
    if vocab_size == 256:
        return 1.0
    try:
        info = json.loads((Path(folder) / "prepare.json").read_text())
        return float(info["bytes"]) / (int(info["train_tokens"]) + int(info["val_tokens"]))
    except (OSError, ValueError, KeyError, TypeError, ZeroDivisionError):
        return 0.0


def encode(text: str, out_dir: Path) -> list[int]:
    """Text -> token ids for a prepared directory, the inverse of `decode`: tokenizer.json (BPE), else meta.pkl's
    `stoi` (nanoGPT char-level; an unknown character is a one-line DataError), else UTF-8 bytes."""
    from quicktrain.data.tokens import read_meta

    out_dir = Path(out_dir)
    if (out_dir / "tokenizer.json").is_file():
        from tokenizers import Tokenizer

        return list(Tokenizer.from_file(str(out_dir / "tokenizer.json")).encode(text).ids)
    meta = read_meta(out_dir / "meta.pkl") if (out_dir / "meta.pkl").is_file() else {}
    if isinstance(meta.get("stoi"), dict):
        missing = sorted({c for c in text if c not in meta["stoi"]})
        if missing:
            raise DataError(f"meta file {out_dir / 'meta.pkl'}: characters {''.join(missing)!r} are not in its stoi")
        return [int(meta["stoi"][c]) for c in text]
    return list(text.encode("utf-8"))


def decode(tokens: Iterable[int], out_dir: Path) -> str:
    """Token ids -> text for a prepared directory: via tokenizer.json if there is one (BPE), else meta.pkl's `itos`
    (nanoGPT char-level), else as bytes (errors='replace'; ids >= 256 become U+FFFD)."""
    from quicktrain.data.tokens import read_meta

    ids = [int(t) for t in (tokens.tolist() if hasattr(tokens, "tolist") else tokens)]
    out_dir = Path(out_dir)
    if (out_dir / "tokenizer.json").is_file():
        from tokenizers import Tokenizer

        return Tokenizer.from_file(str(out_dir / "tokenizer.json")).decode(ids, skip_special_tokens=False)
    meta = read_meta(out_dir / "meta.pkl") if (out_dir / "meta.pkl").is_file() else {}
    if isinstance(meta.get("itos"), dict):
        return "".join(str(meta["itos"].get(i, "\ufffd")) for i in ids)
    return bytes(i if i < 256 else 0xFF for i in ids).decode("utf-8", errors="replace")
