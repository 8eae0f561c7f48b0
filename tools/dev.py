#!/usr/bin/env python3
"""Set everything up, then run the main job or the tests. Needs only Python >= 3.11.

    python3 tools/dev.py run  [quicktrain run args]   # train the default recipe on built-in MNIST-1D, print the report
    python3 tools/dev.py test [pytest args]           # the whole test suite

Set-up (skipped when nothing changed): a virtual environment in .venv, then `pip install torch==2.13.0` FIRST, so that
no later requirement pulls the newest torch with several GB of CUDA wheels, then this package with its test extras.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
TORCH = "torch==2.13.0"


def _python() -> Path:
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def setup() -> Path:
    stamp = VENV / ".quicktrain-setup"
    want = hashlib.sha256((TORCH + (ROOT / "pyproject.toml").read_text()).encode()).hexdigest()
    py = _python()
    if py.exists() and stamp.exists() and stamp.read_text() == want:
        return py
    if not py.exists():
        print(f"creating {VENV}", flush=True)
        venv.create(VENV, with_pip=True)
    pip = [str(py), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, TORCH], check=True)
    subprocess.run([*pip, "-e", f"{ROOT}[test]"], check=True)
    stamp.write_text(want)
    return py


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("run", "test", "setup"):
        print(__doc__, file=sys.stderr)
        return 2
    py = setup()
    if argv[0] == "setup":
        return 0
    os.chdir(ROOT)
    if argv[0] == "run":
        command = [str(py), "-m", "quicktrain", "run", *argv[1:]]
    else:
        command = [str(py), "-m", "pytest", *argv[1:]]
    return subprocess.run(command).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
