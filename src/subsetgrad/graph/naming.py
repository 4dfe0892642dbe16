"""Naming tables in messages: the lint's findings and the optimizers' errors."""

from __future__ import annotations

import math

import numpy as np
from pytensor.compile.sharedvalue import SharedVariable
from pytensor.graph.basic import Variable

from subsetgrad.graph.ops import isa


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


def table_bytes(var: Variable) -> int | None:
    shape = shape_of(var)
    if shape is None:
        return None
    return math.prod(shape) * int(np.dtype(var.type.dtype).itemsize)


def megabytes(n: int | None) -> str:
    if n is None:
        return "an unknown amount"
    if n >= 1e9:
        return f"{n / 1e9:.1f} GB"
    if n >= 1e6:
        return f"{n / 1e6:.1f} MB"
    return f"{n / 1e3:.1f} kB"
