"""ruff and mypy are part of the suite, so CI keeps the code clean."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHECKS = {
    "ruff check": ["-m", "ruff", "check", "src", "tests", "benchmarks", "scripts"],
    "ruff format": ["-m", "ruff", "format", "--check", "src", "tests", "benchmarks", "scripts"],
    "mypy": ["-m", "mypy"],
}


@pytest.mark.parametrize("name", CHECKS)
def test_static_check(name: str) -> None:
    done = subprocess.run([sys.executable, *CHECKS[name]], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, f"{name} failed:\n{done.stdout}{done.stderr}"
