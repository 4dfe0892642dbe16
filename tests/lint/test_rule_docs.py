"""Every rule's documentation says what the lint does.

The registry checks at import that each doc has its sections; these tests
check what the sections say: the Example is flagged with its rule's code and
no other, at the user's line; the Use instead is clean; the Rewrite section's
claim about the subsetgrad rewrite holds; and the reference page is current.
"""

from __future__ import annotations

import difflib
import json
import re
import runpy
from pathlib import Path

import pytensor
import pytest

import subsetgrad
from subsetgrad import cli
from subsetgrad.lint import Finding, Severity, docs
from subsetgrad.lint.registry import DOC_SECTIONS, RULES, Rule
from tests.lint.conftest import run_source

REFERENCE = Path(__file__).resolve().parents[2] / "docs" / "rules.md"

CHECKED = [r for r in RULES.values() if r.check is not None]


def section_text(rule: Rule, section: str) -> str:
    """The text under ``## section``, up to the next heading of that level."""
    match = re.search(rf"^## {re.escape(section)}\n(.*?)(?=^## |\Z)", rule.doc, re.M | re.S)
    assert match is not None, f"{rule.code} has no {section!r} section"
    return match.group(1)


def run_rewritten(source: str, tmp_path: Path) -> list[Finding]:
    """Findings for `source` compiled, by default, with the subsetgrad rewrite on."""
    path = tmp_path / "rewritten.py"
    path.write_text(source)
    mode = subsetgrad.mode("FAST_COMPILE")
    with pytensor.config.change_flags(mode=mode), subsetgrad.record() as rec:
        runpy.run_path(str(path), run_name="__main__")
    assert rec.compiled, f"{path.name} compiled nothing"
    return rec.findings()


@pytest.mark.parametrize("rule", RULES.values(), ids=list(RULES))
def test_sections_come_in_order_once_each_and_say_something(rule: Rule) -> None:
    fenced = False
    headings = []
    for line in rule.doc.splitlines():
        fenced ^= line.startswith("```")
        if not fenced and line.startswith("## "):
            headings.append(line[3:])
    assert headings == list(DOC_SECTIONS)
    for section in DOC_SECTIONS:
        assert section_text(rule, section).strip(), f"{rule.code}: {section!r} is empty"


@pytest.mark.parametrize("rule", CHECKED, ids=[r.code for r in CHECKED])
def test_example_is_flagged_with_its_code_only_and_use_instead_is_clean(
    rule: Rule, tmp_path: Path
) -> None:
    flagged = run_source(rule.snippet("Example"), tmp_path, "example.py")
    assert {f.code for f in flagged} == {rule.code}, [f"{f.code} {f.message}" for f in flagged]
    example = str((tmp_path / "example.py").resolve())
    for f in flagged:
        # The examples compile without the rewrite: the rule's own severity, at the user's line.
        assert f.severity is rule.severity
        assert f.location is not None and f.location.path == example
        assert 1 <= f.location.line <= len(rule.snippet("Example").splitlines())
    clean = run_source(rule.snippet("Use instead"), tmp_path, "use_instead.py")
    assert clean == [], [f"{f.code} {f.message}" for f in clean]


@pytest.mark.parametrize("rule", CHECKED, ids=[r.code for r in CHECKED])
def test_the_rewrite_section_says_what_the_rewrite_changes(rule: Rule, tmp_path: Path) -> None:
    """A rule whose Rewrite section says the finding turns info does; the others keep theirs."""
    claims_info = re.search(r"severity\s+`*info\b", section_text(rule, "Rewrite")) is not None
    flagged = run_rewritten(rule.snippet("Example"), tmp_path)
    assert {f.code for f in flagged} == {rule.code}
    expected = Severity.INFO if claims_info else rule.severity
    assert {f.severity for f in flagged} == {expected}


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
    for section, expected in [("Example", ["SG901"]), ("Use instead", [])]:
        (tmp_path / "snippet.py").write_text(rule.snippet(section))
        assert cli.main(["check", "snippet.py", "--format", "json"]) == len(expected)
        assert [f["code"] for f in json.loads(capsys.readouterr().out)] == expected


# -- the rule reference, docs/rules.md ---------------------------------------------------------
def test_the_committed_reference_is_the_commands_output(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.main(["rules", "--format", "markdown"]) == 0
    generated = capsys.readouterr().out
    committed = REFERENCE.read_text() if REFERENCE.is_file() else ""
    if committed != generated:
        diff = difflib.unified_diff(
            committed.splitlines(),
            generated.splitlines(),
            "docs/rules.md",
            "generated",
            n=1,
            lineterm="",
        )
        pytest.fail(
            f"docs/rules.md is stale; regenerate it from the repository root with "
            f"`{docs.COMMAND}`\n" + "\n".join(list(diff)[:40]),
            pytrace=False,
        )


def test_the_reference_says_it_is_generated_and_by_what() -> None:
    first = docs.markdown().splitlines()[0]
    assert first.startswith("<!--") and first.endswith("-->")
    assert "subsetgrad rules --format markdown > docs/rules.md" in first


def test_the_reference_has_every_rule_and_its_links_resolve() -> None:
    page = docs.markdown()
    headings = re.findall(r"^## (SG\d{3}) (\S+)$", page, re.M)
    assert headings == sorted((r.code, r.name) for r in RULES.values())
    # GitHub's anchor for a heading: lower case, spaces as hyphens.
    anchors = {f"{code} {name}".lower().replace(" ", "-") for code, name in headings}
    links = re.findall(r"\]\(#([^)]+)\)", page)
    assert sorted(links) == sorted(anchors)
    for r in RULES.values():
        assert f"- Fix: {r.hint}\n" in page
        assert r.snippet("Example") in page and r.snippet("Use instead") in page


def test_the_reference_nests_doc_headings_and_leaves_code_alone() -> None:
    rule = Rule(
        "SG999",
        "made-up",
        "A summary | with a bar.",
        "A hint.",
        RULES["SG101"].severity,
        "## What it does\nText.\n\n## Example\n```python\n# a comment, not a heading\nx = 1\n```",
        None,
        default_enabled=False,
    )
    page = docs.markdown([rule])
    assert "\n### What it does\n" in page and "\n### Example\n" in page
    assert "\n# a comment, not a heading\n" in page
    assert "| [SG999](#sg999-made-up) | made-up | warning | off | A summary \\| with a bar. |" in (
        page
    )
    assert "disabled (enable it with `select`) by default" in page
