"""Crash-safe checkpoints on disk: the format, atomic writes, verification before any parsing, and rotation.

A checkpoint is a directory `<root>/step-000000123/` holding
- `tensors.safetensors`: every tensor of the run state (safetensors: a JSON header and raw bytes, no code),
- `meta.json`: everything else (structure, counters, clocks, metrics, config),
- `MANIFEST.json`: written last, the commit marker: the size and sha256 of each file, plus a sha256 of the manifest's
  own body, so that a flipped byte anywhere (even one that leaves valid JSON) is detected.
A directory without a valid manifest is not a checkpoint: it is an interrupted write, ignored and cleaned up later.

Every file is written to a temp file in the same directory, fsynced, `os.replace`d into place, and the directory is
fsynced (so the rename itself survives a power cut); the manifest comes only after all of that. Loading reads each
file's bytes once, checks size and hash, and only then parses those same bytes. Nothing is ever unpickled.

Rotation keeps the newest `keep` checkpoints. An old one is retired by deleting its manifest first (one atomic unlink
that makes it not exist), then the rest; a crash in between leaves only an ignorable directory.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from quicktrain.atomic import atomic_write
from quicktrain.errors import UserError

FORMAT = 1
MANIFEST, TENSORS, META = "MANIFEST.json", "tensors.safetensors", "meta.json"
PREFIX = "step-"


class CheckpointWriteError(Exception):
    """A checkpoint could not be written (disk full, read-only directory). The previous one is intact."""


class CorruptCheckpoint(UserError):
    """A checkpoint failed verification; the message names the file and what is wrong."""


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_file(directory: Path, name: str, data: bytes) -> dict[str, Any]:
    """Write `data` to directory/name atomically; return its size and sha256 for the manifest."""
    atomic_write(directory / name, data)
    return {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def _manifest_bytes(body: dict[str, Any]) -> bytes:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return json.dumps({"body": body, "sha256": hashlib.sha256(canonical.encode()).hexdigest()}, indent=1).encode()


def checkpoint_dir(root: Path, step: int) -> Path:
    return root / f"{PREFIX}{step:09d}"


def write_checkpoint(root: Path, step: int, tensors: dict[str, torch.Tensor], meta: dict[str, Any],
                     keep: int = 2) -> Path:
    """Write a checkpoint for `step` under `root`, commit it with its manifest, then rotate to the newest `keep`.
    Raises CheckpointWriteError (nothing half-written is left behind) if the disk refuses."""
    path = checkpoint_dir(root, step)
    try:
        root.mkdir(parents=True, exist_ok=True)
        if path.exists():  # an interrupted earlier write of this step, or a re-save: replace it whole
            _retire(path)
        path.mkdir()
        files = {TENSORS: _write_file(path, TENSORS, st_save({k: v.contiguous() for k, v in tensors.items()})),
                 META: _write_file(path, META, json.dumps(meta, allow_nan=True).encode())}
        fsync_dir(path)
        body = {"format": FORMAT, "step": step, "files": files}
        _write_file(path, MANIFEST, _manifest_bytes(body))
        fsync_dir(path)
        fsync_dir(root)
    except OSError as exc:
        shutil.rmtree(path, ignore_errors=True)
        raise CheckpointWriteError(f"could not write checkpoint {path}: {exc.strerror or exc}; "
                                   "the previous checkpoint is intact") from None
    rotate(root, keep)
    return path


def _retire(path: Path) -> None:
    """Make a checkpoint not exist (manifest first, atomically), then remove the rest."""
    (path / MANIFEST).unlink(missing_ok=True)
    fsync_dir(path)
    shutil.rmtree(path, ignore_errors=True)


def list_checkpoints(root: Path) -> list[tuple[int, Path]]:
    """(step, path) of every checkpoint-like directory under root, newest first (validity not checked)."""
    out = []
    if root.is_dir():
        for p in root.iterdir():
            if p.is_dir() and p.name.startswith(PREFIX) and p.name[len(PREFIX):].isdigit():
                out.append((int(p.name[len(PREFIX):]), p))
    return sorted(out, reverse=True)


def rotate(root: Path, keep: int) -> None:
    """Keep the newest `keep` committed checkpoints; remove older ones and any uncommitted directories."""
    committed = 0
    for _, path in list_checkpoints(root):
        if (path / MANIFEST).exists() and committed < keep:
            committed += 1
            continue
        _retire(path)
    for stray in root.glob(f"{PREFIX}*/.*.tmp"):
        stray.unlink(missing_ok=True)


def _read_verified(path: Path, name: str, expected: dict[str, Any]) -> bytes:
    file = path / name
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise CorruptCheckpoint(f"checkpoint file {file} is unreadable: {exc.strerror or exc}") from None
    if len(data) != expected.get("size"):
        raise CorruptCheckpoint(f"checkpoint file {file} has {len(data)} bytes, "
                                f"its manifest says {expected.get('size')} (truncated?)")
    if hashlib.sha256(data).hexdigest() != expected.get("sha256"):
        raise CorruptCheckpoint(f"checkpoint file {file} does not match its sha256 in the manifest (damaged)")
    return data


def read_manifest(path: Path) -> dict[str, Any]:
    """The verified manifest body of a checkpoint directory, or CorruptCheckpoint naming the file."""
    file = path / MANIFEST
    try:
        raw = json.loads(file.read_bytes())
        body, digest = raw["body"], raw["sha256"]
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    except FileNotFoundError:
        raise CorruptCheckpoint(f"checkpoint {path} has no {MANIFEST} (an interrupted write)") from None
    except (OSError, ValueError, KeyError, TypeError):
        raise CorruptCheckpoint(f"checkpoint file {file} is not a valid manifest (damaged)") from None
    if hashlib.sha256(canonical.encode()).hexdigest() != digest:
        raise CorruptCheckpoint(f"checkpoint file {file} does not match its own checksum (damaged)")
    if body.get("format") != FORMAT or not isinstance(body.get("files"), dict):
        raise CorruptCheckpoint(f"checkpoint file {file} has an unknown format {body.get('format')!r}")
    if set(body["files"]) != {TENSORS, META}:
        raise CorruptCheckpoint(f"checkpoint file {file} lists unexpected files {sorted(body['files'])}")
    return body


def read_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Verify every byte of the checkpoint at `path`, then parse it: (tensors, meta)."""
    body = read_manifest(path)
    blobs = {name: _read_verified(path, name, expected) for name, expected in body["files"].items()}
    try:
        tensors = st_load(blobs[TENSORS])
        meta = json.loads(blobs[META])
    except Exception as exc:  # verified bytes that still do not parse: a forged manifest
        raise CorruptCheckpoint(f"checkpoint {path} passed its checksums but does not parse "
                                f"({type(exc).__name__})") from None
    if meta.get("step") != body["step"]:
        raise CorruptCheckpoint(f"checkpoint file {path / META} is for step {meta.get('step')}, "
                                f"its manifest says {body['step']}")
    return tensors, meta


def read_latest(root: Path, warn: Callable[[str], None]) -> tuple[Path, dict[str, torch.Tensor], dict[str, Any]] | None:
    """The newest checkpoint under `root` that verifies, warning about each newer one that does not.
    None if there are no checkpoints; CorruptCheckpoint if there are some and none verifies."""
    candidates = list_checkpoints(root)
    problems = []
    for _, path in candidates:
        try:
            tensors, meta = read_checkpoint(path)
        except CorruptCheckpoint as exc:
            problems.append(str(exc))
            warn(f"{exc}; falling back to the checkpoint before it")
            continue
        return path, tensors, meta
    if problems and any((p / MANIFEST).exists() for _, p in candidates):
        raise CorruptCheckpoint(f"no valid checkpoint in {root}: {problems[0]}")
    return None
