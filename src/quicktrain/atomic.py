"""The one atomic-write helper: every file quicktrain writes that a crash must not leave half-written (checkpoint
files, caches, metrics.jsonl on resume, result.json) goes through `atomic_write`."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import IO, Callable

Payload = bytes | str | Callable[[IO[bytes]], None]


def atomic_write(path: Path, data: Payload) -> None:
    """Write `data` (bytes, text, or a function that writes to a binary file) to `path` atomically: a temp file
    `.NAME.*.tmp` in the same directory, flushed and fsynced, then `os.replace`d into place. A reader sees the old
    file or the complete new one, never a part. The temp file is removed on any failure, and the error raised."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
