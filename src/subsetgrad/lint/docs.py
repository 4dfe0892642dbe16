"""The rule reference as one Markdown page, rendered from the registry.

``subsetgrad rules --format markdown`` prints it; ``docs/rules.md`` is that
output, committed, and a test fails when the two differ.
"""

from __future__ import annotations

from collections.abc import Iterable

from subsetgrad.lint.registry import RULES, Rule

COMMAND = "subsetgrad rules --format markdown > docs/rules.md"
HEADER = (
    f"<!-- Generated from the rule registry by `{COMMAND}`; "
    "edit the rules' docstrings, not this file. -->"
)


def markdown(rules: Iterable[Rule] | None = None) -> str:
    """Every rule (default: all registered), sorted by code: an index, then each one's docs."""
    chosen = sorted(RULES.values() if rules is None else rules, key=lambda r: r.code)
    lines = [
        HEADER,
        "",
        "# Rule reference",
        "",
        "The rules that `subsetgrad check`, `subsetgrad.record()` and `pytest --subsetgrad` apply.",
        "`subsetgrad rule CODE` prints one of them; `subsetgrad rules` lists them.",
        "",
        "| Code | Name | Severity | Default | Summary |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in chosen:
        default = "on" if r.default_enabled else "off"
        lines.append(
            f"| [{r.code}](#{_anchor(r)}) | {r.name} | {r.severity.value} | {default} "
            f"| {_cell(r.summary)} |"
        )
    for r in chosen:
        lines += ["", *section(r).splitlines()]
    return "\n".join(lines) + "\n"


def section(r: Rule) -> str:
    """One rule's part of the page: heading, summary, severity, fix, then its docs."""
    default = "enabled" if r.default_enabled else "disabled (enable it with `select`)"
    return "\n".join(
        [
            f"## {r.code} {r.name}",
            "",
            r.summary,
            "",
            f"- Default severity: {r.severity.value}; {default} by default.",
            f"- Fix: {r.hint}",
            "",
            _demote(r.doc),
        ]
    )


def _anchor(r: Rule) -> str:
    """The anchor GitHub gives the rule's heading."""
    return f"{r.code} {r.name}".lower().replace(" ", "-")


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _demote(doc: str) -> str:
    """The docs' headings one level down (they sit under the rule's), code blocks untouched."""
    out: list[str] = []
    fenced = False
    for line in doc.strip().splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and line.startswith("#"):
            line = "#" + line
        out.append(line)
    return "\n".join(out)
