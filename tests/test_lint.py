"""The configured line length (pyproject.toml, [tool.ruff]) and pyflakes' checks hold for the whole tree: ruff is a
test dependency, so this runs wherever the tests do."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_ruff_line_length_and_pyflakes_hold() -> None:
    done = subprocess.run([sys.executable, "-m", "ruff", "check", "--select", "E501,F", "--no-cache", "src", "tests",
                           "benchmarks", "tools"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
