"""Every rule's documentation: the sections are there, Example is flagged, Use instead is not."""

from __future__ import annotations

from pathlib import Path

import pytest

from subsetgrad.lint.registry import DOC_SECTIONS, RULES, Rule
from tests.lint.conftest import run_source

CHECKED = [r for r in RULES.values() if r.check is not None]


@pytest.mark.parametrize("rule", CHECKED, ids=[r.code for r in CHECKED])
def test_example_is_flagged_and_use_instead_is_not(rule: Rule, tmp_path: Path) -> None:
    for section in DOC_SECTIONS:
        assert f"## {section}" in rule.doc
    flagged = run_source(rule.snippet("Example"), tmp_path, "example.py")
    assert rule.code in {f.code for f in flagged}
    clean = run_source(rule.snippet("Use instead"), tmp_path, "use_instead.py")
    assert clean == [], [f"{f.code} {f.message}" for f in clean]


def test_codes_and_names_are_stable_and_unique() -> None:
    assert {c: r.name for c, r in RULES.items() if r.check is not None} == {
        "SG101": "dense-table-gradient",
        "SG102": "dense-gradient-kept",
        "SG103": "scatter-in-scan",
        "SG201": "duplicated-lookup",
        "SG202": "dropped-gradient-path",
        "SG203": "set-with-duplicate-indices",
        "SG301": "optimizer-state-decay",
    }
    assert len({r.name for r in RULES.values()}) == len(RULES)


def test_unused_suppression_docs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """SG901 is found by `subsetgrad check`'s suppression pass, not by a graph rule."""
    from subsetgrad import cli

    monkeypatch.chdir(tmp_path)
    rule = RULES["SG901"]
    for section, expected in [("Example", 1), ("Use instead", 0)]:
        (tmp_path / "snippet.py").write_text(rule.snippet(section))
        assert cli.main(["check", "snippet.py", "--format", "json"]) == expected
        out = capsys.readouterr().out
        assert ('"SG901"' in out) == bool(expected)
