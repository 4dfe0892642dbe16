"""`sparse_updates` against the NumPy references: every optimizer, policy and dtype."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pymc.variational.updates as pm_updates
import pytensor
import pytensor.tensor as pt
import pytest
from pytensor.graph.traversal import ancestors
from pytensor.tensor.basic import Alloc, AllocEmpty

import subsetgrad
from subsetgrad.graph import is_inc
from subsetgrad.optim import SparseUpdateError, catchup, sparse_updates
from tests.optim import reference as ref
from tests.optim.test_reference import (
    DTYPES,
    STEPS,
    TOL,
    B,
    D,
    V,
    assert_close,
    hyper,
    schedule,
)

VALID = [
    *((name, "exact") for name in sorted(ref.IDENTITY_AT_ZERO)),
    *((name, "lazy") for name in ref.OPTIMIZERS),
    *((name, "catchup") for name in ref.OPTIMIZERS),
]
FAST = "FAST_COMPILE"

Build = Callable[[Any, Any, dict[str, float]], dict[Any, Any]]


def pymc_updates(name: str) -> Build:
    def build(loss: Any, W: Any, hy: dict[str, float]) -> dict[Any, Any]:
        return dict(getattr(pm_updates, name)(loss, [W], **hy))

    return build


def handwritten_updates(name: str) -> Build:
    """The optimizer as a user writes it: textbook forms, not PyMC's."""

    def build(loss: Any, W: Any, hy: dict[str, float]) -> dict[Any, Any]:
        g = pytensor.grad(loss, W)
        lr = hy["learning_rate"]
        zeros = np.zeros_like(W.get_value())
        if name == "momentum":
            v = pytensor.shared(zeros, name="velocity")
            new_v = hy["momentum"] * v - lr * g
            return {v: new_v, W: W + new_v}
        if name == "adagrad":
            acc = pytensor.shared(zeros, name="acc")
            new_acc = acc + g**2
            return {acc: new_acc, W: W - lr * g / pt.sqrt(new_acc + hy["epsilon"])}
        if name == "rmsprop":
            acc = pytensor.shared(zeros, name="acc")
            rho = hy["rho"]
            new_acc = rho * acc + (1 - rho) * g**2
            return {acc: new_acc, W: W - lr * g / pt.sqrt(new_acc + hy["epsilon"])}
        if name == "adam":
            m = pytensor.shared(zeros, name="m")
            v = pytensor.shared(zeros, name="v")
            t = pytensor.shared(np.asarray(0.0, dtype=zeros.dtype), name="t")
            b1, b2 = hy["beta1"], hy["beta2"]
            t_new = t + 1
            a = lr * pt.sqrt(1 - b2**t_new) / (1 - b1**t_new)
            new_m = b1 * m + (1 - b1) * g
            new_v = b2 * v + (1 - b2) * g**2
            new_W = W - a * new_m / (pt.sqrt(new_v) + hy["epsilon"])
            return {t: t_new, m: new_m, v: new_v, W: new_W}
        raise ValueError(name)

    return build


HANDWRITTEN = ["momentum", "adagrad", "rmsprop", "adam"]


def compile_run(
    build: Build, name: str, policy: str, dtype: str, mode: str = FAST
) -> tuple[Callable[..., Any], Callable[[], Any] | None, Any, list[Any], Any]:
    """Compile the sparse step (and flush) of `build`'s optimizer on a V x D table."""
    table = np.random.default_rng(1).normal(size=(V, D)).astype(dtype)
    with pytensor.config.change_flags(floatX=dtype):
        W = pytensor.shared(table, name="W")
        idx = pt.lvector("idx")
        C = pt.matrix("C", dtype=dtype)
        updates = build((W[idx] * C).sum(), W, hyper(name))
        result = sparse_updates(updates, policy)
        step = pytensor.function([idx, C], [], updates=result.updates, mode=mode)
        flush = pytensor.function([], [], updates=result.flush, mode=mode) if result.flush else None
    states = [var for var in updates if var is not W and var.type.ndim == 2]
    return step, flush, W, states, result


def check_against_reference(
    build: Build,
    name: str,
    policy: str,
    dtype: str,
    mode: str = FAST,
    steps: int = STEPS,
    start: int = 0,
) -> None:
    """Run `steps` steps, the optimizer's step counter (Adam's) starting at `start`."""
    step, flush, W, states, result = compile_run(build, name, policy, dtype, mode)
    hy = hyper(name)
    table = W.get_value().copy()
    dense = table.copy()
    sparse_state = ref.init_state(name, table, policy)
    dense_state = ref.init_state(name, dense)
    if start:
        (counter,) = [v for v in result.updates if v.type.ndim == 0 and v is not result.step]
        counter.set_value(np.asarray(start, dtype=counter.type.dtype))
        dense_state["t"][...] = start
        if policy == "catchup":
            sparse_state["last"][:] = start
    rng = np.random.default_rng(2)
    assert len(states) == len(ref.STATE_KEYS[name])
    for n, rows in enumerate(schedule()[:steps], start=start + 1):
        row_grads = rng.normal(size=(B, D)).astype(dtype)
        step(rows, row_grads)
        ref.sparse_step(name, policy, table, sparse_state, rows, row_grads, n, hy)
        grad = np.zeros_like(dense)
        np.add.at(grad, rows, row_grads)
        ref.dense_step(name, dense, dense_state, grad, hy)
        assert_close(W.get_value(), table, dtype)
        for var, key in zip(states, ref.STATE_KEYS[name], strict=True):
            assert_close(var.get_value(), sparse_state[key], dtype)
        if policy == "exact":
            assert_close(W.get_value(), dense, dtype)
    if policy == "catchup":
        assert result.step is not None and result.step.get_value() == steps
        if flush is not None:
            flush()
        # After the flush the tables are the dense run's.
        assert_close(W.get_value(), dense, dtype)
        for var, key in zip(states, ref.STATE_KEYS[name], strict=True):
            assert_close(var.get_value(), dense_state[key], dtype)
        # A second flush has nothing left to do.
        before = W.get_value().copy()
        if flush is not None:
            flush()
        np.testing.assert_array_equal(W.get_value(), before)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("name", "policy"), VALID, ids=[f"{n}-{p}" for n, p in VALID])
def test_pymc_optimizers_match_the_reference(name: str, policy: str, dtype: str) -> None:
    check_against_reference(pymc_updates(name), name, policy, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("policy", ["lazy", "catchup"])
@pytest.mark.parametrize("name", HANDWRITTEN)
def test_handwritten_optimizers_match_the_reference(name: str, policy: str, dtype: str) -> None:
    check_against_reference(handwritten_updates(name), name, policy, dtype)


@pytest.mark.parametrize(
    ("name", "policy"),
    [("adagrad", "exact"), ("rmsprop", "catchup"), ("adam", "lazy"), ("adamax", "catchup")],
)
@pytest.mark.parametrize("mode", ["NUMBA", "CVM"])
def test_compiled_backends_match_the_reference(name: str, policy: str, mode: str) -> None:
    check_against_reference(pymc_updates(name), name, policy, "float32", mode, steps=8)


def test_catchup_defers_idle_rows_until_flush() -> None:
    """Rows 10 and 11 are never looked up; rows 8 and 9 only in steps 1-3."""
    step, flush, W, _, _ = compile_run(pymc_updates("momentum"), "momentum", "catchup", "float64")
    start = W.get_value().copy()
    rng = np.random.default_rng(2)
    for rows in schedule():
        step(rows, rng.normal(size=(B, D)))
    before_flush = W.get_value().copy()
    # Never-touched rows have not moved, and have no velocity to drift with.
    np.testing.assert_array_equal(before_flush[10:], start[10:])
    assert flush is not None
    flush()
    after = W.get_value()
    np.testing.assert_array_equal(after[10:], start[10:])
    # Rows idle since step 3 kept their velocity: the flush applies 27 steps of drift.
    assert np.abs(after[8:10] - before_flush[8:10]).min() > 1e-6


@pytest.mark.parametrize("name", sorted(set(ref.OPTIMIZERS) - ref.IDENTITY_AT_ZERO))
def test_exact_refuses_updates_that_act_at_zero_gradient(name: str) -> None:
    W = pytensor.shared(np.ones((V, D)), name="emb")
    idx = pt.lvector("idx")
    updates = getattr(pm_updates, name)((W[idx] ** 2).sum(), [W])
    with pytest.raises(SparseUpdateError, match=r"'exact' does not hold for .*emb.*'lazy'"):
        sparse_updates(updates, "exact")


def bias_horizon(name: str, dtype: str) -> int:
    """The first step from which the bias-corrected rate no longer changes."""
    rates = ref.rate(name, np.arange(1, 1 << 17), hyper(name), np.dtype(dtype))
    return int(np.flatnonzero(rates != rates[-1])[-1]) + 1


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(ref.ADAPTIVE_MOMENT))
@pytest.mark.parametrize("where", ["middle", "across", "after"])
def test_adaptive_catchup_where_the_bias_correction_runs_out(
    name: str, dtype: str, where: str
) -> None:
    """Gaps where the rate still changes a little, that end after it settles, long after."""
    horizon = bias_horizon(name, dtype)
    start = {"middle": horizon // 2, "across": horizon - 15, "after": 1_000_000}[where]
    check_against_reference(pymc_updates(name), name, "catchup", dtype, start=start)


@pytest.mark.parametrize("name", sorted(ref.ADAPTIVE_MOMENT))
def test_adaptive_catchup_within_the_documented_bound_near_eps(name: str) -> None:
    """Gradients of 1e-9 to 1e-6 on the rows left idle: where the eps expansion is cut."""
    scales = np.array([1, 1e-3, 1e-6, 1e-8, 1e-9, 3e-9, 1e-8, 3e-8, 1e-7, 1e-6, 1, 1])[:, None]
    step, flush, W, _, _ = compile_run(pymc_updates(name), name, "catchup", "float64")
    hy = hyper(name)
    dense = W.get_value().copy()
    dense_state = ref.init_state(name, dense)
    bounded, bounded_state = dense.copy(), ref.init_state(name, dense, "catchup")
    rng = np.random.default_rng(2)
    for n, rows in enumerate(schedule(), start=1):
        row_grads = scales[rows] * rng.normal(size=(B, D))
        step(rows, row_grads)
        grad = np.zeros_like(dense)
        np.add.at(grad, rows, row_grads)
        ref.dense_step(name, dense, dense_state, grad, hy)
        ref.sparse_step(name, "catchup", bounded, bounded_state, rows, row_grads, n, hy)
    assert flush is not None
    flush()
    ref.flush(name, bounded, bounded_state, STEPS, hy)
    bound = bounded_state["drift_bound"]
    rounding = 1e-14 * max(1.0, float(np.abs(dense).max()))
    assert (np.abs(W.get_value() - dense) <= bound + rounding).all()
    assert bound.max() > 100 * rounding  # the run does reach the eps regime


def long_gap_flush(name: str, dtype: str, gaps: np.ndarray, now: int, steps: int) -> Any:
    """Flush a table whose row ``i`` was last touched ``gaps[i]`` steps ago; returns it.

    `now` is the optimizer's step counter, `steps` the catch-up's; the state is random.
    """
    rng = np.random.default_rng(3)
    shape = (len(gaps), 4)
    with pytensor.config.change_flags(floatX=dtype):
        W = pytensor.shared(rng.normal(size=shape).astype(dtype), name="W")
        idx = pt.lvector("idx")
        updates = getattr(pm_updates, name)((W[idx] ** 2).sum(), [W], **hyper(name))
        result = sparse_updates(updates, "catchup")
        flush = pytensor.function([], [], updates=result.flush, mode=FAST)
    m, x = (v for v in updates if v is not W and v.type.ndim == 2)
    # Moments from 1e-8 to 1 with |m| / h below 1, as gradients leave them.
    moment = rng.normal(size=shape) * 10.0 ** rng.integers(-8, 1, shape)
    norm = np.abs(moment) * (1 + rng.random(shape))
    m.set_value(moment.astype(dtype))
    x.set_value((norm**2 if name == "adam" else norm).astype(dtype))
    (counter,) = [v for v in updates if v.type.ndim == 0]
    counter.set_value(np.asarray(now, dtype=counter.type.dtype))
    assert result.step is not None
    result.step.set_value(np.int64(steps))
    (last,) = [v for v in result.flush if v.type.ndim == 1]
    last.set_value(steps - gaps)
    before = (W.get_value(), m.get_value(), x.get_value())
    flush()
    return before, (W.get_value(), m.get_value(), x.get_value())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(ref.ADAPTIVE_MOMENT))
def test_adaptive_flush_after_long_gaps(
    name: str, dtype: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The flush looks per-row coefficients up by gap: every kind of gap, against the reference
    and against computing them row by row.

    Gaps up to where the fades underflow have an entry each; longer ones share one entry,
    except the last `horizon` steps of the counter (the rate's warm-up) and gaps longer
    than the counter has run.
    """
    horizon = bias_horizon(name, dtype)
    # Near where the fades underflow (7,363 for Adam, 7,509 for Adamax): gaps 400 either
    # side of it straddle both.
    settled = 7_500
    now = horizon + 3 * settled
    gaps = np.array(
        [
            *(0, 1, 2, 17, 700, settled - 400, settled + 400, 2 * settled, now - horizon - 1),
            *(now - horizon, now - horizon + 1, now - horizon // 2, now - 3, now - 1, now),
        ]
    )
    before, tabled = long_gap_flush(name, dtype, gaps, now, steps=now + 40)
    hy = hyper(name)
    p, m, x = (b.copy() for b in before)
    second = "v" if name == "adam" else "u"
    _, _, bound = ref.catch_up(name, p, {"m": m, second: x}, now - gaps, gaps, hy)
    # Order 10: the eps expansion as good as exact, so the bound of order 3 applies.
    expected, state, _ = ref.catch_up(name, p, {"m": m, second: x}, now - gaps, gaps, hy, 10)
    assert bound is not None
    rounding = TOL[dtype] * max(1.0, float(np.abs(expected).max()))
    assert (np.abs(tabled[0] - expected) <= bound + rounding).all()
    assert_close(tabled[1], state["m"], dtype)
    assert_close(tabled[2], state[second], dtype)
    assert not np.array_equal(tabled[0], before[0])

    # Gaps longer than the counter (it started after the catch-up's step) included.
    longer = np.concatenate([gaps, [now + 1, now + 40]])
    _, tabled = long_gap_flush(name, dtype, longer, now, steps=now + 40)
    monkeypatch.setattr(catchup, "_MAX_TABLE", 0)
    _, per_row = long_gap_flush(name, dtype, longer, now, steps=now + 40)
    for a, b in zip(tabled, per_row, strict=True):
        # The same formulas, computed once per gap (bit for bit here; a constant rate's
        # table is folded by NumPy and agrees to rounding).
        np.testing.assert_allclose(a, b, rtol=1e-12 if dtype == "float64" else 1e-6)


def adam_by_hand(
    rate: Callable[[Any], Any],
    beta1: float = 0.9,
    beta2: float = 0.999,
    norm: Callable[[Any], Any] = pt.sqrt,
    W: Any = None,
    idx: Any = None,
    C: Any = None,
) -> Any:
    """A hand-written Adam on ``sum(W[idx] * C)`` whose step size is `rate(t)`."""
    W = pytensor.shared(np.ones((V, D)), name="emb") if W is None else W
    idx = pt.lvector("idx") if idx is None else idx
    g = pytensor.grad((W[idx] * (1.0 if C is None else C)).sum(), W)
    m = pytensor.shared(np.zeros((V, D)), name="m")
    v = pytensor.shared(np.zeros((V, D)), name="v")
    t = pytensor.shared(np.asarray(0.0), name="t")
    new_m = beta1 * m + (1 - beta1) * g
    new_v = beta2 * v + (1 - beta2) * g**2
    new_W = W - rate(t + 1) * new_m / (norm(new_v) + 1e-8)
    return {t: t + 1, m: new_m, v: new_v, W: new_W}


@pytest.mark.parametrize(
    ("updates", "message"),
    [
        (
            lambda: adam_by_hand(lambda t: 0.1 / pt.sqrt(t)),
            r"its step size reads the step counter other than through powers",
        ),
        (
            # A step schedule: constant for the first 300k steps, which sampling would miss.
            lambda: adam_by_hand(lambda t: pt.switch(pt.lt(t, 300_000), 1e-3, 1e-4)),
            r"its step size reads the step counter other than through powers",
        ),
        (
            # eps + 0.5 v can be below eps: the expansion in eps would diverge.
            lambda: adam_by_hand(lambda t: 0.1, norm=lambda v: 0.5 * v),
            r"at zero gradient its step is neither a constant linear map .* nor Adam's form",
        ),
        (
            lambda: adam_by_hand(lambda t: pytensor.shared(0.1, name="lr") * (1 - 0.9**t)),
            r"its step size reads `lr` \(0-d float64\);",
        ),
        (
            lambda: adam_by_hand(lambda t: 0.1, beta1=0.999, beta2=0.99),
            r"its drift over skipped steps does not converge",
        ),
    ],
    ids=["decaying-rate", "step-schedule", "signed-norm", "shared-rate", "diverging"],
)
def test_adaptive_catchup_refusals_name_the_table(updates: Callable[[], Any], message: str) -> None:
    prefix = r"'catchup' cannot handle `emb` \(12x3 float64\): "
    with pytest.raises(SparseUpdateError, match=prefix + message):
        sparse_updates(updates(), "catchup")


@pytest.mark.parametrize(
    "rate",
    [lambda t: 1e-2, lambda t: 1e-2 * pt.sqrt(1 - 0.999 ** (2 * t)) / (1 - 0.9**t)],
    ids=["no-bias-correction", "counter-times-two"],
)
def test_adaptive_catchup_equals_a_dense_replay(rate: Callable[[Any], Any]) -> None:
    """Adam forms beyond PyMC's: a constant rate, a rate reading 2t; against the dense run."""
    rng = np.random.default_rng(3)
    start = rng.normal(size=(V, D))
    runs = []
    for policy in ("dense", "catchup"):
        W = pytensor.shared(start.copy(), name="emb")
        idx, C = pt.lvector("idx"), pt.matrix("C")
        updates = adam_by_hand(rate, W=W, idx=idx, C=C)
        sparse = sparse_updates(updates, "catchup") if policy == "catchup" else None
        step = pytensor.function(
            [idx, C], [], updates=updates if sparse is None else sparse.updates, mode=FAST
        )
        flush = pytensor.function([], [], updates=sparse.flush, mode=FAST) if sparse else None
        grads = np.random.default_rng(4)
        for rows in schedule():
            step(rows, grads.normal(size=(B, D)))
        if flush is not None:
            flush()
        runs.append(W.get_value())
    assert_close(runs[1], runs[0], "float64")
    assert not np.allclose(runs[0], start)


def nonlinear_run(name: str, policy: str) -> Any:
    """PyMC's `name` on ``sum(W[idx]**2 * C)``: the gradient reads the looked-up rows."""
    W = pytensor.shared(np.random.default_rng(3).normal(size=(V, D)), name="emb")
    idx, C = pt.lvector("idx"), pt.matrix("C")
    updates = pymc_updates(name)(((W[idx] ** 2) * C).sum(), W, hyper(name))
    if policy == "dense":
        step = pytensor.function([idx, C], [], updates=updates, mode=FAST)
        flush = None
    else:
        sparse = sparse_updates(updates, policy)
        step = pytensor.function([idx, C], [], updates=sparse.updates, mode=FAST)
        flush = pytensor.function([], [], updates=sparse.flush, mode=FAST)
    grads = np.random.default_rng(4)
    for rows in schedule():
        step(rows, 0.1 * grads.normal(size=(B, D)))
    if flush is not None:
        flush()
    return W.get_value()


@pytest.mark.parametrize("name", ["momentum", "nesterov_momentum", "rmsprop", "adam", "adamax"])
def test_catchup_of_a_nonlinear_model_equals_dense(name: str) -> None:
    """The gradient reads the looked-up rows: it must read them caught up."""
    assert_close(nonlinear_run(name, "catchup"), nonlinear_run(name, "dense"), "float64")


def test_catchup_refuses_other_reads_of_a_moving_table() -> None:
    """``W[0]`` outside the batch is stale until looked up: refused, not computed stale."""
    W = pytensor.shared(np.ones((V, D)), name="emb")
    b = pytensor.shared(0.0, name="b")
    updates = pm_updates.momentum((W[pt.lvector("idx")] ** 2).sum(), [W])
    updates[b] = b + W[0, 0]
    with pytest.raises(SparseUpdateError, match=r"the step reads `emb` .* choose policy='lazy'"):
        sparse_updates(updates, "catchup")


def test_fresh_outputs_read_caught_up_rows() -> None:
    """`SparseUpdates.fresh(loss)`: the loss of the rows the step uses."""
    W = pytensor.shared(np.ones((V, D)), name="emb")
    idx = pt.lvector("idx")
    loss = (W[idx] ** 2).sum()
    sparse = sparse_updates(pm_updates.momentum(loss, [W], learning_rate=0.1), "catchup")
    step = pytensor.function([idx], [loss, sparse.fresh(loss)], updates=sparse.updates)
    step(np.array([1]))
    step(np.array([2]))
    stale, fresh = step(np.array([1]))  # row 1's velocity drifted it at step 2
    assert stale == pytest.approx(D * 0.8**2)
    assert fresh == pytest.approx(D * (0.8 - 0.9 * 0.2) ** 2)
    assert (
        sparse.fresh(loss) is not loss
        and sparse_updates(pm_updates.momentum(loss, [W]), "lazy").fresh(loss) is loss
    )


def test_catchup_refuses_a_norm_that_does_not_clip_its_clipped_state() -> None:
    """``u' = max(b2 u, |g|)`` read as ``sqrt(u)``: after k steps u is ``b2**k max(u, 0)``,
    which ``sqrt(u)`` does not follow for a negative u."""
    W = pytensor.shared(np.ones((V, D)), name="emb")
    g = pytensor.grad((W[pt.lvector("idx")] ** 2).sum(), W)
    m = pytensor.shared(np.zeros((V, D)), name="m")
    u = pytensor.shared(np.zeros((V, D)), name="u")
    new_m = 0.9 * m + 0.1 * g
    updates = {
        m: new_m,
        u: pt.maximum(0.999 * u, abs(g)),
        W: W - 0.01 * new_m / (pt.sqrt(u) + 1e-8),
    }
    with pytest.raises(SparseUpdateError, match=r"neither a constant linear map"):
        sparse_updates(updates, "catchup")
    # Read as the new state, max(.) clips it, and the form holds.
    updates[W] = W - 0.01 * new_m / (pt.sqrt(updates[u]) + 1e-8)
    assert sparse_updates(updates, "catchup").flush


def test_repeated_index_rmsprop_is_summed_first() -> None:
    """The issue's example: a repeated row with lazy RMSprop ends at 0.684, not 0.368."""
    W = pytensor.shared(np.ones((5, 1)), name="W")
    idx = pt.lvector("idx")
    C = pt.matrix("C")
    updates = pm_updates.rmsprop((W[idx] * C).sum(), [W], learning_rate=0.1)
    f = pytensor.function([idx, C], [], updates=sparse_updates(updates, "lazy").updates)
    f(np.array([3, 3]), np.ones((2, 1)))
    assert W.get_value()[3, 0] == pytest.approx(0.684, abs=5e-4)
    np.testing.assert_array_equal(np.delete(W.get_value(), 3, axis=0), 1.0)


def test_dense_parameters_pass_through() -> None:
    W = pytensor.shared(np.ones((V, D)), name="W")
    b = pytensor.shared(np.zeros(D), name="b")
    idx = pt.lvector("idx")
    updates = pm_updates.adam((W[idx] + b).sum() ** 2, [W, b])
    result = sparse_updates(updates, "lazy")
    assert set(result.updates) == set(updates)
    assert result.updates[b] is updates[b]
    assert result.updates[W] is not updates[W]
    assert result.tables == {W: tuple(v for v in updates if v.type.ndim == 2 and v is not W)}
    assert result.flush == {}


def test_updates_as_pairs_and_unknown_policy() -> None:
    W = pytensor.shared(np.ones((V, D)), name="W")
    idx = pt.lvector("idx")
    pairs = list(pm_updates.sgd((W[idx] ** 2).sum(), [W]).items())
    assert W in sparse_updates(pairs, "exact").updates
    with pytest.raises(SparseUpdateError, match="unknown policy 'eager'; choose one of"):
        sparse_updates(pairs, "eager")


def test_nothing_to_make_sparse_is_an_error() -> None:
    W = pytensor.shared(np.ones((V, D)), name="W")
    with pytest.raises(SparseUpdateError, match="no update is computed from the gradient"):
        sparse_updates(pm_updates.sgd((W**2).sum(), [W]), "lazy")


def test_non_elementwise_update_names_the_table() -> None:
    W = pytensor.shared(np.ones((V, D)), name="emb")
    idx = pt.lvector("idx")
    g = pytensor.grad((W[idx] ** 2).sum(), W)
    clipped = g / pt.maximum(1.0, pt.sqrt((g**2).sum()))  # global-norm clipping
    with pytest.raises(
        SparseUpdateError, match=r"cannot make the update of `emb` \(12x3 float64\) sparse"
    ):
        sparse_updates({W: W - 0.1 * clipped}, "lazy")


def test_sparse_step_builds_nothing_of_the_table_size() -> None:
    """No allocation in the compiled sparse step takes its row count from the table."""
    step, _, W, _, _ = compile_run(pymc_updates("adam"), "adam", "lazy", "float64", "NUMBA")
    step(np.array([1, 1, 2]), np.ones((3, D)))
    allocs = [n for n in step.maker.fgraph.apply_nodes if isinstance(n.op, Alloc | AllocEmpty)]
    assert allocs  # the B x D gradient buffers
    rows = [n.inputs[1] if isinstance(n.op, Alloc) else n.inputs[0] for n in allocs]
    assert not any(W in set(ancestors([r])) for r in rows)


@pytest.mark.parametrize("name", ["adam", "adamax", "rmsprop", "momentum"])
def test_one_segment_sum_per_table(name: str) -> None:
    """``g`` and ``(1 - beta1) * g`` are one gradient, summed per row once, scaled after."""
    step, *_ = compile_run(pymc_updates(name), name, "lazy", "float64", "NUMBA")
    sums = [n for n in step.maker.fgraph.apply_nodes if is_inc(n) and not n.op.set_instead_of_inc]
    assert len(sums) == 1


@pytest.mark.parametrize(("name", "policy"), [("rmsprop", "lazy"), ("adam", "catchup")])
def test_lint_accepts_the_sparse_updates(name: str, policy: str) -> None:
    """Neither the decay (SG301) nor the rows subsetgrad itself reads twice (SG201)."""
    W = pytensor.shared(np.ones((V, D)), name="W")
    idx = pt.lvector("idx")
    loss = (W[idx] ** 2).sum()
    updates = getattr(pm_updates, name)(loss, [W])
    assert any(f.code == "SG301" for f in subsetgrad.check([loss], updates))
    findings = subsetgrad.check([loss], sparse_updates(updates, policy).updates)
    assert [f.code for f in findings] == []
