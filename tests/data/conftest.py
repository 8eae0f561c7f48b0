"""Helpers for the data tests: error-message checks and a private dataset cache per test where it matters."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest


@pytest.fixture
def one_line() -> Callable[[pytest.ExceptionInfo, object], str]:
    """Check that an error message is a single line containing every given part (a path, a key, a value)."""

    def check(excinfo: pytest.ExceptionInfo, *parts: object) -> str:
        message = str(excinfo.value)
        assert "\n" not in message, message
        for part in parts:
            assert str(part) in message, f"{part!r} not in {message!r}"
        return message

    return check


@pytest.fixture
def fresh_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty QUICKTRAIN_CACHE for this test only (so generation and cache hits can be observed)."""
    path = tmp_path / "cache"
    monkeypatch.setenv("QUICKTRAIN_CACHE", str(path))
    return path
