"""A recurrent training step that looks rows up inside a Scan: dense vs rewritten vs hoisted.

``h_t = tanh(E[ids_t] + h_{t-1} @ U)`` over T steps, batch 32, D = 32, float64,
SGD on the table E, on NUMBA. Compiled steps, each training its own copy:

- inside, dense: the lookup inside the step, the rewrite off;
- inside, rewritten: the same graph with ``subsetgrad.mode`` (ScanScatter must fire);
- hoisted, rewritten: ``E[seq]`` looked up before the loop and passed in as a
  sequence, the form SG103 used to ask users to write by hand;
- feedback, dense and rewritten: the next step's indices are computed inside the
  loop from its state, ``(31 * ids + argmax(h)) % V``. (A decoder's V-way output
  projection costs O(B x D x V) per step by itself, dense or not; this leaves it out
  to measure what the rewrite changes: the table's gradient.)

Medians of interleaved rounds in one process. Prints a table, PASS/FAIL per
target and JSON lines; exits 0 unless something crashes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytensor
import pytensor.tensor as pt
from pytensor.compile.mode import Mode, get_mode

import subsetgrad
from benchmarks._common import machine

NAME = "scan"
D, BATCH = 32, 32
DEFAULT_SIZES = (10_000, 100_000)
DEFAULT_STEPS = (10, 50)
DEFAULT_ROUNDS = 7
# Targets at V=1e5, T=50.
TARGET_V, TARGET_T = 100_000, 50
MIN_SEQUENCE_SPEEDUP, MAX_OVER_HOISTED, MIN_FEEDBACK_SPEEDUP = 50.0, 1.5, 20.0


def _step(V: int, T: int, form: str, mode: Mode) -> tuple[Callable[[], Any], Any]:
    rng = np.random.default_rng(0)
    E = pytensor.shared(rng.normal(size=(V, D)) * 0.1, name="E")
    U = pytensor.shared(np.eye(D) * 0.5, name="U")
    seq = pt.lmatrix("seq")
    h0 = pt.zeros((BATCH, D))
    if form == "hoisted":
        hs = pytensor.scan(
            lambda r, h: pt.tanh(r + h @ U),
            sequences=[E[seq]],
            outputs_info=[h0],
            return_updates=False,
        )
    elif form == "feedback":

        def decode(ids: Any, h: Any) -> tuple[Any, Any]:
            h2 = pt.tanh(E[ids] + h @ U)
            return (31 * ids + pt.argmax(h2, axis=-1)) % V, h2

        _, hs = pytensor.scan(decode, outputs_info=[seq[0], h0], n_steps=T, return_updates=False)
    else:
        hs = pytensor.scan(
            lambda ids, h: pt.tanh(E[ids] + h @ U),
            sequences=[seq],
            outputs_info=[h0],
            return_updates=False,
        )
    cost = (hs**2).mean()
    g = pytensor.grad(cost, E)
    f = pytensor.function([seq], cost, updates={E: E - 0.1 * g}, mode=mode)
    data = rng.integers(0, V, size=(T, BATCH))
    return (lambda: f(data)), f


VARIANTS: dict[str, tuple[str, Callable[[], Mode]]] = {
    "inside, dense": ("inside", lambda: get_mode("NUMBA")),
    "inside, rewritten": ("inside", lambda: subsetgrad.mode("NUMBA")),
    "hoisted, rewritten": ("hoisted", lambda: subsetgrad.mode("NUMBA")),
    "feedback, dense": ("feedback", lambda: get_mode("NUMBA")),
    "feedback, rewritten": ("feedback", lambda: subsetgrad.mode("NUMBA")),
}


def measure(V: int, T: int, rounds: int) -> dict[str, float]:
    steps = {}
    for name, (form, mode) in VARIANTS.items():
        subsetgrad.rewrite.reset_counters()
        run, _ = _step(V, T, form, mode())
        if "rewritten" in name and form != "hoisted":
            assert subsetgrad.counters["scan_scatter"] >= 1, f"{name}: the rewrite did not fire"
        run()  # warm-up
        steps[name] = run
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(rounds):
        for name, run in steps.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {name: float(np.median(t)) * 1e3 for name, t in times.items()}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m benchmarks {NAME}", description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=DEFAULT_SIZES)
    parser.add_argument("--steps", type=int, nargs="+", default=DEFAULT_STEPS)
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS)
    args = parser.parse_args(argv)
    rows = []
    print(f"{'V':>8} {'T':>4}  " + "  ".join(f"{v:>20}" for v in VARIANTS) + "   (ms, median)")
    for V in args.sizes:
        for T in args.steps:
            ms = measure(V, T, args.rounds)
            rows.append({"V": V, "T": T, "median_ms": ms})
            print(f"{V:>8} {T:>4}  " + "  ".join(f"{ms[v]:>20.3f}" for v in VARIANTS), flush=True)
    targets = []
    at = next((r["median_ms"] for r in rows if (r["V"], r["T"]) == (TARGET_V, TARGET_T)), None)
    if at is not None:
        targets = [
            (
                "sequence: dense / rewritten",
                at["inside, dense"] / at["inside, rewritten"],
                ">=",
                MIN_SEQUENCE_SPEEDUP,
            ),
            (
                "sequence: rewritten / hoisted",
                at["inside, rewritten"] / at["hoisted, rewritten"],
                "<=",
                MAX_OVER_HOISTED,
            ),
            (
                "feedback: dense / rewritten",
                at["feedback, dense"] / at["feedback, rewritten"],
                ">=",
                MIN_FEEDBACK_SPEEDUP,
            ),
        ]
    print(f"\ntargets at V={TARGET_V}, T={TARGET_T}:")
    for name, value, relation, limit in targets:
        ok = value >= limit if relation == ">=" else value <= limit
        print(f"  {'PASS' if ok else 'FAIL'}  {name} = {value:.2f} ({relation} {limit})")
    for row in rows:
        print(json.dumps({"benchmark": NAME, **row}))
    print(json.dumps({"benchmark": NAME, "machine": machine(), "device": "cpu"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
