"""Graph matching shared by the rewrite and the lint.

The one idea here is the *linear decomposition* of a variable::

    x == dense + sum_k zeros[index_k].inc(values_k)

found by walking the zero-preserving linear elemwise ops (add, sub, neg, mul and
div by a scatter-free factor, cast) and the increments that build scatters.
`decompose_graph` does that once for a whole `FunctionGraph`; the rewrite turns
each decomposed update into increments on `dense`, and the lint reads the same
decomposition to say which updates are dense and why.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import pytensor.scalar as ps
import pytensor.tensor as pt
from pytensor.graph.basic import Apply, Constant, Variable
from pytensor.graph.fg import FunctionGraph
from pytensor.tensor.basic import ARange, get_underlying_scalar_constant_value
from pytensor.tensor.elemwise import Elemwise
from pytensor.tensor.subtensor import (
    AdvancedIncSubtensor,
    AdvancedSubtensor,
    IncSubtensor,
    Subtensor,
    indices_from_subtensor,
)

Index = tuple[slice | Variable, ...]

INC_OPS = (IncSubtensor, AdvancedIncSubtensor)
LOOKUP_OPS = (Subtensor, AdvancedSubtensor)


# --------------------------------------------------------------------------- #
# Small predicates
# --------------------------------------------------------------------------- #
def is_zero(var: Variable) -> bool:
    """True when `var` is provably all zeros (`Second(x, 0)`, `Alloc(0, ...)`, a constant)."""
    value = get_underlying_scalar_constant_value(var, elemwise=False, raise_not_constant=False)
    return value is not var and bool(np.all(np.asarray(value) == 0))


def is_bool_index(entry: slice | Variable) -> bool:
    return isinstance(entry, Variable) and entry.type.dtype == "bool"


def index_of(node: Apply) -> Index:
    """The index tuple a (Inc)Subtensor node was built with, padded with full slices."""
    op = node.op
    first = 2 if isinstance(op, INC_OPS) else 1
    index = tuple(indices_from_subtensor(node.inputs[first:], op.idx_list))
    covered = sum(axes_covered(e) for e in index)
    return index + (slice(None),) * (node.inputs[0].type.ndim - covered)


def axes_covered(entry: slice | Variable) -> int:
    """How many axes of the indexed tensor one index entry consumes."""
    if is_bool_index(entry):
        assert isinstance(entry, Variable)
        return int(entry.type.ndim)
    return 1


def _constant_int_values(var: Variable) -> np.ndarray | None:
    if isinstance(var, Constant):
        return np.asarray(var.data)
    return None


def _single_index_unique(entry: Variable) -> bool:
    if is_bool_index(entry) or entry.type.ndim == 0:
        return True
    values = _constant_int_values(entry)
    if values is not None:
        # -1 and n-1 name the same row; without the length, mixed signs prove nothing.
        same_sign = bool(np.all(values >= 0) or np.all(values < 0))
        return same_sign and np.unique(values).size == values.size
    owner = entry.owner
    if owner is not None and isinstance(owner.op, ARange):
        bounds = [_constant_int_values(v) for v in owner.inputs]
        if any(b is None for b in bounds):
            return False
        start, stop, step = (int(b) for b in bounds)  # type: ignore[arg-type]
        return step != 0 and (min(start, stop) >= 0 or max(start, stop) <= 0)
    return False


def indices_provably_unique(index: Index, advanced: bool) -> bool:
    """True when no two positions named by `index` coincide, for every runtime value.

    Slices and scalars never repeat. Advanced integer arrays are unique when one
    of them is (and the others are scalars), or when all are constants whose
    stacked tuples are unique.
    """
    if not advanced:
        return True
    arrays = [e for e in index if isinstance(e, Variable)]
    non_scalar = [e for e in arrays if e.type.ndim > 0 and not is_bool_index(e)]
    if not non_scalar:
        return True
    if len(non_scalar) == 1:
        return _single_index_unique(non_scalar[0])
    consts = [_constant_int_values(e) for e in non_scalar]
    if all(c is not None for c in consts):
        stacked = np.stack(np.broadcast_arrays(*consts)).reshape(len(consts), -1)  # type: ignore[arg-type]
        same_sign = bool(np.all(stacked >= 0) or np.all(stacked < 0))
        return same_sign and np.unique(stacked, axis=1).shape[1] == stacked.shape[1]
    return False


def is_scatter_into_zeros(node: Apply) -> bool:
    """`zeros[idx].inc(v)` (or a set with provably unique indices): a gradient of a lookup."""
    return _scatter_term(node) is not None and is_zero(node.inputs[0])


def table_lookups(fgraph: FunctionGraph, table: Variable) -> list[Apply]:
    """The (Advanced)Subtensor nodes that read `table` directly."""
    return [
        client
        for client, _ in fgraph.clients.get(table, [])
        if isinstance(client, Apply) and isinstance(client.op, LOOKUP_OPS) and client.inputs[0] is table
    ]


# --------------------------------------------------------------------------- #
# Linear decomposition
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class Scatter:
    """One term ``zeros[index].inc(values)`` of a decomposition."""

    index: Index
    values: Variable
    advanced: bool
    # The increment node the term came from: its zero base gives the full shape,
    # its stack trace the user's line.
    source: Apply
    # False for an increment made directly on a dense base (``W[idx].inc(v)``):
    # already a subset update, nothing to gain.
    into_zeros: bool = True


@dataclass(frozen=True)
class Linear:
    """``dense + sum(terms)``; `dense` is None when there is no scatter-free part."""

    dense: Variable | None
    terms: tuple[Scatter, ...] = ()

    @property
    def is_update(self) -> bool:
        """A base plus scatters."""
        return self.dense is not None and bool(self.terms)

    @property
    def has_full_table_scatter(self) -> bool:
        """Some term is a scatter into zeros: a V x D gradient is built for it."""
        return any(t.into_zeros for t in self.terms)


@dataclass(frozen=True)
class GraphIndex:
    """Apply nodes in topological order and each variable's clients, built once."""

    nodes: list[Apply]
    clients: dict[Variable, list[tuple[Apply, int]]]
    outputs: list[Variable]

    @classmethod
    def from_fgraph(cls, fgraph: FunctionGraph) -> GraphIndex:
        return cls(list(fgraph.toposort()), fgraph.clients, list(fgraph.outputs))

    @classmethod
    def from_outputs(cls, outputs: Sequence[Variable]) -> GraphIndex:
        """Index the graph behind `outputs` in one iterative depth-first pass."""
        nodes: list[Apply] = []
        clients: dict[Variable, list[tuple[Apply, int]]] = {}
        seen: set[Apply] = set()
        for out in outputs:
            if out.owner is None or out.owner in seen:
                continue
            stack: list[tuple[Apply, int]] = [(out.owner, 0)]
            seen.add(out.owner)
            while stack:
                node, i = stack.pop()
                if i < len(node.inputs):
                    stack.append((node, i + 1))
                    parent = node.inputs[i].owner
                    if parent is not None and parent not in seen:
                        seen.add(parent)
                        stack.append((parent, 0))
                    continue
                nodes.append(node)
                for j, inp in enumerate(node.inputs):
                    clients.setdefault(inp, []).append((node, j))
        return cls(nodes, clients, list(outputs))


@dataclass
class Decomposition:
    """Linear decompositions of every variable in a graph that carries a scatter."""

    linear: dict[Variable, Linear] = field(default_factory=dict)
    # (client node, input position) pairs that folded their input into their own
    # decomposition; a variable with any other client is a place to stop.
    absorbed: set[tuple[Apply, int]] = field(default_factory=set)

    def of(self, var: Variable) -> Linear:
        return self.linear.get(var) or Linear(var)

    def other_uses(self, var: Variable, index: GraphIndex) -> list[tuple[Apply | None, int]]:
        """Uses of `var` that do not fold it into a linear decomposition (None: an output)."""
        uses: list[tuple[Apply | None, int]] = [
            (c, i)
            for c, i in index.clients.get(var, [])
            if not isinstance(c, Apply) or (c, i) not in self.absorbed
        ]
        uses = [(c if isinstance(c, Apply) and not _is_output_node(c) else None, i) for c, i in uses]
        if var in index.outputs and not any(c is None for c, _ in uses):
            uses.append((None, index.outputs.index(var)))
        return uses

    def roots(self, index: GraphIndex) -> Iterator[tuple[Variable, Linear]]:
        """Outermost variables of the form base plus scatters, not already increments."""
        for var, lin in self.linear.items():
            if lin.is_update and not _already_increments(var, lin) and self.other_uses(var, index):
                yield var, lin

    def sparse_chain(self, var: Variable) -> list[Variable]:
        """The pure-scatter variables (no dense part) folded into `var`'s decomposition."""
        chain: list[Variable] = []
        stack, seen = [var], {var}
        while stack:
            v = stack.pop()
            lin = self.linear.get(v)
            if lin is None or v.owner is None:
                continue
            if lin.dense is None:
                chain.append(v)
            for i, inp in enumerate(v.owner.inputs):
                if (v.owner, i) in self.absorbed and inp not in seen:
                    seen.add(inp)
                    stack.append(inp)
        return chain


def _already_increments(var: Variable, lin: Linear) -> bool:
    """`var` is literally ``dense[i1].inc(v1)[i2].inc(v2)...``: nothing left to move."""
    chain = set()
    while var.owner is not None and isinstance(var.owner.op, INC_OPS):
        chain.add(var.owner)
        var = var.owner.inputs[0]
    return var is lin.dense and all(t.source in chain for t in lin.terms)


def _is_output_node(node: Apply) -> bool:
    # FunctionGraph marks its outputs with `Output` apply nodes.
    return type(node.op).__name__ == "Output"


def decompose_graph(index: GraphIndex) -> Decomposition:
    """Decompose every variable of the graph in one topological pass."""
    dec = Decomposition()
    for node in index.nodes:
        result = _decompose_node(node, dec)
        if result is not None:
            lin, used = result
            dec.linear[node.outputs[0]] = lin
            dec.absorbed.update((node, i) for i in used)
    return dec


def _scatter_term(node: Apply) -> Scatter | None:
    op = node.op
    if not isinstance(op, INC_OPS):
        return None
    advanced = isinstance(op, AdvancedIncSubtensor)
    index = index_of(node)
    if advanced and op.ignore_duplicates and not indices_provably_unique(index, advanced):
        # Its meaning with repeats differs between backends; leave it opaque.
        return None
    return Scatter(index=index, values=node.inputs[1], advanced=advanced, source=node)


def _decompose_node(node: Apply, dec: Decomposition) -> tuple[Linear, list[int]] | None:
    """The decomposition of ``node.outputs[0]`` and the inputs it folded in, or None."""
    op = node.op
    out = node.outputs[0]

    if isinstance(op, INC_OPS):
        term = _scatter_term(node)
        if term is None:
            return None
        base = node.inputs[0]
        if op.set_instead_of_inc:
            # A set equals an increment only into zeros and only without repeats:
            # with repeated indices a set is last-write-wins.
            if is_zero(base) and indices_provably_unique(term.index, term.advanced):
                return Linear(None, (term,)), []
            return None
        if is_zero(base):
            return Linear(None, (term,)), []
        inner = dec.of(base)
        if inner.dense is not None:
            term = Scatter(term.index, term.values, term.advanced, node, into_zeros=False)
        return Linear(inner.dense, (*inner.terms, term)), [0] if base in dec.linear else []

    if not isinstance(op, Elemwise) or len(node.outputs) != 1:
        return None
    sparse = [
        i
        for i, x in enumerate(node.inputs)
        if x in dec.linear and x.type.broadcastable == out.type.broadcastable
    ]
    if not sparse:
        return None
    # A scatter that the op broadcasts up no longer matches its indices.
    if any(x in dec.linear and i not in sparse for i, x in enumerate(node.inputs)):
        return None

    scalar_op = op.scalar_op
    parts = [dec.of(x) for x in node.inputs]

    if isinstance(scalar_op, ps.Add):
        dense = _combine(pt.add, [p.dense for p in parts])
        terms = tuple(t for p in parts for t in p.terms)
        return Linear(dense, terms), sparse

    if isinstance(scalar_op, ps.Sub):
        a, b = parts
        if b.dense is None:
            dense = a.dense
        else:
            dense = pt.neg(b.dense) if a.dense is None else pt.sub(a.dense, b.dense)
        terms = (*a.terms, *(_map(t, pt.neg) for t in b.terms))
        return Linear(dense, terms), sparse

    if isinstance(scalar_op, ps.Neg):
        (a,) = parts
        return Linear(_opt(pt.neg, a.dense), tuple(_map(t, pt.neg) for t in a.terms)), sparse

    if isinstance(scalar_op, ps.Cast):
        (a,) = parts
        dtype = scalar_op.o_type.dtype

        def cast(v: Variable) -> Variable:
            return pt.cast(v, dtype)

        return Linear(_opt(cast, a.dense), tuple(_map(t, cast) for t in a.terms)), sparse

    if isinstance(scalar_op, ps.Mul) and len(sparse) == 1:
        (s,) = sparse
        factors = [x for i, x in enumerate(node.inputs) if i != s]
        a = parts[s]
        dense = None if a.dense is None else pt.mul(a.dense, *factors)
        terms = tuple(_scale(t, factors, pt.mul) for t in a.terms)
        return Linear(dense, terms), sparse

    if isinstance(scalar_op, ps.TrueDiv) and sparse == [0]:
        a = parts[0]
        divisor = node.inputs[1]
        dense = None if a.dense is None else pt.true_div(a.dense, divisor)
        terms = tuple(_scale(t, [divisor], pt.true_div) for t in a.terms)
        return Linear(dense, terms), sparse

    return None


def _opt(fn, var):  # type: ignore[no-untyped-def]
    return None if var is None else fn(var)


def _combine(fn, parts: Sequence[Variable | None]) -> Variable | None:  # type: ignore[no-untyped-def]
    present = [p for p in parts if p is not None]
    if not present:
        return None
    return present[0] if len(present) == 1 else fn(*present)


def _map(term: Scatter, fn) -> Scatter:  # type: ignore[no-untyped-def]
    return replace(term, values=fn(term.values))


def _scale(term: Scatter, factors: Iterable[Variable], fn) -> Scatter:  # type: ignore[no-untyped-def]
    values = term.values
    for factor in factors:
        values = fn(values, gather(factor, term))
    return replace(term, values=values)


# --------------------------------------------------------------------------- #
# Gathering a dense factor at a scatter's positions
# --------------------------------------------------------------------------- #
def gather(factor: Variable, term: Scatter) -> Variable:
    """`factor` (broadcastable against the table) read at the positions `term` writes.

    The result lines up element for element with ``table[term.index]``. A factor
    that is constant along every indexed axis (a scalar learning rate, a
    per-column vector for a row lookup) is sliced without any gather; one that
    varies along an indexed axis (a per-row rate) is gathered with the same
    index, so ``c * zeros[idx].inc(v) == zeros[idx].inc(c[idx] * v)`` exactly.
    """
    bcast = factor.type.broadcastable
    if all(bcast):
        return factor.dimshuffle()  # 0-d

    index = _split_masks(term.index, bcast)
    axis = 0
    basic: list[slice | int] = []
    needs_gather = False
    for entry in index:
        if isinstance(entry, slice):
            basic.append(slice(None) if bcast[axis] else entry)
        else:
            basic.append(0)
            needs_gather |= not bcast[axis]
        axis += 1
    if needs_gather:
        return _gather_advanced(factor, index, bcast)

    sub = factor[tuple(basic)]
    if not term.advanced:
        return sub
    # Advanced indexing puts the index dims where the first advanced entry was,
    # or in front when the advanced entries are not adjacent.
    positions = [i for i, e in enumerate(index) if not isinstance(e, slice)]
    n_new = max(e.type.ndim for e in index if isinstance(e, Variable))
    adjacent = positions == list(range(positions[0], positions[-1] + 1))
    at = positions[0] if adjacent else 0
    return pt.expand_dims(sub, tuple(range(at, at + n_new))) if n_new else sub


def _split_masks(index: Index, bcast: tuple[bool, ...]) -> Index:
    """Replace boolean masks by their integer `nonzero()` arrays, one per axis."""
    out: list[slice | Variable] = []
    for entry in index:
        if is_bool_index(entry):
            assert isinstance(entry, Variable)
            out.extend(entry.nonzero())
        else:
            out.append(entry)
    return tuple(out)


def _gather_advanced(factor: Variable, index: Index, bcast: tuple[bool, ...]) -> Variable:
    entries: list[slice | Variable] = []
    for axis, entry in enumerate(index):
        if isinstance(entry, slice):
            entries.append(slice(None) if bcast[axis] else entry)
        else:
            # Same index structure, so the same output layout; a broadcast axis reads row 0.
            entries.append(pt.zeros_like(entry) if bcast[axis] else entry)
    return factor[tuple(entries)]


# --------------------------------------------------------------------------- #
# Updates at zero gradient
# --------------------------------------------------------------------------- #
def scatter_dependent(index: GraphIndex) -> set[Variable]:
    """Every variable with a scatter into zeros among its ancestors (or that is one)."""
    marked: set[Variable] = set()
    for node in index.nodes:
        if is_scatter_into_zeros(node) or any(i in marked for i in node.inputs):
            marked.update(node.outputs)
    return marked


def scatters_behind(value: Variable, dependent: set[Variable]) -> list[Apply]:
    """The scatter-into-zeros nodes `value` reads, without walking past them."""
    found: list[Apply] = []
    stack, seen = [value], {value}
    while stack:
        var = stack.pop()
        node = var.owner
        if node is None or var not in dependent:
            continue
        if is_scatter_into_zeros(node):
            found.append(node)
            continue
        for i in node.inputs:
            if i not in seen:
                seen.add(i)
                stack.append(i)
    return found


def strip_wrappers(var: Variable) -> Variable:
    """Look through SpecifyShape, same-dtype casts and fills that do not change values."""
    while var.owner is not None:
        op = var.owner.op
        name = type(getattr(op, "scalar_op", op)).__name__
        if name == "SpecifyShape" or (name == "Cast" and var.owner.inputs[0].dtype == var.dtype):
            var = var.owner.inputs[0]
        elif name == "Second":
            var = var.owner.inputs[1]
        else:
            break
    return var


def identity_at_zero(value: Variable, state: Variable, scatters: Iterable[Variable]) -> bool:
    """Whether ``value`` simplifies to ``state`` when every scatter in `scatters` is zero.

    Decided from the algebra: substitute a broadcastable constant zero for each
    scatter and run PyTensor's canonicalize/stabilize/specialize rewrites. An
    adagrad accumulator ``acc + g**2`` becomes ``acc``; an RMSprop one
    ``rho * acc + (1 - rho) * g**2`` stays ``rho * acc``.
    """
    from pytensor.graph.replace import clone_replace
    from pytensor.graph.rewriting.utils import rewrite_graph

    zeros = {
        s: pt.constant(np.zeros((1,) * s.type.ndim, dtype=s.type.dtype)) for s in scatters
    }
    at_zero = clone_replace(value, replace=zeros, rebuild_strict=False)
    simplified = rewrite_graph(at_zero, include=("canonicalize", "stabilize", "specialize"))
    return strip_wrappers(simplified) is state
