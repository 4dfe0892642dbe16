"""The lint: find the subset-gradient traps in PyTensor graphs, at the user's line.

Three ways in, one engine:

- `check` on symbolic outputs and updates;
- `check_function` on a compiled function (its graph before rewriting, kept by `record`);
- `record`, a context manager that sees every function compiled and every
  `pytensor.grad` call made inside it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pytensor.compile.mode import Mode
from pytensor.graph.basic import Variable

from subsetgrad.lint import rules as _rules  # noqa: F401  (registers every rule)
from subsetgrad.lint.engine import analyse, analyse_all
from subsetgrad.lint.findings import Finding, Location, Severity
from subsetgrad.lint.program import Program
from subsetgrad.lint.recorder import Recording, captured, record
from subsetgrad.lint.registry import RULES, Rule
from subsetgrad.rewrite import ran_on, rewrite_active, table_copied_by


def check(
    outputs: Variable | Sequence[Variable] | None = None,
    updates: Mapping[Variable, Variable] | Iterable[tuple[Variable, Variable]] | None = None,
    mode: str | Mode | None = None,
    *,
    select: Iterable[str] | None = None,
    ignore: Iterable[str] | None = None,
) -> list[Finding]:
    """Findings for a function that would be compiled from `outputs` and `updates`.

    `mode` is the mode it would be compiled with (default: PyTensor's default);
    SG101 says whether the subsetgrad rewrite is active in it.
    """
    program = Program.from_symbolic(outputs, updates, rewrite_active(mode))
    program.copied_by = table_copied_by(mode)
    return analyse(program, select=select, ignore=ignore)


def check_function(
    f: Any, *, select: Iterable[str] | None = None, ignore: Iterable[str] | None = None
) -> list[Finding]:
    """Findings for a compiled `pytensor.function`, from its graph before rewriting.

    PyTensor rewrites a function's graph in place (every linker runs at least
    its minimum rewrites), so only `record()` keeps the graph as built: `f` must
    have been compiled inside a `record()` block. Otherwise this raises ValueError.
    """
    maker = getattr(f, "maker", None)
    if maker is None:
        raise TypeError(f"expected a compiled pytensor function, got {type(f).__name__}")
    program = captured(maker.fgraph)
    if program is None:
        raise ValueError(
            "check_function: the function was compiled outside subsetgrad.record(), and "
            "PyTensor has rewritten its graph in place; compile it inside "
            "`with subsetgrad.record():`, or pass its outputs and updates to subsetgrad.check()"
        )
    program.rewrite_active = ran_on(maker.fgraph)
    program.copied_by = table_copied_by(getattr(maker, "mode", None))
    return analyse(program, select=select, ignore=ignore)


__all__ = [
    "RULES",
    "Finding",
    "Location",
    "Program",
    "Recording",
    "Rule",
    "Severity",
    "analyse",
    "analyse_all",
    "check",
    "check_function",
    "record",
]
