"""The C row increment (`AdvancedIncRows`) and its CVM-only specialization."""

from __future__ import annotations

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from pytensor.compile.mode import Mode, get_mode
from pytensor.tensor.subtensor import AdvancedIncSubtensor

from subsetgrad.backends import backend_mode
from subsetgrad.backends.cvm import AdvancedIncRows
from tests.backends import steps

pytestmark = pytest.mark.skipif(not pytensor.config.cxx, reason="needs a C compiler")

# The op alone, compiled without rewrites, so the node is exactly the one built.
RAW = Mode(linker="cvm", optimizer=None)


def reference(x: np.ndarray, y: np.ndarray, idx: np.ndarray, set_: bool) -> np.ndarray:
    out = x.copy()
    if set_:
        out[idx] = y
    else:
        np.add.at(out, idx, y)
    return out


def op_fn(x_type, y_type, idx_type, set_: bool = False):  # type: ignore[no-untyped-def]
    x, y, idx = x_type(), y_type(), idx_type()
    out = AdvancedIncRows((0,), set_instead_of_inc=set_)(x, y, idx)
    f = pytensor.function([x, y, idx], out, mode=RAW)
    assert [type(n.op) for n in f.maker.fgraph.apply_nodes] == [AdvancedIncRows]
    return f


def tensor(dtype: str, ndim: int, bcast: tuple[bool, ...] = ()):  # type: ignore[no-untyped-def]
    shape = tuple(1 if b else None for b in bcast) or (None,) * ndim
    return lambda: pt.tensor(dtype=dtype, shape=shape)


@pytest.mark.parametrize("set_", [False, True], ids=["inc", "set"])
@pytest.mark.parametrize("x_dtype", ["float32", "float64"])
@pytest.mark.parametrize("y_dtype", ["float32", "float64"])
@pytest.mark.parametrize("idx_dtype", ["int64", "int32", "int8", "uint8"])
def test_matches_numpy(set_: bool, x_dtype: str, y_dtype: str, idx_dtype: str) -> None:
    rng = np.random.default_rng(0)
    f = op_fn(tensor(x_dtype, 2), tensor(y_dtype, 2), tensor(idx_dtype, 1), set_)
    x = rng.normal(size=(20, 7)).astype(x_dtype)
    cases = [[3, 1, 3, 3, 19, 0], [], [5]]
    if idx_dtype != "uint8":
        cases.append([-1, 4, -20, 19, -1])
    for idx in cases:
        i = np.array(idx, dtype=idx_dtype)
        y = rng.normal(size=(len(idx), 7)).astype(y_dtype)
        np.testing.assert_array_equal(f(x, y, i), reference(x, y, i, set_))


@pytest.mark.parametrize("set_", [False, True], ids=["inc", "set"])
def test_ranks_and_strides(set_: bool) -> None:
    """A 3-D table, a matrix of indices, non-contiguous operands of every kind."""
    rng = np.random.default_rng(1)
    f = op_fn(tensor("float64", 3), tensor("float64", 4), tensor("int64", 2), set_)
    x = rng.normal(size=(4, 9, 5, 2)).transpose(1, 2, 0, 3)[:, :, ::2, 1]  # (9, 5, 2)
    idx = np.array([[0, -1, 0], [8, 3, 0], [0, 4, 4], [1, 1, 1]])[:, ::-1][::2]  # (2, 3)
    y = rng.normal(size=(2, 2, 3, 5, 2))[:, 1].transpose(0, 1, 2, 3)  # (2, 3, 5, 2)
    y = np.asfortranarray(y)
    assert not x.flags.c_contiguous and not idx.flags.c_contiguous
    np.testing.assert_array_equal(f(x, y, idx), reference(x, y, idx, set_))

    f = op_fn(tensor("float32", 2), tensor("float32", 2), tensor("int64", 1), set_)
    x = rng.normal(size=(8, 12)).astype("float32")[:, ::3]
    y = rng.normal(size=(4, 4)).astype("float32").T
    idx = np.array([7, 0, 7, -2, 1, 1, 0, 0])[::2]
    np.testing.assert_array_equal(f(x, y, idx), reference(x, y, idx, set_))


def test_broadcast_y() -> None:
    """A dimension of y typed broadcastable broadcasts; one only 1 at runtime raises."""
    f = op_fn(tensor("float64", 2), tensor("float64", 2, (False, True)), tensor("int64", 1))
    x = np.zeros((5, 3))
    y = np.array([[1.0], [2.0]])
    idx = np.array([4, 4])
    np.testing.assert_array_equal(f(x, y, idx), reference(x, y, idx, False))

    f = op_fn(tensor("float64", 2), tensor("float64", 2), tensor("int64", 1))
    with pytest.raises(ValueError, match="Runtime broadcasting not allowed"):
        f(x, y, idx)
    with pytest.raises(ValueError, match="shape mismatch"):
        f(x, np.ones((2, 2)), idx)


def test_out_of_range_raises_and_writes_nothing() -> None:
    """IndexError like NumPy's, before any write, so an in-place table is untouched."""
    W = pytensor.shared(np.zeros((6, 2)), name="W")
    idx = pt.lvector("idx")
    y = pt.matrix("y")
    f = pytensor.function([idx, y], [], updates={W: pt.inc_subtensor(W[idx], y)}, mode=_mode("CVM"))
    assert _inc_ops(f) == [(AdvancedIncRows, True)]
    with pytest.raises(IndexError, match="index 6 is out of bounds for axis 0 with size 6"):
        f(np.array([0, 1, 6]), np.ones((3, 2)))
    with pytest.raises(IndexError, match="index -7 is out of bounds"):
        f(np.array([0, -7]), np.ones((2, 2)))
    np.testing.assert_array_equal(W.get_value(), 0)


@pytest.mark.parametrize("base", ["CVM", "NUMBA", "FAST_COMPILE"])
def test_backend_mode_keeps_other_modes(base: str) -> None:
    assert backend_mode(base) is get_mode(base)


def _mode(base: str) -> Mode:
    return backend_mode(base).including("subsetgrad")


def _inc_ops(f) -> list[tuple[type, bool]]:  # type: ignore[no-untyped-def]
    return [
        (type(n.op), n.op.inplace)
        for n in f.maker.fgraph.toposort()
        if isinstance(n.op, AdvancedIncSubtensor)
    ]


@pytest.mark.parametrize("kind", ["sgd", "adagrad"])
def test_step_structure_and_in_place(kind: str) -> None:
    """The compiled step has no dense pass and writes into the table's own buffer."""
    f, shared = steps.compile_step(kind, _mode("CVM"))
    incs = _inc_ops(f)
    assert incs and all(cls is AdvancedIncRows and inplace for cls, inplace in incs)
    steps.assert_no_dense_pass(f.maker.fgraph, shared)
    buffers = [s.get_value(borrow=True) for s in shared]
    before = [b.copy() for b in buffers]
    f(*steps.batch(steps.INDICES["repeats"]))
    for s, buf, old in zip(shared, buffers, before, strict=True):
        assert s.get_value(borrow=True) is buf
        assert not np.array_equal(buf, old)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("kind", ["sgd", "adagrad"])
@pytest.mark.parametrize("case", list(steps.INDICES))
def test_step_matches_dense_and_unrewritten(kind: str, case: str, dtype: str) -> None:
    idx = steps.INDICES[case]
    got = steps.run_steps(kind, _mode("CVM"), idx, dtype)
    dense = steps.run_steps(kind, get_mode("CVM"), idx, dtype)
    plain = steps.run_steps(kind, Mode(linker="cvm", optimizer=None), idx, dtype)
    steps.assert_close(got, dense, dtype)
    steps.assert_close(got, plain, dtype)


@pytest.mark.parametrize("base", ["NUMBA", "FAST_COMPILE"])
def test_not_selected_without_c(base: str) -> None:
    """Modes whose linker runs no C code keep the stock op (the rewrite is "cxx_only")."""
    f, _ = steps.compile_step("sgd", get_mode(base).including("subsetgrad"))
    assert not [n for n in f.maker.fgraph.apply_nodes if isinstance(n.op, AdvancedIncRows)]


@pytest.mark.parametrize(
    ("x_dtype", "idx_type"),
    [("float16", pt.lvector), ("int64", pt.lvector), ("float64", pt.bvector)],
)
def test_uncovered_nodes_keep_the_stock_op(x_dtype: str, idx_type) -> None:  # type: ignore[no-untyped-def]
    W = pytensor.shared(np.zeros((5, 2), dtype=x_dtype), name="W")
    idx = idx_type("idx")
    y = pt.matrix("y", dtype=x_dtype)
    inc = pt.inc_subtensor(W[idx], y)
    f = pytensor.function([idx, y], [], updates={W: inc}, mode=_mode("CVM"))
    expected = AdvancedIncSubtensor if x_dtype != "float64" else AdvancedIncRows
    assert [cls for cls, _ in _inc_ops(f)] == [expected]
    f(np.array([1, 1, -1], dtype=idx.dtype), np.ones((3, 2), dtype=x_dtype))
    np.testing.assert_array_equal(W.get_value()[:, 0], [0, 2, 0, 0, 1])
