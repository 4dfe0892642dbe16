"""One registry of rules: code -> `Rule`."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from subsetgrad.lint.findings import Finding, Location, Severity

if TYPE_CHECKING:
    from subsetgrad.lint.program import Program

CODE = re.compile(r"^SG\d{3}$")
NAME = re.compile(r"^[a-z]+(-[a-z]+)*$")
DOC_SECTIONS = ("What it does", "Why is this bad?", "Example", "Use instead", "Rewrite")

Check = Callable[["Program", "Rule"], Iterable[Finding]]


@dataclass(frozen=True)
class Rule:
    code: str
    name: str
    summary: str
    hint: str
    severity: Severity
    doc: str
    check: Check | None
    default_enabled: bool = True

    def finding(
        self,
        message: str,
        location: Location | None,
        *,
        related: Iterable[Location | None] = (),
        severity: Severity | None = None,
        hint: str | None = None,
    ) -> Finding:
        return Finding(
            code=self.code,
            name=self.name,
            severity=severity or self.severity,
            message=message,
            hint=hint or self.hint,
            location=location,
            related=tuple([r for r in related if r is not None]),
        )

    def snippet(self, section: str) -> str:
        """The code block under a doc heading (``Example`` or ``Use instead``)."""
        match = re.search(
            rf"^## {re.escape(section)}\n+```python\n(.*?)^```", self.doc, re.M | re.S
        )
        if match is None:
            raise KeyError(f"{self.code} has no {section!r} code block")
        return match.group(1)


RULES: dict[str, Rule] = {}


def rule(
    code: str,
    name: str,
    *,
    summary: str,
    hint: str,
    severity: Severity = Severity.WARNING,
    default_enabled: bool = True,
) -> Callable[[Check], Check]:
    """Register the decorated check under `code`; its docstring is the rule's documentation."""

    def register(check: Check) -> Check:
        add(
            Rule(
                code,
                name,
                summary,
                hint,
                severity,
                _dedent(check.__doc__ or ""),
                check,
                default_enabled,
            )
        )
        return check

    return register


def add(r: Rule) -> None:
    if not CODE.match(r.code) or not NAME.match(r.name):
        raise ValueError(f"bad rule code or name: {r.code} {r.name}")
    if r.code in RULES:
        raise ValueError(f"rule {r.code} registered twice")
    missing = [s for s in DOC_SECTIONS if f"## {s}" not in r.doc]
    if missing:
        raise ValueError(f"{r.code} docs lack sections {missing}")
    RULES[r.code] = r


def _dedent(text: str) -> str:
    import inspect

    return inspect.cleandoc(text)


def select_codes(select: Iterable[str] | None, ignore: Iterable[str] | None) -> set[str]:
    """Codes enabled by ruff-style `select`/`ignore` lists of codes or prefixes."""
    chosen = (
        {c for c, r in RULES.items() if r.default_enabled}
        if select is None
        else {c for c in RULES if any(c.startswith(p) for p in select)}
    )
    return {c for c in chosen if not any(c.startswith(p) for p in ignore or ())}


def unknown_codes(prefixes: Iterable[str]) -> list[str]:
    """Entries that name no rule (neither a code nor a prefix of one)."""
    return [p for p in prefixes if not any(c.startswith(p) for c in RULES) or not p]
