"""Tests of the NumPy optimizer references: against PyMC, and policies against each other."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import pymc.variational.updates as pm_updates
import pytensor
import pytensor.tensor as pt
import pytest
from numpy.typing import NDArray

from tests.optim import reference as ref

# Learning rates large enough that every optimizer moves the table visibly in a few steps.
OVERRIDES: dict[str, dict[str, float]] = {
    "sgd": {"learning_rate": 0.1},
    "momentum": {"learning_rate": 0.1},
    "nesterov_momentum": {"learning_rate": 0.1},
    "adagrad": {"learning_rate": 0.5},
    "rmsprop": {"learning_rate": 0.1},
    "adadelta": {},
    "adam": {"learning_rate": 0.1},
    "adamax": {"learning_rate": 0.1},
}
EXACT_AFTER_FLUSH = [name for name in ref.OPTIMIZERS if name not in ref.ADAPTIVE_MOMENT]
DECAYING = [name for name in ref.OPTIMIZERS if name not in ref.IDENTITY_AT_ZERO]
DTYPES = ["float64", "float32"]
# Tolerance relative to the table's largest entry: rounding of about 30 steps.
TOL = {"float64": 1e-12, "float32": 3e-5}

V, D, B, STEPS = 12, 3, 5, 30


def hyper(name: str) -> dict[str, float]:
    return ref.hyperparameters(name, **OVERRIDES[name])


def schedule(seed: int = 0) -> list[NDArray[np.int64]]:
    """Looked-up rows per step, each batch with a repeat.

    Rows 0-3 are drawn from at every step, rows 4-9 at steps 1-3, rows 4-7 again from step 26,
    rows 10-11 never (`test_schedule_leaves_rows_untouched_for_long` checks the gaps).
    """
    rng = np.random.default_rng(seed)
    batches = []
    for step in range(1, STEPS + 1):
        pool = np.arange(10) if step <= 3 else np.arange(8 if step >= 26 else 4)
        rows = rng.choice(pool, size=B)
        rows[1] = rows[0]
        batches.append(rows)
    return batches


def scatter(rows: NDArray[np.int64], row_grads: NDArray, shape: tuple[int, ...]) -> NDArray:
    """The dense gradient of ``sum(W[rows] * row_grads)``."""
    grad = np.zeros(shape, dtype=row_grads.dtype)
    np.add.at(grad, rows, row_grads)
    return grad


def assert_close(actual: NDArray, expected: NDArray, dtype: str) -> None:
    scale = max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(actual, expected, rtol=0, atol=TOL[dtype] * scale)


Run = tuple[int, NDArray, dict[str, NDArray], NDArray, dict[str, NDArray], NDArray[np.int64]]


def runs(
    name: str, policy: str, dtype: str, scales: NDArray | None = None, seed: int = 0
) -> Iterator[Run]:
    """Step a dense and a sparse run side by side on `schedule`; yield both after each step.

    Yields the step, the dense table and state, the sparse table and state, and the rows.
    """
    rng = np.random.default_rng(seed + 1)
    hy = hyper(name)
    dense = rng.normal(size=(V, D)).astype(dtype)
    sparse = dense.copy()
    dense_state = ref.init_state(name, dense)
    sparse_state = ref.init_state(name, sparse, policy)
    row_scale = np.ones((V, 1)) if scales is None else scales
    for step, rows in enumerate(schedule(seed), start=1):
        row_grads = (row_scale[rows] * rng.normal(size=(B, D))).astype(dtype)
        ref.dense_step(name, dense, dense_state, scatter(rows, row_grads, dense.shape), hy)
        ref.sparse_step(name, policy, sparse, sparse_state, rows, row_grads, step, hy)
        yield step, dense, dense_state, sparse, sparse_state, rows


def final(name: str, policy: str, dtype: str, scales: NDArray | None = None) -> Run:
    """The last of `runs`."""
    *_, last = runs(name, policy, dtype, scales)
    return last


# (a) The dense references are PyMC's updates.


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ref.OPTIMIZERS)
def test_dense_reference_matches_pymc(name: str, dtype: str) -> None:
    rng = np.random.default_rng(1)
    hy = hyper(name)
    table = rng.normal(size=(V, D)).astype(dtype)
    # PyMC gives a float32 table float32 updates only when floatX is float32.
    with pytensor.config.change_flags(floatX=dtype):
        W = pytensor.shared(table.copy(), name="W")
        idx = pt.lvector("idx")
        C = pt.matrix("C", dtype=dtype)
        updates = getattr(pm_updates, name)((W[idx] * C).sum(), [W], **hy)
        pm_step = pytensor.function([idx, C], [], updates=updates, mode="FAST_COMPILE")
    # PyMC creates the state in the order of STATE_KEYS.
    pm_state = [var for var in updates if var is not W and var.ndim == 2]
    pm_counter = [var for var in updates if var.ndim == 0]
    assert len(pm_state) == len(ref.STATE_KEYS[name])
    assert len(pm_counter) == (name in ref.ADAPTIVE_MOMENT)

    tol = 1e-14 if dtype == "float64" else 4e-6
    state = ref.init_state(name, table)
    for rows in schedule()[:8]:
        assert len(np.unique(rows)) < len(rows)
        row_grads = rng.normal(size=(B, D)).astype(dtype)
        pm_step(rows, row_grads)
        ref.dense_step(name, table, state, scatter(rows, row_grads, table.shape), hy)
        np.testing.assert_allclose(W.get_value(), table, rtol=tol, atol=tol)
        for var, key in zip(pm_state, ref.STATE_KEYS[name], strict=True):
            np.testing.assert_allclose(var.get_value(), state[key], rtol=tol, atol=tol)
        for var in pm_counter:
            assert var.get_value() == state["t"]
    assert table.dtype == dtype


def test_pymc_float32_tables_need_float32_floatx() -> None:
    """Why the float32 references round every hyperparameter to float32 first."""
    W = pytensor.shared(np.ones((3, 2), dtype="float32"))
    with pytensor.config.change_flags(floatX="float64"):
        assert pm_updates.sgd((W**2).sum(), [W], learning_rate=0.1)[W].dtype == "float64"
    with pytensor.config.change_flags(floatX="float32"):
        assert pm_updates.sgd((W**2).sum(), [W], learning_rate=0.1)[W].dtype == "float32"


# (b) Catch-up after a flush is the dense run.


def test_schedule_leaves_rows_untouched_for_long() -> None:
    last_seen = np.zeros(V, dtype=np.int64)
    longest = np.zeros(V, dtype=np.int64)
    for step, rows in enumerate(schedule(), start=1):
        longest[rows] = np.maximum(longest[rows], step - last_seen[rows])
        last_seen[rows] = step
        assert len(np.unique(rows)) < len(rows)
    assert (longest[4:8] >= 20).all()
    assert (STEPS - last_seen[8:10] >= 20).all()
    assert (last_seen[10:] == 0).all()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", EXACT_AFTER_FLUSH)
def test_catchup_after_flush_equals_dense(name: str, dtype: str) -> None:
    for step, dense, dense_state, sparse, sparse_state, rows in runs(name, "catchup", dtype):
        # A touched row has caught up, then taken this step as the dense run did.
        assert (sparse_state["last"][rows] == step).all()
        assert_close(sparse[rows], dense[rows], dtype)
        for key in ref.STATE_KEYS[name]:
            assert_close(sparse_state[key][rows], dense_state[key][rows], dtype)
    ref.flush(name, sparse, sparse_state, STEPS, hyper(name))
    assert (sparse_state["last"] == STEPS).all()
    assert_close(sparse, dense, dtype)
    for key in ref.STATE_KEYS[name]:
        assert_close(sparse_state[key], dense_state[key], dtype)


def test_catchup_rejects_a_step_already_taken() -> None:
    table = np.zeros((4, 2))
    hy = ref.hyperparameters("momentum")
    state = ref.init_state("momentum", table, "catchup")
    ref.sparse_step("momentum", "catchup", table, state, np.array([1]), np.ones((1, 2)), 3, hy)
    with pytest.raises(ValueError, match="not after"):
        ref.sparse_step("momentum", "catchup", table, state, np.array([1]), np.ones((1, 2)), 3, hy)
    with pytest.raises(ValueError, match="catch-up state"):
        ref.flush("momentum", table, ref.init_state("momentum", table, "lazy"), 3, hy)


# (c) Adam's and Adamax's catch-up stays within its documented bound.


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(ref.ADAPTIVE_MOMENT))
def test_adaptive_catchup_after_flush_within_bound(name: str, dtype: str) -> None:
    # The rows left untouched longest (4-9) get gradients of a size where eps matters most.
    scales = np.array([1, 1e-3, 1e-6, 1e-8, 1e-9, 3e-9, 1e-8, 3e-8, 1e-7, 1e-6, 1, 1])[:, None]
    _, dense, dense_state, sparse, sparse_state, _ = final(name, "catchup", dtype, scales)
    ref.flush(name, sparse, sparse_state, STEPS, hyper(name))
    bound = sparse_state["drift_bound"]
    tol = 1e-14 if dtype == "float64" else TOL[dtype]
    rounding = tol * max(1.0, float(np.abs(dense).max()))
    assert (np.abs(sparse - dense) <= bound + rounding).all()
    for key in ref.STATE_KEYS[name]:
        assert_close(sparse_state[key], dense_state[key], dtype)
    if dtype == "float64":
        assert bound.max() > 100 * rounding  # the run does reach the eps regime


def adversarial_gap(
    name: str, t0: int, k: int, seed: int
) -> tuple[NDArray, dict[str, NDArray], NDArray]:
    """Rows and state after `t0` steps of growing gradients near eps, and the dense rows after
    `k` more steps with no gradient.

    Gradients growing by ``b2/b1`` a step give the largest ``|m|/s``.
    """
    hy = ref.hyperparameters(name)
    rng = np.random.default_rng(seed)
    scales = 10.0 ** rng.uniform(-10, -6, size=(40, 1))
    table = rng.normal(size=(40, 2))
    state = ref.init_state(name, table)
    for s in range(t0):
        growth = (hy["beta2"] / hy["beta1"]) ** (s - t0)
        ref.dense_step(name, table, state, scales * growth * np.ones_like(table), hy)
    start, start_state = table.copy(), {key: state[key].copy() for key in ref.STATE_KEYS[name]}
    for _ in range(k):
        ref.dense_step(name, table, state, np.zeros_like(table), hy)
    return start, start_state, table


@pytest.mark.parametrize("name", sorted(ref.ADAPTIVE_MOMENT))
def test_eps_expansion_errors_within_bounds(name: str) -> None:
    """Every order's error is within its bound, and each order is far better than the last."""
    hy = ref.hyperparameters(name)
    lr = hy["learning_rate"]
    worst = [0.0] * 5
    for seed, (t0, k) in enumerate([(30, 20), (100, 50), (5, 300)]):
        start, start_state, dense = adversarial_gap(name, t0, k, seed)
        for order in range(5):
            caught, _, bound = ref.catch_up(
                name, start, start_state, np.full(40, t0), np.full(40, k), hy, order=order
            )
            error = np.abs(caught - dense)
            assert (error <= bound + 1e-15 * (1 + k)).all()
            assert bound.max() <= ref.worst_drift_bound(name, hy, order) * lr
            worst[order] = max(worst[order], float(error.max()) / lr)
    assert all(worst[n + 1] < worst[n] / 10 for n in range(4))
    # The cases come near the worst case: the bound is not loose.
    assert worst[ref.CATCHUP_ORDER] > ref.worst_drift_bound(name, hy) / 10


@pytest.mark.parametrize(
    ("name", "ratio", "bounds"),
    [
        ("adam", 7.27, [8.3e-2, 4.7e-4, 4.9e-6, 7.4e-8, 1.5e-9]),
        ("adamax", 1.01, [3.7e-2, 3.2e-4, 6.2e-6, 1.8e-7, 7.4e-9]),
    ],
)
def test_documented_bounds(name: str, ratio: float, bounds: list[float]) -> None:
    hy = ref.hyperparameters(name)
    assert ref.moment_ratio(name, hy) == pytest.approx(ratio, abs=0.005)
    for order, figure in enumerate(bounds):
        assert ref.worst_drift_bound(name, hy, order) == pytest.approx(figure, rel=0.05)
    assert ref.CATCHUP_ORDER == 3
    assert ref.worst_drift_bound(name, hy) == ref.worst_drift_bound(name, hy, 3)


# (d) Lazy is the dense run exactly where a zero gradient is the identity.


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(ref.IDENTITY_AT_ZERO))
@pytest.mark.parametrize("policy", ["exact", "lazy"])
def test_lazy_equals_dense_at_identity(name: str, policy: str, dtype: str) -> None:
    for _, dense, dense_state, sparse, sparse_state, _ in runs(name, policy, dtype):
        np.testing.assert_array_equal(sparse, dense)
        for key in ref.STATE_KEYS[name]:
            np.testing.assert_array_equal(sparse_state[key], dense_state[key])


@pytest.mark.parametrize("name", DECAYING)
def test_lazy_differs_from_dense_when_zero_gradients_act(name: str) -> None:
    _, dense, dense_state, sparse, sparse_state, _ = final(name, "lazy", "float64")
    # The state of rows 8 and 9 has aged 27 steps in the dense run and not at all here.
    stale = slice(8, 10)
    differs = [
        not np.allclose(sparse_state[k][stale], dense_state[k][stale]) for k in ref.STATE_KEYS[name]
    ]
    assert any(differs)
    if name != "rmsprop" and name != "adadelta":
        assert not np.allclose(sparse[stale], dense[stale])  # and their parameters drifted
    with pytest.raises(ValueError, match="'exact' does not apply"):
        ref.init_state(name, dense, "exact")


def test_lazy_adam_uses_the_global_step() -> None:
    """A row first touched at step 10 gets step 10's bias correction, as LazyAdam's does."""
    hy = ref.hyperparameters("adam")
    rows, grads = np.array([2]), np.ones((1, 3))
    late = np.zeros((4, 3))
    ref.sparse_step("adam", "lazy", late, ref.init_state("adam", late, "lazy"), rows, grads, 10, hy)
    first = np.zeros((4, 3))
    ref.sparse_step(
        "adam", "lazy", first, ref.init_state("adam", first, "lazy"), rows, grads, 1, hy
    )
    expected = -ref.rate("adam", 10, hy, np.dtype("float64")) * 0.1 / (math.sqrt(1e-3) + 1e-8)
    assert late[2] == pytest.approx(np.full(3, expected), rel=1e-12)
    assert not np.allclose(late, first)


# (e) Repeated indices: sum first, or the update is wrong.


def naive_lazy_rmsprop(
    table: NDArray, accu: NDArray, rows: NDArray, row_grads: NDArray, hy: dict[str, float]
) -> None:
    """Gather, update each occurrence on its own, scatter: ``inc`` the parameters, ``set``
    the accumulator. What a lazy update built from the lookup's gradient rows does."""
    lr, rho, eps = hy["learning_rate"], hy["rho"], hy["epsilon"]
    new_accu = rho * accu[rows] + (1 - rho) * row_grads**2
    np.add.at(table, rows, -(lr * row_grads / np.sqrt(new_accu + eps)))
    accu[rows] = new_accu


def test_naive_lazy_rmsprop_with_a_repeated_index_is_wrong() -> None:
    hy = ref.hyperparameters("rmsprop", learning_rate=0.1)
    rows = np.array([3, 3])
    row_grads = np.ones((2, 1))

    naive, naive_accu = np.ones((5, 1)), np.zeros((5, 1))
    naive_lazy_rmsprop(naive, naive_accu, rows, row_grads, hy)

    lazy = np.ones((5, 1))
    lazy_state = ref.init_state("rmsprop", lazy, "lazy")
    ref.sparse_step("rmsprop", "lazy", lazy, lazy_state, rows, row_grads, 1, hy)

    dense = np.ones((5, 1))
    dense_state = ref.init_state("rmsprop", dense)
    ref.dense_step("rmsprop", dense, dense_state, scatter(rows, row_grads, dense.shape), hy)

    # Both occurrences take a full step of lr/sqrt(1-rho) = 0.316: 1 - 2*0.316.
    assert naive[3, 0] == pytest.approx(0.368, abs=5e-4)
    assert naive_accu[3, 0] == pytest.approx(0.1)
    # The summed gradient 2 takes one step of 0.316: 1 - 0.316, with accu = 0.1 * 2**2.
    assert lazy[3, 0] == pytest.approx(0.684, abs=5e-4)
    assert lazy_state["accu"][3, 0] == pytest.approx(0.4)
    # On a first step, lazy is the dense run everywhere.
    np.testing.assert_array_equal(lazy, dense)
    np.testing.assert_array_equal(lazy_state["accu"], dense_state["accu"])


@pytest.mark.parametrize("name", ref.OPTIMIZERS)
def test_sparse_step_sums_repeats_first(name: str) -> None:
    """Repeated rows give the same update as their summed gradient given once."""
    hy = hyper(name)
    rng = np.random.default_rng(3)
    table = rng.normal(size=(6, 2))
    grads = rng.normal(size=(4, 2))
    repeated, once = table.copy(), table.copy()
    repeated_state = ref.init_state(name, repeated, "lazy")
    once_state = ref.init_state(name, once, "lazy")
    ref.sparse_step(name, "lazy", repeated, repeated_state, np.array([4, 1, 4, 4]), grads, 1, hy)
    summed = np.stack([grads[1], grads[0] + grads[2] + grads[3]])
    ref.sparse_step(name, "lazy", once, once_state, np.array([1, 4]), summed, 1, hy)
    np.testing.assert_allclose(repeated, once, rtol=1e-15, atol=1e-15)
    assert not np.allclose(repeated[4], table[4])
