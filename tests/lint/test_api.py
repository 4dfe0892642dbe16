"""The three ways into the engine, and what a finding carries."""

from __future__ import annotations

import dataclasses
import re
import sys
import types
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from pytensor.graph.basic import Variable
from pytensor.graph.replace import clone_replace

import subsetgrad
from subsetgrad.graph import GraphIndex
from subsetgrad.lint import Finding, Program, Severity


def sgd_graph() -> tuple[object, object, object]:
    W = pytensor.shared(np.ones((300, 4)), name="W")
    idx = pt.lvector("idx")
    cost = (W[idx] ** 2).sum()
    g = pytensor.grad(cost, W)
    return W, idx, (cost, W - 0.1 * g)


def test_check_symbolic_graph_points_at_this_file() -> None:
    W, _idx, (cost, new_W) = sgd_graph()
    findings = subsetgrad.check(outputs=[cost], updates={W: new_W}, mode="NUMBA")
    assert [f.code for f in findings] == ["SG101"]
    (f,) = findings
    assert f.location is not None and Path(f.location.path) == Path(__file__)
    assert f.location.line == sgd_graph.__code__.co_firstlineno + 5  # the `W - 0.1 * g` line
    assert f.name == "dense-table-gradient" and f.severity is Severity.WARNING
    assert "`W` (300x4 float64)" in f.message and "38.4 kB" in f.message
    assert "rewrite is off" in f.message
    assert f.hint and "\n" not in f.message


def test_mode_with_the_rewrite_makes_it_info() -> None:
    W, _idx, (cost, new_W) = sgd_graph()
    (f,) = subsetgrad.check([cost], {W: new_W}, mode=subsetgrad.mode("NUMBA"))
    assert f.severity is Severity.INFO and "rewrite is active" in f.message
    # Nothing to do in this mode: the hint does not say to turn on what is on.
    assert "Compile with" not in f.hint and "Nothing to change" in f.hint


@pytest.mark.parametrize(
    ("step", "sparse"),
    [
        (lambda W, g: W - 0.1 * pt.clip(g, -1.0, 1.0), True),
        (lambda W, g: W - 0.01 * pt.sign(g), True),
        (lambda W, g: W - 0.1 * g, True),
        (lambda W, g: 0.999 * W - 0.1 * pt.clip(g, -1.0, 1.0), False),  # weight decay
        (lambda W, g: W - 0.1 * pt.exp(g), False),  # moves rows outside the batch
    ],
    ids=["clip", "sign", "linear", "weight-decay", "exp"],
)
def test_sg101_says_what_the_rewrite_does(step: Any, sparse: bool) -> None:
    """SG101 at info (the rewrite is active) exactly when compiling rewrites the step."""
    from subsetgrad.rewrite import counters

    W = pytensor.shared(np.ones((300, 4)), name="W")
    idx = pt.lvector("idx")
    cost = (W[idx] ** 2).sum()
    new_W = step(W, pytensor.grad(cost, W))
    before = counters["sparse_state"] + counters["subset_update"]
    mode = subsetgrad.mode("NUMBA")
    pytensor.function([idx], cost, updates={W: new_W}, mode=mode)
    assert (counters["sparse_state"] + counters["subset_update"] > before) is sparse
    findings = subsetgrad.check([cost], {W: new_W}, mode=mode)
    assert [(f.code, f.severity) for f in findings] == (
        [("SG101", Severity.INFO)] if sparse else []
    )


def test_check_function_uses_the_graph_before_rewriting() -> None:
    for mode, severity in [
        ("NUMBA", Severity.WARNING),
        (subsetgrad.mode("NUMBA"), Severity.INFO),
    ]:
        with subsetgrad.record():
            W, idx, (cost, new_W) = sgd_graph()
            f = pytensor.function([idx], cost, updates={W: new_W}, mode=mode)
        (finding,) = subsetgrad.check_function(f)
        assert finding.code == "SG101" and finding.severity is severity
        assert finding.location is not None and Path(finding.location.path) == Path(__file__)


def test_check_function_sees_state_the_rewrites_fused() -> None:
    """NUMBA's rewrites fold an RMSprop step into fused loops; the check reads it as written."""
    with subsetgrad.record():
        W = pytensor.shared(np.ones((300, 4)), name="W")
        acc = pytensor.shared(np.zeros((300, 4)), name="acc")
        idx = pt.lvector("idx")
        cost = (W[idx] ** 2).sum()
        g = pytensor.grad(cost, W)
        new_acc = 0.9 * acc + 0.1 * g**2
        updates = {acc: new_acc, W: W - 0.01 * g / pt.sqrt(new_acc + 1e-6)}
        f = pytensor.function([idx], cost, updates=updates, mode="NUMBA")
    assert [x.code for x in subsetgrad.check_function(f)] == ["SG301"]
    assert [x.code for x in subsetgrad.check([cost], updates)] == ["SG301"]


def test_check_function_without_the_graph_before_rewriting() -> None:
    W, idx, (cost, new_W) = sgd_graph()
    f = pytensor.function([idx], cost, updates={W: new_W}, mode="NUMBA")
    with pytest.raises(ValueError, match=r"compiled outside subsetgrad\.record\(\)") as info:
        subsetgrad.check_function(f)
    assert "\n" not in str(info.value)


def test_check_function_rejects_other_objects() -> None:
    with pytest.raises(TypeError, match="compiled pytensor function"):
        subsetgrad.check_function(lambda: None)


def test_select_and_ignore() -> None:
    W, _idx, (cost, new_W) = sgd_graph()
    assert subsetgrad.check([cost], {W: new_W}, select=["SG2"]) == []
    assert subsetgrad.check([cost], {W: new_W}, ignore=["SG101"]) == []
    assert [f.code for f in subsetgrad.check([cost], {W: new_W}, select=["SG1"])] == ["SG101"]


def test_findings_are_frozen_data() -> None:
    W, _idx, (cost, new_W) = sgd_graph()
    (f,) = subsetgrad.check([cost], {W: new_W})
    assert isinstance(f, Finding)
    with pytest.raises(dataclasses.FrozenInstanceError):
        f.code = "SG999"  # type: ignore[misc]
    as_dict = f.to_dict()
    assert {"code", "name", "severity", "path", "line", "message", "hint"} <= set(as_dict)


def test_record_sees_grad_imported_before_the_block(monkeypatch: pytest.MonkeyPatch) -> None:
    """A module that did ``from pytensor import grad`` before recording is still watched."""
    user_module = types.ModuleType("user_model")
    user_module.grad = pytensor.grad  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "user_model", user_module)

    W = pytensor.shared(np.ones((50, 3)), name="W")
    idx = pt.lvector("idx")
    with subsetgrad.record() as rec:
        rows = W[idx]
        cost = (rows**2).sum() + (W**2).sum()
        g = user_module.grad(cost, rows)
        pytensor.function([idx], [], updates={W: pt.inc_subtensor(rows, -g)}, mode="FAST_COMPILE")
    assert len(rec.grad_calls) == 1
    assert "SG202" in {f.code for f in rec.findings()}
    assert user_module.grad is pytensor.gradient.grad  # restored


def test_recorded_gradients_are_found_in_clones_of_the_graph() -> None:
    """SG202 finds a recorded gradient as `grad` returned it, and its copies in a cloned graph."""
    from subsetgrad.lint.program import Program
    from subsetgrad.lint.rules import paths

    W = pytensor.shared(np.ones((50, 3)), name="W")
    idx = pt.lvector("idx")
    with subsetgrad.record() as rec:
        rows = W[idx]
        cost = (rows**2).sum() + (W**2).sum()
        new_W = pt.inc_subtensor(rows, -pytensor.grad(cost, rows))
        pytensor.function([idx], [], updates={W: new_W}, mode="FAST_COMPILE")
    (copy,) = clone_replace([new_W], replace={})
    assert copy is not new_W
    for updates in ({W: new_W}, {W: copy}):
        assert [f.code for f in subsetgrad.check([], updates)] == ["SG202"]
    # The original gradient logged beside an update from its copy: the copy is still found.
    (g,) = [g for g, _ in paths.tagged_grads(Program.from_symbolic([], {W: new_W}))]
    assert "SG202" in {f.code for f in subsetgrad.check([g.norm(2)], {W: copy})}
    # The compiled function's graph is a clone too: its copy runs the same op.
    assert [f.code for f in rec.findings()] == ["SG202"]


def test_record_restores_pytensor_state() -> None:
    limit = pytensor.config.traceback__limit
    original = pytensor.gradient.grad
    with subsetgrad.record():
        assert pytensor.gradient.grad is not original
        assert pytensor.config.traceback__limit >= 32
    assert pytensor.gradient.grad is original
    assert pytensor.config.traceback__limit == limit


def test_record_sees_every_compiled_function_once() -> None:
    W, idx, (cost, new_W) = sgd_graph()
    with subsetgrad.record() as rec:
        pytensor.function([idx], cost, updates={W: new_W}, mode="FAST_COMPILE")
        pytensor.function([idx], cost, mode="NUMBA")
    assert rec.compiled == 2
    assert [f.code for f in rec.findings()] == ["SG101"]


def test_rewrite_status_survives_the_function_being_collected() -> None:
    """Whether the rewrite ran is settled when the compile ends, not when findings are read."""
    import gc

    def compile_and_drop() -> None:
        W, idx, (cost, new_W) = sgd_graph()
        pytensor.function([idx], cost, updates={W: new_W}, mode=subsetgrad.mode("FAST_COMPILE"))

    with subsetgrad.record() as rec:
        compile_and_drop()
    gc.collect()
    assert [(f.code, f.severity) for f in rec.findings()] == [("SG101", Severity.INFO)]


def test_copies_taken_inside_the_block_are_restored(monkeypatch: pytest.MonkeyPatch) -> None:
    late = types.ModuleType("imported_while_recording")
    monkeypatch.setitem(sys.modules, "imported_while_recording", late)
    original = pytensor.gradient.grad
    with subsetgrad.record():
        late.grad = pytensor.grad  # type: ignore[attr-defined]  # as `from pytensor import grad`
        assert late.grad is not original  # type: ignore[attr-defined]
    assert late.grad is original  # type: ignore[attr-defined]


def test_state_of_two_tables_names_the_same_table_every_time() -> None:
    """SG301 names one table of a state fed by two; which one must not vary between builds."""

    def named() -> str:
        idx = pt.lvector("idx")
        W1 = pytensor.shared(np.ones((50, 4)), name="W1")
        W2 = pytensor.shared(np.ones((50, 4)), name="W2")
        acc = pytensor.shared(np.zeros((50, 4)), name="acc")
        g1, g2 = pytensor.grad((W1[idx] ** 2).sum() + (W2[idx] ** 3).sum(), [W1, W2])
        (finding,) = subsetgrad.check([], {acc: 0.9 * acc + 0.1 * (g1 + g2) ** 2})
        return finding.message

    assert len({named() for _ in range(8)}) == 1


def test_unnamed_states_of_one_table_are_reported_apart() -> None:
    """PyMC's Adam makes two unnamed states per table: one SG301 finding each, told apart."""
    pm_updates = pytest.importorskip("pymc.variational.updates")
    W = pytensor.shared(np.ones((50, 4)), name="W")
    E = pytensor.shared(np.ones((50, 4)), name="E")
    idx = pt.lvector("idx")
    updates = pm_updates.adam((W[idx] ** 2).sum(), [W], learning_rate=0.01)
    updates.update(pm_updates.rmsprop((E[idx] ** 2).sum(), [E], learning_rate=0.01))
    messages = [f.message for f in subsetgrad.check([], updates, select=["SG301"])]
    assert [m.split(" follows")[0] for m in messages] == [
        "unnamed optimizer state 1 of 2 (50x4 float64)",
        "unnamed optimizer state 2 of 2 (50x4 float64)",
        "unnamed optimizer state (50x4 float64)",
    ]
    assert ["`W`" in m for m in messages] == [True, True, False]


def test_unnamed_states_of_unnamed_tables_are_reported_apart() -> None:
    """Two unnamed tables' four Adam states: four findings, none merged by an equal message."""
    pm_updates = pytest.importorskip("pymc.variational.updates")
    idx = pt.lvector("idx")
    A, B = (pytensor.shared(np.ones((50, 4))) for _ in range(2))
    updates = pm_updates.adam((A[idx] ** 2).sum() + (B[idx] ** 3).sum(), [A, B], 0.01)
    messages = [f.message for f in subsetgrad.check([], updates, select=["SG301"])]
    assert sorted(m.split(" follows")[0] for m in messages) == [
        f"unnamed optimizer state {k} of 4 (50x4 float64)" for k in range(1, 5)
    ]


def test_an_output_given_twice_is_one_expression() -> None:
    """A lookup returned twice (or also used as an update) is indexed once: no SG201 with itself."""
    W = pytensor.shared(np.ones((50, 4)), name="W")
    rows = W[pt.lvector("idx")]
    assert subsetgrad.check([rows, rows]) == []
    new_W = W - 0.1 * pytensor.grad((rows**2).sum(), W)
    assert [f.code for f in subsetgrad.check([new_W, new_W], {W: new_W})] == ["SG101"]
    index = GraphIndex.from_outputs([rows, rows, rows.sum()])
    assert len(index.nodes) == len(set(index.nodes))
    assert index.clients[W] == [(rows.owner, 0)]


@contextmanager
def owner_reads() -> Iterator[list[int]]:
    """Count every read of a variable's ``owner``: the steps of every walk over a graph."""
    count = [0]

    def counted(self: Variable, name: str) -> Any:
        if name == "owner":
            count[0] += 1
        return object.__getattribute__(self, name)

    Variable.__getattribute__ = counted  # type: ignore[method-assign]
    try:
        yield count
    finally:
        del Variable.__getattribute__  # type: ignore[method-assign]


def _paths_work(n_tables: int) -> int:
    """The graph-walking work of SG202 and SG203 on a program of `n_tables` tables."""
    idx = pt.lvector("idx")
    with subsetgrad.record():
        tables = [pytensor.shared(np.ones((20, 3)), name=f"W{k}") for k in range(n_tables)]
        rows = [W[idx] for W in tables]
        pairs = zip(tables, rows, strict=True)
        cost = pt.add(*[(r**2).sum() + (r * W[idx[::-1]]).sum() for W, r in pairs])
        grads = pytensor.grad(cost, rows)
    updates = {
        W: pt.inc_subtensor(r, -g) if k % 2 else pt.set_subtensor(r, r - g)
        for k, (W, r, g) in enumerate(zip(tables, rows, grads, strict=True))
    }
    with owner_reads() as count:
        findings = subsetgrad.check([cost], updates, select=["SG202", "SG203"])
    assert sorted({f.code for f in findings}) == ["SG202", "SG203"]
    assert len(findings) == n_tables + n_tables // 2
    return count[0]


def _growth() -> float:
    """How much more work four times the tables cost: 4 if linear, 16 if quadratic."""
    return _paths_work(80) / _paths_work(20)


def test_gradient_paths_are_found_in_linear_work() -> None:
    """SG202 and SG203 walk the graph a bounded number of times, not once per table."""
    assert _growth() < 6


def test_the_work_measure_catches_a_quadratic_walk(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the program's memo, SG202 walks the cost once per table: the measure sees it."""
    monkeypatch.setattr(Program, "memo", lambda self, analysis: analysis(self))
    assert _growth() > 6


def test_optimizer_states_under_a_global_norm_clip(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each state follows its own table, and the shared algebra is simplified once, not per state.

    Every gradient reaches every state through the norm; walking that per state was
    quadratic in the number of tables.
    """
    import pytensor.graph.rewriting.utils as rewriting

    calls = 0
    simplify = rewriting.rewrite_graph

    def counted(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        return simplify(*args, **kwargs)

    monkeypatch.setattr(rewriting, "rewrite_graph", counted)
    idx = pt.lvector("idx")
    tables = [pytensor.shared(np.ones((20, 3)), name=f"W{k}") for k in range(30)]
    states = [pytensor.shared(np.zeros((20, 3)), name=f"acc{k}") for k in range(30)]
    cost = pt.add(*[(pt.tanh(W[idx]) ** 2).sum() for W in tables])
    grads = pytensor.grad(cost, tables)
    scale = 1.0 / pt.maximum(pt.sqrt(pt.add(*[(g**2).sum() for g in grads])), 1.0)
    updates = {}
    for W, acc, g in zip(tables, states, grads, strict=True):
        new_acc = 0.9 * acc + 0.1 * (g * scale) ** 2
        updates[acc] = new_acc
        updates[W] = W - 0.01 * g * scale / pt.sqrt(new_acc + 1e-6)
    findings = subsetgrad.check([cost], updates, select=["SG301"])
    pairs = sorted(re.findall(r"`acc(\d+)`.*gradient of `W(\d+)`", f.message)[0] for f in findings)
    assert pairs == sorted((str(k), str(k)) for k in range(30))
    assert calls <= 2, calls


def test_scans_are_matched_to_updates_in_linear_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """SG103 asks which updates read each Scan's gradient in one pass, not a walk per Scan."""
    from subsetgrad.lint.rules import dense

    passes = 0
    real = dense.source_masks

    def counted(*args: Any) -> dict[Any, int]:
        nonlocal passes
        passes += 1
        return real(*args)

    monkeypatch.setattr(dense, "source_masks", counted)
    seq = pt.lmatrix("seq")
    tables = [pytensor.shared(np.zeros((50, 4)), name=f"W{k}") for k in range(6)]
    cost = 0
    for W in tables:
        hs = pytensor.scan(
            lambda ids, h, W=W: pt.tanh(h + W[ids].sum(axis=0)),
            sequences=[seq],
            outputs_info=[pt.zeros(4)],
            return_updates=False,
        )
        cost = cost + hs[-1].sum()
    grads = pytensor.grad(cost, tables)
    # Half the tables train from their gradient; the others decay by the cost, which
    # reads every Scan but not their gradient (a walk per Scan covered the graph).
    updates = {
        W: W - 0.1 * g if k < 3 else W * (1 - 1e-3 * cost)
        for k, (W, g) in enumerate(zip(tables, grads, strict=True))
    }
    outputs = [cost, *grads[3:]]
    findings = subsetgrad.check(outputs, updates, select=["SG103"])
    assert sorted(re.findall(r"`(W\d)`", " ".join(f.message for f in findings))) == [
        "W0",
        "W1",
        "W2",
    ]
    assert passes == 1


@pytest.mark.backends
@pytest.mark.parametrize(("backend", "module"), [("JAX", "jax"), ("PYTORCH", "torch")])
def test_sg101_says_when_the_mode_still_copies_the_table(backend: str, module: str) -> None:
    """PyTensor's own JAX and PyTorch linkers copy the table; the info names subsetgrad.mode."""
    pytest.importorskip(module)
    from pytensor.compile.mode import get_mode

    W = pytensor.shared(np.ones((100, 4)), name="W")
    idx = pt.lvector("idx")
    new_W = W - 0.1 * pytensor.grad((W[idx] ** 2).sum(), W)
    (copying,) = subsetgrad.check([], {W: new_W}, mode=get_mode(backend).including("subsetgrad"))
    assert copying.severity is Severity.INFO
    assert f'subsetgrad.mode("{backend}")' in copying.message
    (in_place,) = subsetgrad.check([], {W: new_W}, mode=subsetgrad.mode(backend))
    assert in_place.severity is Severity.INFO
    assert "copies" not in in_place.message
