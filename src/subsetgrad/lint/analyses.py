"""Analyses of a program that several rules read, each computed once per program.

Rules get them through `Program.memo`, typed, rather than from one another.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytensor.scalar as ps
from pytensor.compile.sharedvalue import SharedVariable
from pytensor.graph.basic import Apply, Variable
from pytensor.tensor.elemwise import Elemwise
from pytensor.tensor.shape import SpecifyShape

from subsetgrad.graph import (
    identity_at_zero,
    isa,
    same_table,
    scatters_behind,
    shape_of,
    table_key,
)
from subsetgrad.lint.program import Program


def op_name(node: Apply) -> str:
    op = node.op
    if isinstance(op, Elemwise):
        return type(op.scalar_op).__name__.lower()
    return type(op).__name__


def strip_casts_and_shapes(var: Variable) -> Variable:
    """Look through casts and SpecifyShape, which do not change which table it is."""
    while var.owner is not None and (
        isinstance(var.owner.op, SpecifyShape)
        or (isinstance(var.owner.op, Elemwise) and isinstance(var.owner.op.scalar_op, ps.Cast))
    ):
        var = var.owner.inputs[0]
    return var


def _table_of(scatter_base: Variable) -> Variable | None:
    """The table a zeros block was sized from: ``Second(W, 0)`` or ``zeros_like(W)``."""
    owner = scatter_base.owner
    while owner is not None:
        if isinstance(getattr(owner.op, "scalar_op", None), ps.Second):
            return owner.inputs[0]
        if not owner.inputs:
            return None
        owner = owner.inputs[0].owner
    return None


@dataclass(frozen=True)
class StateUpdate:
    """A shared variable of a looked-up table's shape, updated from its scatter gradient."""

    state: Variable
    value: Variable
    # The tables whose gradient it follows, in the order of the walk.
    tables: tuple[Variable, ...]
    # It changes where the gradient is zero (not adagrad's ``acc + g**2``).
    decays: bool


def state_updates(program: Program) -> list[StateUpdate]:
    """The program's optimizer states, found once for SG301 and SG101."""
    return program.memo(_all_state_updates)


def _all_state_updates(program: Program) -> list[StateUpdate]:
    return list(_state_updates(program))


def _state_updates(program: Program) -> Iterator[StateUpdate]:
    dependent: set[Variable] | None = None
    sized: dict[Apply, Variable | None] = {}
    looked_up: set[int] = set()
    for state, value in program.updates:
        if not isa(state, (SharedVariable,)):
            continue
        if dependent is None:
            dependent = program.scatter_dependent
            sized = {n: _table_of(n.inputs[0]) for n in program.index.scatters}
            looked_up = {table_key(t) for t in sized.values() if t is not None}
        # A table's own update is SG101's business; states are other variables.
        if value not in dependent or table_key(state) in looked_up:
            continue
        scatters, dense_gradient = scatters_behind(value, dependent, program.index.scatters, state)
        if dense_gradient:
            continue  # every row has a gradient (tied table, L2 term): state should move
        # In the order of the walk (a set's order would name a different table per run).
        tables = [t for t in dict.fromkeys(sized[s] for s in scatters) if t is not None]
        shape = shape_of(state)
        owners = tuple([t for t in tables if shape_of(t) == shape])
        if not owners or any(same_table(state, t) for t in owners):
            continue
        decays = not identity_at_zero(value, state, [s.outputs[0] for s in scatters], dependent)
        yield StateUpdate(state, value, owners, decays)
