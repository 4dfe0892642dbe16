"""Each fixture program is flagged with exactly the codes marked on its lines."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.lint.conftest import FIXTURES, expected, run_recorded

FLAGGED = sorted(FIXTURES.glob("sg*.py"))
CLEAN = sorted((FIXTURES / "clean").glob("*.py"))


def needs(path: Path) -> None:
    if "pymc" in path.read_text():
        pytest.importorskip("pymc", reason="PyMC is an optional test dependency")


@pytest.mark.parametrize("path", FLAGGED, ids=[p.stem for p in FLAGGED])
def test_flagged_at_the_marked_lines(path: Path) -> None:
    needs(path)
    marks = expected(path)
    assert marks, "a fixture without expectations tests nothing"
    findings = run_recorded(path)
    report = "\n".join(f"{f.location}: {f.code} {f.message}" for f in findings)
    # Every finding at the fixture's own lines: none lost, none pointing elsewhere.
    assert all(f.location is not None and f.location.path == str(path) for f in findings), report
    assert {(f.code, f.location.line) for f in findings if f.location} == marks, report


@pytest.mark.parametrize("path", CLEAN, ids=[p.stem for p in CLEAN])
def test_clean_programs_have_no_findings(path: Path) -> None:
    needs(path)
    findings = run_recorded(path)
    assert findings == [], "\n".join(f"{f.location}: {f.code} {f.message}" for f in findings)
