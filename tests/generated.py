"""Random training programs around lookups, for differential runs of the rewrites.

Each case is built from one seed: one to three tables, one or two lookups of each
(repeated and negative indices), a cost made of a random chain of elementwise ops
over the lookups (mixing tables, casts, broadcasts, dense uses of a table), and for
each table an update drawn from forms the rewrite must make sparse (SGD, clipped,
sign, weight decay, adagrad), forms it must leave dense or handle row by row
(momentum, a norm of the gradient, a set with repeats), and outputs that alias an
update. The rewritten step (``subsetgrad.mode``) must match ``optimizer=None``.

``python -m tests.generated --cases 10000 --backend CVM`` runs a larger batch and
prints the counts; the test suite runs a slice (tests/rewrite/test_generated.py).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytensor
import pytensor.tensor as pt
from pytensor.compile.mode import Mode

REFERENCE = Mode(linker="py", optimizer=None)
UNARY: list[Callable[[Any], Any]] = [
    pt.tanh,
    lambda x: x**2,
    lambda x: pt.exp(-x),
    lambda x: 0.5 * x,
    lambda x: x - 0.3,
    pt.sin,
    lambda x: pt.cast(x, "float32"),
    lambda x: pt.maximum(x, 0.1),
]
UPDATES = [
    "sgd",
    "sgd-shared-lr",
    "clip",
    "sign",
    "decay",
    "per-row",
    "per-column",
    "adagrad",
    "momentum",
    "norm-clip",
    "set-repeats",
    "whole-read",
]


@dataclass
class Program:
    inputs: list[Any]
    outputs: list[Any]
    updates: dict[Any, Any]
    values: list[Any]
    tables: list[Any]
    description: str


def build(seed: int) -> Program:
    """The program of case `seed` (fresh shared variables each call, same values)."""
    rng = np.random.default_rng(seed)
    n_tables = int(rng.integers(1, 4))
    tables: list[Any] = []
    inputs: list[Any] = []
    values: list[Any] = []
    rows: list[Any] = []
    parts: list[Any] = []
    for k in range(n_tables):
        V, D = int(rng.integers(4, 13)), int(rng.integers(1, 5))
        W = pytensor.shared(rng.normal(size=(V, D)), name=f"W{k}")
        tables.append(W)
        for j in range(int(rng.integers(1, 3))):
            idx = pt.lvector(f"idx{k}_{j}")
            size = int(rng.integers(0, 7))
            values.append(rng.integers(-V, V, size=size))
            inputs.append(idx)
            rows.append(W[idx])
    for r in rows:
        x = r
        for _ in range(int(rng.integers(1, 4))):
            x = UNARY[int(rng.integers(len(UNARY)))](x)
        parts.append(pt.cast(x, "float64").sum())
    cost = pt.add(*parts)
    if rng.random() < 0.2:
        # A dense use of a table in the cost: its gradient is not only rows.
        cost = cost + 0.01 * (tables[0] ** 2).sum()
    grads = pytensor.grad(cost, tables)
    updates: dict[Any, Any] = {}
    chosen = []
    for W, g in zip(tables, grads, strict=True):
        form = UPDATES[int(rng.integers(len(UPDATES)))]
        chosen.append(form)
        updates.update(_update(form, W, g, rng, inputs, values))
    outputs = [cost]
    if rng.random() < 0.3:
        outputs.append(updates[tables[0]])  # an output that aliases an update
    return Program(inputs, outputs, updates, values, tables, f"seed {seed}: {chosen}")


def _update(
    form: str, W: Any, g: Any, rng: np.random.Generator, inputs: list[Any], values: list[Any]
) -> dict[Any, Any]:
    V, D = W.get_value().shape
    lr = float(rng.uniform(0.01, 0.2))
    zeros = np.zeros((V, D))
    if form == "sgd":
        return {W: W - lr * g}
    if form == "sgd-shared-lr":
        rate = pytensor.shared(np.float64(lr), name="lr")
        return {W: W + (-rate) * g}
    if form == "clip":
        return {W: W - lr * pt.clip(g, -0.5, 0.5)}
    if form == "sign":
        return {W: W - lr * pt.sign(g)}
    if form == "decay":
        return {W: W * (1 - lr * 0.01) - lr * g}
    if form == "per-row":
        return {W: W - pt.as_tensor(rng.uniform(0.01, 0.2, size=(V, 1))) * g}
    if form == "per-column":
        return {W: W - pt.as_tensor(rng.uniform(0.01, 0.2, size=D)) * g}
    if form == "adagrad":
        acc = pytensor.shared(zeros + 0.1, name="acc")
        new_acc = acc + g**2
        return {acc: new_acc, W: W - lr * g / pt.sqrt(new_acc + 1e-6)}
    if form == "momentum":
        v = pytensor.shared(zeros, name="velocity")
        new_v = 0.9 * v - lr * g
        return {v: new_v, W: W + new_v}
    if form == "norm-clip":
        return {W: W - lr * g / pt.maximum(pt.sqrt((g**2).sum()), 1.0)}
    if form == "set-repeats":
        idx = pt.lvector("set_idx")
        inputs.append(idx)
        values.append(rng.integers(0, V, size=int(rng.integers(1, 5))))
        return {W: pt.set_subtensor(W[idx], W[idx] - lr * g[idx])}
    # whole-read: a step that reads the table across rows
    return {W: W - lr * pt.sign(g) * W.mean()}


def run(program: Program, mode: Mode, steps: int = 2) -> list[np.ndarray]:
    f = pytensor.function(
        program.inputs,
        program.outputs,
        updates=program.updates,
        mode=mode,
        on_unused_input="ignore",
    )
    outs: list[np.ndarray] = []
    for _ in range(steps):
        outs += [np.asarray(o) for o in f(*program.values)]
    return outs + [t.get_value() for t in program.updates]


def check(seed: int, backend: str) -> str | None:
    """None when case `seed` matches ``optimizer=None`` on `backend`; else what differs."""
    import subsetgrad

    want = run(build(seed), REFERENCE)
    program = build(seed)
    got = run(program, subsetgrad.mode(backend))
    for a, b in zip(got, want, strict=True):
        # float32 casts in the cost round where the rewrite moves them: float32 tolerance.
        if a.shape != b.shape or not np.allclose(a, b, rtol=1e-5, atol=1e-6):
            return f"{program.description}: max |diff| {np.max(np.abs(a - b)):.3g}"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.generated", description=__doc__)
    parser.add_argument("--cases", type=int, default=1000)
    parser.add_argument("--first", type=int, default=0, help="first seed")
    parser.add_argument("--backend", default="CVM")
    args = parser.parse_args(argv)
    import subsetgrad

    start = time.perf_counter()
    mismatches = 0
    for seed in range(args.first, args.first + args.cases):
        problem = check(seed, args.backend)
        if problem is not None:
            mismatches += 1
            print(f"MISMATCH {problem}", flush=True)
        if (seed - args.first + 1) % 100 == 0:
            print(
                f"{seed - args.first + 1} cases, {mismatches} mismatches, "
                f"{time.perf_counter() - start:.0f} s",
                flush=True,
            )
    fired = dict(subsetgrad.counters)
    print(
        f"{args.backend}: {args.cases} cases from seed {args.first}, {mismatches} mismatches, "
        f"rewrites fired {fired}, {time.perf_counter() - start:.0f} s"
    )
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
