"""Zero-gradient algebra: does an update leave its state unchanged where the gradient is zero?"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from typing import Any

import numpy as np
import pytensor.tensor as pt
from pytensor.graph.basic import Apply, Constant, Variable

from subsetgrad.graph.ops import INC_OPS, isa, linear_kind, row_local, strip_wrappers


def scatters_behind(
    value: Variable, dependent: set[Variable], scatters: frozenset[Apply], like: Variable
) -> tuple[list[Apply], bool]:
    """The scatter-into-zeros nodes `value` reads row by row, without walking past them.

    Only row-local ops (and an increment's base) are followed, so a state is not
    said to follow another table's gradient through a global norm, and the walk
    stays within the state's own algebra.

    Also returns whether a scatter is summed with a dense, table-shaped term that
    does not read `like` (the state): the gradient of a tied table, or an L2 term
    ``g + wd * W``. Rows outside the batch then have a gradient of their own.
    """
    found: list[Apply] = []
    dense = False
    stack, seen = [value], {value}
    while stack:
        var = stack.pop()
        owner = var.owner
        if owner is None or var not in dependent:
            continue
        if owner in scatters:
            found.append(owner)
            continue
        if row_local(var, like):
            inputs = owner.inputs
            if (
                not dense
                and linear_kind(owner) == "add"
                and any(i.owner in scatters for i in inputs)
            ):
                dense = any(_dense_term(i, scatters, like) for i in inputs)
        elif isa(owner.op, INC_OPS) and var.type.broadcastable == like.type.broadcastable:
            inputs = owner.inputs[:1]
        else:
            continue
        for i in inputs:
            if i not in seen:
                seen.add(i)
                stack.append(i)
    return found, dense


def _dense_term(term: Variable, scatters: frozenset[Apply], state: Variable) -> bool:
    """A table-shaped term of a sum that reads neither `state` nor a scatter row by row.

    ``mu * v + g`` (momentum written that way) reads its state: not a dense gradient.
    """
    if term.type.broadcastable != state.type.broadcastable:
        return False
    stack, seen = [term], {term}
    while stack:
        var = stack.pop()
        if var is state or var.owner in scatters:
            return False
        if row_local(var, state):
            for i in var.owner.inputs:
                if i not in seen:
                    seen.add(i)
                    stack.append(i)
    return not isa(strip_wrappers(term), (Constant,))


def identity_at_zero(
    value: Variable, state: Variable, scatters: Iterable[Variable], dependent: set[Variable]
) -> bool:
    """Whether ``value`` simplifies to ``state`` when every scatter in `scatters` is zero.

    Decided from the algebra: substitute a broadcastable constant zero for each
    scatter and run PyTensor's canonicalize/stabilize/specialize rewrites. An
    adagrad accumulator ``acc + g**2`` becomes ``acc``; an RMSprop one
    ``rho * acc + (1 - rho) * g**2`` stays ``rho * acc``. What depends on the
    gradient other than element by element (a global norm) stands for an
    unknown value, not its value at zero: the question is about one row
    outside the batch while others have gradients. Results are cached by
    the algebra's structure, since one optimizer repeats it for every table.
    `dependent` is `scatter_dependent` of the graph: where the algebra ends.
    """
    from pytensor.graph.replace import clone_replace
    from pytensor.graph.rewriting.utils import rewrite_graph

    if len(_IDENTITY_CACHE) > 4096 or len(_TOKEN_BY_ID) > 65536:
        # Together: cached keys hold tokens.
        _IDENTITY_CACHE.clear()
        _TOKENS.clear()
        _TOKEN_BY_ID.clear()
    scatters = list(scatters)
    opaque: list[Variable] = []
    key = _algebra_key(value, state, set(scatters), dependent, opaque)
    cached = _IDENTITY_CACHE.get(key)
    if cached is not None:
        return cached
    zeros = {s: pt.constant(np.zeros((1,) * s.type.ndim, dtype=s.type.dtype)) for s in scatters}
    # What depends on the gradient other than row by row (a global norm) is
    # some unknown value at a row outside the batch, not a function of zero.
    unknown = {v: v.type() for v in opaque}
    at_zero = clone_replace(value, replace={**zeros, **unknown}, rebuild_strict=False)
    simplified = rewrite_graph(at_zero, include=("canonicalize", "stabilize", "specialize"))
    result = strip_wrappers(simplified) is state
    _IDENTITY_CACHE[key] = result
    return result


_IDENTITY_CACHE: dict[Hashable, bool] = {}


# Ops and types in keys are small ints: their own hash and equality run in
# Python (through __props__), slow over thousands of keys. Equal ones share a token.
_TOKENS: dict[Any, int] = {}


# id(obj) -> (token, obj); holding the object keeps its id from naming another.
_TOKEN_BY_ID: dict[int, tuple[int, Any]] = {}


def token(obj: Any) -> int:
    """A small int standing for `obj` in keys: equal objects share one."""
    hit = _TOKEN_BY_ID.get(id(obj))
    if hit is None:
        hit = _TOKEN_BY_ID[id(obj)] = (_TOKENS.setdefault(obj, len(_TOKENS)), obj)
    return hit[0]


_NAME_NEXT = object()


def _leaf_name(var: Variable, state: Variable, scatters: set[Variable], order: int) -> Hashable:
    """A leaf by role: the state, a scatter, a constant by value, else by type and order."""
    if var is state:
        return "state"
    if var in scatters:
        return ("scatter", token(var.type))
    if isa(var, (Constant,)):
        data = var.data
        if type(data) is not np.ndarray:
            data = np.asarray(data)
        return ("const", data.dtype.str, data.shape, data.tobytes())
    return ("leaf", token(var.type), order)


def _algebra_key(
    value: Variable,
    state: Variable,
    scatters: set[Variable],
    dependent: set[Variable],
    opaque: list[Variable],
) -> Hashable:
    """A structural key for the expression from the scatters (and leaves) up to `value`.

    Leaves are named by role: the state, a scatter, a constant by value, any
    other graph input by type and order of first appearance. A variable that
    depends on the scatters other than row by row (`row_local`) is a leaf too,
    and is added to `opaque`: the simplifier sees an unknown there. Every other
    node is expanded, down to the graph's inputs, whatever its op: the
    simplifier sees through all of them (``alloc(c, ...)``, ``0.9 * acc``), so
    two graphs share a key only when it sees the same expression.
    """
    # Every variable the walk is done with has a name.
    names: dict[Variable, Hashable] = {}
    parts: list[Hashable] = []
    # Post-order over the nodes between the leaves and `value`.
    # A variable under `_NAME_NEXT` on the stack is named once its inputs are.
    stack: list[Any] = [value]
    pop, push = stack.pop, stack.append
    while stack:
        var = pop()
        if var is _NAME_NEXT:
            var = pop()
            if var not in names:
                node = var.owner
                names[var] = len(parts)  # a node by position; leaves' names are not ints
                parts.append((token(node.op), var.index, tuple([names[i] for i in node.inputs])))
            continue
        if var in names:
            continue
        node = var.owner
        if node is None or var is state or var in scatters:
            names[var] = _leaf_name(var, state, scatters, len(names))
            continue
        if var in dependent and not row_local(var, state):
            names[var] = _leaf_name(var, state, scatters, len(names))
            opaque.append(var)
            continue
        push(var)
        push(_NAME_NEXT)
        for i in node.inputs:
            if i not in names:
                push(i)
    return (tuple(parts), names.get(value))
