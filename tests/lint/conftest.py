"""Run fixture programs under the recorder, the way `subsetgrad check` does."""

from __future__ import annotations

import re
import runpy
from collections.abc import Callable
from pathlib import Path

import pytensor
import pytest

import subsetgrad
from subsetgrad.lint import Finding

FIXTURES = Path(__file__).parent / "fixtures"
EXPECT = re.compile(r"#\s*expect:\s*(SG\d{3}(?:\s*,\s*SG\d{3})*)")


def expected(path: Path) -> set[tuple[str, int]]:
    """``(code, line)`` pairs marked ``# expect: SG101`` in a fixture."""
    marks = set()
    for lineno, text in enumerate(path.read_text().splitlines(), start=1):
        m = EXPECT.search(text)
        if m:
            marks.update((code.strip(), lineno) for code in m.group(1).split(","))
    return marks


def run_recorded(path: Path) -> list[Finding]:
    # FAST_COMPILE keeps fixture compiles quick; the lint reads the graph before rewriting.
    with pytensor.config.change_flags(mode="FAST_COMPILE"), subsetgrad.record() as rec:
        runpy.run_path(str(path), run_name="__main__")
    assert rec.compiled, f"{path.name} compiled nothing"
    return rec.findings()


def run_source(source: str, tmp_path: Path, name: str = "snippet.py") -> list[Finding]:
    path = tmp_path / name
    path.write_text(source)
    return run_recorded(path)


@pytest.fixture
def run_snippet(tmp_path: Path) -> Callable[[str], list[Finding]]:
    return lambda source: run_source(source, tmp_path)
