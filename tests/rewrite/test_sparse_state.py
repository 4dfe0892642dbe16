"""The SparseState rewrite: stateful and nonlinear updates that are the identity at zero
gradient become row updates; everything else is left alone."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pymc.variational.updates as pm_updates
import pytensor
import pytensor.tensor as pt
import pytest
from pytensor.compile.mode import Mode
from pytensor.graph.traversal import ancestors
from pytensor.tensor.basic import Alloc, AllocEmpty

import subsetgrad

V, D = 40, 3
REFERENCE = Mode(linker="py", optimizer=None)
# Each repeats a row, and the second has a negative index and the last row twice.
INDICES = [np.array([3, 5, 3, 0, 3]), np.array([-1, 7, 39, 7, -40]), np.array([], dtype=np.int64)]

Build = Callable[[Any, Any], dict[Any, Any]]


def _grad(loss: Any, W: Any) -> Any:
    return pytensor.grad(loss, W)


def adagrad_pymc(loss: Any, W: Any) -> dict[Any, Any]:
    return dict(pm_updates.adagrad(loss, [W], learning_rate=0.5))


def adagrad_by_hand(loss: Any, W: Any) -> dict[Any, Any]:
    acc = pytensor.shared(np.zeros((V, D)), name="acc")
    g = _grad(loss, W)
    new_acc = acc + g**2
    return {acc: new_acc, W: W - 0.5 * g / pt.sqrt(new_acc + 1e-6)}


def sign_sgd(loss: Any, W: Any) -> dict[Any, Any]:
    return {W: W - 0.1 * pt.sign(_grad(loss, W))}


def clipped_sgd(loss: Any, W: Any) -> dict[Any, Any]:
    return {W: W - 0.1 * pt.clip(_grad(loss, W), -0.3, 0.3)}


def adagrad_sign(loss: Any, W: Any) -> dict[Any, Any]:
    """Two states and a nonlinear step: still the identity at zero."""
    acc = pytensor.shared(np.zeros((V, D)), name="acc")
    count = pytensor.shared(np.zeros((V, D)), name="count")
    g = _grad(loss, W)
    new_acc = acc + pt.abs(g)
    return {
        acc: new_acc,
        count: count + pt.sign(g) ** 2,
        W: W - 0.2 * pt.sign(g) / (1 + new_acc),
    }


REWRITTEN: dict[str, Build] = {
    "adagrad_pymc": adagrad_pymc,
    "adagrad_by_hand": adagrad_by_hand,
    "sign_sgd": sign_sgd,
    "clipped_sgd": clipped_sgd,
    "adagrad_sign": adagrad_sign,
}


def rmsprop(loss: Any, W: Any) -> dict[Any, Any]:
    return dict(pm_updates.rmsprop(loss, [W]))


def momentum(loss: Any, W: Any) -> dict[Any, Any]:
    return dict(pm_updates.momentum(loss, [W]))


def global_norm_clip(loss: Any, W: Any) -> dict[Any, Any]:
    g = _grad(loss, W)
    return {W: W - 0.1 * pt.sign(g) / pt.maximum(1.0, pt.sqrt((g**2).sum()))}


def decayed_sign(loss: Any, W: Any) -> dict[Any, Any]:
    return {W: 0.99 * W - 0.1 * pt.sign(_grad(loss, W))}


LEFT_ALONE: dict[str, Build] = {
    "rmsprop": rmsprop,
    "momentum": momentum,
    "global_norm_clip": global_norm_clip,
    "decayed_sign": decayed_sign,
}


def compile_step(build: Build, mode: Mode | str) -> tuple[Any, Any, list[Any]]:
    W = pytensor.shared(np.random.default_rng(0).normal(size=(V, D)), name="W")
    idx = pt.lvector("idx")
    C = pt.matrix("C")
    updates = build((pt.tanh(W[idx]) * C).sum(), W)
    f = pytensor.function([idx, C], [], updates=updates, mode=mode)
    return f, W, [v for v in updates if v is not W]


def run(build: Build, mode: Mode | str, steps: int = 3) -> list[np.ndarray]:
    f, W, states = compile_step(build, mode)
    rng = np.random.default_rng(1)
    for _ in range(steps):
        for rows in INDICES:
            f(rows, rng.normal(size=(len(rows), D)))
    return [W.get_value(), *(s.get_value() for s in states)]


def big_allocations(f: Any, W: Any) -> list[Any]:
    """Allocations whose row count is read off W (a V x D block), in the compiled graph."""
    nodes = []
    for node in f.maker.fgraph.apply_nodes:
        if isinstance(node.op, Alloc | AllocEmpty):
            rows = node.inputs[1] if isinstance(node.op, Alloc) else node.inputs[0]
            if W in set(ancestors([rows])):
                nodes.append(node)
    return nodes


@pytest.mark.parametrize("mode_name", ["NUMBA", "CVM", "FAST_COMPILE"])
@pytest.mark.parametrize("name", sorted(REWRITTEN))
def test_rewritten_updates_equal_the_dense_run(name: str, mode_name: str) -> None:
    build = REWRITTEN[name]
    f, W, _ = compile_step(build, subsetgrad.mode(mode_name))
    assert subsetgrad.counters["sparse_state"] == 1
    assert subsetgrad.counters["subset_update"] == 0
    assert big_allocations(f, W) == []
    got = run(build, subsetgrad.mode(mode_name))
    want = run(build, REFERENCE)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("name", sorted(LEFT_ALONE))
def test_updates_a_zero_gradient_changes_are_left_alone(name: str) -> None:
    build = LEFT_ALONE[name]
    mode = Mode(linker="py", optimizer="fast_run").including("subsetgrad")
    got = run(build, mode)
    assert subsetgrad.counters["sparse_state"] == 0
    for a, b in zip(got, run(build, REFERENCE), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_plain_sgd_stays_with_subset_update() -> None:
    compile_step(lambda loss, W: {W: W - 0.1 * _grad(loss, W)}, subsetgrad.mode("FAST_COMPILE"))
    assert subsetgrad.counters["sparse_state"] == 0
    assert subsetgrad.counters["subset_update"] == 1


def test_dense_step_is_unchanged_without_the_tag() -> None:
    f, W, _ = compile_step(adagrad_pymc, "NUMBA")
    assert subsetgrad.counters["sparse_state"] == 0
    assert big_allocations(f, W)


def test_out_of_range_row_still_raises() -> None:
    f, _, _ = compile_step(sign_sgd, subsetgrad.mode("FAST_COMPILE"))
    with pytest.raises(Exception, match="out of bounds"):
        f(np.array([1, -V - 1]), np.ones((2, D)))
