"""SG2xx: gradients that silently miss a path, and writes that drop repeats."""

from __future__ import annotations

from collections.abc import Collection, Hashable, Iterable, Iterator, Sequence
from itertools import chain
from typing import Any

import numpy as np
from pytensor.compile.sharedvalue import SharedVariable
from pytensor.gradient import DisconnectedGrad, UndefinedGrad, ZeroGrad
from pytensor.graph.basic import Apply, Constant, Variable
from pytensor.tensor.basic import ScalarFromTensor
from pytensor.tensor.elemwise import DimShuffle, Elemwise
from pytensor.tensor.shape import Shape, Shape_i
from pytensor.tensor.subtensor import AdvancedIncSubtensor, AdvancedSubtensor
from pytensor.tensor.type import discrete_dtypes

from subsetgrad.graph import (
    FLOAT_DTYPES,
    LOOKUP_OPS,
    advanced_axes,
    ancestors,
    depends_on,
    describe,
    index_of,
    indices_provably_unique,
    is_inc,
    isa,
    linear_kind,
    source_masks,
    strip_wrappers,
    table_key,
    token,
    writes_equal_at_repeats,
)
from subsetgrad.lint.analyses import op_name
from subsetgrad.lint.findings import Finding
from subsetgrad.lint.program import Program
from subsetgrad.lint.recorder import GradCall, call_of
from subsetgrad.lint.registry import Rule, rule
from subsetgrad.lint.source import built_by_user, distinct_locations, location_of


def _input_key(var: Variable) -> Hashable:
    owner = var.owner
    if owner is not None and isa(owner.op, (ScalarFromTensor,)):
        # A basic index (``W[i]``) reads `i` through a conversion built per lookup.
        var = owner.inputs[0]
    if isa(var, (Constant,)):
        data = np.asarray(var.data)
        return ("const", data.dtype.str, data.shape, data.tobytes())
    return id(var)


def lookup_key(node: Apply) -> Hashable:
    """Equal for lookups of the same table with structurally equal indices."""
    index = tuple([_input_key(v) for v in node.inputs[1:]])
    return (token(node.op), table_key(node.inputs[0]), index)


@rule(
    "SG201",
    "duplicated-lookup",
    summary="The same table is indexed by the same indices in two separately built expressions.",
    hint="Build the lookup once (`rows = W[idx]`) and reuse `rows`; a gradient with respect "
    "to one copy misses the other.",
)
def duplicated_lookup(program: Program, r: Rule) -> Iterator[Finding]:
    """
    ## What it does
    Flags a shared table looked up with structurally equal indices in two
    separately built expressions, such as writing ``W[idx]`` (or ``W[i]``)
    twice. Only tables being trained count (ones `record()` saw a gradient
    taken for, or whose update reads a gradient or the table's own lookups),
    and only lookups the user's code built (not a library's, such as
    ``subsetgrad.sparse_updates``). Data read twice is not the trap.

    ## Why is this bad?
    The two lookups are different variables. ``pytensor.grad(cost, rows)``
    with respect to one of them ignores everything that flows through the
    other, without any error: the FAQ's first trap. Measured: a row gradient
    of 2 where 5 was right.

    ## Example
    ```python
    import numpy as np
    import pytensor
    import pytensor.tensor as pt

    W = pytensor.shared(np.ones((100, 4)), name="W")
    idx = pt.lvector("idx")
    rows = W[idx]
    cost = (rows ** 2).sum() + 3 * W[idx].sum()
    g = pytensor.grad(cost, rows)
    f = pytensor.function([idx], g)
    ```

    ## Use instead
    ```python
    import numpy as np
    import pytensor
    import pytensor.tensor as pt

    W = pytensor.shared(np.ones((100, 4)), name="W")
    idx = pt.lvector("idx")
    rows = W[idx]
    cost = (rows ** 2).sum() + 3 * rows.sum()
    g = pytensor.grad(cost, rows)
    f = pytensor.function([idx], g)
    ```

    ## Rewrite
    No rewrite can fix this: the gradient the user asked for is computed
    correctly, it is the wrong gradient. Build the lookup once.
    """
    groups: dict[Hashable, list[Apply]] = {}
    for table in _trained_tables(program):
        for node in program.index.lookups_of(table):
            groups.setdefault(lookup_key(node), []).append(node)
    for group in groups.values():
        # Most lookups have no twin: read traces only for the ones that do.
        if len(group) < 2:
            continue
        nodes = [n for n in group if _symbolic_lookup(n) and built_by_user(n)]
        if len(nodes) < 2:
            continue
        located = sorted(
            (loc for loc in distinct_locations(nodes) if loc is not None),
            key=lambda loc: (loc.path, loc.line),
        )
        if not located:
            continue
        first, *others = located
        table = nodes[0].inputs[0]
        here = others[-1] if others else first
        also = ", ".join(loc.short for loc in [first, *others] if loc and loc is not here)
        yield r.finding(
            f"{describe(table)} is looked up with the same indices in {len(nodes)} separately "
            f"built expressions (here and at {also or 'the same line'}); a gradient with "
            "respect to one of them misses the others.",
            others[-1] if others else first,
            related=[first, *others[:-1]] if others else [],
        )


def _trained_tables(program: Program) -> list[Variable]:
    """Shared tables a gradient is taken for, so a second lookup can miss a path.

    Shared data read twice (``X[idx]`` of a minibatch), or a buffer refreshed
    with ``set_subtensor``, is not the trap.
    """
    trained = {table_key(c.table): c.table for _, c in tagged_grads(program)}
    # A gradient with respect to the table is a scatter into zeros.
    dependent = program.scatter_dependent
    pending = {}
    for table, value in program.updates:
        key = table_key(table)
        if key in trained or not isa(table, (SharedVariable,)):
            continue
        if value in dependent:
            trained[key] = table
        else:
            pending[key] = (table, value)
    if pending:
        # A hand-written update from a gradient with respect to the rows reads the rows.
        sources = {
            node.outputs[0]: 1 << k
            for k, (table, _) in enumerate(pending.values())
            for node in program.index.lookups_of(table)
        }
        masks = source_masks(sources, program.index)
        for k, (key, (table, value)) in enumerate(pending.items()):
            if masks.get(value, 0) >> k & 1:
                trained[key] = table
    return [t for t in trained.values() if isa(t, (SharedVariable,))]


def _symbolic_lookup(node: Apply) -> bool:
    """A lookup at runtime positions: ``W[idx]``, ``W[i]``, ``W[a:b]``.

    Constant indexing (``X[:, 0]``, ``w[1]``) reads a fixed part, not a lookup
    a gradient is taken at.
    """
    indices = node.inputs[1:]
    if isa(node.op, (AdvancedSubtensor,)):
        return any([not isa(i, (Constant,)) and i.type.ndim > 0 for i in indices])
    return any([not isa(i, (Constant,)) for i in indices])


# --------------------------------------------------------------------------- #
# SG202: gradients with respect to a lookup
# --------------------------------------------------------------------------- #
NO_GRADIENT_OPS = (Shape, Shape_i, DisconnectedGrad, ZeroGrad, UndefinedGrad)
DISCRETE_DTYPES = frozenset(discrete_dtypes)


def tagged_grads(program: Program) -> list[tuple[Variable, GradCall]]:
    """The program's gradients that `record()` saw taken with respect to a lookup.

    A gradient is found with its copies (a compiled function's graph, or a
    `clone_replace`, is a clone, and a clone keeps the tags): their nodes run
    the same op object as the gradient `grad` returned, so only those nodes'
    tags are read, not every variable's.
    """
    return program.memo(_tagged_grads)


def _tagged_grads(program: Program) -> list[tuple[Variable, GradCall]]:
    index = program.index
    found: list[tuple[Variable, GradCall]] = []
    calls = list(GradCall.live)
    if calls:
        ops = [c.grad.owner.op for c in calls if c.grad is not None and c.grad.owner]
        nodes: Iterable[Apply] = index.nodes
        if len(ops) == len(calls):
            nodes = index.nodes_running(ops)
        roots = [o for o in index.outputs if o.owner is None]
        variables = chain((o for n in nodes for o in n.outputs), roots)
        found = [(v, call) for v in variables if (call := call_of(v)) is not None]
    found.sort(key=lambda pair: pair[1].seq)
    return [(var, call) for var, call in found if call.table is not None]


def _readers_by_cost(program: Program) -> dict[Variable, dict[Hashable, list[Apply]]]:
    """Memo of `_table_readers` per cost (filled by `missed_paths`)."""
    return {}


def _behind_lookup(program: Program) -> dict[Apply, set[Variable]]:
    """Memo of each taken lookup's ancestors (filled by `missed_paths`)."""
    return {}


def _table_readers(
    cost: Variable, tables: set[Hashable], stops: Collection[Apply] = ()
) -> dict[Hashable, list[Apply]]:
    """The nodes through which `cost` reads each of `tables`, in one walk up from it.

    The walk does not pass through the `stops`, nor through shapes, gradient
    blocks and integer or boolean values: no gradient flows through them to a table.
    """
    readers: dict[Hashable, dict[Apply, None]] = {}
    if cost.owner is None:
        return {}
    stack = [cost.owner]
    seen = {cost.owner}
    while stack:
        node = stack.pop()
        if node in stops or isa(node.op, NO_GRADIENT_OPS):
            continue
        for i in node.inputs:
            if getattr(i.type, "dtype", None) in DISCRETE_DTYPES:
                continue  # integers and booleans (argmax, a comparison) carry no gradient
            owner = i.owner
            # Only a shared table has a container that its clones share.
            key = id(i) if owner is not None else table_key(i)
            if key in tables:
                readers.setdefault(key, {})[node] = None
            if owner is not None and owner not in seen:
                seen.add(owner)
                stack.append(owner)
    return {key: list(nodes) for key, nodes in readers.items()}


def missed_paths(
    cost: Variable, table: Variable, taken: Sequence[Variable], program: Program
) -> list[Apply]:
    """Nodes through which `cost` reads `table` other than via the lookups `taken`.

    `taken` are the lookups whose gradients the update uses. The cost's readers
    of every table come from one walk, shared by all the updates. A reader is
    missed when no path to it from the cost has to pass through a taken lookup,
    which holds unless the reader is also behind one (an index computed from
    the table); only then is the cost walked again, stopping at the lookups.
    """
    by_cost = program.memo(_readers_by_cost)
    readers = by_cost.get(cost)
    if readers is None:
        # tagged_grads keeps only gradients with a table.
        tables: set[Hashable] = {table_key(c.table) for _, c in tagged_grads(program)}
        readers = by_cost[cost] = _table_readers(cost, tables)
    owners = {w.owner for w in taken}
    candidates = [n for n in readers.get(table_key(table), ()) if n not in owners]
    if not candidates:
        return []
    behind = program.memo(_behind_lookup)
    for owner in owners:
        if owner not in behind:
            behind[owner] = set(ancestors(owner.inputs))
    if not any(o in behind[w] for n in candidates for o in n.outputs for w in owners):
        return candidates
    exact = _table_readers(cost, {table_key(table)}, owners)
    return exact.get(table_key(table), [])


@rule(
    "SG202",
    "dropped-gradient-path",
    summary="A subset update from `grad(cost, W[idx])` misses another path from the cost to W.",
    hint="Take the gradient with respect to one shared lookup that every use goes through, "
    "or with respect to W itself and let the subsetgrad rewrite make the update sparse.",
)
def dropped_gradient_path(program: Program, r: Rule) -> Iterator[Finding]:
    """
    ## What it does
    Flags an update of a table built from ``pytensor.grad(cost, rows)``, where
    ``rows`` is a lookup of the table and the cost also reads the table through
    another lookup or directly (a regulariser on ``W``, say). It needs the
    gradient calls, so it is reported by ``subsetgrad.record()``, ``subsetgrad
    check`` and the pytest plugin, which watch ``pytensor.grad``.

    ## Why is this bad?
    The gradient with respect to ``rows`` only follows paths through ``rows``.
    The contributions through the other path are silently dropped from the
    update: no error, just wrong training.

    ## Example
    ```python
    import numpy as np
    import pytensor
    import pytensor.tensor as pt

    W = pytensor.shared(np.ones((100, 4)), name="W")
    idx = pt.lvector("idx")
    rows = W[idx]
    cost = (rows ** 2).sum() + 0.01 * (W ** 2).sum()
    g = pytensor.grad(cost, rows)
    step = pytensor.function([idx], cost, updates={W: pt.inc_subtensor(rows, -0.1 * g)})
    ```

    ## Use instead
    ```python
    import numpy as np
    import pytensor
    import pytensor.tensor as pt

    import subsetgrad

    W = pytensor.shared(np.ones((100, 4)), name="W")
    idx = pt.lvector("idx")
    cost = (W[idx] ** 2).sum() + 0.01 * (W ** 2).sum()
    g = pytensor.grad(cost, W)  # every path; the rewrite keeps the lookup part sparse
    step = pytensor.function(
        [idx], cost, updates={W: W - 0.1 * g}, mode=subsetgrad.mode("NUMBA")
    )
    ```

    ## Rewrite
    No rewrite can add the missed contributions to a gradient taken with
    respect to the rows; the Use instead form lets the rewrite keep the full
    gradient sparse.
    """
    tagged = tagged_grads(program)
    if not tagged:
        return
    # Bit k: the update uses the k-th tagged gradient. One pass for all updates.
    masks = source_masks({g: 1 << k for k, (g, _) in enumerate(tagged)}, program.index)
    by_table: dict[Hashable, list[int]] = {}
    for k, (_, call) in enumerate(tagged):
        by_table.setdefault(table_key(call.table), []).append(k)
    reported: set[tuple[int, int]] = set()
    for table, value in program.updates:
        mask = masks.get(value, 0)
        if not mask:
            continue
        # The gradients of this table the update uses, by cost: a path through
        # any of their lookups is followed, whichever call took it.
        used: dict[Variable, list[GradCall]] = {}
        for k in by_table.get(table_key(table), ()):
            if mask >> k & 1:
                call = tagged[k][1]
                if call.cost is not None:  # `grad(None, wrt, known_grads=...)`: no cost
                    used.setdefault(call.cost, []).append(call)
        for cost, calls in used.items():
            key = (id(cost), id(value))
            if key in reported:
                continue
            missed = missed_paths(cost, table, [c.wrt for c in calls], program)
            if not missed:
                continue
            reported.add(key)
            where = location_of(missed[0])
            yield r.finding(
                f"the update of {describe(table)} uses `grad(cost, rows)` for one lookup of it, "
                f"but the cost also reads the table through `{_describe_use(missed[0], table)}`"
                + (f" at {where.short}" if where else "")
                + "; that path's gradient is dropped.",
                location_of(value) or calls[0].location,
                related=[calls[0].location, *(location_of(n) for n in missed)],
            )


def _describe_use(node: Apply, table: Variable) -> str:
    name = table.name or "W"
    if isinstance(node.op, LOOKUP_OPS):
        return f"{name}[...]"

    return f"{op_name(node)}({name})"


# --------------------------------------------------------------------------- #
# SG203
# --------------------------------------------------------------------------- #
@rule(
    "SG203",
    "set-with-duplicate-indices",
    summary="A set-style write of `table[idx]` that adds to its old rows, where `idx` may repeat.",
    hint="Use `inc_subtensor(W[idx], delta)`, which accumulates repeated indices, or make "
    "the indices unique first.",
)
def set_with_duplicate_indices(program: Program, r: Rule) -> Iterator[Finding]:
    """
    ## What it does
    Flags ``set_subtensor(W[idx], W[idx] + d)``, a write that adds to the old
    rows, where ``idx`` is not provably unique: the FAQ's second trap. Also a
    step that combines the old rows with a contribution of each position in
    another way, such as ``W[idx] * exp(-lr * g)``. A new row computed from its
    old row alone (renormalising, clipping) is the same for every copy of a
    repeated index and is not flagged.

    ## Why is this bad?
    With a repeated index, every copy computes its new row from the same old
    row, and the last write wins: the other contributions are lost. With
    ``idx = [3, 3]`` and a step of ``-1`` each, row 3 moves by 1, not 2.

    ## Example
    ```python
    import numpy as np
    import pytensor
    import pytensor.tensor as pt

    W = pytensor.shared(np.ones((100, 4)), name="W")
    idx = pt.lvector("idx")
    rows = W[idx]
    g = pytensor.grad((rows ** 2).sum(), rows)
    step = pytensor.function([idx], [], updates={W: pt.set_subtensor(rows, rows - 0.1 * g)})
    ```

    ## Use instead
    ```python
    import numpy as np
    import pytensor
    import pytensor.tensor as pt

    W = pytensor.shared(np.ones((100, 4)), name="W")
    idx = pt.lvector("idx")
    rows = W[idx]
    g = pytensor.grad((rows ** 2).sum(), rows)
    step = pytensor.function([idx], [], updates={W: pt.inc_subtensor(rows, -0.1 * g)})
    ```

    ## Rewrite
    The rewrite never turns a set into an increment where indices may repeat:
    that would change the numbers. Write the increment.
    """
    writes: list[tuple[Apply, Hashable]] = []
    for node in program.index.nodes_of(AdvancedIncSubtensor):
        op: Any = node.op
        if not op.set_instead_of_inc:
            continue
        if indices_provably_unique(index_of(node), advanced=True):
            continue
        base, _value, *index_inputs = node.inputs
        if any(writes_equal_at_repeats(i) for i in index_inputs):
            continue  # subsetgrad.optim's rows: repeats are summed before the write
        writes.append((node, (table_key(base), tuple([_input_key(v) for v in index_inputs]))))
    if not writes:
        return
    # The lookups that read the rows each kind of write writes (same table, same indices).
    reads: dict[Hashable, set[Variable]] = {key: set() for _, key in writes}
    for table in {table_key(n.inputs[0]): n.inputs[0] for n, _ in writes}.values():
        for lookup in program.index.lookups_of(table):
            read = (table_key(table), tuple([_input_key(v) for v in lookup.inputs[1:]]))
            if read in reads:
                reads[read].add(lookup.outputs[0])
    queries = [(node.inputs[1], reads[key]) for node, key in writes]
    for (node, key), reads_rows in zip(writes, depends_on(queries, program.index), strict=True):
        if reads_rows and _differs_at_repeats(node, reads[key]):
            yield r.finding(
                f"`set_subtensor` writes rows of {describe(_root_table(node.inputs[0]))} "
                "computed from the "
                "same rows, but the indices may repeat: a repeated row keeps only its last write "
                "and the other contributions are lost.",
                location_of(node),
            )


def _differs_at_repeats(write: Apply, rows: set[Variable]) -> bool:
    """Whether a set at a repeated row loses the other copies' contributions.

    So when the written value adds to the rows (``rows - lr * g``), or combines
    them with each position's own contribution (``rows * exp(-lr * g)``, see
    `_mixes_in`).
    """
    value = write.inputs[1]
    return _adds_to(value, rows) or _mixes_in(value, rows, advanced_axes(index_of(write)))


def _mixes_in(value: Variable, rows: set[Variable], axes: range) -> bool:
    """Whether the elementwise algebra of `value` over `rows` reads a contribution per position.

    A leaf of that algebra (the first input not computed elementwise) is one when
    it differs from one position of the index to the next and is not computed from
    each position's own row (``exp(-lr * g)``); or when, the same at every position,
    it carries a batch-wide value of the rows, such as the cost in the elementwise
    graph of a gradient (``grad((rows**2).sum(), rows)`` is ``2 * rows * 1.0``, the
    ``1.0`` filled from the cost). Learning rates, per-column scales and a row's own
    norm are not contributions.
    """
    if value.type.ndim < axes.stop:
        return False  # the written value broadcasts: every copy writes the same
    stack, seen = [value], {value}
    while stack:
        var = stack.pop()
        owner = var.owner
        if var in rows:
            continue
        if owner is not None and isa(owner.op, (Elemwise,)):
            for i in owner.inputs:
                if i not in seen:
                    seen.add(i)
                    stack.append(i)
            continue
        bcast = var.type.broadcastable
        per_position = len(bcast) == value.type.ndim and not all(bcast[a] for a in axes)
        if _contribution(var, rows, per_position):
            return True
    return False


def _contribution(leaf: Variable, rows: set[Variable], per_position: bool) -> bool:
    """See `_mixes_in`: one walk up from `leaf`, stopping at the rows.

    A computed float scalar on the way (a cost, a batch statistic) mixes the
    positions; an input other than a constant is not the rows either.
    """
    reads_rows = batch_wide = False
    for v in ancestors([leaf], stop=rows.__contains__):
        if v in rows:
            reads_rows = True
        elif v.owner is None:
            if per_position and not isa(v, (Constant,)):
                return True
        elif v.type.ndim == 0 and v.type.dtype in FLOAT_DTYPES:
            batch_wide = True
            if per_position:
                return True
        if batch_wide and reads_rows:
            return True
    return False


def _adds_to(value: Variable, rows: set[Variable]) -> bool:
    """Whether `value` adds something to the looked-up `rows` (``rows - lr * g``).

    Found among the elementwise ops that compute `value`: a sum or difference
    with the rows, or a scaling of them, as a term. A value computed from the
    rows alone by other means (``rows / norm(rows)``, ``clip(rows, -1, 1)``) is
    the same for every copy of a repeated row, so nothing is lost.
    """
    stack, seen = [value], {value}
    while stack:
        var = stack.pop()
        owner = var.owner
        if var in rows or owner is None or not isa(owner.op, (Elemwise, DimShuffle)):
            continue
        if linear_kind(owner) in ("add", "sub") and any(_scales(i, rows) for i in owner.inputs):
            return True
        for i in owner.inputs:
            if i not in seen:
                seen.add(i)
                stack.append(i)
    return False


def _scales(term: Variable, rows: set[Variable]) -> bool:
    """`term` is the rows, or the rows scaled, negated, cast or broadcast."""
    term = strip_wrappers(term)
    if term in rows:
        return True
    owner = term.owner
    if owner is None:
        return False
    scaled = isa(owner.op, (DimShuffle,)) or linear_kind(owner) in ("mul", "neg", "cast", "div")
    return scaled and any(strip_wrappers(i) in rows for i in owner.inputs)


def _root_table(var: Variable) -> Variable:
    """The table under a chain of increments (``W[idx].inc(d)`` written again)."""
    while var.owner is not None and is_inc(var.owner):
        var = var.owner.inputs[0]
    return var
