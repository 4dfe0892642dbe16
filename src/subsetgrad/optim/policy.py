"""`sparse_updates`: an explicit choice of what rows outside the batch do."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pytensor
import pytensor.scalar as ps
import pytensor.tensor as pt
from pytensor.compile.sharedvalue import SharedVariable
from pytensor.graph.basic import Variable
from pytensor.tensor.shape import Shape, Shape_i

from subsetgrad.graph import describe, materialize, scatter_dependent
from subsetgrad.optim.catchup import plan_catch_up
from subsetgrad.optim.rows import (
    RowGroup,
    Rows,
    RowUpdateError,
    analyse,
    changed_at_zero,
    linear_without_state,
    row_values,
    touched_rows,
    write_rows,
)
from subsetgrad.rewrite.subset_update import build_subset_update

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
            values = _catch_up_step(group, rows, step, new, flush)
        for key in group.keys:
            new[key] = write_rows(key, rows, values[key])
        tables[group.table] = group.states
    if step is not None:
        new[step] = step + 1
    return SparseUpdates(new, flush, policy, tables, step)


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
) -> dict[Variable, Variable]:
    try:
        plan = plan_catch_up(group, new)
    except RowUpdateError as err:
        raise SparseUpdateError(f"policy 'catchup' cannot handle {group.name}: {err}") from None
    if plan.is_identity:
        return row_values(group, rows)
    _require_fresh_reads(group, plan.moving, new)
    table = group.table
    if not isinstance(table, SharedVariable):
        raise SparseUpdateError(f"policy 'catchup' needs {group.name} to be a shared variable")
    n_rows = np.shape(table.get_value(borrow=True))[0]
    last = pytensor.shared(np.zeros(n_rows, dtype=np.int64), name=f"{group.name}_last_step")
    keys = list(plan.keys)
    skipped = step - last[rows.rows]
    caught = plan.apply([k[rows.rows] for k in keys], skipped)
    values = row_values(group, rows, dict(zip(keys, caught, strict=True)))
    new[last] = pt.set_subtensor(last[rows.rows], step + 1)
    flush.update(zip(keys, plan.apply(keys, step - last), strict=True))
    flush[last] = pt.full_like(last, step)
    return values


def _require_fresh_reads(
    group: RowGroup, moving: Sequence[Variable], updates: Mapping[Variable, Variable]
) -> None:
    """Refuse a step that reads rows a zero-gradient step would have moved.

    Such rows are stale until caught up: a gradient computed from them (a model
    nonlinear in ``W[idx]``) is not the dense run's.
    """
    moved = set(moving)
    reads = [materialize(t.values) for g in group.grads for t in group.terms[g]]
    reads += [v for k, v in updates.items() if k not in group.keys]
    for value in reads:
        stale = moved & _values_read(value)
        if stale:
            names = ", ".join(describe(v) for v in stale)
            raise SparseUpdateError(
                f"policy 'catchup' cannot handle {group.name}: the step reads {names}, "
                "whose rows outside the batch are only caught up when written (a "
                "gradient of a model nonlinear in the lookups would use stale rows); "
                "choose policy='lazy'"
            )


def _values_read(value: Variable) -> set[Variable]:
    """The ancestors of `value` whose values (not only their shapes) it reads."""
    seen: set[Variable] = set()
    stack = [value]
    while stack:
        var = stack.pop()
        if var in seen:
            continue
        seen.add(var)
        node = var.owner
        if node is None or isinstance(node.op, Shape | Shape_i):
            continue
        inputs = node.inputs
        if isinstance(getattr(node.op, "scalar_op", None), ps.Second):
            inputs = inputs[1:]  # second(x, y): y broadcast to x's shape
        stack.extend(inputs)
    return seen
