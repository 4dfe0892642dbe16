"""Run the enabled rules over a program."""

from __future__ import annotations

import gc
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from subsetgrad.lint import source
from subsetgrad.lint.findings import Finding
from subsetgrad.lint.program import Program
from subsetgrad.lint.registry import RULES, select_codes


def analyse(
    program: Program,
    *,
    select: Iterable[str] | None = None,
    ignore: Iterable[str] | None = None,
) -> list[Finding]:
    """Findings of the selected rules, de-duplicated and sorted by place."""
    found: dict[tuple[object, ...], Finding] = {}
    source.refresh()
    with _no_gc():
        for code in sorted(select_codes(select, ignore)):
            r = RULES[code]
            if r.check is None:
                continue
            for f in r.check(program, r):
                found.setdefault((f.code, f.location, f.message), f)
        # Freed while the collector is paused, the analysis costs no collector pass.
        program.forget()
    return sorted(found.values(), key=Finding.sort_key)


@contextmanager
def _no_gc() -> Iterator[None]:
    """Pause the cyclic collector: on a large graph its full passes cost more than the lint."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def analyse_all(
    programs: Iterable[Program],
    *,
    select: Iterable[str] | None = None,
    ignore: Iterable[str] | None = None,
) -> list[Finding]:
    """Findings over several programs; the same trap compiled twice is reported once."""
    found: dict[tuple[object, ...], Finding] = {}
    for program in programs:
        for f in analyse(program, select=select, ignore=ignore):
            found.setdefault((f.code, f.location, f.message), f)
    return sorted(found.values(), key=Finding.sort_key)
