"""Adversarial differential tests of the row analysis shared by the rewrite and
`sparse_updates`: every case in `tests.adversarial_cases` against its dense graph
compiled without rewrites.

- The rewrite (``subsetgrad.mode``) must always equal the dense run, step by step;
  where a case says so it must also fire, and leave no V x D buffer.
- ``sparse_updates(updates, policy)`` raises nothing but `SparseUpdateError`. Where a
  policy accepts, ``exact`` equals the dense run at every step, ``lazy`` too if the
  step is the identity at zero gradient (else it keeps the rows never looked up), and
  ``catchup`` after a flush, with its ``fresh`` outputs equal at every step. Each case
  states which policies must accept it and which must refuse it.
- An out-of-range row (-V-1) raises and writes nothing, as in the dense graph.
- Models that differ only in a constant, compiled one after the other in either
  order, each get their own verdict.

Every case runs on PyTensor's full rewrites with the Python linker ("PY": the rewrites
of CVM and Numba, no C or LLVM compile); the regressions and a sample of each family
also compile on Numba and CVM, where a new graph costs seconds.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from pytensor.compile.executor import Function
from pytensor.compile.mode import Mode, get_mode
from pytensor.compile.sharedvalue import SharedVariable
from pytensor.graph.basic import Variable
from pytensor.graph.traversal import ancestors
from pytensor.tensor.basic import Alloc, AllocEmpty

import subsetgrad
from subsetgrad import SparseUpdateError, SparseUpdates, sparse_updates
from tests import adversarial_cases as cases
from tests.adversarial_cases import CASES, COMPILE_ORDER, LR, Case, Expect, Model, V

REFERENCE = Mode(linker="py", optimizer=None)
MODES: dict[str, Mode] = {
    "PY": Mode(linker="py", optimizer="fast_run"),
    "NUMBA": get_mode("NUMBA"),
    "CVM": get_mode("CVM"),
}
COMPILED = ("NUMBA", "CVM")
RTOL = ATOL = 1e-12
POLICIES = ("exact", "lazy", "catchup")

#: Cases whose rewrite also compiles on Numba and CVM (seconds per graph): the
#: regressions, and a row step of each kind (state, two tables), or none (momentum).
REWRITE_COMPILED = (
    "bug2_sum_factor",
    "bug4_static_table",
    "bug4_numpy_row_factor",
    "bug5_scalar_index",
    "adagrad",
    "two_tables_sign_and_adagrad",
    "momentum",
)
#: Policy steps that also compile on Numba and CVM: each writes its tables by a row
#: step, whose rows are checked, so on Numba too it is called with row -V-1.
POLICY_COMPILED = (
    ("adagrad", "exact"),
    ("bug5_scalar_index", "exact"),
    ("bug4_static_table", "lazy"),
    ("static_rmsprop", "catchup"),
)


# --------------------------------------------------------------------------- #
# Running a model
# --------------------------------------------------------------------------- #
Values = list[np.ndarray]


def values_of(model: Model) -> Values:
    return [np.array(v.get_value(), copy=True) for v in model.shared]


def compile_step(
    model: Model,
    mode: Mode,
    updates: dict[Variable, Variable] | None = None,
    outputs: Sequence[Variable] | None = None,
) -> Function:
    return pytensor.function(
        model.inputs,
        list(model.outputs if outputs is None else outputs),
        updates=model.updates if updates is None else updates,
        mode=mode,
        on_unused_input="ignore",
    )


def assert_values(got: Sequence[Any], want: Sequence[Any], what: str) -> None:
    assert len(got) == len(want)
    for n, (a, b) in enumerate(zip(got, want, strict=True)):
        np.testing.assert_allclose(
            np.asarray(a), np.asarray(b), rtol=RTOL, atol=ATOL, err_msg=f"{what}, value {n}"
        )


def out_of_range_feed(case: Case) -> list[Any]:
    """Rows 1 and -V-1, in the dtype of the case's index; the other inputs to match."""
    idx, *rest = case.feeds[0]
    return [
        np.array([1, -V - 1], dtype=idx.dtype),
        *(np.ones((2, *np.shape(a)[1:])) if np.ndim(a) else a for a in rest),
    ]


class DenseRun:
    """The case's graph compiled without rewrites: outputs and values after each step."""

    def __init__(self, case: Case) -> None:
        model = case.build()
        f = compile_step(model, REFERENCE)
        self.initial = values_of(model)
        self.outputs: list[Values] = []
        self.values: list[Values] = []
        for feed in case.feeds:
            self.outputs.append([np.array(o, copy=True) for o in f(*feed)])
            self.values.append(values_of(model))
        if case.vector_index:
            with pytest.raises(IndexError):
                f(*out_of_range_feed(case))

    @property
    def final(self) -> Values:
        return self.values[-1]


_DENSE: dict[str, DenseRun] = {}


def dense(case: Case) -> DenseRun:
    """The dense run of `case`, computed once per name."""
    if case.name not in _DENSE:
        _DENSE[case.name] = DenseRun(case)
    return _DENSE[case.name]


def check_steps(
    case: Case, model: Model, f: Function, *, per_step: bool = True, what: str
) -> list[Values]:
    """Run every step of `case`, comparing outputs and values with the dense run."""
    want = dense(case)
    outputs = []
    for n, feed in enumerate(case.feeds):
        outputs.append(f(*feed))
        if per_step:
            assert_values(outputs[-1], want.outputs[n], f"{what}: outputs of step {n}")
            assert_values(values_of(model), want.values[n], f"{what}: values after step {n}")
    return outputs


def check_out_of_range(
    case: Case, model: Model, f: Function, backend: str, row_step: bool = False
) -> None:
    """Row -V-1 raises, as in the dense graph, and writes no row of a table or state.

    (A 0-d shared variable, a step counter, may be updated in place before the error,
    by the dense graph as well.) On Numba only where `f` is known to write the tables
    through a row step: PyTensor's Numba scatters and fused indexing do not check their
    indices (NUMBA_BOUNDSCHECK or not), so the dense graph itself writes outside its
    buffers at row -V-1 and can crash the process; a row step checks its rows first.
    """
    if not case.vector_index or (backend == "NUMBA" and not row_step):
        return
    before = values_of(model)
    with pytest.raises(Exception):  # noqa: B017 - whatever the backend raises
        f(*out_of_range_feed(case))
    rows = [n for n, v in enumerate(before) if v.ndim]
    assert_values(
        [values_of(model)[n] for n in rows],
        [before[n] for n in rows],
        f"{backend}: tables after a step that raised",
    )


def big_allocations(f: Function, model: Model) -> list[Any]:
    """Allocations of a table's row count (read off a table, or static), in `f`'s graph."""
    tables = {v for v in model.shared if np.shape(v.get_value())[:1] == (V,)}
    nodes = []
    for node in f.maker.fgraph.apply_nodes:
        if isinstance(node.op, Alloc | AllocEmpty):
            out = node.outputs[0]
            shape = node.inputs[1:] if isinstance(node.op, Alloc) else node.inputs
            if out.type.ndim and (out.type.shape[0] == V or tables & set(ancestors([shape[0]]))):
                nodes.append(node)
    return nodes


# --------------------------------------------------------------------------- #
# sparse_updates outcomes
# --------------------------------------------------------------------------- #
def sparse(model: Model, policy: str) -> SparseUpdates | SparseUpdateError:
    """`sparse_updates` of the model, or the SparseUpdateError it raised (nothing else)."""
    try:
        return sparse_updates(model.updates, policy)
    except SparseUpdateError as err:
        return err
    except Exception as err:
        pytest.fail(f"sparse_updates(..., {policy!r}) raised {type(err).__name__}: {err}")


def names_a_table(err: Exception, model: Model) -> bool:
    return any(f"`{v.name}`" in str(err) for v in model.shared)


def accepted(
    result: SparseUpdates | SparseUpdateError, expect: Expect, model: Model, policy: str
) -> SparseUpdates | None:
    """The result if the policy accepted; checks `expect`, and a refusal's message."""
    if isinstance(result, SparseUpdateError):
        assert expect != "equal", f"policy {policy!r} refused a step it handles: {result}"
        assert names_a_table(result, model), f"the refusal names no table: {result}"
        return None
    assert expect != "refuse", f"policy {policy!r} accepted a step it must refuse"
    return result


def run_exact(case: Case, model: Model, result: SparseUpdates, backend: str) -> None:
    f = compile_step(model, MODES[backend], result.updates)
    check_steps(case, model, f, what=f"exact on {backend}")
    check_out_of_range(case, model, f, backend, row_step=True)


def run_lazy(case: Case, model: Model, result: SparseUpdates, backend: str) -> None:
    f = compile_step(model, MODES[backend], result.updates)
    check_steps(case, model, f, per_step=case.lazy is not None, what=f"lazy on {backend}")
    check_out_of_range(case, model, f, backend, row_step=True)
    if case.lazy is None:
        # Not the identity at zero gradient: only the rows never looked up are known.
        rows = list(case.untouched)
        moved = {*result.tables, *(s for states in result.tables.values() for s in states)}
        for var, start in zip(model.shared, dense(case).initial, strict=True):
            if var in moved:
                np.testing.assert_array_equal(var.get_value()[rows], start[rows], var.name)


def run_catchup(case: Case, model: Model, result: SparseUpdates, backend: str) -> None:
    outputs: list[Variable] = []
    try:
        outputs = list(result.fresh(model.outputs))
    except SparseUpdateError as err:
        assert case.fresh != "equal", f"fresh() refused: {err}"
        assert names_a_table(err, model), f"the refusal names no table: {err}"
    except Exception as err:
        pytest.fail(f"fresh() raised {type(err).__name__}: {err}")
    else:
        assert case.fresh != "refuse", "fresh() accepted outputs that read stale rows"
    f = compile_step(model, MODES[backend], result.updates, outputs)
    got = check_steps(case, model, f, per_step=False, what=f"catchup on {backend}")
    if outputs:
        for n, (a, b) in enumerate(zip(got, dense(case).outputs, strict=True)):
            assert_values(a, b, f"catchup on {backend}: fresh outputs of step {n}")
    pytensor.function([], [], updates=result.flush, mode=MODES[backend])()
    assert_values(values_of(model), dense(case).final, f"catchup on {backend}: after flush")
    check_out_of_range(case, model, f, backend, row_step=True)


RUN = {"exact": run_exact, "lazy": run_lazy, "catchup": run_catchup}


def expected(case: Case, policy: str) -> Expect:
    if policy == "lazy":
        return case.lazy or "either"
    return case.exact if policy == "exact" else case.catchup


# --------------------------------------------------------------------------- #
# The rewrite and the policies, case by case
# --------------------------------------------------------------------------- #
REWRITE_ITEMS = [
    pytest.param(name, backend, id=f"{name}-{backend}")
    for name in CASES
    for backend in ("PY", *COMPILED)
    if backend == "PY" or name in REWRITE_COMPILED
]
POLICY_ITEMS = [
    pytest.param(name, policy, backend, id=f"{name}-{policy}-{backend}")
    for name in CASES
    for policy in POLICIES
    for backend in ("PY", *COMPILED)
    if backend == "PY" or (name, policy) in POLICY_COMPILED
]


@pytest.mark.parametrize(("name", "backend"), REWRITE_ITEMS)
def test_rewrite_equals_dense(name: str, backend: str) -> None:
    case = CASES[name]
    model = case.build()
    before = subsetgrad.counters.copy()
    f = compile_step(model, subsetgrad.mode(MODES[backend]))
    fired = {k: subsetgrad.counters[k] - before[k] for k in ("sparse_state", "subset_update")}
    check_steps(case, model, f, what=f"rewrite on {backend}")
    row_step = fired["sparse_state"] > 0 and fired["subset_update"] == 0
    check_out_of_range(case, model, f, backend, row_step)
    if case.fires:
        assert sum(fired.values()) >= 1, "the rewrite no longer fires"
        if case.small:
            assert big_allocations(f, model) == [], "the rewritten step keeps a V x D buffer"
    elif case.fires is False:
        assert fired["sparse_state"] == 0, "a step a zero gradient changes became a row step"


@pytest.mark.parametrize(("name", "policy", "backend"), POLICY_ITEMS)
def test_policy(name: str, policy: str, backend: str) -> None:
    case = CASES[name]
    model = case.build()
    result = accepted(sparse(model, policy), expected(case, policy), model, policy)
    if result is not None:
        RUN[policy](case, model, result, backend)


# --------------------------------------------------------------------------- #
# The five regressions, as reported
# --------------------------------------------------------------------------- #
@pytest.fixture
def fresh_verdicts() -> None:
    """Forget the zero-gradient verdicts of earlier tests, as a new process would (the
    cache of `identity_at_zero`, wherever the package keeps it)."""
    for module in [m for n, m in sys.modules.items() if n.startswith("subsetgrad.")]:
        for name in ("_IDENTITY_CACHE", "_TOKENS", "_TOKEN_BY_ID"):
            cache = getattr(module, name, None)
            if isinstance(cache, dict):
                cache.clear()


def alloc_step(c: float) -> tuple[SharedVariable, Function]:
    W = pytensor.shared(np.ones((5, 2)), name="W")
    i = pt.lvector("i")
    g = pytensor.grad(W[i].sum(), W)
    updates = {W: W * (pt.alloc(c, *W.shape) + pt.sign(g))}
    return W, pytensor.function([i], [], updates=updates, mode=subsetgrad.mode("CVM"))


@pytest.mark.usefixtures("fresh_verdicts")
def test_bug1_constant_of_an_alloc_is_part_of_the_verdict() -> None:
    alloc_step(1.0)
    W, f = alloc_step(2.0)
    f(np.array([0]))
    np.testing.assert_array_equal(W.get_value()[:, 0], [3, 2, 2, 2, 2])


def test_bug2_exact_refusal_names_the_table_and_the_op() -> None:
    W = pytensor.shared(np.ones((V, 3)), name="emb")
    g = pytensor.grad((W[pt.lvector("idx")] ** 2).sum(), W)
    with pytest.raises(SparseUpdateError, match=r"(?is)`emb`.*sum|sum.*`emb`"):
        sparse_updates({W: W - LR * pt.sign(g) * W.sum()}, "exact")


def test_bug3_catchup_refuses_a_norm_of_the_moving_table() -> None:
    W = pytensor.shared(np.ones((V, 3)), name="emb")
    g = pytensor.grad((W[pt.lvector("idx")] ** 2).sum(), W)
    with pytest.raises(SparseUpdateError, match="`emb`"):
        sparse_updates(cases.momentum_by_norm(W, g, g.sum()), "catchup")


def test_bug3_fresh_refuses_a_loss_of_the_whole_table() -> None:
    W = pytensor.shared(np.ones((V, 3)), name="emb")
    loss = (W[pt.lvector("idx")] ** 2).sum()
    result = sparse_updates(cases.momentum(W, pytensor.grad(loss, W), loss), "catchup")
    assert result.fresh(loss) is not loss
    with pytest.raises(SparseUpdateError, match="`emb`"):
        result.fresh(loss + 0.01 * (W**2).sum())


def test_bug4_static_table_equals_dense() -> None:
    runs = []
    for mode in (subsetgrad.mode("CVM"), REFERENCE):
        W = pytensor.shared(np.ones((20, 3)), shape=(20, 3), name="W")
        idx = pt.lvector("idx")
        g = pytensor.grad((W[idx] ** 2).sum(), W)
        f = pytensor.function([idx], [], updates={W: W - 0.1 * pt.sign(g)}, mode=mode)
        f(np.array([1, 2, 2]))
        runs.append(W.get_value())
    assert_values([runs[0]], [runs[1]], "static table")


@pytest.mark.parametrize("policy", POLICIES)
def test_bug5_scalar_lookup_raises_only_sparse_update_error(policy: str) -> None:
    W = pytensor.shared(np.ones((V, 3)), name="W")
    g = pytensor.grad((W[pt.lscalar("i")] ** 2).sum(), W)
    try:
        sparse_updates({W: W - LR * pt.sign(g)}, policy)
    except SparseUpdateError as err:
        assert "`W`" in str(err)


# --------------------------------------------------------------------------- #
# Compile order: models that differ only in a constant
# --------------------------------------------------------------------------- #
ORDERS = [
    pytest.param(pair, first, id=f"{pair}-{first}_first")
    for pair in COMPILE_ORDER
    for first in ("identity", "moving")
]


@functools.cache
def order_case(pair: str, c: float) -> Case:
    make, _, _ = COMPILE_ORDER[pair]
    return cases.case(f"order_{pair}_{c}", make(c))


@pytest.mark.usefixtures("fresh_verdicts")
@pytest.mark.parametrize(("pair", "first"), ORDERS)
def test_compile_order(pair: str, first: str) -> None:
    """Both models in one process, in this order: each equals its own dense run, and
    'exact' refuses the one a zero gradient changes (and accepts the other)."""
    _, identity, moving = COMPILE_ORDER[pair]
    for c in (identity, moving) if first == "identity" else (moving, identity):
        case = order_case(pair, c)
        model = case.build()
        f = compile_step(model, subsetgrad.mode(MODES["PY"]))
        check_steps(case, model, f, what=f"rewrite at c={c}")
        model = case.build()
        expect: Expect = "refuse" if c == moving else "equal"
        result = accepted(sparse(model, "exact"), expect, model, "exact")
        if result is not None:
            run_exact(case, model, result, "PY")
