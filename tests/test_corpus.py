"""The built-in stdlib corpus (listing rule, fingerprint, atomic build and reuse) and prepare_text (bytes and BPE round
trips, bad input leaving nothing behind)."""

from __future__ import annotations

import json
import sysconfig
from pathlib import Path

import numpy as np
import pytest

from quicktrain.data import corpus
from quicktrain.data.corpus import decode, prepare_text, stdlib_corpus, stdlib_files
from quicktrain.data.tokens import open_tokens
from quicktrain.errors import UserError


def fake_stdlib(root: Path) -> Path:
    files = {"os.py": "import sys\n", "json/__init__.py": "# json\n", "json/decoder.py": "x = 1\n",
             "test/test_os.py": "BAD\n", "unittest/case.py": "class TestCase: pass\n", "lib2to3/tests/a.py": "BAD\n",
             "test_support.py": "BAD\n", "site-packages/pkg/mod.py": "BAD\n", "notes.txt": "BAD\n",
             "zz/é.py": "s = 'é'\n"}
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text, encoding="utf-8")
    return root


@pytest.fixture
def small_stdlib(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = fake_stdlib(tmp_path / "lib")
    monkeypatch.setattr(corpus.sysconfig, "get_paths", lambda: {"stdlib": str(root)})
    monkeypatch.setenv("QUICKTRAIN_CACHE", str(tmp_path / "cache"))
    return root


def test_listing_rule_on_a_fake_stdlib(tmp_path: Path) -> None:
    root = fake_stdlib(tmp_path)
    assert [p.relative_to(root).as_posix() for p in stdlib_files(root)] == \
        ["json/__init__.py", "json/decoder.py", "os.py", "unittest/case.py", "zz/é.py"]


def test_real_stdlib_listing_skips_test_dirs() -> None:
    root = Path(sysconfig.get_paths()["stdlib"])
    rel = [p.relative_to(root).parts for p in stdlib_files(root)]
    assert len(rel) > 100 and ("os.py",) in rel and ("json", "decoder.py") in rel
    assert not any(c.startswith("test") or c == "site-packages" for parts in rel for c in parts)


def test_stdlib_corpus_build_fingerprint_and_reuse(small_stdlib: Path, tmp_path: Path) -> None:
    out = stdlib_corpus()
    assert out.parent == tmp_path / "cache" / "corpus" and out.name.startswith("stdlib-3.")
    text = b"".join((small_stdlib / r).read_bytes() for r in
                    ["json/__init__.py", "json/decoder.py", "os.py", "unittest/case.py", "zz/é.py"])
    fp = json.loads((out / "fingerprint.json").read_text())
    assert (fp["files"], fp["bytes"]) == (5, len(text))
    d = open_tokens(out)
    assert d.vocab_size == 256 and d.train[0].n_tokens == int(len(text) * 0.9) and d.bytes_per_token == 1.0
    both = np.concatenate([d.train[0].read(0, d.train[0].n_tokens), d.val[0].read(0, d.val[0].n_tokens)])
    assert both.tobytes() == np.frombuffer(text, np.uint8).astype(np.uint16).tobytes()
    stamp = (out / "train.bin").stat().st_mtime_ns
    assert stdlib_corpus() == out and (out / "train.bin").stat().st_mtime_ns == stamp  # reused, not rebuilt
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temp dir left


def test_stdlib_corpus_rebuilds_when_damaged_or_changed(small_stdlib: Path) -> None:
    out = stdlib_corpus()
    with open(out / "val.bin", "ab") as f:
        f.write(b"\0\0")
    assert stdlib_corpus() == out and (out / "val.bin").stat().st_size % 2 == 0
    assert open_tokens(out).val[0].n_tokens == json.loads((out / "fingerprint.json").read_text())["bytes"] - \
        open_tokens(out).train[0].n_tokens
    (small_stdlib / "new.py").write_text("y = 2\n")
    assert stdlib_corpus() != out  # a different listing is a different corpus


def test_stdlib_corpus_explicit_cache_argument(small_stdlib: Path, tmp_path: Path) -> None:
    assert stdlib_corpus(tmp_path / "elsewhere").parent == tmp_path / "elsewhere" / "corpus"


def test_prepare_text_bytes_round_trip_any_bytes(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "b.txt").write_bytes(b"\xff\xfe not utf-8 \x00" * 20)
    (src / "a.txt").write_text("héllo wörld\n" * 20)
    (src / ".hidden").write_text("skipped")
    summary = prepare_text(src, tmp_path / "out")
    raw = (src / "a.txt").read_bytes() + (src / "b.txt").read_bytes()
    assert summary["files"] == 2 and summary["bytes"] == len(raw) and summary["vocab_size"] == 256
    assert summary["train_tokens"] + summary["val_tokens"] == len(raw)
    d = open_tokens(tmp_path / "out")
    assert d.meta == {"vocab_size": 256}
    ids = np.concatenate([d.train[0].read(0, d.train[0].n_tokens), d.val[0].read(0, d.val[0].n_tokens)])
    assert bytes(ids.astype(np.uint8)) == raw
    assert decode(ids[:12], tmp_path / "out") == "héllo wörld"[:10]  # 12 bytes, 2 of them two-byte chars
    assert decode([104, 300], tmp_path / "out") == "h\ufffd"


def test_prepare_text_bpe_round_trip(tmp_path: Path) -> None:
    pytest.importorskip("tokenizers")
    src = tmp_path / "t.txt"
    text = "".join(f"def function_{i}(x):\n    return x * {i} + 'naïve'\n\n" for i in range(400))
    src.write_text(text, encoding="utf-8")
    summary = prepare_text(src, tmp_path / "bpe", tokenizer="bpe", vocab_size=300)
    out = tmp_path / "bpe"
    assert (out / "tokenizer.json").is_file() and 256 < summary["vocab_size"] <= 300
    d = open_tokens(out)
    assert d.vocab_size == summary["vocab_size"] and d.meta["tokenizer"] == "bpe"
    assert d.bytes_per_token == pytest.approx(len(text.encode()) / (summary["train_tokens"] + summary["val_tokens"]))
    train, val = d.train[0].read(0, d.train[0].n_tokens), d.val[0].read(0, d.val[0].n_tokens)
    assert len(train) < 0.9 * len(text.encode())  # merges compress
    assert decode(train, out) + decode(val, out) == text
    assert int(max(train.max(), val.max())) < d.vocab_size


def test_prepare_text_bpe_refuses_non_utf8_and_writes_nothing(tmp_path: Path) -> None:
    pytest.importorskip("tokenizers")
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("fine text\n" * 10)
    (src / "b.bin").write_bytes(b"ok \xc3\x28 broken")
    with pytest.raises(UserError) as err:
        prepare_text(src, tmp_path / "out", tokenizer="bpe")
    assert "b.bin" in str(err.value) and "\n" not in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


@pytest.mark.parametrize("case", ["missing", "empty-dir", "tiny", "bad-tokenizer", "bytes-vocab", "bpe-vocab",
                                  "out-not-empty"])
def test_prepare_text_bad_input(tmp_path: Path, case: str) -> None:
    src, out, kw = tmp_path / "in.txt", tmp_path / "out", {}
    src.write_text("some text " * 10)
    if case == "missing":
        src = tmp_path / "nope.txt"
    elif case == "empty-dir":
        src = tmp_path / "empty"
        src.mkdir()
    elif case == "tiny":
        src.write_text("ab")
    elif case == "bad-tokenizer":
        kw = {"tokenizer": "sentencepiece"}
    elif case == "bytes-vocab":
        kw = {"vocab_size": 1000}
    elif case == "bpe-vocab":
        kw = {"tokenizer": "bpe", "vocab_size": 100}
    elif case == "out-not-empty":
        out.mkdir()
        (out / "keep").write_text("x")
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(UserError) as err:
        prepare_text(src, out, **kw)
    assert "\n" not in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_encode_inverts_decode_for_bytes_and_nanogpt_char_meta(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import pickle

    import pytest as _pytest

    from quicktrain.data.corpus import decode, encode
    from quicktrain.errors import DataError

    assert decode(encode("déf x", tmp_path), tmp_path) == "déf x"  # no meta: UTF-8 bytes
    chars = sorted(set("hello world"))
    meta = {"vocab_size": len(chars), "stoi": {c: i for i, c in enumerate(chars)},
            "itos": {i: c for i, c in enumerate(chars)}}
    (tmp_path / "meta.pkl").write_bytes(pickle.dumps(meta))
    ids = encode("hello", tmp_path)
    assert max(ids) < len(chars) and decode(ids, tmp_path) == "hello"
    with _pytest.raises(DataError, match="not in its stoi"):
        encode("hello!", tmp_path)
