"""What the rewrites did in this process: how often each fired, and which graphs they ran on."""

from __future__ import annotations

from collections import Counter
from weakref import WeakSet

from pytensor.graph.fg import FunctionGraph

#: How often each part of the rewrite fired in this process; tests assert on it.
counters: Counter[str] = Counter()
_ran_on: WeakSet[FunctionGraph] = WeakSet()


def note_run(fgraph: FunctionGraph) -> None:
    """Record that a subsetgrad rewrite ran on `fgraph` (whether or not it changed it)."""
    _ran_on.add(fgraph)


def ran_on(fgraph: FunctionGraph) -> bool:
    """Whether a subsetgrad rewrite ran on `fgraph`: its mode had the rewrite on."""
    return fgraph in _ran_on


def reset_counters() -> None:
    """Zero the counters (tests compare them before and after a compile)."""
    counters.clear()
