"""Where quicktrain keeps what it can rebuild (generated datasets, measured peaks, `auto` choices), and the one safe
way it writes small JSON files there.

Everything under the cache directory is disposable: a missing or corrupt file is rebuilt or re-measured, never an
error. JSON is written atomically (temp file in the same directory, then os.replace), so a reader never sees half a
file, and read back with json (never pickle).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from quicktrain.atomic import atomic_write


def cache_dir() -> Path:
    """$QUICKTRAIN_CACHE, else $XDG_CACHE_HOME/quicktrain, else ~/.cache/quicktrain (not created here)."""
    if os.environ.get("QUICKTRAIN_CACHE"):
        return Path(os.environ["QUICKTRAIN_CACHE"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "quicktrain"
    return Path.home() / ".cache" / "quicktrain"


def read_json(path: Path) -> dict[str, Any]:
    """The JSON object in `path`, or {} if it is missing, unreadable or not an object."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write `data` to `path` atomically. Raises OSError if the directory is not writable."""
    atomic_write(path, json.dumps(data, indent=1, sort_keys=True))
