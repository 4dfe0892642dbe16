"""Predicates on PyTensor ops and variables: what a node is, and what it reads.

Ops are recognised by class; `isa` and `is_subclass` decide once per type, since
PyTensor's op classes are ABCs whose `isinstance` is slow over large graphs.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import cache
from typing import Any

import numpy as np
import pytensor.scalar as ps
from pytensor.graph.basic import Apply, Constant, Variable
from pytensor.graph.fg import Output
from pytensor.tensor.basic import Alloc, ARange, get_underlying_scalar_constant_value
from pytensor.tensor.elemwise import DimShuffle, Elemwise
from pytensor.tensor.shape import Shape, Shape_i, SpecifyShape
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
def is_subclass(op_type: Any, classes: tuple[type, ...]) -> bool:
    # Op classes use ABCMeta, whose isinstance is slow on graphs of 100k nodes.
    return issubclass(op_type, classes)


def is_inc(node: Apply) -> bool:
    """An (Advanced)IncSubtensor: a write of values at an index."""
    op_type: Any = type(node.op)
    return is_subclass(op_type, INC_OPS)


def has_increment(nodes: Iterable[Apply]) -> bool:
    """Whether any of `nodes` is an increment: without one no rewrite has anything to do."""
    return any(is_inc(node) for node in nodes)


def is_lookup(node: Apply) -> bool:
    """An (Advanced)Subtensor: a read at an index."""
    op_type: Any = type(node.op)
    return is_subclass(op_type, LOOKUP_OPS)


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
    return is_subclass(obj_type, classes)


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


def index_has_mask(node: Apply) -> bool:
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
    return is_term(node) and is_zero(node.inputs[0])


def is_output_node(node: Apply) -> bool:
    """A FunctionGraph's marker of one of its outputs."""
    return isa(node.op, (Output,))


def is_term(node: Apply) -> bool:
    """Whether an increment can be a term of a decomposition."""
    if not is_inc(node):
        return False
    # With repeated indices its meaning differs between backends; leave it opaque.
    return not getattr(node.op, "ignore_duplicates", False) or indices_provably_unique(
        index_of(node), True
    )


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
def linear_kind_of(op_type: Any, scalar_type: Any) -> str | None:
    """Which linear elementwise op a node is, from its classes (cached: ABC checks are slow)."""
    if not issubclass(op_type, Elemwise):
        return None
    return next((k for cls, k in _LINEAR_SCALAR_OPS if issubclass(scalar_type, cls)), None)


def linear_kind(node: Apply) -> str | None:
    """ "add", "sub", "neg", "cast", "mul" or "div" for those elementwise ops, else None."""
    op = node.op
    op_type: Any = type(op)
    scalar_type: Any = type(getattr(op, "scalar_op", None))
    return linear_kind_of(op_type, scalar_type)


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


def strip_wrappers(var: Variable) -> Variable:
    """Look through SpecifyShape, same-dtype casts and fills that do not change values."""
    while var.owner is not None:
        op = var.owner.op
        scalar = getattr(op, "scalar_op", None)
        if isa(op, (SpecifyShape,)) or (
            isa(scalar, (ps.Cast,)) and var.owner.inputs[0].dtype == var.dtype
        ):
            var = var.owner.inputs[0]
        elif isa(scalar, (ps.Second,)):
            var = var.owner.inputs[1]
        else:
            break
    return var
