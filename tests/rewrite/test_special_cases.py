"""Beyond the basic grid: tables used twice, mixed dtypes, and where the rewrite must not fire."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from pytensor.compile.mode import Mode

import subsetgrad
from tests.cases import TABLE, V, cost_of

REWRITTEN = Mode(linker="py", optimizer="fast_run").including("subsetgrad")
REFERENCE = Mode(linker="py", optimizer=None)
IDX = np.array([3, 1, 3, -1, 7, 3])

Builder = Callable[[Any, Any], tuple[list[Any], list[Any], Any]]


def run(build: Builder, mode: Mode, dtype: str = "float64") -> tuple[np.ndarray, list[Any]]:
    """Compile ``build(W, idx) -> (extra inputs, extra outputs, new W)`` and take one step."""
    W = pytensor.shared(TABLE.astype(dtype), name="W")
    idx = pt.lvector("idx")
    extra_in, outputs, new_W = build(W, idx)
    f = pytensor.function(
        [idx, *extra_in], outputs, updates={W: new_W}, mode=mode, on_unused_input="ignore"
    )
    values = [np.float64(0.05)] * len(extra_in)
    out = f(IDX, *values)
    return W.get_value(), out


def fires(
    build: Builder, dtype: str = "float64", rtol: float = 1e-12, fired: bool = True
) -> np.ndarray:
    got, got_out = run(build, REWRITTEN, dtype)
    assert (subsetgrad.counters["subset_update"] >= 1) == fired
    want, want_out = run(build, REFERENCE, dtype)
    assert got.dtype == want.dtype == np.dtype(dtype)
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol)
    for a, b in zip(got_out, want_out, strict=True):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol)
    return got


def leaves_alone(build: Builder) -> None:
    got, _ = run(build, REWRITTEN)
    assert subsetgrad.counters["subset_update"] == 0
    want, _ = run(build, REFERENCE)
    np.testing.assert_allclose(got, want, rtol=1e-12)


def grad(W: Any, idx: Any) -> Any:
    return pytensor.grad(cost_of(W[idx]), W)


# -- fires, exactly ------------------------------------------------------------------------------
def test_two_lookups_of_one_table_word2vec() -> None:
    def build(W: Any, idx: Any) -> Any:
        ctx = idx[::-1]
        cost = -pt.log(pt.sigmoid((W[idx] * W[ctx]).sum(axis=1))).sum()
        g = pytensor.grad(cost, W)
        return [], [], W - 0.1 * g

    fires(build)


def test_sum_of_two_gradients() -> None:
    def build(W: Any, idx: Any) -> Any:
        g_a = pytensor.grad(cost_of(W[idx]), W)
        g_b = pytensor.grad(cost_of(W[idx[:2]] * 2), W)
        return [], [], W - 0.1 * (g_a + g_b)

    fires(build)


def test_tied_embeddings_stay_exact() -> None:
    """W is both looked up and used densely (``h @ W.T``): the dense gradient part stays."""

    def build(W: Any, idx: Any) -> Any:
        h = pt.tanh(W[idx])
        logits = h @ W.T
        cost = pt.sum(pt.logsumexp(logits, axis=1))
        return [], [], W - 0.1 * pytensor.grad(cost, W)

    fires(build)


@pytest.mark.parametrize("where", ["inside", "outside"])
def test_float32_table_float64_learning_rate(where: str) -> None:
    def build(W: Any, idx: Any) -> Any:
        lr = pt.dscalar("lr")
        g = grad(W, idx)
        if where == "inside":
            return [lr], [], W - pt.cast(lr * g, "float32")
        return [lr], [], pt.cast(W - lr * g, "float32")

    fires(build, dtype="float32", rtol=1e-6)


def test_increment_on_a_nonzero_base_moves_outward() -> None:
    def build(W: Any, idx: Any) -> Any:
        shifted = pt.inc_subtensor(pt.ones_like(W)[idx], W[idx] ** 2)
        return [], [], W - 0.1 * shifted

    fires(build)


def test_gradient_also_returned() -> None:
    def build(W: Any, idx: Any) -> Any:
        g = grad(W, idx)
        return [], [g], W - 0.1 * g

    fires(build)


def test_unique_set_into_zeros_counts_as_increment() -> None:
    def build(W: Any, idx: Any) -> Any:
        written = pt.set_subtensor(pt.zeros_like(W)[pt.arange(2, 6)], W[2:6] ** 2)
        return [], [], W - 0.1 * written

    fires(build)


def test_per_row_scale_is_gathered() -> None:
    def build(W: Any, idx: Any) -> Any:
        rate = pytensor.shared(np.linspace(0.1, 1.0, V)[:, None], shape=(None, 1), name="rate")
        return [], [], W - rate * grad(W, idx)

    fires(build)


# -- leaves alone -------------------------------------------------------------------------------
def test_set_with_repeated_indices() -> None:
    def build(W: Any, idx: Any) -> Any:
        written = pt.set_subtensor(pt.zeros_like(W)[idx], W[idx] ** 2)
        return [], [], W - 0.1 * written

    leaves_alone(build)


def test_set_of_old_rows_plus_delta() -> None:
    def build(W: Any, idx: Any) -> Any:
        return [], [], pt.set_subtensor(W[idx], W[idx] - 0.1 * W[idx] ** 2)

    leaves_alone(build)


def test_hand_written_subset_update() -> None:
    def build(W: Any, idx: Any) -> Any:
        rows = W[idx]
        return [], [], pt.inc_subtensor(rows, -0.1 * pytensor.grad(cost_of(rows), rows))

    leaves_alone(build)


def test_ignore_duplicates_increment() -> None:
    def build(W: Any, idx: Any) -> Any:
        written = pt.inc_subtensor(pt.zeros_like(W)[idx], W[idx] ** 2, ignore_duplicates=True)
        return [], [], W - 0.1 * written

    leaves_alone(build)


@pytest.mark.parametrize(
    "expr",
    [lambda W, g: W - 0.1 * g * g, lambda W, g: W - pt.sqrt(g**2), lambda W, g: W - pt.exp(g)],
    ids=["g*g", "sqrt(g**2)", "exp(g)"],
)
def test_nonlinear_in_the_gradient(expr: Callable[[Any, Any], Any]) -> None:
    leaves_alone(lambda W, idx: ([], [], expr(W, grad(W, idx))))


def test_scatter_broadcast_by_the_update() -> None:
    def build(W: Any, idx: Any) -> Any:
        b = pytensor.shared(np.ones((V, 1)), shape=(None, 1), name="b")
        g_b = pytensor.grad(cost_of(b[idx]), b)
        return [], [], W - 0.1 * g_b

    leaves_alone(build)


def test_gradient_without_a_base() -> None:
    W = pytensor.shared(TABLE, name="W")
    idx = pt.lvector("idx")
    f = pytensor.function([idx], -0.1 * grad(W, idx), mode=REWRITTEN)
    assert subsetgrad.counters["subset_update"] == 0
    want = pytensor.function([idx], -0.1 * grad(W, idx), mode=REFERENCE)(IDX)
    np.testing.assert_allclose(f(IDX), want)


def test_integer_cast_of_the_update() -> None:
    """``int(W + s)`` is not ``int(W) + int(s)``: left alone, numbers as the dense graph."""
    W = pt.dmatrix("W")
    idx = pt.lvector("idx")
    v = pt.dmatrix("v")
    out = pt.cast(W + pt.zeros_like(W)[idx].inc(v), "int64")
    got = pytensor.function([W, idx, v], out, mode=REWRITTEN)(
        np.full((2, 1), 0.6), np.array([0]), np.array([[0.6]])
    )
    assert subsetgrad.counters["subset_update"] == 0
    np.testing.assert_array_equal(got, [[1], [0]])


def test_unsigned_scatter_is_left_alone() -> None:
    W = pt.dmatrix("W")
    idx = pt.lvector("idx")
    vu = pt.matrix("vu", dtype="uint8")
    out = W - pt.zeros((2, 3), dtype="uint8")[idx].inc(vu)
    got = pytensor.function([W, idx, vu], out, mode=REWRITTEN)(
        np.zeros((2, 3)), np.array([0]), np.full((1, 3), 5, dtype="uint8")
    )
    assert subsetgrad.counters["subset_update"] == 0
    np.testing.assert_array_equal(got[0], [-5, -5, -5])
