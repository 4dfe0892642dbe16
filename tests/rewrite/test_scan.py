"""Lookups inside Scan: the gradient's table-sized carry becomes one scatter after the loop."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pytensor.compile.mode import Mode, get_mode
from pytensor.graph.traversal import ancestors
from pytensor.scan.op import Scan
from pytensor.tensor.shape import Shape, Shape_i

import subsetgrad

V, D, B = 11, 3, 4
REFERENCE = Mode(linker="py", optimizer=None)
RNG = np.random.default_rng(7)

# A case builds (inputs, cost, updates) from fresh shared tables, and gives input values.
Build = Callable[[dict[str, Any]], tuple[list[Any], Any, dict[Any, Any]]]


def _table(name: str, seed: int) -> Any:
    return pytensor.shared(np.random.default_rng(seed).normal(size=(V, D)) * 0.5, name=name)


def _sgd(cost: Any, tables: list[Any], lr: float = 0.1) -> dict[Any, Any]:
    grads = pytensor.grad(cost, tables)
    return {W: W - lr * g for W, g in zip(tables, grads, strict=True)}


def _sequence(t: dict[str, Any]) -> tuple[list[Any], Any, dict[Any, Any]]:
    E, U = _table("E", 1), pytensor.shared(np.eye(D) * 0.5, name="U")
    seq = pt.lmatrix("seq")
    hs = pytensor.scan(
        lambda ids, h: pt.tanh(E[ids] + h @ U),
        sequences=[seq],
        outputs_info=[pt.zeros((B, D))],
        return_updates=False,
    )
    cost = (hs[-1] ** 2).sum() + hs.sum()
    return [seq], cost, _sgd(cost, [E])


def _feedback(t: dict[str, Any]) -> tuple[list[Any], Any, dict[Any, Any]]:
    """A decoder that looks up its own prediction: indices computed inside the loop."""
    E = _table("E", 2)
    P = pytensor.shared(np.random.default_rng(20).normal(size=(D, V)), name="P")
    first = pt.lvector("first")

    def step(ids: Any, h: Any) -> tuple[Any, Any]:
        h2 = pt.tanh(E[ids] + h)
        return pt.argmax(h2 @ P, axis=-1), h2

    (_, hs) = pytensor.scan(
        step, outputs_info=[first, pt.zeros((B, D))], n_steps=5, return_updates=False
    )
    cost = (hs**2).sum()
    return [first], cost, _sgd(cost, [E])


def _two_tables_two_lookups(t: dict[str, Any]) -> tuple[list[Any], Any, dict[Any, Any]]:
    E, F = _table("E", 3), _table("F", 4)
    seq, seq2 = pt.lmatrix("seq"), pt.lmatrix("seq2")

    def step(a: Any, b: Any, h: Any) -> Any:
        return pt.tanh(E[a] + 0.5 * E[b] * F[a] + h)

    hs = pytensor.scan(
        step, sequences=[seq, seq2], outputs_info=[pt.zeros((B, D))], return_updates=False
    )
    cost = (hs**2).sum()
    return [seq, seq2], cost, _sgd(cost, [E, F])


def _taps(t: dict[str, Any]) -> tuple[list[Any], Any, dict[Any, Any]]:
    E = _table("E", 5)
    seq, h0 = pt.lmatrix("seq"), pt.dtensor3("h0")
    hs = pytensor.scan(
        lambda ids, h2, h1: pt.tanh(E[ids] + 0.5 * h1 - 0.25 * h2),
        sequences=[seq],
        outputs_info=[{"initial": h0, "taps": [-2, -1]}],
        return_updates=False,
    )
    cost = (hs**2).sum()
    return [seq, h0], cost, _sgd(cost, [E])


def _truncated(t: dict[str, Any]) -> tuple[list[Any], Any, dict[Any, Any]]:
    E = _table("E", 6)
    seq = pt.lmatrix("seq")
    hs = pytensor.scan(
        lambda ids, h: pt.tanh(E[ids] + 0.9 * h),
        sequences=[seq],
        outputs_info=[pt.zeros((B, D))],
        truncate_gradient=2,
        return_updates=False,
    )
    cost = (hs**2).sum()
    return [seq], cost, _sgd(cost, [E])


def _no_sequences(t: dict[str, Any]) -> tuple[list[Any], Any, dict[Any, Any]]:
    E = _table("E", 7)
    ids = pt.lvector("ids")
    hs = pytensor.scan(
        lambda h: pt.tanh(E[ids] * h + 0.1),
        outputs_info=[pt.ones((B, D))],
        n_steps=4,
        return_updates=False,
    )
    cost = (hs**2).sum()
    return [ids], cost, _sgd(cost, [E])


def _scalar_index(t: dict[str, Any]) -> tuple[list[Any], Any, dict[Any, Any]]:
    E = _table("E", 8)
    words = pt.lvector("words")
    hs = pytensor.scan(
        lambda w, h: pt.tanh(E[w] + h),
        sequences=[words],
        outputs_info=[pt.zeros(D)],
        return_updates=False,
    )
    cost = (hs**2).sum()
    return [words], cost, _sgd(cost, [E])


def _adagrad(t: dict[str, Any]) -> tuple[list[Any], Any, dict[Any, Any]]:
    """A stateful step: SparseState takes over the scatter after the loop."""
    E = _table("E", 9)
    acc = pytensor.shared(np.zeros((V, D)), name="acc")
    seq = pt.lmatrix("seq")
    hs = pytensor.scan(
        lambda ids, h: pt.tanh(E[ids] + h),
        sequences=[seq],
        outputs_info=[pt.zeros((B, D))],
        return_updates=False,
    )
    cost = (hs**2).sum()
    g = pytensor.grad(cost, E)
    new_acc = acc + g**2
    return [seq], cost, {acc: new_acc, E: E - 0.1 * g / pt.sqrt(new_acc + 1e-6)}


# Left alone.
def _dense_inside(t: dict[str, Any]) -> tuple[list[Any], Any, dict[Any, Any]]:
    """The table is also read whole inside the loop: its gradient there is dense."""
    E = _table("E", 10)
    seq = pt.lmatrix("seq")
    hs = pytensor.scan(
        lambda ids, h: pt.tanh(E[ids] + h + E.mean()),
        sequences=[seq],
        outputs_info=[pt.zeros((B, D))],
        return_updates=False,
    )
    cost = (hs**2).sum()
    return [seq], cost, _sgd(cost, [E])


def _nested(t: dict[str, Any]) -> tuple[list[Any], Any, dict[Any, Any]]:
    E = _table("E", 11)
    seq = pt.ltensor3("seq")

    def outer(ids: Any, h: Any) -> Any:
        inner = pytensor.scan(
            lambda i, k: pt.tanh(E[i] + k),
            sequences=[ids],
            outputs_info=[h],
            return_updates=False,
        )
        return inner[-1]

    hs = pytensor.scan(
        outer, sequences=[seq], outputs_info=[pt.zeros((B, D))], return_updates=False
    )
    cost = (hs**2).sum()
    return [seq], cost, _sgd(cost, [E])


def _mask(t: dict[str, Any]) -> tuple[list[Any], Any, dict[Any, Any]]:
    """A boolean mask: the rows looked up change in number from step to step."""
    E = _table("E", 12)
    masks = pt.tensor3("masks", dtype="bool")
    hs = pytensor.scan(
        lambda m, h: h + pt.tanh(E[m]).sum(),
        sequences=[masks],
        outputs_info=[pt.zeros(())],
        return_updates=False,
    )
    cost = (hs**2).sum()
    return [masks], cost, _sgd(cost, [E])


def _trace_read(t: dict[str, Any]) -> tuple[list[Any], Any, dict[Any, Any]]:
    """The gradient is also returned: the update still gets a subset update."""
    inputs, cost, updates = _sequence(t)
    return inputs, [cost, *updates.values()], updates


@dataclass(frozen=True)
class Case:
    name: str
    build: Build
    values: Callable[[], list[Any]]
    fires: bool


def _ids(*shape: int) -> np.ndarray:
    """Indices with repeats and negative entries."""
    ids = RNG.integers(-V, V, size=shape)
    ids.reshape(-1)[: shape[-1]] = 3  # a row looked up several times in one step
    return ids


CASES = [
    Case("sequence", _sequence, lambda: [_ids(6, B)], True),
    Case("feedback", _feedback, lambda: [np.array([1, 2, 2, -1])], True),
    Case("two-tables", _two_tables_two_lookups, lambda: [_ids(5, B), _ids(5, B)], True),
    Case("taps", _taps, lambda: [_ids(5, B), RNG.normal(size=(2, B, D))], True),
    Case("truncated", _truncated, lambda: [_ids(6, B)], True),
    Case("no-sequences", _no_sequences, lambda: [np.array([0, 3, 3, -2])], True),
    Case("scalar-index", _scalar_index, lambda: [np.array([1, 4, 1, -3, 0])], True),
    Case("adagrad", _adagrad, lambda: [_ids(4, B)], True),
    Case("returned-gradient", _trace_read, lambda: [_ids(4, B)], True),
    Case("dense-inside", _dense_inside, lambda: [_ids(4, B)], False),
    # The inner loop's gradient carry becomes rows; the outer one (which runs
    # a Scan in its step) keeps its table-sized carry.
    Case("nested", _nested, lambda: [_ids(3, 2, B)], True),
    Case("mask", _mask, lambda: [RNG.random((4, V, D)) > 0.5], False),
]


def _run(
    case: Case, mode: Mode, values: list[Any], steps: int = 3
) -> tuple[list[np.ndarray], list[Any], Any]:
    inputs, outputs, updates = case.build({})
    f = pytensor.function(inputs, outputs, updates=updates, mode=mode)
    outs = [f(*values) for _ in range(steps)]
    tables = [k.get_value() for k in updates]
    return tables, outs, f


def _carries_table(f: Any, table: Any) -> bool:
    """Whether a compiled loop is given a buffer sized from `table`'s shape (a gradient carry,
    or a pushed-out per-step scatter)."""
    fgraph = f.maker.fgraph
    inputs = {fgraph.inputs[i] for i in fgraph.update_mapping.values()}
    (var,) = [v for v in inputs if getattr(v, "name", None) == table.name]
    for node in fgraph.toposort():
        if isinstance(node.op, Scan):
            for outer in node.inputs:
                for a in ancestors([outer], blockers=[var]):
                    node_ = a.owner
                    if node_ and isinstance(node_.op, Shape | Shape_i) and node_.inputs[0] is var:
                        return True
    return False


def _listed(out: Any) -> list[Any]:
    return list(out) if isinstance(out, list | tuple) else [out]


# Numba compiles each loop for a few seconds: the forms that differ most on it.
ON_NUMBA = {"sequence", "feedback", "taps", "adagrad", "dense-inside"}
PAIRS = [(c, b) for c in CASES for b in ("NUMBA", "CVM") if b == "CVM" or c.name in ON_NUMBA]


@pytest.mark.parametrize(("case", "backend"), PAIRS, ids=[f"{c.name}-{b}" for c, b in PAIRS])
def test_matches_optimizer_none(case: Case, backend: str) -> None:
    values = case.values()
    want, want_outs, _ = _run(case, REFERENCE, values)
    got, got_outs, _ = _run(case, subsetgrad.mode(backend), values)
    assert (subsetgrad.counters["scan_scatter"] > 0) is case.fires
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    for a, b in zip(got_outs, want_outs, strict=True):
        for x, y in zip(_listed(a), _listed(b), strict=True):
            np.testing.assert_allclose(x, y, rtol=1e-10, atol=1e-12)
    dense, _, _ = _run(case, get_mode(backend), values)
    for a, b in zip(got, dense, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ["sequence", "feedback", "two-tables", "taps"])
def test_no_table_sized_carry_and_in_place(name: str) -> None:
    case = next(c for c in CASES if c.name == name)
    values = case.values()
    *_, f = _run(case, subsetgrad.mode("NUMBA"), values, steps=1)
    assert not _carries_table(f, _table("E", 0))
    *_, dense = _run(case, get_mode("NUMBA"), values, steps=1)
    assert _carries_table(dense, _table("E", 0)), "the check sees the dense step's carry"
    assert not any(
        n.op.__class__.__name__ == "Alloc"
        and n.outputs[0].type.ndim >= 2
        and n.outputs[0].type.shape[-2:] == (V, D)
        for n in f.maker.fgraph.toposort()
    )
    # The table is updated in place: its storage is the same array after a step.
    inputs, _, updates = case.build({})
    f = pytensor.function(inputs, [], updates=updates, mode=subsetgrad.mode("NUMBA"))
    table = next(iter(updates))
    before = table.get_value(borrow=True)
    snapshot = before.copy()
    f(*values)
    after = table.get_value(borrow=True)
    assert after is before
    assert not np.array_equal(after, snapshot)


@settings(deadline=None, max_examples=25)
@given(
    steps=st.integers(0, 6),
    batch=st.integers(1, 4),
    taps=st.sampled_from([[-1], [-2, -1], [-3, -1]]),
    source=st.sampled_from(["sequence", "feedback", "invariant"]),
    repeats=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_generated_loops(
    steps: int, batch: int, taps: list[int], source: str, repeats: bool, seed: int
) -> None:
    """T, taps, where the indices come from and repeats, against optimizer=None."""
    rng = np.random.default_rng(seed)
    depth = -min(taps)
    table, projection = rng.normal(size=(V, D)) * 0.5, rng.normal(size=(D, V))

    def build() -> tuple[Any, list[Any], list[Any], Any]:
        E = pytensor.shared(table.copy(), name="E")
        P = pytensor.shared(projection, name="P")
        h0 = pt.dtensor3("h0")
        seq = pt.lmatrix("seq")
        fixed = pt.lvector("fixed")

        def step(*args: Any) -> Any:
            if source == "sequence":
                ids, *hs = args
            else:
                ids, hs = fixed, list(args)
            if source == "feedback":
                ids = pt.argmax(hs[-1] @ P, axis=-1) % V
            h = pt.tanh(E[ids] + sum(0.5 / (k + 1) * x for k, x in enumerate(hs)))
            return h

        hs = pytensor.scan(
            step,
            sequences=[seq] if source == "sequence" else [],
            outputs_info=[{"initial": h0, "taps": taps}],
            n_steps=None if source == "sequence" else steps,
            return_updates=False,
        )
        cost = (hs**2).sum()
        g = pytensor.grad(cost, E)
        return E, [seq, fixed, h0], [cost], {E: E - 0.1 * g}

    high = 2 if repeats else V
    values = [
        rng.integers(-high, high, size=(steps, batch)),
        rng.integers(-high, high, size=batch),
        rng.normal(size=(depth, batch, D)),
    ]
    results = []
    for mode in [REFERENCE, subsetgrad.mode("CVM")]:
        E, inputs, outputs, updates = build()
        f = pytensor.function(inputs, outputs, updates=updates, mode=mode, on_unused_input="ignore")
        out = [f(*values) for _ in range(2)]
        results.append((E.get_value(), out))
    (want, want_out), (got, got_out) = results
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(np.ravel(got_out), np.ravel(want_out), rtol=1e-10, atol=1e-12)


# PyTensor's JAX backend compiles loops of a static length only (the dense graph too).
JAX_CASES = ["feedback", "no-sequences"]


@pytest.mark.backends
@pytest.mark.parametrize("name", JAX_CASES)
def test_matches_optimizer_none_on_jax(name: str) -> None:
    pytest.importorskip("jax", reason="`./dev test-backends` installs JAX")
    case = next(c for c in CASES if c.name == name)
    values = case.values()
    want, want_outs, _ = _run(case, REFERENCE, values)
    got, got_outs, _ = _run(case, subsetgrad.mode("JAX"), values)
    assert (subsetgrad.counters["scan_scatter"] > 0) is case.fires
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    for a, b in zip(got_outs, want_outs, strict=True):
        for x, y in zip(_listed(a), _listed(b), strict=True):
            np.testing.assert_allclose(x, y, rtol=1e-10, atol=1e-12)
