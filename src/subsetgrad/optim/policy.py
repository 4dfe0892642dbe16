"""`sparse_updates`: an explicit choice of what rows outside the batch do."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytensor
import pytensor.tensor as pt
from pytensor.compile.sharedvalue import SharedVariable
from pytensor.graph.basic import Variable
from pytensor.graph.replace import graph_replace

from subsetgrad.graph import (
    GraphIndex,
    RowGroup,
    Rows,
    RowUpdateError,
    analyse,
    build_subset_update,
    changed_at_zero,
    describe,
    index_of,
    linear_without_state,
    materialize,
    row_index,
    row_values,
    scatter_dependent,
    touched_rows,
    value_inputs,
    write_rows,
)
from subsetgrad.optim.catchup import plan_catch_up

POLICIES = ("exact", "lazy", "catchup")

Updates = Mapping[Variable, Variable] | Sequence[tuple[Variable, Variable]]


class SparseUpdateError(ValueError):
    """An update cannot follow the requested policy; the message names the table."""


@dataclass(frozen=True)
class SparseUpdates:
    """The result of `sparse_updates`."""

    #: Updates for ``pytensor.function``: the given ones, with each table's made sparse.
    updates: dict[Variable, Variable]
    #: Updates for a no-input function that brings every row up to date (catch-up only).
    flush: dict[Variable, Variable]
    policy: str
    #: The tables made sparse, with the state updated along with each.
    tables: dict[Variable, tuple[Variable, ...]] = field(default_factory=dict)
    #: The catch-up step counter (number of steps taken), None for other policies.
    step: SharedVariable | None = None
    #: Catch-up: each lookup ``W[idx]`` of a table that moves at zero gradient, and
    #: its rows caught up to this step, which the updates read in its place.
    lookups: dict[Variable, Variable] = field(default_factory=dict)
    #: Catch-up: the tables and states whose rows outside the batch are behind.
    moving: frozenset[Variable] = frozenset()
    #: Catch-up: the reads of their batch rows that the catch-up starts from.
    gathered: frozenset[Variable] = frozenset()

    def fresh(self, outputs: Variable | Sequence[Variable]) -> Any:
        """`outputs` (a loss, say) computed from caught-up rows, as the updates are.

        With ``policy="catchup"``, an output that reads ``W[idx]`` compiled next to
        ``.updates`` otherwise sees the rows as they were last written. Raises
        `SparseUpdateError` when an output reads such a table other than by
        looking up the batch's rows (``(W**2).sum()``): those rows are behind.
        """
        if not self.lookups and not self.moving:
            return outputs
        single = isinstance(outputs, Variable)
        outs = [outputs] if single else list(outputs)
        if self.lookups:
            outs = graph_replace(outs, self.lookups, strict=False)
        for out in outs:
            stale = self.moving & _values_read(out, set(self.gathered))
            if stale:
                names = ", ".join(sorted(describe(v) for v in stale))
                raise SparseUpdateError(
                    f"policy 'catchup' cannot make this output fresh: it reads {names} "
                    "other than by looking up the batch's rows, and rows outside the "
                    "batch are only caught up when looked up or flushed"
                )
        return outs[0] if single else outs


def sparse_updates(updates: Updates, policy: str = "exact") -> SparseUpdates:
    """Compute each lookup table's optimizer step for the looked-up rows only.

    `updates` is a mapping (or pairs) as for ``pytensor.function``, such as what
    ``pymc.variational.updates.adam(loss, params)`` returns. Each table whose
    update (and whose state's) is elementwise in a gradient of ``W[idx]`` lookups
    becomes a step on the touched rows; other updates pass through unchanged.

    Policies, for the rows outside the batch:

    - ``"exact"``: they do not change. Only valid where a zero gradient leaves the
      table and its state unchanged (sgd, adagrad, sign or clip of the gradient),
      and then equal to the dense step; raises `SparseUpdateError` otherwise.
    - ``"lazy"``: they do not change, whatever the optimizer (LazyAdam/SparseAdam).
    - ``"catchup"``: they receive the zero-gradient steps they skipped, in closed
      form, when next looked up or at ``flush``; then equal to the dense run.

    Repeated indices are summed per row first, as the dense gradient sums them.
    """
    if policy not in POLICIES:
        raise SparseUpdateError(
            f"unknown policy {policy!r}; choose one of {', '.join(map(repr, POLICIES))}"
        )
    pairs = list(updates.items()) if isinstance(updates, Mapping) else list(updates)
    analysis = analyse(pairs)
    for key, reason in analysis.rejected.items():
        raise SparseUpdateError(f"cannot make the update of {describe(key)} sparse: {reason}")
    if not analysis.groups:
        raise SparseUpdateError(
            "no update is computed from the gradient of a table lookup (W[idx]); "
            "nothing to make sparse"
        )
    assert analysis.index is not None
    dependent = scatter_dependent(analysis.index)
    new = dict(pairs)
    flush: dict[Variable, Variable] = {}
    tables: dict[Variable, tuple[Variable, ...]] = {}
    step = None
    if policy == "catchup":
        step = pytensor.shared(np.int64(0), name="subsetgrad_step")
    assert analysis.dec is not None
    lookups: dict[Variable, Variable] = {}
    moving: set[Variable] = set()
    gathered: set[Variable] = set()
    for group in analysis.groups:
        linear = linear_without_state(group, analysis.dec)
        if linear is not None:
            built = build_subset_update(group.values[group.table], linear)
            if built is not None:
                new[group.table] = built
                tables[group.table] = ()
                continue
        if policy == "exact":
            _require_identity(group, dependent)
        rows = touched_rows(group)
        if step is None:
            values = row_values(group, rows)
        else:
            values = _catch_up_step(
                group, rows, step, new, flush, analysis.index, lookups, moving, gathered
            )
        for key in group.keys:
            new[key] = write_rows(key, rows, values[key])
        tables[group.table] = group.states
    if lookups:
        new = dict(zip(new, graph_replace(list(new.values()), lookups, strict=False), strict=True))
    if step is not None:
        new[step] = step + 1
    return SparseUpdates(
        new, flush, policy, tables, step, lookups, frozenset(moving), frozenset(gathered)
    )


def _require_identity(group: RowGroup, dependent: set[Variable]) -> None:
    key = changed_at_zero(group, dependent)
    if key is not None:
        what = "table" if key is group.table else f"state {describe(key)} of"
        raise SparseUpdateError(
            f"policy 'exact' does not hold for {what} {group.name}: a zero gradient "
            "still changes it, so rows outside the batch would differ from the dense "
            "step; choose policy='lazy' (they stay) or policy='catchup' (they catch up)"
        )


def _catch_up_step(
    group: RowGroup,
    rows: Rows,
    step: SharedVariable,
    new: dict[Variable, Variable],
    flush: dict[Variable, Variable],
    index: GraphIndex,
    lookups: dict[Variable, Variable],
    moving: set[Variable],
    gathered_all: set[Variable],
) -> dict[Variable, Variable]:
    try:
        plan = plan_catch_up(group, new)
    except RowUpdateError as err:
        raise SparseUpdateError(f"policy 'catchup' cannot handle {group.name}: {err}") from None
    if plan.is_identity:
        return row_values(group, rows)
    table = group.table
    if not isinstance(table, SharedVariable):
        raise SparseUpdateError(f"policy 'catchup' needs {group.name} to be a shared variable")
    n_rows = np.shape(table.get_value(borrow=True))[0]
    last = pytensor.shared(np.zeros(n_rows, dtype=np.int64), name=f"{group.name}_last_step")
    keys = list(plan.keys)
    skipped = step - last[rows.rows]
    gathered = [k[rows.rows] for k in keys]
    caught = plan.apply(gathered, skipped)
    fresh = _fresh_lookups(table, rows, caught[0], index) if table in plan.moving else {}
    _require_fresh_reads(group, plan.moving, new, fresh, set(gathered))
    lookups.update(fresh)
    moving.update(plan.moving)
    gathered_all.update(gathered)
    values = row_values(group, rows, dict(zip(keys, caught, strict=True)))
    new[last] = pt.set_subtensor(last[rows.rows], step + 1)
    flush.update(zip(keys, plan.flush(keys, step - last), strict=True))
    flush[last] = pt.full_like(last, step)
    return values


def _fresh_lookups(
    table: Variable, rows: Rows, caught: Variable, index: GraphIndex
) -> dict[Variable, Variable]:
    """Each whole-row lookup ``table[idx]`` of the step, and its caught-up rows."""
    by_index = rows.at_lookups(caught)
    fresh = {}
    for node in index.lookups_of(table):
        if node.inputs[0] is not table:
            continue
        rows_read = row_index(index_of(node))
        if rows_read is not None and rows_read in by_index:
            fresh[node.outputs[0]] = by_index[rows_read]
    return fresh


def _require_fresh_reads(
    group: RowGroup,
    moving: Sequence[Variable],
    updates: Mapping[Variable, Variable],
    fresh: Mapping[Variable, Variable],
    gathered: set[Variable],
) -> None:
    """Refuse a step that still reads rows a zero-gradient step would have moved.

    Lookups of the batch's rows read them caught up (`fresh`); any other read,
    such as ``W[other_idx]`` or ``W.sum()``, would see stale rows.
    """
    moved = set(moving)
    reads = [materialize(t.values) for g in group.grads for t in group.terms[g]]
    reads += [v for k, v in updates.items() if k not in group.keys]
    if fresh:
        reads = graph_replace(reads, dict(fresh), strict=False)
    for value in reads:
        stale = moved & _values_read(value, gathered)
        if stale:
            names = ", ".join(describe(v) for v in stale)
            raise SparseUpdateError(
                f"policy 'catchup' cannot handle {group.name}: the step reads {names}, "
                "other than by looking up the batch's rows, and rows outside the batch "
                "are only caught up when looked up; choose policy='lazy'"
            )


def _values_read(value: Variable, stop: set[Variable]) -> set[Variable]:
    """The ancestors of `value` whose values (not only their shapes) it reads,
    not looking behind `stop`."""
    seen: set[Variable] = set()
    stack = [value]
    while stack:
        var = stack.pop()
        if var in seen:
            continue
        seen.add(var)
        if var.owner is not None and var not in stop:
            stack.extend(value_inputs(var.owner))
    return seen
