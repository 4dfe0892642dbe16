"""The linear decomposition of a variable into a dense part plus scatters::

    x == dense + sum_k zeros[index_k].inc(values_k)

found by walking the zero-preserving linear elemwise ops (add, sub, neg, mul and
div by a scatter-free factor, cast) and the increments that build scatters.
`decompose_graph` does that once for a whole graph; the rewrite turns each
decomposed update into increments on `dense`, and the lint reads the same
decomposition to say which updates are dense and why.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import pytensor.tensor as pt
from pytensor.graph.basic import Apply, Variable
from pytensor.tensor.subtensor import AdvancedIncSubtensor

from subsetgrad.graph.index import GraphIndex, scatter_dependent
from subsetgrad.graph.ops import (
    FLOAT_DTYPES,
    Index,
    index_has_mask,
    index_of,
    indices_provably_unique,
    is_inc,
    is_output_node,
    is_term,
    linear_kind_of,
)


class Lazy:
    """An expression to build only if needed: ``fn(*args)``, args built first.

    The decomposition covers every variable of a graph, but the rewrite builds
    only the roots it replaces and the lint builds nothing; building each
    intermediate eagerly would create (and trace) thousands of unused nodes.
    """

    __slots__ = ("_built", "args", "fn")

    def __init__(self, fn: Callable[..., Variable], args: tuple[Any, ...]) -> None:
        self.fn = fn
        self.args = args
        self._built: Variable | None = None

    def build(self) -> Variable:
        if self._built is None:
            self._built = self.fn(*(materialize(a) for a in self.args))
        return self._built


type Expr = Variable | Lazy


def materialize(x: Any) -> Any:
    """Build `x` if it is a `Lazy` expression; anything else is returned as it is."""
    return x.build() if isinstance(x, Lazy) else x


def strip_casts(x: Expr) -> Expr:
    """Look through pending casts: which variable a dense part is, up to dtype."""
    while isinstance(x, Lazy) and x.fn is pt.cast:
        x = x.args[0]
    return x


@dataclass(frozen=True)
class Scatter:
    """One term ``zeros[index].inc(values)`` of a decomposition."""

    values: Expr
    # The increment node the term came from: its index, its zero base (the full
    # shape) and its stack trace (the user's line).
    source: Apply
    # False for an increment made directly on a dense base (``W[idx].inc(v)``):
    # already a subset update, nothing to gain.
    into_zeros: bool = True

    def __init__(self, values: Expr, source: Apply, into_zeros: bool = True) -> None:
        # Straight into the instance dict: the generated frozen __init__ goes through
        # object.__setattr__ per field, 3x slower, and a large graph makes thousands.
        d = self.__dict__
        d["values"], d["source"], d["into_zeros"] = values, source, into_zeros

    @property
    def advanced(self) -> bool:
        return isinstance(self.source.op, AdvancedIncSubtensor)

    @cached_property
    def index(self) -> Index:
        return index_of(self.source)

    @cached_property
    def has_mask(self) -> bool:
        return index_has_mask(self.source)


@dataclass(frozen=True)
class Linear:
    """``dense + sum(terms)``; `dense` is None when there is no scatter-free part."""

    dense: Expr | None
    terms: tuple[Scatter, ...] = ()

    def __init__(self, dense: Expr | None, terms: tuple[Scatter, ...] = ()) -> None:
        d = self.__dict__  # as in Scatter
        d["dense"], d["terms"] = dense, terms

    @property
    def is_update(self) -> bool:
        """A base plus scatters."""
        return self.dense is not None and bool(self.terms)

    @property
    def has_full_table_scatter(self) -> bool:
        """Some term is a scatter into zeros: a V x D gradient is built for it."""
        return any(t.into_zeros for t in self.terms)


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
        absorbed = self.absorbed
        uses: list[tuple[Apply | None, int]] = []
        as_output = False
        for use in index.region_clients.get(var, ()):
            if use in absorbed:
                continue
            if is_output_node(use[0]):
                uses.append((None, use[1]))
                as_output = True
            else:
                uses.append(use)
        if not as_output and var in index.output_set:
            uses.append((None, index.outputs.index(var)))
        return uses

    def roots(self, index: GraphIndex) -> Iterator[tuple[Variable, Linear]]:
        """Outermost variables of the form base plus scatters, not already increments."""
        for var, lin in self.linear.items():
            if lin.is_update and not _already_increments(var, lin) and self.other_uses(var, index):
                yield var, lin

    def sparse_chain(self, var: Variable) -> list[Variable]:
        """The pure-scatter variables (no dense part) folded into `var`'s decomposition."""
        linear, absorbed = self.linear, self.absorbed
        chain: list[Variable] = []
        stack, seen = [var], {var}
        while stack:
            v = stack.pop()
            lin = linear.get(v)
            owner = v.owner
            if lin is None or owner is None:
                continue
            if lin.dense is None:
                chain.append(v)
            for i, inp in enumerate(owner.inputs):
                # Only a decomposed input can have been folded in.
                if inp in linear and inp not in seen and (owner, i) in absorbed:
                    seen.add(inp)
                    stack.append(inp)
        return chain


def _already_increments(var: Variable, lin: Linear) -> bool:
    """`var` is literally ``dense[i1].inc(v1)[i2].inc(v2)...``: nothing left to move."""
    chain = set()
    while var.owner is not None and is_inc(var.owner):
        chain.add(var.owner)
        var = var.owner.inputs[0]
    return var is lin.dense and all(t.source in chain for t in lin.terms)


def decompose_graph(index: GraphIndex, *, values: bool = True) -> Decomposition:
    """Decompose every variable of the graph that can carry a scatter.

    With `values` False the terms keep their increments' values as they are
    (not scaled, negated or cast along the way): enough to say which scatters
    make up a variable and what its dense part is, not to build it.
    """
    dec = Decomposition()
    zero_based = index.zero_based
    linear, absorbed = dec.linear, dec.absorbed
    incs, decomposed = set(index.incs), linear.keys()
    dependent = scatter_dependent(index)
    for node in index.inc_region:
        # Cheapest test first: most nodes in the region read no decomposed input.
        inc = node in incs
        if not inc and decomposed.isdisjoint(node.inputs):
            continue
        result = _decompose_node(node, dec, inc, node in zero_based, dependent, values)
        if result is not None:
            lin, used = result
            linear[node.outputs[0]] = lin
            for i in used:
                absorbed.add((node, i))
    return dec


def _decompose_node(
    node: Apply,
    dec: Decomposition,
    inc: bool,
    zero_base: bool,
    dependent: set[Variable],
    values: bool = True,
) -> tuple[Linear, list[int]] | None:
    """The decomposition of ``node.outputs[0]`` and the inputs it folded in, or None.

    Called for increments (`inc`) and for nodes that read a decomposed input.
    """
    linear = dec.linear
    outputs = node.outputs
    if len(outputs) != 1:
        return None
    op = node.op
    out = outputs[0]
    # Integer arithmetic wraps and integer casts truncate: only floating-point
    # values are linear in the scatter.
    if getattr(out.type, "dtype", None) not in FLOAT_DTYPES:
        return None

    if inc:
        if not is_term(node):
            return None
        term = Scatter(node.inputs[1], node)
        base = node.inputs[0]
        if op.set_instead_of_inc:
            # A set equals an increment only into zeros and only without repeats:
            # with repeated indices a set is last-write-wins.
            if zero_base and indices_provably_unique(term.index, term.advanced):
                return Linear(None, (term,)), []
            return None
        if zero_base:
            return Linear(None, (term,)), []
        inner = dec.of(base)
        if inner.dense is not None:
            term = Scatter(term.values, node, into_zeros=False)
        return Linear(inner.dense, (*inner.terms, term)), [0] if base in dec.linear else []

    op_type: Any = type(op)
    scalar_type: Any = type(getattr(op, "scalar_op", None))
    kind = linear_kind_of(op_type, scalar_type)
    if kind is None:
        return None
    sparse: list[int] = []
    bcast = out.type.broadcastable
    inputs = node.inputs
    for i, x in enumerate(inputs):
        if x in linear:
            # A scatter that the op broadcasts up no longer matches its indices.
            if x.type.broadcastable != bcast:
                return None
            sparse.append(i)
    if not sparse:
        return None

    if kind == "mul" and len(sparse) == 1:
        (s,) = sparse
        factors = [x for i, x in enumerate(inputs) if i != s]
        a = linear[inputs[s]]
        if not _gatherable(factors, a.terms) or any(_varies_with(f, dependent) for f in factors):
            return None
        dense = None if a.dense is None else Lazy(pt.mul, (a.dense, *factors))
        terms = tuple([_scale(t, factors, pt.mul) for t in a.terms]) if values else a.terms
        return Linear(dense, terms), sparse

    if kind == "div" and sparse == [0]:
        a = linear[inputs[0]]
        divisor = inputs[1]
        if not _gatherable([divisor], a.terms) or _varies_with(divisor, dependent):
            return None
        dense = None if a.dense is None else Lazy(pt.true_div, (a.dense, divisor))
        terms = tuple([_scale(t, [divisor], pt.true_div) for t in a.terms]) if values else a.terms
        return Linear(dense, terms), sparse

    parts = [dec.of(x) for x in inputs]

    if kind == "add":
        dense = _combine(pt.add, [p.dense for p in parts])
        terms = tuple([t for p in parts for t in p.terms])
        return Linear(dense, terms), sparse

    if kind == "sub":
        a, b = parts
        if b.dense is None:
            dense = a.dense
        else:
            dense = (
                Lazy(pt.neg, (b.dense,)) if a.dense is None else Lazy(pt.sub, (a.dense, b.dense))
            )
        terms = (*a.terms, *([_map(t, pt.neg) for t in b.terms] if values else b.terms))
        return Linear(dense, terms), sparse

    if kind == "neg":
        (a,) = parts
        terms = tuple([_map(t, pt.neg) for t in a.terms]) if values else a.terms
        return Linear(_opt(pt.neg, a.dense), terms), sparse

    if kind == "cast":
        (a,) = parts
        dtype = op.scalar_op.o_type.dtype
        dense = None if a.dense is None else Lazy(pt.cast, (a.dense, dtype))
        terms = tuple([_map(t, pt.cast, dtype) for t in a.terms]) if values else a.terms
        return Linear(dense, terms), sparse

    return None


def _gatherable(factors: Sequence[Variable], terms: Sequence[Scatter]) -> bool:
    """Whether `gather` can read each factor at each term's positions without V x D work.

    A factor that varies along the axes of a boolean mask would need the mask's
    `nonzero` (which PyTensor's PyTorch backend lacks) or a full broadcast.
    """
    if all([all(f.type.broadcastable) for f in factors]):
        return True
    return not any([t.has_mask for t in terms])


def _varies_with(factor: Variable, dependent: set[Variable]) -> bool:
    """A factor computed from a gradient that varies along the table (``1 / (|g| + eps)``).

    Gathering it at the rows needs the whole gradient, where the row step computes
    the update sparsely. A scalar of the gradient (a global norm's clipping scale)
    is the same at every row: the rest of the graph needs that gradient anyway.
    """
    return factor in dependent and not all(factor.type.broadcastable)


def _opt(fn: Callable[..., Variable], part: Expr | None) -> Expr | None:
    return None if part is None else Lazy(fn, (part,))


def _combine(fn: Callable[..., Variable], parts: Sequence[Expr | None]) -> Expr | None:
    present = [p for p in parts if p is not None]
    if not present:
        return None
    return present[0] if len(present) == 1 else Lazy(fn, tuple(present))


def _map(term: Scatter, fn: Callable[..., Variable], *extra: Any) -> Scatter:
    return Scatter(Lazy(fn, (term.values, *extra)), term.source, term.into_zeros)


def _scale(term: Scatter, factors: Iterable[Variable], fn: Callable[..., Variable]) -> Scatter:
    values: Expr = term.values
    for factor in factors:
        values = Lazy(fn, (values, Lazy(gather, (factor, term))))
    return Scatter(values, term.source, term.into_zeros)


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

    index = term.index
    basic: list[slice | int] = []
    needs_gather = False
    for axis, entry in enumerate(index):
        if isinstance(entry, slice):
            basic.append(slice(None) if bcast[axis] else entry)
        else:
            basic.append(0)
            needs_gather |= not bcast[axis]
    if needs_gather:
        return _gather_advanced(factor, index, bcast)

    sub = factor[tuple(basic)]
    if not term.advanced:
        return sub
    axes = advanced_axes(index)
    return pt.expand_dims(sub, tuple(axes)) if axes else sub


def advanced_axes(index: Index) -> range:
    """The axes of ``x[index]`` that run over the advanced index's positions.

    Advanced indexing puts the index dims where the first advanced entry was,
    or in front when the advanced entries are not adjacent.
    """
    positions = [i for i, e in enumerate(index) if not isinstance(e, slice)]
    if not positions:
        return range(0)
    n_new = max(e.type.ndim for e in index if isinstance(e, Variable))
    adjacent = positions == list(range(positions[0], positions[-1] + 1))
    at = positions[0] if adjacent else 0
    return range(at, at + n_new)


def _gather_advanced(factor: Variable, index: Index, bcast: tuple[bool, ...]) -> Variable:
    entries: list[slice | Variable] = []
    for axis, entry in enumerate(index):
        if isinstance(entry, slice):
            entries.append(slice(None) if bcast[axis] else entry)
        else:
            # Same index structure, so the same output layout; a broadcast axis reads row 0.
            entries.append(pt.zeros_like(entry) if bcast[axis] else entry)
    return factor[tuple(entries)]
