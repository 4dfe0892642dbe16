"""SG2xx: gradients that silently miss a path, and writes that drop repeats."""

from __future__ import annotations

from collections.abc import Hashable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from pytensor.compile.sharedvalue import SharedVariable
from pytensor.graph.basic import Apply, Constant, Variable
from pytensor.tensor.subtensor import AdvancedIncSubtensor, AdvancedSubtensor

from subsetgrad.graph import (
    LOOKUP_OPS,
    ancestors,
    describe,
    index_of,
    indices_provably_unique,
    is_lookup,
    isa,
    token,
    writes_equal_at_repeats,
)
from subsetgrad.lint.findings import Finding, Location
from subsetgrad.lint.program import Program, same_table
from subsetgrad.lint.registry import Rule, rule
from subsetgrad.lint.source import location_of


def _input_key(var: Variable) -> Hashable:
    if isa(var, (Constant,)):
        data = np.asarray(var.data)
        return ("const", data.dtype.str, data.shape, data.tobytes())
    return id(var)


def _table_key(var: Variable) -> Hashable:
    container = getattr(var, "container", None)
    return id(container) if container is not None else id(var)


def lookup_key(node: Apply) -> Hashable:
    """Equal for lookups of the same table with structurally equal indices."""
    index = tuple([_input_key(v) for v in node.inputs[1:]])
    return (token(node.op), _table_key(node.inputs[0]), index)


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
    separately built expressions, such as writing ``W[idx]`` twice.

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
    """
    groups: dict[Hashable, list[Apply]] = {}
    # Lookups by a symbolic index array (``W[idx]``); constant and basic indexing
    # (``X[:, 0]`` of shared data) is reading, not a lookup a gradient is taken at.
    for node in program.index.nodes_of(AdvancedSubtensor):
        if isa(node.inputs[0], (SharedVariable,)) and any(
            [not isa(i, (Constant,)) and i.type.ndim > 0 for i in node.inputs[1:]]
        ):
            groups.setdefault(lookup_key(node), []).append(node)
    for nodes in groups.values():
        if len(nodes) < 2:
            continue
        located = sorted(
            (loc for loc in map(location_of, nodes) if loc is not None),
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


# --------------------------------------------------------------------------- #
# SG202: gradients with respect to a lookup
# --------------------------------------------------------------------------- #
@dataclass(eq=False)
class GradCall:
    """One ``pytensor.grad(cost, wrt)`` call seen by the recorder, for one `wrt`."""

    cost: Variable
    wrt: Variable
    location: Location | None
    _missed: list[Apply] | None = None

    #: How many have been made in this process; none means no graph carries a tag.
    made: ClassVar[int] = 0

    def __post_init__(self) -> None:
        GradCall.made += 1

    @property
    def table(self) -> Variable | None:
        owner = self.wrt.owner
        if owner is not None and isinstance(owner.op, LOOKUP_OPS):
            return owner.inputs[0]
        return None

    def missed_paths(self) -> list[Apply]:
        """Nodes through which `cost` reads the table other than via `wrt`."""
        if self._missed is None:
            table = self.table
            missed: list[Apply] = []
            # `grad(None, wrt, known_grads=...)` has no cost to walk.
            if table is not None and self.cost is not None:
                wrt = self.wrt

                def stop(var: Variable) -> bool:
                    # The lookup itself, shapes and gradient blocks: no path to the table.
                    return var is wrt or type(var.owner.op).__name__ in NO_GRADIENT_OPS

                for var in ancestors([self.cost], stop=stop):
                    node = var.owner
                    if node is None or stop(var):
                        continue
                    if any(same_table(i, table) for i in node.inputs) and node not in missed:
                        missed.append(node)
            self._missed = missed
        return self._missed


GRAD_TAG = "subsetgrad_grad"
NO_GRADIENT_OPS = {"Shape", "Shape_i", "DisconnectedGrad", "ZeroGrad", "UndefinedGrad"}


def _depends_on(value: Variable, targets: set[Variable]) -> bool:
    return any(v in targets for v in ancestors([value]))


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
    """
    if not GradCall.made:
        return
    tagged: list[tuple[Variable, GradCall]] = []
    for node in program.index.nodes:
        for out in node.outputs:
            call = vars(out.tag).get(GRAD_TAG)
            if isinstance(call, GradCall) and call.table is not None:
                tagged.append((out, call))
    if not tagged:
        return
    reported: set[tuple[int, int]] = set()
    for table, value in program.updates:
        grads = {g for g, call in tagged if same_table(call.table, table)}
        if not grads or not _depends_on(value, grads):
            continue
        for g, call in tagged:
            if g not in grads or not _depends_on(value, {g}):
                continue
            missed = call.missed_paths()
            key = (id(call.cost), id(value))
            if not missed or key in reported:
                continue
            reported.add(key)
            where = location_of(missed[0])
            yield r.finding(
                f"the update of {describe(table)} uses `grad(cost, rows)` for one lookup of it, "
                f"but the cost also reads the table through `{_describe_use(missed[0], table)}`"
                + (f" at {where.short}" if where else "")
                + "; that path's gradient is dropped.",
                location_of(value) or call.location,
                related=[call.location, *(location_of(n) for n in missed)],
            )


def _describe_use(node: Apply, table: Variable) -> str:
    name = table.name or "W"
    if isinstance(node.op, LOOKUP_OPS):
        return f"{name}[...]"
    from subsetgrad.lint.rules.dense import op_name

    return f"{op_name(node)}({name})"


# --------------------------------------------------------------------------- #
# SG203
# --------------------------------------------------------------------------- #
def _reads_old_rows(value: Variable, base: Variable, key: Hashable) -> bool:
    """`value` depends on a lookup of `base` with the same indices as the write."""
    return any(
        v.owner is not None
        and is_lookup(v.owner)
        and same_table(v.owner.inputs[0], base)
        and tuple(_input_key(i) for i in v.owner.inputs[1:]) == key
        for v in ancestors([value])
    )


@rule(
    "SG203",
    "set-with-duplicate-indices",
    summary="A set-style write of `table[idx]` from its old rows, where `idx` may repeat.",
    hint="Use `inc_subtensor(W[idx], delta)`, which accumulates repeated indices, or make "
    "the indices unique first.",
)
def set_with_duplicate_indices(program: Program, r: Rule) -> Iterator[Finding]:
    """
    ## What it does
    Flags ``set_subtensor(W[idx], f(W[idx]))`` where ``idx`` is not provably
    unique: the FAQ's second trap.

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
    """
    for node in program.index.nodes_of(AdvancedIncSubtensor):
        op: Any = node.op
        if not op.set_instead_of_inc:
            continue
        if indices_provably_unique(index_of(node), advanced=True):
            continue
        base, value, *index_inputs = node.inputs
        if any(writes_equal_at_repeats(i) for i in index_inputs):
            continue  # subsetgrad.optim's rows: repeats are summed before the write
        key = tuple(_input_key(v) for v in index_inputs)
        if _reads_old_rows(value, base, key):
            yield r.finding(
                f"`set_subtensor` writes rows of {describe(base)} computed from the same rows, "
                "but the indices may repeat: a repeated row keeps only its last write and the "
                "other contributions are lost.",
                location_of(node),
            )
