"""Training steps shared by the backend tests, and what to compare them against."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytensor
import pytensor.tensor as pt
from pytensor.compile.mode import Mode

V, D = 50, 6
LR = np.float32(0.1)

# Index batches: repeats, negatives, an empty batch; the matrix form too.
INDICES = {
    "repeats": np.array([3, 1, 3, 3, 7, 1], dtype="int64"),
    "negative": np.array([-1, 4, -50, 49, -1], dtype="int64"),
    "empty": np.array([], dtype="int64"),
    "matrix": np.array([[2, -3, 2], [9, 2, 0]], dtype="int64"),
}


def table(dtype: str = "float32", seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(V, D)).astype(dtype)


def batch(idx: np.ndarray, dtype: str = "float32", seed: int = 1) -> list[np.ndarray]:
    """The step's inputs for an index batch: idx, then a target of shape idx + (D,)."""
    rng = np.random.default_rng(seed)
    return [idx, rng.normal(size=(*idx.shape, D)).astype(dtype)]


def build(kind: str, idx_ndim: int = 1, dtype: str = "float32", seed: int = 0) -> dict[str, Any]:
    """A step on a fresh shared table: inputs, the shared variables, the updates.

    "sgd": ``W - lr * grad(cost, W)`` (the rewrite makes it an increment of rows);
    "adagrad": a stateful step (the rewrite makes it a set of the batch's rows).
    """
    W = pytensor.shared(table(dtype, seed), name="W")
    idx = pt.tensor("idx", dtype="int64", shape=(None,) * idx_ndim)
    target = pt.tensor("target", dtype=dtype, shape=(None,) * (idx_ndim + 1))
    rows = W[idx]
    # sqr, not ** 2: PyTorch has no dispatch of Pow for a graph compiled without rewrites.
    cost = pt.sqr((rows * target).sum(axis=-1) - 1).sum()
    g = pytensor.grad(cost, W)
    lr = pt.constant(LR.astype(dtype))
    shared = [W]
    if kind == "sgd":
        updates = {W: W - lr * g}
    elif kind == "adagrad":
        acc = pytensor.shared(np.full((V, D), 0.1, dtype), name="acc")
        shared.append(acc)
        new_acc = acc + pt.sqr(g)
        updates = {W: W - lr * g / pt.sqrt(new_acc), acc: new_acc}
    else:
        raise ValueError(kind)
    return {"inputs": [idx, target], "shared": shared, "updates": updates}


def compile_step(kind: str, mode: Mode | str, idx_ndim: int = 1, dtype: str = "float32") -> Any:
    """Compile one step; return the function and its shared variables."""
    s = build(kind, idx_ndim, dtype)
    f = pytensor.function(s["inputs"], [], updates=s["updates"], mode=mode)
    return f, s["shared"]


def run_steps(
    kind: str, mode: Mode | str, idx: np.ndarray, dtype: str = "float32", n: int = 3
) -> list[np.ndarray]:
    """The shared values after `n` steps on the same batch."""
    f, shared = compile_step(kind, mode, idx.ndim, dtype)
    for _ in range(n):
        f(*batch(idx, dtype))
    return [s.get_value() for s in shared]


def assert_no_dense_pass(fgraph: Any, tables: list[Any]) -> None:
    """No table-sized work: the tables are read only by index ops, no buffer has V rows.

    A dense update reads the whole table into an elementwise op or a copy, or adds a
    gradient built in a V-row buffer of zeros (an `Alloc` whose row count is the
    table's); the subset step only gathers rows, increments or sets rows, and
    allocates batch-sized buffers.
    """
    from pytensor.graph.fg import Output
    from pytensor.graph.traversal import ancestors
    from pytensor.tensor.basic import Alloc
    from pytensor.tensor.subtensor import AdvancedIncSubtensor, AdvancedSubtensor

    inputs = [i for i in fgraph.inputs if getattr(i, "name", None) in {t.name for t in tables}]
    assert len(inputs) == len(tables)
    for node in fgraph.apply_nodes:
        if isinstance(node.op, Alloc) and len(node.inputs) > 1:
            rows = node.inputs[1]
            assert not set(ancestors([rows])) & set(inputs), f"V-row buffer: {node}"
    for inp in inputs:
        readers = [c.op for c, _ in fgraph.clients[inp] if not isinstance(c.op, Output)]
        assert readers
        for op in readers:
            # Shape_i reads only the shape.
            if type(op).__name__ == "Shape_i":
                continue
            assert isinstance(op, AdvancedSubtensor | AdvancedIncSubtensor), op


def assert_close(got: list[np.ndarray], want: list[np.ndarray], dtype: str) -> None:
    tol = {"float32": 2e-5, "float64": 1e-12}[dtype]
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=tol, atol=tol)


Check = Callable[..., None]
