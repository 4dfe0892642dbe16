"""Row groups: a table and its optimizer state, advanced elementwise from a lookup gradient.

A *row group* is what a stateful optimizer builds for one lookup table ``W``: a
gradient ``g = zeros[idx].inc(v)`` (one or more scatters of row lookups), and
updates of ``W`` and of its state (``acc``, ``m``, ``velocity``...) computed from
``g``, the old values and scalars by elementwise ops only. Row ``r`` of every
such update then depends on row ``r`` of its inputs alone, so it can be computed
for the touched rows only:

    s        = the touched rows, sorted (a row repeats as often as it was looked up)
    g_rows   = for each position of s, the sum of that row's gradient rows
    new_rows = update(W[s], acc[s], ..., g_rows)
    W        = W[s].set(new_rows)     # repeated rows write identical values

Deduplicating by a sort keeps the static shape (B rows) and works on every
backend (JAX has no ``unique``): positions of one row form one segment, their
gradient rows are summed into the segment, and each position reads its
segment's sum. The sort key ``row * B + position`` makes ties impossible, so
the order of summation is the order of the lookups, as in the dense scatter.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import pytensor.tensor as pt
from pytensor.compile.sharedvalue import SharedVariable
from pytensor.graph.basic import Apply, Constant, Variable
from pytensor.raise_op import CheckAndRaise
from pytensor.tensor.elemwise import DimShuffle, Elemwise

from subsetgrad.graph.algebra import identity_at_zero
from subsetgrad.graph.index import GraphIndex, scatter_dependent
from subsetgrad.graph.linear import Decomposition, Linear, Scatter, decompose_graph, materialize
from subsetgrad.graph.naming import describe
from subsetgrad.graph.ops import Index, is_inc, value_inputs


class RowUpdateError(ValueError):
    """A table's update cannot be made sparse; the message names the table and why."""


@dataclass(frozen=True)
class RowGroup:
    """The updates of one table and its state from one lookup gradient."""

    #: Updated variables computed row by row from the gradient; the table first.
    keys: tuple[Variable, ...]
    #: Their update values (the dense expressions).
    values: dict[Variable, Variable]
    #: The pure-scatter gradient variables those values read (``g``, ``-lr * g``, ...).
    grads: tuple[Variable, ...]
    #: Each gradient's terms, one per lookup, all in the order of `sources`.
    terms: dict[Variable, tuple[Scatter, ...]]
    #: The scatter nodes of the lookups (their indices give the rows).
    sources: tuple[Apply, ...]
    #: Variables the values read row by row: the keys' old values, row-aligned leaves.
    row_inputs: tuple[Variable, ...]

    @property
    def table(self) -> Variable:
        return self.keys[0]

    @property
    def states(self) -> tuple[Variable, ...]:
        return self.keys[1:]

    @cached_property
    def name(self) -> str:
        return describe(self.table)


@dataclass
class Analysis:
    """The row groups of an updates mapping, and the tables that cannot be one."""

    groups: list[RowGroup] = field(default_factory=list)
    #: Table or state -> why its update cannot be computed row by row.
    rejected: dict[Variable, str] = field(default_factory=dict)
    index: GraphIndex | None = None
    dec: Decomposition | None = None


def analyse(
    updates: Mapping[Variable, Variable] | Sequence[tuple[Variable, Variable]],
    index: GraphIndex | None = None,
    dec: Decomposition | None = None,
) -> Analysis:
    """Find the row groups among `updates` (a mapping or ``(variable, value)`` pairs).

    The lint passes the `index` and `dec` it has (of a graph that holds the
    updates); the groups need the decomposition's terms, not their values.
    """
    pairs = list(updates.items()) if isinstance(updates, Mapping) else list(updates)
    if index is None:
        index = GraphIndex.from_outputs([v for _, v in pairs])
    result = Analysis(index=index)
    if not index.scatters:
        return result
    if dec is None:
        dec = decompose_graph(index)
    result.dec = dec
    dependent = scatter_dependent(index)

    # Which pure-scatter gradients each update value reads.
    reads: dict[Variable, list[Variable]] = {}
    for key, value in pairs:
        grads = list(
            dict.fromkeys(_core(g, dec, dependent) for g in _gradients_read(value, dec, dependent))
        )
        if grads:
            reads[key] = grads

    # Group the gradients by the lookups they come from.
    by_sources: dict[frozenset[Apply], list[Variable]] = {}
    for grads in reads.values():
        for g in grads:
            sources = frozenset(t.source for t in dec.linear[g].terms)
            members = by_sources.setdefault(sources, [])
            if g not in members:
                members.append(g)

    # Who reads each gradient, so a group's keys are found without a scan of every update.
    position = {k: n for n, k in enumerate(reads)}
    readers: dict[Variable, list[Variable]] = {}
    for key, grads in reads.items():
        for g in grads:
            readers.setdefault(g, []).append(key)

    values = dict(pairs)
    for sources, grads in by_sources.items():
        keys = sorted({k for g in grads for k in readers[g]}, key=position.__getitem__)
        table = _table_of(sources, keys)
        keys.sort(key=lambda k: k is not table)
        try:
            group = _build_group(keys, values, grads, sources, dec, dependent)
        except RowUpdateError as err:
            for k in keys:
                result.rejected[k] = str(err)
            continue
        result.groups.append(group)
    return result


def _gradients_read(
    value: Variable, dec: Decomposition, dependent: set[Variable]
) -> list[Variable]:
    """The outermost pure-scatter variables (no dense part) under `value`."""
    found: list[Variable] = []
    stack, seen = [value], {value}
    while stack:
        var = stack.pop()
        if var not in dependent:
            continue
        lin = dec.linear.get(var)
        if lin is not None and lin.dense is None and lin.terms and _plain(var, dec, dependent):
            found.append(var)
            continue
        if var.owner is not None:
            for inp in var.owner.inputs:
                if inp not in seen:
                    seen.add(inp)
                    stack.append(inp)
    return found


def _plain(var: Variable, dec: Decomposition, dependent: set[Variable]) -> bool:
    """Whether the pure scatter `var` is scaled only by gradient-free factors constant
    along the rows.

    ``g * sqrt(delta + eps)`` is a scatter too, but its rows read ``delta``: taking
    it as the gradient would build the factor for every row, and read state that
    the catch-up policy has not brought up to date. ``g / norm(g)`` needs the whole
    gradient. Both are left to the row-by-row walk instead.
    """
    for v in dec.sparse_chain(var):
        node = v.owner
        assert node is not None
        if is_inc(node):
            continue
        for i, x in enumerate(node.inputs):
            if (node, i) in dec.absorbed:
                continue
            if not x.type.broadcastable[0] or x in dependent:
                return False
    return True


def _core(var: Variable, dec: Decomposition, dependent: set[Variable]) -> Variable:
    """The pure scatter that `var` scales elementwise: ``g`` for ``(1 - beta1) * g``.

    Adam reads ``g`` and ``(1 - beta1) * g``; summing ``g`` per row once and
    leaving the scale in the row step does one segment-sum where two would do
    the same work, and scales the sum as the dense update does.
    """
    while (node := var.owner) is not None and isinstance(node.op, Elemwise):
        inner = [i for i, x in enumerate(node.inputs) if x in dependent]
        if len(inner) != 1 or (node, inner[0]) not in dec.absorbed:
            break
        x = node.inputs[inner[0]]
        lin = dec.linear.get(x)
        if lin is None or lin.dense is not None or not lin.terms:
            break
        var = x
    return var


def _table_of(sources: Iterable[Apply], keys: Sequence[Variable]) -> Variable | None:
    """The updated variable the scatters' zeros were sized from (``zeros_like(W)``)."""
    for source in sources:
        var = source.inputs[0]
        while var.owner is not None:
            if var in keys:
                return var
            var = var.owner.inputs[0]
        if var in keys:
            return var
    return keys[0] if keys else None


def row_index(index: Index) -> Variable | None:
    """The integer index variable of a whole-row read or write (``W[idx]``), else None."""
    first, *rest = index
    whole = all(
        isinstance(e, slice) and e.start is None and e.stop is None and e.step is None for e in rest
    )
    if isinstance(first, Variable) and first.type.dtype.startswith(("int", "uint")) and whole:
        return first
    return None


def _row_index(term: Scatter) -> Variable:
    """The row index of a lookup's scatter, or an error."""
    index = row_index(term.index)
    if index is None:
        raise RowUpdateError("its gradient is not a scatter of whole rows (W[idx] lookups)")
    return index


def _build_group(
    keys: list[Variable],
    values: Mapping[Variable, Variable],
    grads: list[Variable],
    sources: frozenset[Apply],
    dec: Decomposition,
    dependent: set[Variable],
) -> RowGroup:
    # One order of the lookups for every gradient of the group: the first one's.
    ordered = tuple(t.source for t in dec.linear[grads[0]].terms)
    terms: dict[Variable, tuple[Scatter, ...]] = {}
    for g in grads:
        by_source = {t.source: t for t in dec.linear[g].terms}
        if len(by_source) != len(dec.linear[g].terms):
            raise RowUpdateError("its gradient scatters the same lookup twice")
        terms[g] = tuple(by_source[s] for s in ordered)
        for t in terms[g]:
            _row_index(t)
    ndim = keys[0].type.ndim
    row_inputs: dict[Variable, None] = {}
    whole: dict[Variable, None] = {}
    for key in keys:
        if key.type.ndim != ndim:
            raise RowUpdateError(
                f"{describe(key)} has {key.type.ndim} dimensions, the table {ndim}"
            )
        _walk_rowwise(values[key], set(grads), dependent, row_inputs, whole, ndim)
    _refuse_cross_row_reads(whole, {*keys, *row_inputs})
    return RowGroup(
        keys=tuple(keys),
        values={k: values[k] for k in keys},
        grads=tuple(grads),
        terms=terms,
        sources=ordered,
        row_inputs=tuple(row_inputs),
    )


def _walk_rowwise(
    value: Variable,
    grads: set[Variable],
    dependent: set[Variable],
    row_inputs: dict[Variable, None],
    whole: dict[Variable, None],
    ndim: int,
) -> None:
    """Check that `value` is elementwise in the gradients and row-aligned inputs.

    Collects the row-aligned inputs (not broadcast along the rows) in `row_inputs`,
    and in `whole` the gradient-free values read whole rather than row by row:
    those broadcast along the rows (a learning rate, ``W.sum()``) and those
    computed by an op that is not elementwise (``W[::-1]``, ``M @ W``), which the
    row step reads at the rows. Raises RowUpdateError naming the first op that
    mixes the gradient's rows.
    """
    stack, seen = [value], {value}
    while stack:
        var = stack.pop()
        if var in grads:
            continue
        if var.type.ndim != ndim:
            if var in dependent:
                raise RowUpdateError(
                    f"its update reduces or reshapes the gradient ({_op_name(var, dependent)})"
                )
            if var.owner is not None:
                whole[var] = None
            continue
        if var.type.broadcastable[0]:
            # Broadcast along the rows: the same for every row (a learning rate).
            if var in dependent:
                raise RowUpdateError(
                    f"its update mixes rows: a {_op_name(var, dependent)} of the gradient"
                )
            if var.owner is not None:
                whole[var] = None
            continue
        owner = var.owner
        if owner is None or isinstance(var, Constant | SharedVariable):
            row_inputs[var] = None
            continue
        if not _expands(var):
            if var in dependent:
                raise RowUpdateError(
                    f"its update is not elementwise in the gradient ({type(owner.op).__name__})"
                )
            # Computed by something else but independent of the gradient: read its rows.
            row_inputs[var] = None
            whole[var] = None
            continue
        for inp in owner.inputs:
            if inp not in seen:
                seen.add(inp)
                stack.append(inp)


def _expands(var: Variable) -> bool:
    """Whether the row step rebuilds `var`'s node on the rows (a one-output Elemwise)."""
    owner = var.owner
    return (
        owner is not None
        and isinstance(owner.op, Elemwise)
        and len(owner.outputs) == 1
        and not isinstance(var, Constant | SharedVariable)
    )


def _refuse_cross_row_reads(whole: Iterable[Variable], row_read: set[Variable]) -> None:
    """Raise RowUpdateError when a value read whole depends on what the step reads by rows.

    ``W - lr * sign(g) * W.sum()`` reads the table across rows: the row step sees
    only the looked-up rows of it, so such a step cannot be computed row by row.
    """
    for var in whole:
        parent: dict[Variable, Variable] = {}
        stack = list(value_inputs(var.owner)) if var.owner is not None else []
        for i in stack:
            parent[i] = var
        while stack:
            x = stack.pop()
            if x in row_read:
                raise RowUpdateError(
                    f"its update reads {describe(x)} across rows "
                    f"({_mixing_op(x, var, parent)}), not row by row"
                )
            if x.owner is not None:
                for i in value_inputs(x.owner):
                    if i not in parent:
                        parent[i] = x
                        stack.append(i)


def _mixing_op(leaf: Variable, top: Variable, parent: Mapping[Variable, Variable]) -> str:
    """The op nearest `leaf` on the path up to `top` that is not elementwise."""
    var = leaf
    while var is not top:
        var = parent[var]
        node = var.owner
        if (
            node is not None
            and not isinstance(node.op, Elemwise)
            and (not isinstance(node.op, DimShuffle) or var is top)
        ):
            return type(node.op).__name__
    return type(top.owner.op).__name__ if top.owner is not None else "an input"


def _op_name(var: Variable, dependent: set[Variable]) -> str:
    """The first op below `var` that is not elementwise, on a path to the gradient."""
    while var.owner is not None and isinstance(var.owner.op, Elemwise | DimShuffle):
        var = next((i for i in var.owner.inputs if i in dependent), var.owner.inputs[0])
    return type(var.owner.op).__name__ if var.owner is not None else "an input"


def linear_without_state(group: RowGroup, dec: Decomposition) -> Linear | None:
    """The table's decomposition when it has no state and its update is base plus scatters.

    Such an update is the identity at zero gradient under every policy, and the
    subset update's increments do it without a sort.
    """
    if len(group.keys) != 1:
        return None
    linear = dec.of(group.values[group.table])
    return linear if linear.is_update else None


def changed_at_zero(group: RowGroup, dependent: set[Variable]) -> Variable | None:
    """The first key whose update still changes it at zero gradient, or None."""
    for key in group.keys:
        if not identity_at_zero(group.values[key], key, group.grads, dependent):
            return key
    return None


# --------------------------------------------------------------------------- #
# Building the row step
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class Rows:
    """The touched rows of a group, sorted, and each gradient summed per row."""

    #: Touched row of each position, sorted (B positions; repeats kept).
    rows: Variable
    #: For each gradient variable, the (B, ...) sum of its rows at each position.
    grads: dict[Variable, Variable]
    #: Position of each sorted entry in the lookups' indices, flattened and concatenated.
    order: Variable
    #: Each lookup's row index, in the order of the concatenation.
    indices: tuple[Variable, ...]

    def at_lookups(self, sorted_rows: Variable) -> dict[Variable, Variable]:
        """`sorted_rows` (one per sorted position) as each lookup index reads them."""
        unsorted = sorted_rows[pt.argsort(self.order)]
        tail = [sorted_rows.shape[i] for i in range(1, sorted_rows.type.ndim)]
        out, start = {}, 0
        for index in self.indices:
            tensor = pt.as_tensor_variable(index)
            part = unsorted[start : start + tensor.size]
            out[index] = part.reshape((*[tensor.shape[i] for i in range(tensor.ndim)], *tail))
            start = start + tensor.size
        return out


_CHECK_ROWS = CheckAndRaise(IndexError, "index out of bounds for the rows of a lookup table")


def touched_rows(group: RowGroup) -> Rows:
    """Sort the looked-up rows and sum each row's gradient rows (see the module docstring)."""
    first = group.sources[0]
    zeros = first.inputs[0]
    n_rows = zeros.shape[0]
    tail = [zeros.shape[i] for i in range(1, zeros.type.ndim)]
    indices = [_row_index(group.terms[group.grads[0]][i]) for i in range(len(group.sources))]
    # A scalar index (``W[i]``) is a ScalarVariable in a basic Subtensor.
    tensors = [pt.as_tensor_variable(i) for i in indices]
    flat = [t if t.ndim == 1 else t.reshape((-1,)) for t in tensors]
    rows = flat[0] if len(flat) == 1 else pt.concatenate(flat)
    rows = pt.cast(rows, "int64")
    # Out of range raises here, as the dense scatter does where its backend checks
    # bounds: the row step reads and writes the table itself, where an unchecked
    # index (Numba's default) would be a silent write. -V..-1 wrap to V-1..0, and
    # below -V goes to V, out of range, where JAX (which skips the check) drops the
    # write, as it drops the dense scatter's.
    in_range = pt.all(pt.ge(rows, -n_rows) & pt.lt(rows, n_rows))
    rows = pt.switch(pt.lt(rows, 0), rows + n_rows, rows)
    rows = _CHECK_ROWS(pt.switch(pt.lt(rows, 0), n_rows, rows), in_range)
    n = rows.shape[0]
    order = pt.argsort(rows * n + pt.arange(n, dtype="int64"))
    s = mark_equal_writes(rows[order])
    starts = pt.neq(s, pt.concatenate([s[:1] - 1, s[:-1]]))
    # (cumsum keeps a bool dtype, which saturates in the C backend)
    segment = pt.cumsum(pt.cast(starts, "int64")) - 1

    summed: dict[Variable, Variable] = {}
    for g in group.grads:
        parts = []
        for term, index in zip(group.terms[g], tensors, strict=True):
            values = materialize(term.values)
            full = (*[index.shape[i] for i in range(index.ndim)], *tail)
            values = (
                pt.broadcast_to(values, full)
                if values.type.ndim != len(full) or any(values.type.broadcastable)
                else values
            )
            parts.append(values.reshape((-1, *tail)) if index.ndim != 1 else values)
        flat_values = parts[0] if len(parts) == 1 else pt.concatenate(parts)
        # Lengths from the index alone: a shape check between the index and the values
        # would be an Assert, which PyTensor's PyTorch backend cannot run.
        flat_values = pt.cast(flat_values, g.type.dtype).reshape((n, *tail))
        per_row = pt.zeros_like(flat_values)[segment].inc(flat_values[order])
        summed[g] = per_row[segment]
    return Rows(rows=s, grads=summed, order=order, indices=tuple(indices))


def row_values(
    group: RowGroup, rows: Rows, inputs_at_rows: Mapping[Variable, Variable] | None = None
) -> dict[Variable, Variable]:
    """Each key's update computed at the touched rows only.

    `inputs_at_rows` overrides what a row input reads at the rows (the catch-up
    policy passes caught-up state); by default ``input[rows]``.

    The elementwise nodes between the gradients and the values are made anew on
    the rows, so every type is inferred from the rows' shapes: the table's static
    shape (V rows) never reaches them. What is read whole stays as it is.
    """
    at_rows: dict[Variable, Variable] = {x: x[rows.rows] for x in group.row_inputs}
    if inputs_at_rows:
        at_rows.update(inputs_at_rows)
    at_rows.update(rows.grads)
    result = {}
    for key in group.keys:
        out = _on_rows(group.values[key], at_rows)
        result[key] = pt.cast(out, key.type.dtype) if out.type.dtype != key.type.dtype else out
    return result


def _on_rows(value: Variable, at_rows: dict[Variable, Variable]) -> Variable:
    """`value` rebuilt with each variable in `at_rows` read as its rows (memoised there).

    Mirrors `_walk_rowwise`: it expands the elementwise nodes, and every other
    variable is either in `at_rows` or read whole (broadcast along the rows).
    """
    ndim = value.type.ndim
    stack: list[Any] = [value]
    while stack:
        var = stack.pop()
        if var is _BUILD:
            var = stack.pop()
            node = var.owner
            inputs = [at_rows.get(i, i) for i in node.inputs]
            at_rows[var] = node.op.make_node(*inputs).outputs[var.index]
            continue
        if var in at_rows or not _expands(var) or var.type.ndim != ndim:
            continue
        if var.type.broadcastable[0]:
            continue
        stack.extend((var, _BUILD))
        stack.extend(i for i in var.owner.inputs if i not in at_rows)
    return at_rows.get(value, value)


_BUILD = object()


def write_rows(key: Variable, rows: Rows, new_rows: Variable) -> Variable:
    """``key`` with `new_rows` written at the touched rows (repeats write equal values)."""
    return pt.set_subtensor(key[rows.rows], new_rows)


# Row indices whose repeats write equal values
_EQUAL_WRITES = "subsetgrad_equal_writes"


def mark_equal_writes(rows: Variable) -> Variable:
    """Mark `rows` as an index whose repeated entries are always written equal values.

    `subsetgrad.optim` sums each row's gradient before updating it, so every copy
    of a repeated row computes the same new row, and a set at `rows` is exact
    whichever copy wins. The lint's SG203 reads the mark.
    """
    setattr(rows.tag, _EQUAL_WRITES, True)
    return rows


def writes_equal_at_repeats(rows: Variable) -> bool:
    return bool(getattr(rows.tag, _EQUAL_WRITES, False))
