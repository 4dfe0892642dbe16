"""A graph to analyse, whichever way it arrived: symbolic, compiled, or recorded."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, TypeVar, cast

from pytensor.graph.basic import Variable
from pytensor.graph.fg import FunctionGraph

from subsetgrad.graph import (
    Decomposition,
    GraphIndex,
    decompose_graph,
    isa,
    scatter_dependent,
)

T = TypeVar("T")


@dataclass
class Program:
    """Outputs and ``(table, new value)`` updates of one function, before any rewrite."""

    outputs: list[Variable]
    updates: list[tuple[Variable, Variable]]
    # None: unknown (a symbolic graph checked without a mode).
    rewrite_active: bool | None = None
    label: str = "function"
    # The backend whose linker copies updated tables every call ("JAX"), where known.
    copied_by: str | None = None
    # Analyses the rules share, by the function that computes them (see `memo`).
    _memo: dict[Callable[[Program], Any], Any] = field(default_factory=dict, repr=False)

    @cached_property
    def index(self) -> GraphIndex:
        return GraphIndex.from_outputs(
            [*self.outputs, *(v for _, v in self.updates)], root_clients=False
        )

    @cached_property
    def decomposition(self) -> Decomposition:
        # The rules ask which scatters make up an update, never for their values.
        return decompose_graph(self.index, values=False)

    @cached_property
    def scatter_dependent(self) -> set[Variable]:
        """Variables that depend on a scatter into zeros (a gradient of a lookup)."""
        return scatter_dependent(self.index)

    @cached_property
    def update_values(self) -> dict[Variable, Variable]:
        """New value -> table."""
        return {value: table for table, value in self.updates}

    def forget(self) -> None:
        """Drop the index, the decomposition and the rules' caches; rebuilt when next used."""
        for name in ("index", "decomposition", "scatter_dependent", "update_values"):
            self.__dict__.pop(name, None)
        self._memo.clear()

    def memo(self, analysis: Callable[[Program], T]) -> T:
        """``analysis(self)``, computed once until `forget`: how rules share typed results."""
        try:
            return cast("T", self._memo[analysis])
        except KeyError:
            value = self._memo[analysis] = analysis(self)
            return value

    @classmethod
    def from_symbolic(
        cls,
        outputs: Variable | Sequence[Variable] | None = None,
        updates: Mapping[Variable, Variable] | Iterable[tuple[Variable, Variable]] | None = None,
        rewrite_active: bool | None = None,
    ) -> Program:
        if outputs is None:
            outs: list[Variable] = []
        elif isinstance(outputs, Variable):
            outs = [outputs]
        else:
            outs = list(outputs)
        pairs = list(updates.items() if isinstance(updates, Mapping) else updates or [])
        for table, value in pairs:
            if not isa(table, (Variable,)) or not isa(value, (Variable,)):
                raise TypeError(f"updates must pair variables, got {table!r}: {value!r}")
        return cls(outs, pairs, rewrite_active)

    @classmethod
    def from_fgraph(cls, fgraph: FunctionGraph, rewrite_active: bool | None = None) -> Program:
        mapping = getattr(fgraph, "update_mapping", None) or {}
        updates = [(fgraph.inputs[i], fgraph.outputs[o]) for o, i in mapping.items()]
        outputs = [o for k, o in enumerate(fgraph.outputs) if k not in mapping]
        return cls(outputs, updates, rewrite_active)
