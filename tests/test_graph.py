"""The shared matcher: zeros, index uniqueness, decomposition limits."""

from __future__ import annotations

import numpy as np
import pytensor.tensor as pt
import pytest

from subsetgrad.graph import GraphIndex, decompose_graph, indices_provably_unique, is_zero


@pytest.mark.parametrize(
    ("index", "unique"),
    [
        (pt.arange(2, 6), True),
        (pt.arange(-1, -4, -1), True),  # -1, -2, -3: distinct rows whenever in range
        (pt.arange(0, -3, -1), False),  # 0, -1, -2: row 0 and row -2 meet in a table of 2
        (pt.arange(-2, 2), False),
        (pt.as_tensor(np.array([3, 1, 2])), True),
        (pt.as_tensor(np.array([3, 1, 3])), False),
        (pt.as_tensor(np.array([1, -1])), False),  # the last row may be row 1
        (pt.lvector(), False),
        (pt.lscalar(), True),
    ],
)
def test_indices_provably_unique(index: pt.TensorVariable, unique: bool) -> None:
    assert indices_provably_unique((index,), advanced=True) is unique


def test_two_constant_arrays_jointly() -> None:
    i = pt.as_tensor(np.array([0, 0, 1]))
    j = pt.as_tensor(np.array([0, 1, 0]))
    assert indices_provably_unique((i, j), advanced=True)
    assert not indices_provably_unique((i, pt.as_tensor(np.array([1, 1, 0]))), advanced=True)


def test_is_zero() -> None:
    W = pt.dmatrix("W")
    assert is_zero(pt.zeros_like(W))
    assert is_zero(pt.zeros((3, 2)))
    assert is_zero(pt.second(W, 0.0))
    assert not is_zero(pt.ones_like(W))
    assert not is_zero(W)


@pytest.mark.parametrize("dtype", ["int64", "uint8", "int8"])
def test_integer_values_are_not_linear(dtype: str) -> None:
    """Integer arithmetic wraps and integer casts truncate: never decomposed."""
    idx = pt.lvector("idx")
    scatter = pt.zeros((4, 3), dtype=dtype)[idx].inc(pt.matrix("v", dtype=dtype))
    out = pt.dmatrix("W") - scatter
    dec = decompose_graph(GraphIndex.from_outputs([out]))
    assert out not in dec.linear
    cast = pt.cast(pt.dmatrix("W") + pt.zeros((4, 3))[idx].inc(pt.dmatrix("v")), "int64")
    dec = decompose_graph(GraphIndex.from_outputs([cast]))
    assert cast not in dec.linear
