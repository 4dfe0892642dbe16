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

from collections.abc import Callable, Collection, Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache, cached_property
from itertools import islice
from typing import Any

import numpy as np
import pytensor.scalar as ps
import pytensor.tensor as pt
from pytensor.compile.sharedvalue import SharedVariable
from pytensor.graph.basic import Apply, Constant, Variable
from pytensor.graph.fg import FunctionGraph
from pytensor.tensor.basic import Alloc, ARange, get_underlying_scalar_constant_value
from pytensor.tensor.elemwise import DimShuffle, Elemwise
from pytensor.tensor.shape import Shape, Shape_i
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


@cache
def _subclass(op_type: Any, classes: tuple[type, ...]) -> bool:
    # Op classes use ABCMeta, whose isinstance is slow on graphs of 100k nodes.
    return issubclass(op_type, classes)


def is_inc(node: Apply) -> bool:
    """An (Advanced)IncSubtensor: a write of values at an index."""
    op_type: Any = type(node.op)
    return _subclass(op_type, INC_OPS)


def is_lookup(node: Apply) -> bool:
    """An (Advanced)Subtensor: a read at an index."""
    op_type: Any = type(node.op)
    return _subclass(op_type, LOOKUP_OPS)


# --------------------------------------------------------------------------- #
# Small predicates
# --------------------------------------------------------------------------- #
def same_table(a: Variable, b: Variable) -> bool:
    """`a` and `b` are the same shared table (clones share their container)."""
    if a is b:
        return True
    ca, cb = getattr(a, "container", None), getattr(b, "container", None)
    return ca is not None and ca is cb


def table_key(var: Variable) -> int:
    """Equal for the same table: one key per shared container (see `same_table`)."""
    container = getattr(var, "container", None)
    return id(container) if container is not None else id(var)


def is_zero(var: Variable) -> bool:
    """True when `var` is provably all zeros (`Second(x, 0)`, `Alloc(0, ...)`, a constant)."""
    while True:
        if isa(var, (Constant,)):
            return _all_zero(var.data)
        owner = var.owner
        if owner is None:
            return False
        # The forms gradients and zeros_like build, checked without PyTensor's
        # general (and much slower) constant folding.
        op = owner.op
        if isa(op, (Elemwise,)) and isa(op.scalar_op, (ps.Second,)):
            var = owner.inputs[1]
        elif isa(op, (Alloc, DimShuffle)):
            var = owner.inputs[0]
        else:
            break
    value = get_underlying_scalar_constant_value(var, elemwise=False, raise_not_constant=False)
    return value is not var and _all_zero(value)


def isa(obj: object, classes: tuple[type, ...]) -> bool:
    """``isinstance(obj, classes)``, decided once per type (PyTensor's classes are ABCs)."""
    obj_type: Any = type(obj)
    return _subclass(obj_type, classes)


def _all_zero(data: Any) -> bool:
    values = data if type(data) is np.ndarray else np.asarray(data)
    if values.dtype.kind in "biufc":
        if values.ndim == 0:
            return not values.item()  # the usual scalar zero, without a NumPy call
        return not np.count_nonzero(values)  # much faster than ``np.all(values == 0)``
    return bool(np.all(values == 0))


def tag_value(var: Variable, name: str) -> Any:
    """``getattr(var.tag, name, None)``, without the tag class's `__getattribute__`.

    PyTensor's tags define it in Python, which shows over a graph's variables.
    """
    return object.__getattribute__(var.tag, "__dict__").get(name)


def is_bool_index(entry: slice | Variable) -> bool:
    # Not isinstance(entry, Variable): that is an ABC check, slow in a loop over a graph.
    return not isinstance(entry, slice) and entry.type.dtype == "bool"


def index_of(node: Apply) -> Index:
    """The index tuple a (Inc)Subtensor node was built with, padded with full slices."""
    op = node.op
    first = 2 if is_inc(node) else 1
    index: Index = tuple(indices_from_subtensor(node.inputs[first:], op.idx_list))
    covered = sum(axes_covered(e) for e in index)
    padding: Index = (slice(None),) * int(node.inputs[0].type.ndim - covered)
    return index + padding


def _has_mask(node: Apply) -> bool:
    """Whether `index_of(node)` has a boolean entry; read off the op without building it."""
    first = 2 if is_inc(node) else 1
    return any(
        isinstance(k, int) and node.inputs[first + k].type.dtype == "bool" for k in node.op.idx_list
    )


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
        if step == 0:
            return False
        span = range(start, stop, step)
        # Distinct values; distinct rows too unless negative ones wrap onto others.
        return len(span) == 0 or min(span[0], span[-1]) >= 0 or max(span[0], span[-1]) < 0
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
    """`zeros[idx].inc(v)`: the gradient of a lookup."""
    return _is_term(node) and is_zero(node.inputs[0])


# --------------------------------------------------------------------------- #
# Linear decomposition
# --------------------------------------------------------------------------- #
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
        return _has_mask(self.source)


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


class GraphIndex:
    """Apply nodes in topological order, and who uses each variable, built once.

    `clients` has the uses of every variable; `region_clients` only those of
    the variables `inc_region` outputs (whose uses are all in that region too),
    which is what decompositions ask about and costs far less to gather.
    """

    def __init__(
        self,
        nodes: list[Apply],
        outputs: Sequence[Variable],
        clients: Mapping[Variable, list[tuple[Apply, int]]] | None = None,
        *,
        root_clients: bool = True,
    ) -> None:
        self.nodes = nodes
        self.outputs = list(outputs)
        self.output_set = frozenset(self.outputs)
        self.root_clients = root_clients
        if clients is not None:
            self.__dict__["clients"] = clients

    @cached_property
    def clients(self) -> Mapping[Variable, list[tuple[Apply, int]]]:
        """Each variable's uses in topological order (a graph input's only with `root_clients`)."""
        clients: dict[Variable, list[tuple[Apply, int]]] = {}
        users_of, roots = clients.get, self.root_clients
        for node in self.nodes:
            j = -1
            for inp in node.inputs:
                j += 1
                if inp.owner is None and not roots:
                    continue
                users = users_of(inp)
                if users is None:
                    clients[inp] = [(node, j)]
                else:
                    users.append((node, j))
        return clients

    @cached_property
    def region_clients(self) -> Mapping[Variable, list[tuple[Apply, int]]]:
        return self.clients

    @cached_property
    def region_vars(self) -> set[Variable]:
        """The variables `inc_region`'s nodes output."""
        return {out for node in self.inc_region for out in node.outputs}

    @cached_property
    def node_set(self) -> set[Apply]:
        return set(self.nodes)

    @cached_property
    def _by_op_type(self) -> dict[type, list[Apply]]:
        groups: dict[type, list[Apply]] = {}
        for node in self.nodes:
            groups.setdefault(type(node.op), []).append(node)
        return groups

    def nodes_of(self, *op_classes: type) -> list[Apply]:
        """Nodes whose op is an instance of one of `op_classes`."""
        return [
            n for t, group in self._by_op_type.items() if _subclass(t, op_classes) for n in group
        ]

    def nodes_running(self, ops: Iterable[Any]) -> list[Apply]:
        """Nodes whose op is one of `ops` itself, not an equal one (a clone shares its op)."""
        ids = {id(op): type(op) for op in ops}
        return [
            n for t in set(ids.values()) for n in self._by_op_type.get(t, ()) if id(n.op) in ids
        ]

    @cached_property
    def _lookups(self) -> dict[int, list[Apply]]:
        groups: dict[int, list[Apply]] = {}
        for node in self.nodes_of(*LOOKUP_OPS):
            groups.setdefault(table_key(node.inputs[0]), []).append(node)
        return groups

    def lookups_of(self, table: Variable) -> list[Apply]:
        """The lookups (``W[idx]``, ``W[i]``, ``W[:, j]``) reading `table` or its storage."""
        return self._lookups.get(table_key(table), [])

    @cached_property
    def incs(self) -> list[Apply]:
        return self.nodes_of(*INC_OPS)

    @cached_property
    def zero_based(self) -> frozenset[Apply]:
        """Increments whose base is provably zero, found once per graph."""
        return frozenset(n for n in self.incs if is_zero(n.inputs[0]))

    @cached_property
    def scatters(self) -> frozenset[Apply]:
        """The scatters into zeros: gradients of lookups."""
        return frozenset(n for n in self.zero_based if _is_term(n))

    @cached_property
    def inc_region(self) -> list[Apply]:
        """The increments and every node downstream of one, in topological order.

        Only increments start a decomposition and only their descendants can
        extend one (or depend on a scatter): the region to order, not the whole graph.
        """
        return downstream(self.incs, self.clients)

    @classmethod
    def from_fgraph(cls, fgraph: FunctionGraph) -> GraphIndex:
        return cls(list(fgraph.toposort()), fgraph.outputs, fgraph.clients)

    @classmethod
    def from_outputs(cls, outputs: Sequence[Variable], *, root_clients: bool = True) -> GraphIndex:
        """Index the graph behind `outputs` in one depth-first pass.

        The pass also finds `inc_region` and `region_clients`: each node is
        placed once its inputs are, so whether it reads the region is known
        then. `clients` is gathered only if asked for; with `root_clients`
        False it leaves out the uses of the graph's inputs (constants, tables).
        """
        nodes: list[Apply] = []
        groups: dict[type, list[Apply]] = {}
        # Per op class: its group, and whether it is an increment (starts the region).
        kinds: dict[Any, tuple[list[Apply], bool]] = {}
        region: list[Apply] = []
        region_vars: set[Variable] = set()
        region_clients: dict[Variable, list[tuple[Apply, int]]] = {}
        # A node under `_FINISH` on the stack is placed once the nodes above it are.
        stack: list[Any] = [o.owner for o in reversed(outputs) if o.owner is not None]
        entered: set[Apply] = set()
        # Bound once: this loop runs for every node and edge of the graph.
        pop, push, enter, place = stack.pop, stack.append, entered.add, nodes.append
        while stack:
            node = pop()
            if node is _FINISH:
                node = pop()
                place(node)
                op_type: Any = type(node.op)
                kind = kinds.get(op_type)
                if kind is None:
                    group = groups[op_type] = []
                    kind = kinds[op_type] = group, _subclass(op_type, INC_OPS)
                group, inc = kind
                group.append(node)
                inputs = node.inputs
                if inc or not region_vars.isdisjoint(inputs):
                    region.append(node)
                    region_vars.update(node.outputs)
                    j = -1
                    for inp in inputs:
                        j += 1
                        if inp in region_vars:
                            users = region_clients.get(inp)
                            if users is None:
                                region_clients[inp] = [(node, j)]
                            else:
                                users.append((node, j))
                continue
            if node in entered:
                continue  # pushed again by another client before it was placed
            enter(node)
            push(node)
            push(_FINISH)
            for inp in node.inputs:
                parent = inp.owner
                if parent is not None and parent not in entered:
                    push(parent)
        index = cls(nodes, outputs, root_clients=root_clients)
        # Filled in the same pass rather than by more walks over the graph.
        index.__dict__.update(
            _by_op_type=groups,
            node_set=entered,
            inc_region=region,
            region_vars=region_vars,
            region_clients=region_clients,
        )
        return index


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
            if _is_output_node(use[0]):
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


def _is_output_node(node: Apply) -> bool:
    # FunctionGraph marks its outputs with `Output` apply nodes.
    return type(node.op).__name__ == "Output"


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
    for node in index.inc_region:
        # Cheapest test first: most nodes in the region read no decomposed input.
        inc = node in incs
        if not inc and decomposed.isdisjoint(node.inputs):
            continue
        result = _decompose_node(node, dec, inc, node in zero_based, values)
        if result is not None:
            lin, used = result
            linear[node.outputs[0]] = lin
            for i in used:
                absorbed.add((node, i))
    return dec


def downstream(
    starts: Iterable[Apply], clients: Mapping[Variable, list[tuple[Apply, int]]]
) -> list[Apply]:
    """`starts` and every node that reads from them, each after its parents among these.

    One depth-first walk along the clients; its reverse post-order is topological.
    """
    order: list[Apply] = []
    entered: set[Apply] = set()
    finish = order.append
    for start in starts:
        # A node under `_FINISH` on the stack is done once the nodes above it are.
        stack: list[Any] = [start]
        pop, push = stack.pop, stack.append
        while stack:
            node = pop()
            if node is _FINISH:
                finish(pop())
                continue
            if node in entered:
                continue
            entered.add(node)
            push(node)
            push(_FINISH)
            for out in node.outputs:
                for client, _ in clients.get(out, ()):
                    if client not in entered and isinstance(client, Apply):
                        push(client)
    order.reverse()
    return order


_FINISH = object()


def _is_term(node: Apply) -> bool:
    """Whether an increment can be a term of a decomposition."""
    if not is_inc(node):
        return False
    # With repeated indices its meaning differs between backends; leave it opaque.
    return not getattr(node.op, "ignore_duplicates", False) or indices_provably_unique(
        index_of(node), True
    )


def _decompose_node(
    node: Apply, dec: Decomposition, inc: bool, zero_base: bool, values: bool = True
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
        if not _is_term(node):
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
    kind = _linear_kind(op_type, scalar_type)
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
        if not _gatherable(factors, a.terms):
            return None
        dense = None if a.dense is None else Lazy(pt.mul, (a.dense, *factors))
        terms = tuple([_scale(t, factors, pt.mul) for t in a.terms]) if values else a.terms
        return Linear(dense, terms), sparse

    if kind == "div" and sparse == [0]:
        a = linear[inputs[0]]
        divisor = inputs[1]
        if not _gatherable([divisor], a.terms):
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


FLOAT_DTYPES = frozenset({"float16", "float32", "float64"})

_LINEAR_SCALAR_OPS = (
    (ps.Add, "add"),
    (ps.Sub, "sub"),
    (ps.Neg, "neg"),
    (ps.Cast, "cast"),
    (ps.Mul, "mul"),
    (ps.TrueDiv, "div"),
)


@cache
def _linear_kind(op_type: Any, scalar_type: Any) -> str | None:
    """Which linear elementwise op a node is, from its classes (cached: ABC checks are slow)."""
    if not issubclass(op_type, Elemwise):
        return None
    return next((k for cls, k in _LINEAR_SCALAR_OPS if issubclass(scalar_type, cls)), None)


def linear_kind(node: Apply) -> str | None:
    """ "add", "sub", "neg", "cast", "mul" or "div" for those elementwise ops, else None."""
    op = node.op
    op_type: Any = type(op)
    scalar_type: Any = type(getattr(op, "scalar_op", None))
    return _linear_kind(op_type, scalar_type)


def _gatherable(factors: Sequence[Variable], terms: Sequence[Scatter]) -> bool:
    """Whether `gather` can read each factor at each term's positions without V x D work.

    A factor that varies along the axes of a boolean mask would need the mask's
    `nonzero` (which PyTensor's PyTorch backend lacks) or a full broadcast.
    """
    if all([all(f.type.broadcastable) for f in factors]):
        return True
    return not any([t.has_mask for t in terms])


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


# --------------------------------------------------------------------------- #
# Updates at zero gradient
# --------------------------------------------------------------------------- #
def scatter_dependent(index: GraphIndex) -> set[Variable]:
    """Every variable with a scatter into zeros among its ancestors (or that is one).

    The set may be the index's own: read it, do not change it.
    """
    scatters = index.scatters
    region = index.inc_region
    if len(scatters) == len(index.incs):
        # Every increment is a scatter: everything downstream of one depends on one.
        return index.region_vars
    dependent: set[Variable] = set()
    for node in region:
        if node in scatters or any(i in dependent for i in node.inputs):
            dependent.update(node.outputs)
    return dependent


def source_masks(sources: Mapping[Variable, int], index: GraphIndex) -> dict[Variable, int]:
    """For every variable that depends on one of `sources`, the OR of their bit masks.

    One pass over the nodes in topological order, from the first that outputs
    a source, so the cost is the graph's size however many sources (and
    rules) ask: "which gradients does each update use?" without a walk per
    update.
    """
    masks = dict(sources)
    get = masks.get
    nodes = index.nodes
    starts = {s.owner for s in sources}
    # Nothing before the first source's node depends on a source, unless one is a graph input.
    first = 0
    if None not in starts:
        first = next((k for k, node in enumerate(nodes) if node in starts), len(nodes))
    masked = masks.keys()
    for node in islice(nodes, first, None):
        if masked.isdisjoint(node.inputs):
            # Most nodes: one test in C. With no masked input the loops below change
            # nothing (a source's own mask is in `masks` from the start).
            continue
        # Masks can be thousands of bits wide: OR only when there is a new bit to add.
        mask = 0
        for i in node.inputs:
            m = get(i)
            if m and m != mask:
                mask = mask | m if mask else m
        for out in node.outputs:
            own = sources.get(out)
            if own is not None:
                masks[out] = mask | own
            elif mask:
                masks[out] = mask
    return masks


def depends_on(
    queries: Sequence[tuple[Variable, Collection[Variable]]], index: GraphIndex
) -> list[bool]:
    """For each ``(var, sources)``: whether `var` is, or depends on, one of `sources`.

    A walk up from each `var` ends at the first source it meets, which is
    usually a step or two away (``set_subtensor(rows, rows - d)`` reads `rows`).
    The walks share a budget of a few steps per node of the graph, each step
    charged for the inputs it reads; the queries still open when it runs out
    get one `source_masks` pass. So the cost stays linear in the graph's size
    whatever the queries ask.
    """
    answers: list[bool] = []
    budget = 3 * len(index.nodes)
    for var, sources in queries:
        found = var in sources
        stack, seen = [var], {var}
        while stack and not found and budget > 0:
            owner = stack.pop().owner
            if owner is None:
                continue
            inputs = owner.inputs
            budget -= 1 + len(inputs)
            for i in inputs:
                if i in sources:
                    found = True
                    break
                if i not in seen:
                    seen.add(i)
                    stack.append(i)
        if not found and stack:
            break  # out of budget with this walk unfinished
        answers.append(found)
    rest = queries[len(answers) :]
    if rest:
        # One bit per distinct collection of sources (queries often share one).
        bit_of: dict[int, int] = {}
        bits: dict[Variable, int] = {}
        for _, sources in rest:
            if id(sources) not in bit_of:
                bit = bit_of[id(sources)] = 1 << len(bit_of)
                for s in sources:
                    bits[s] = bits.get(s, 0) | bit
        masks = source_masks(bits, index)
        answers.extend(bool(masks.get(var, 0) & bit_of[id(sources)]) for var, sources in rest)
    return answers


def ancestors(
    roots: Iterable[Variable], stop: Callable[[Variable], bool] | None = None
) -> Iterator[Variable]:
    """Every variable the `roots` depend on, each once; `stop(var)` ends the walk at `var`.

    The one ancestor walk of the rules; `var` itself is still yielded when it stops.
    """
    stack = list(roots)
    seen = set(stack)
    while stack:
        var = stack.pop()
        yield var
        if var.owner is None or (stop is not None and stop(var)):
            continue
        for i in var.owner.inputs:
            if i not in seen:
                seen.add(i)
                stack.append(i)


def value_inputs(node: Apply) -> Sequence[Variable]:
    """The inputs whose values `node` reads, not only their shapes.

    ``Shape(W)`` and ``Shape_i(W)`` read no value of ``W``; ``second(x, y)``
    fills `y` into the shape of `x`.
    """
    op = node.op
    inputs: Sequence[Variable] = node.inputs
    if isa(op, (Shape, Shape_i)):
        return ()
    if isa(getattr(op, "scalar_op", None), (ps.Second,)):
        return inputs[1:]
    return inputs


def row_local(var: Variable, like: Variable) -> bool:
    """Each element of `var` is computed from the same element of its table-shaped inputs.

    True for elementwise ops and broadcasting (not transposing) dimshuffles
    whose output has `like`'s shape. A reduction (a global norm) or a gather
    mixes rows: at a row outside the batch it is not zero, just unknown.
    """
    node = var.owner
    if node is None or var.type.broadcastable != like.type.broadcastable:
        return False
    op = node.op
    role = _ROLES.get(type(op))
    if role is None:
        role = _role(op)
    if role is _DIMSHUFFLE:
        kept = [d for d in op.new_order if d != "x"]
        return kept == sorted(kept)
    return role is _ELEMWISE


# What `row_local` needs to know of an op, by its class (a
# dict lookup: `isinstance` against PyTensor's ABCs is slow in these walks).
_ELEMWISE, _DIMSHUFFLE, _OTHER = "elemwise", "dimshuffle", "other"
_ROLES: dict[type, str] = {}


def _role(op: Any) -> str:
    op_type = type(op)
    role = _ROLES.get(op_type)
    if role is None:
        if issubclass(op_type, Elemwise):
            role = _ELEMWISE
        elif issubclass(op_type, DimShuffle):
            role = _DIMSHUFFLE
        else:
            role = _OTHER
        _ROLES[op_type] = role
    return role


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


# --------------------------------------------------------------------------- #
# Row indices whose repeats write equal values
# --------------------------------------------------------------------------- #
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


# --------------------------------------------------------------------------- #
# Naming tables in messages (the lint's findings, the optimizers' errors)
# --------------------------------------------------------------------------- #
def shape_of(var: Variable) -> tuple[int, ...] | None:
    if isa(var, (SharedVariable,)):
        value = var.get_value(borrow=True)
        # What np.shape reads first, without its call.
        shape = getattr(value, "shape", None)
        return tuple(np.shape(value) if shape is None else shape)
    shape = var.type.shape if hasattr(var.type, "shape") else None
    if shape is not None and all(s is not None for s in shape):
        return tuple(int(s) for s in shape)
    return None


def describe(var: Variable) -> str:
    """```W` (200000x64 float32)`` or ```W` (2-d float32)``."""
    return f"`{var.name or '<unnamed table>'}` {shape_text(var)}"


def shape_text(var: Variable) -> str:
    """``(200000x64 float32)``, or ``(2-d float32)`` when the shape is not known."""
    shape = shape_of(var)
    dtype = getattr(var.type, "dtype", "?")
    dims = "x".join(map(str, shape)) if shape else f"{var.type.ndim}-d"
    return f"({dims} {dtype})"
