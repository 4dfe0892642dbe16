"""From raw findings to what a CI gate reports: selection, per-file ignores, suppressions."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from subsetgrad.lint.config import Config
from subsetgrad.lint.findings import Finding, Severity
from subsetgrad.lint.registry import select_codes
from subsetgrad.lint.suppress import UNUSED, apply


def effective_selection(
    config: Config, select: Sequence[str] | None, ignore: Sequence[str] | None
) -> tuple[list[str] | None, list[str]]:
    """Command-line `select` replaces the config's; `ignore` lists add up."""
    chosen = (
        list(select)
        if select is not None
        else (list(config.select) if config.select is not None else None)
    )
    return chosen, [*config.ignore, *(ignore or [])]


def gate(
    findings: Iterable[Finding],
    *,
    files: Iterable[str],
    config: Config,
    select: Sequence[str] | None,
    ignore: Sequence[str],
) -> list[Finding]:
    """Apply per-file ignores and inline suppressions; report stale suppressions (SG901)."""
    codes = select_codes(select, ignore)
    kept = [
        f
        for f in findings
        if f.code in codes
        and not any(
            f.code.startswith(p) for p in (config.ignored_in(f.location.path) if f.location else ())
        )
    ]
    result = apply(kept, files, report_unused=UNUSED.code in codes)
    return [
        f
        for f in result
        if f.code != UNUSED.code
        or not any(
            f.code.startswith(p) for p in (config.ignored_in(f.location.path) if f.location else ())
        )
    ]


def failing(findings: Iterable[Finding]) -> bool:
    """Whether the findings fail a gate: any warning or error (info is shown only)."""
    return any(f.severity is not Severity.INFO for f in findings)
