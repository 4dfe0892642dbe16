"""SG1xx: full-table work that a subset update avoids."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from pytensor.graph.basic import Apply, Variable
from pytensor.graph.traversal import ancestors
from pytensor.scan.utils import ScanArgs
from pytensor.tensor.elemwise import Elemwise
from pytensor.tensor.subtensor import AdvancedIncSubtensor, AdvancedSubtensor

from subsetgrad.graph import (
    GraphIndex,
    analyse,
    changed_at_zero,
    describe,
    is_scatter_into_zeros,
    linear_without_state,
    megabytes,
    same_table,
    source_masks,
    strip_casts,
    table_bytes,
    table_key,
)
from subsetgrad.graph.scan import scan_accumulators
from subsetgrad.lint.analyses import op_name, state_updates, strip_casts_and_shapes
from subsetgrad.lint.findings import Finding, Severity
from subsetgrad.lint.program import Program
from subsetgrad.lint.recorder import loop_lookup
from subsetgrad.lint.registry import Rule, rule
from subsetgrad.lint.source import first_location, location_of

# A dense step writes the zeros table, reads it and the table in the update, and
# writes the result: four passes over V x D.
DENSE_PASSES = 4


@dataclass(frozen=True)
class TableUpdate:
    """A table updated from its own lookups' scatter gradient, in a form that can be sparse."""

    table: Variable
    value: Variable
    # The pure-scatter gradient variables the update reads: where to look for other uses.
    # The value itself for a linear update; for one nonlinear in the gradient
    # (``clip(g)``), the gradients `SparseState` would sum per row.
    grads: tuple[Variable, ...]


def table_updates(program: Program) -> list[TableUpdate]:
    """The updates SG101 and SG102 judge: table plus scatters, or row-wise and unchanged at zero."""
    return program.memo(_all_table_updates)


def _all_table_updates(program: Program) -> list[TableUpdate]:
    return list(_table_updates(program))


def _table_updates(program: Program) -> Iterator[TableUpdate]:
    dec = program.decomposition
    linear: set[Variable] = set()
    for table, value in program.updates:
        lin = dec.of(value)
        # Lookups by arrays (AdvancedSubtensor) are the subject; a basic index
        # such as ``w[0]`` of a small parameter vector is not a lookup table.
        if lin.dense is None or not any(t.into_zeros and t.advanced for t in lin.terms):
            continue
        # A dense part other than the table itself (weight decay, a tied
        # embedding's dense gradient) is a V x D pass anyway: really dense.
        dense = strip_casts(lin.dense)
        if not isinstance(dense, Variable) or not same_table(strip_casts_and_shapes(dense), table):
            continue
        linear.add(table)
        yield TableUpdate(table, value, (value,))
    yield from _row_wise_updates(program, linear)


def _row_wise_updates(program: Program, linear: set[Variable]) -> Iterator[TableUpdate]:
    """Updates the rewrite's `SparseState` computes row by row: its own analysis, not a copy.

    Only asked when some looked-up table's update reads a scatter and is not one
    of the `linear` ones, so a program without such an update pays nothing.
    """
    dependent = program.scatter_dependent
    looked_up = {table_key(n.inputs[0]) for n in program.index.nodes_of(AdvancedSubtensor)}
    if not any(
        table not in linear and table_key(table) in looked_up and value in dependent
        for table, value in program.updates
    ):
        return
    analysis = analyse(program.updates, program.index, program.decomposition)
    if analysis.dec is None:
        return
    for group in analysis.groups:
        table = group.table
        if (
            table in linear
            or not all(isinstance(s.op, AdvancedIncSubtensor) for s in group.sources)
            # What `SparseState.apply` leaves alone.
            or linear_without_state(group, analysis.dec) is not None
            or changed_at_zero(group, dependent) is not None
        ):
            continue
        yield TableUpdate(table, group.values[table], group.grads)


def dense_uses(
    program: Program, update: TableUpdate
) -> tuple[list[tuple[Apply | None, int]], bool]:
    """Uses of the full-table gradient behind `update` other than the update itself.

    Returns the extra uses (a norm, an output), and whether the gradient also
    feeds optimizer state updates elementwise (an accumulator ``acc + g**2``):
    those are the optimizer, not an extra use, and SG301 judges them.
    """
    cache = program.memo(_dense_uses_cache)
    if update.value in cache:
        return cache[update.value]
    dec = program.decomposition
    uses: list[tuple[Apply | None, int]] = []
    feeds_state = False
    chains = [dec.sparse_chain(g) for g in update.grads]
    for var in dict.fromkeys(v for chain in chains for v in chain):
        for node, i in dec.other_uses(var, program.index):
            if node is not None and _feeds_only_updates(program, node, update.value.ndim):
                feeds_state = True
            else:
                uses.append((node, i))
    cache[update.value] = (uses, feeds_state)
    return uses, feeds_state


def _dense_uses_cache(
    program: Program,
) -> dict[Variable, tuple[list[tuple[Apply | None, int]], bool]]:
    return {}


def _feeds_only_updates(program: Program, node: Apply, ndim: int) -> bool:
    """Everything downstream of `node` is full-shape elementwise work ending in updates."""
    updated = program.update_values
    output_set, clients = program.index.output_set, program.index.region_clients
    stack, seen = [node], {node}
    while stack:
        n = stack.pop()
        if not isinstance(n.op, Elemwise) or n.outputs[0].type.ndim != ndim:
            return False
        for out in n.outputs:
            if out in output_set and out not in updated:
                return False
            for client, _ in clients.get(out, ()):
                if client not in seen:
                    seen.add(client)
                    stack.append(client)
    return True


def _use_text(use: tuple[Apply | None, int]) -> str:
    node, i = use
    if node is None:
        return f"output {i} of the function"
    loc = location_of(node)
    return f"`{op_name(node)}`" + (f" at {loc.short}" if loc else "")


_ACTIVE_HINT = (
    "Nothing to change while this mode compiles it; in a mode without the rewrite, update "
    "the looked-up rows by hand: `inc_subtensor(W[idx], -lr * grad(cost, W[idx]))`."
)


@rule(
    "SG101",
    "dense-table-gradient",
    summary="A table is updated from a full-table gradient that is a scatter of lookups.",
    hint="Compile with `subsetgrad.mode(...)` (or `mode.including('subsetgrad')`), or update "
    "`inc_subtensor(W[idx], -lr * grad(cost, W[idx]))` by hand.",
)
def dense_table_gradient(program: Program, r: Rule) -> Iterator[Finding]:
    """
    ## What it does
    Flags a shared table whose update is the table plus a linear expression of a
    full-table gradient that is only a scatter of looked-up rows, such as
    ``W - lr * pytensor.grad(cost, W)`` where the cost reads ``W[idx]``. Also an
    update elementwise in that gradient that leaves a row as it is where the
    gradient is zero, such as ``W - lr * clip(g, -1, 1)`` or ``sign(g)``: the
    rewrite computes those for the looked-up rows (the same analysis decides).

    ## Why is this bad?
    PyTensor builds the gradient as a V x D block of zeros with B rows written
    into it, then makes a full V x D pass to apply it. Only B rows change. At
    V=200k, D=64 that is about 48 ms per step on Numba where 0.13 ms would do.

    ## Example
    ```python
    import numpy as np
    import pytensor
    import pytensor.tensor as pt

    W = pytensor.shared(np.zeros((1000, 8)), name="W")
    idx = pt.lvector("idx")
    cost = (W[idx] ** 2).sum()
    g = pytensor.grad(cost, W)
    step = pytensor.function([idx], cost, updates={W: W - 0.1 * g})
    ```

    ## Use instead
    ```python
    import numpy as np
    import pytensor
    import pytensor.tensor as pt

    W = pytensor.shared(np.zeros((1000, 8)), name="W")
    idx = pt.lvector("idx")
    rows = W[idx]
    cost = (rows ** 2).sum()
    g = pytensor.grad(cost, rows)
    step = pytensor.function([idx], cost, updates={W: pt.inc_subtensor(rows, -0.1 * g)})
    ```

    ## Rewrite
    The subsetgrad rewrite turns the Example into the Use-instead graph by
    itself: compile with ``subsetgrad.mode("NUMBA")``. The finding is then
    reported at severity ``info``, saying the rewrite is active.
    """
    decaying = {
        table_key(t) for update in state_updates(program) if update.decays for t in update.tables
    }
    for update in table_updates(program):
        table, value = update.table, update.value
        uses, feeds_state = dense_uses(program, update)
        # SG102 names what keeps it dense; state that decays is SG301's. State
        # unchanged at zero gradient (adagrad) leaves the whole step sparse.
        if uses or (feeds_state and table_key(table) in decaying):
            continue
        cost = megabytes((table_bytes(table) or 0) * DENSE_PASSES or None)
        hint = None
        if program.rewrite_active and program.copied_by:
            status = (
                "the subsetgrad rewrite is active in this mode, but its linker still copies "
                f'the table on every call: compile with subsetgrad.mode("{program.copied_by}")'
            )
            severity = Severity.INFO
        elif program.rewrite_active:
            status = "the subsetgrad rewrite is active in this mode and makes it a subset update"
            severity = Severity.INFO
            hint = _ACTIVE_HINT
        elif program.rewrite_active is None:
            status = "compile with the subsetgrad rewrite to make it a subset update"
            severity = None
        else:
            status = "the subsetgrad rewrite is off in this mode"
            severity = None
        yield r.finding(
            f"{describe(table)} is updated from a dense scatter of looked-up rows: "
            f"~{cost} of memory traffic per step that need not be; {status}.",
            first_location(value, table),
            hint=hint,
            severity=severity,
        )


@rule(
    "SG102",
    "dense-gradient-kept",
    summary="A table update could be sparse, but its full-table gradient has other uses.",
    hint="Compute that use from the looked-up rows (the gradient with respect to `W[idx]`), "
    "or drop it; then the V x D gradient need not be built.",
)
def dense_gradient_kept(program: Program, r: Rule) -> Iterator[Finding]:
    """
    ## What it does
    Flags a table update that is a scatter of looked-up rows, where the
    full-table gradient is also used elsewhere: a norm, gradient clipping, an
    extra output. A gradient that is only returned, with no table update (a
    PyMC model's ``dlogp``), is not flagged.

    ## Why is this bad?
    The update itself can be a subset update, but the other use still needs
    the whole V x D gradient, so PyTensor builds it every step anyway.

    ## Example
    ```python
    import numpy as np
    import pytensor
    import pytensor.tensor as pt

    W = pytensor.shared(np.zeros((1000, 8)), name="W")
    idx = pt.lvector("idx")
    cost = (W[idx] ** 2).sum()
    g = pytensor.grad(cost, W)
    norm = pt.sqrt((g ** 2).sum())
    step = pytensor.function([idx], norm, updates={W: W - 0.1 * g})
    ```

    ## Use instead
    ```python
    import numpy as np
    import pytensor
    import pytensor.tensor as pt

    W = pytensor.shared(np.zeros((1000, 8)), name="W")
    idx = pt.lvector("idx")
    rows = W[idx]
    cost = (rows ** 2).sum()
    g_rows = pytensor.grad(cost, rows)
    norm = pt.sqrt((g_rows ** 2).sum())  # equal when idx has no repeats
    step = pytensor.function(
        [idx], norm, updates={W: pt.inc_subtensor(rows, -0.1 * g_rows)}
    )
    ```

    ## Rewrite
    The rewrite still makes the update a subset update, but cannot remove the
    dense gradient that the other use needs.
    """
    for update in table_updates(program):
        table, value = update.table, update.value
        uses, _ = dense_uses(program, update)
        if not uses:
            continue
        first = uses[0]
        yield r.finding(
            f"{describe(table)} could be updated sparsely, but its full-table gradient is also "
            f"used by {_use_text(first)}, so ~{megabytes(table_bytes(table))} of gradient is "
            "still built every step.",
            first_location(value, table),
            related=[location_of(node) for node, _ in uses if node is not None],
        )


def _trains(program: Program, table: Variable, masks: dict[Variable, int], k: int) -> bool:
    """Whether an update of `table` reads the k-th Scan's outputs (bit k of `masks`)."""
    updates = program.updates
    return any(masks.get(v, 0) >> k & 1 for target, v in updates if same_table(target, table))


def _scan_tables(node: Apply) -> Iterator[tuple[Apply, Variable | None]]:
    """Scatter-into-zeros nodes inside a Scan's inner graph, with the outer table they size."""
    op = node.op
    inner_inputs = list(op.inner_inputs)
    n_non_seqs = op.info.n_non_seqs
    inner = GraphIndex.from_outputs(list(op.inner_outputs))
    for inner_node in inner.nodes:
        # An increment of rows into zeros is a lookup's gradient; a set (a one-hot
        # built inside the step) is not.
        if (
            not is_scatter_into_zeros(inner_node)
            or inner_node.op.set_instead_of_inc
            or inner_node.outputs[0].ndim < 2
        ):
            continue
        outer = None
        base = inner_node.inputs[0]
        sized_by = base.owner.inputs[0] if base.owner is not None else None
        if sized_by in inner_inputs:
            k = inner_inputs.index(sized_by)
            # Non-sequences come last on both sides.
            if k >= len(inner_inputs) - n_non_seqs:
                outer = node.inputs[len(node.inputs) - (len(inner_inputs) - k)]
        yield inner_node, outer


@rule(
    "SG103",
    "scatter-in-scan",
    summary="A lookup gradient is accumulated densely inside a Scan.",
    hint="Compile with `subsetgrad.mode(...)`, whose rewrite emits the loop's rows instead; "
    "or look the rows up outside the loop (`rows = W[idx_all]`), pass them in as a sequence, "
    "and take the gradient with respect to `rows`.",
)
def scatter_in_scan(program: Program, r: Rule) -> Iterator[Finding]:
    """
    ## What it does
    Flags a Scan whose inner graph scatters looked-up rows into a V x D block
    of zeros: the gradient of a lookup made inside the loop.

    ## Why is this bad?
    The gradient of a Scan is a second Scan, and it adds a dense V x D
    gradient on every step: V x D work per step. Measured at V=200k, D=64:
    154 ms at T=1 and 1.2 s at T=16.

    ## Example
    ```python
    import numpy as np
    import pytensor
    import pytensor.tensor as pt

    W = pytensor.shared(np.zeros((1000, 8)), name="W")
    seq = pt.lmatrix("seq")

    def step(ids, h):
        return pt.tanh(h + W[ids].sum(axis=0))

    hs = pytensor.scan(step, sequences=[seq], outputs_info=[pt.zeros(8)], return_updates=False)
    cost = hs[-1].sum()
    g = pytensor.grad(cost, W)
    train = pytensor.function([seq], cost, updates={W: W - 0.1 * g})
    ```

    ## Use instead
    ```python
    import numpy as np
    import pytensor
    import pytensor.tensor as pt

    W = pytensor.shared(np.zeros((1000, 8)), name="W")
    seq = pt.lmatrix("seq")
    rows = W[seq]  # one lookup, outside the loop

    def step(r, h):
        return pt.tanh(h + r.sum(axis=0))

    hs = pytensor.scan(step, sequences=[rows], outputs_info=[pt.zeros(8)], return_updates=False)
    cost = hs[-1].sum()
    g = pytensor.grad(cost, rows)
    train = pytensor.function([seq], cost, updates={W: pt.inc_subtensor(rows, -0.1 * g)})
    ```

    ## Rewrite
    The subsetgrad rewrite makes the backward loop emit each step's rows and
    their gradients instead of carrying the V x D gradient, and updates the
    looked-up rows after the loop: compile with ``subsetgrad.mode("NUMBA")``.
    The finding is then reported at severity ``info``, saying the rewrite is
    active. Where the rewrite cannot (the table also read whole inside the
    loop, a nested Scan), the message says why; write the Use instead form.
    """
    from pytensor.scan.op import Scan

    scans = program.index.nodes_of(Scan)
    masks: dict[Variable, int] | None = None
    for k, node in enumerate(scans):
        reported: set[int] = set()
        handled: dict[int, str | None] | None = None
        for inner_node, outer in _scan_tables(node):
            key = id(outer) if outer is not None else id(inner_node)
            if key in reported or outer is None:
                continue
            if masks is None:
                # Bit k: reads the k-th Scan's outputs. One pass for every Scan and update.
                masks = source_masks(
                    {out: 1 << j for j, scan in enumerate(scans) for out in scan.outputs},
                    program.index,
                )
            if not _trains(program, outer, masks, k):
                continue
            reported.add(key)
            if handled is None:
                handled = _rewrite_verdicts(node, program)
            verdict = handled.get(id(inner_node), "its gradient is not a running sum of rows")
            table = describe(outer)
            size = megabytes(table_bytes(outer))
            message = (
                f"the gradient of a lookup on {table} is accumulated densely inside a Scan: "
                f"~{size} of zeros and adds on every step of the loop"
            )
            severity = None
            if verdict is not None:
                status = f"the subsetgrad rewrite cannot make it sparse: {verdict}"
            elif program.rewrite_active:
                status = "the subsetgrad rewrite is active in this mode and emits the rows instead"
                severity = Severity.INFO
            elif program.rewrite_active is None:
                status = "compile with the subsetgrad rewrite to emit the rows instead"
            else:
                status = "the subsetgrad rewrite is off in this mode"
            lookup = loop_lookup(outer)
            grad_call = first_location(inner_node, node)
            yield r.finding(
                f"{message}; {status}.",
                lookup or grad_call,
                related=[grad_call] if lookup is not None and grad_call is not None else [],
                severity=severity,
                hint=_ACTIVE_HINT_SCAN if severity is Severity.INFO else None,
            )


_ACTIVE_HINT_SCAN = (
    "Nothing to change while this mode compiles it; in a mode without the rewrite, look "
    "the rows up outside the loop and pass them in as a sequence."
)


def _rewrite_verdicts(node: Apply, program: Program) -> dict[int, str | None]:
    """Per inner scatter of Scan `node`: None if the rewrite makes it rows, else why not."""
    found = scan_accumulators(node, program.index.clients)
    verdicts: dict[int, str | None] = {}
    for acc in found.accumulators:
        for term in acc.terms:
            verdicts[id(term)] = None
    carries = ScanArgs.from_node(node).inner_out_sit_sot
    for k, reason in found.refused.items():
        for var in ancestors([carries[k]]):
            if var.owner is not None:
                verdicts.setdefault(id(var.owner), reason)
    return verdicts
