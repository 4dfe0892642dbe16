"""Lint speed: `subsetgrad.check` on graphs of just over 1k, 10k and 100k nodes.

Each graph has many tables, each with its own lookups, a cost, an SGD update
and an RMSprop-style accumulator, so every rule has work to do. Target: under
1 s at 100k nodes, and time linear in the number of nodes.

Each check is followed by a fixed pure-Python workload (dict, set and list
work, like the lint's), the machine reference. A busy machine slows both
together, so their ratio tells a slow machine from a slow lint.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytensor
import pytensor.tensor as pt

import subsetgrad
from benchmarks._common import machine
from subsetgrad.graph import GraphIndex

NAME = "lint"
TARGET_SECONDS_AT_100K = 1.0


def build(n_tables: int) -> tuple[list[Any], dict[Any, Any]]:
    idx = pt.lvector("idx")
    outputs: list[Any] = []
    updates: dict[Any, Any] = {}
    for k in range(n_tables):
        W = pytensor.shared(np.zeros((50, 4)), name=f"W{k}")
        acc = pytensor.shared(np.zeros((50, 4)), name=f"acc{k}")
        rows = W[idx]
        cost = (pt.tanh(rows) ** 2).sum() + (rows * W[idx[::-1]]).sum()
        g = pytensor.grad(cost, W)
        new_acc = 0.9 * acc + 0.1 * g**2
        updates[acc] = new_acc
        updates[W] = W - 0.01 * g / pt.sqrt(new_acc + 1e-6)
        outputs.append(cost)
    return outputs, updates


def reference() -> float:
    """Seconds for the machine reference: a fixed amount of dict, set and list work."""
    start = time.perf_counter()
    items = [object() for _ in range(100_000)]
    index = {x: [i] for i, x in enumerate(items)}
    seen = set()
    for x in items:
        if x not in seen:
            seen.add(x)
            index[x].append(len(seen))
    del index, seen, items
    return time.perf_counter() - start


def measure(n_tables: int, repeats: int) -> dict[str, Any]:
    outputs, updates = build(n_tables)
    nodes = len(GraphIndex.from_outputs([*outputs, *updates.values()]).nodes)
    times, refs, findings = [], [], 0
    for _ in range(repeats):
        gc.collect()  # the previous repeat's garbage is not this one's cost
        start = time.perf_counter()
        findings = len(subsetgrad.check(outputs, updates, mode="NUMBA"))
        times.append(time.perf_counter() - start)
        gc.collect()
        refs.append(reference())
    return {
        "tables": n_tables,
        "nodes": nodes,
        "findings": findings,
        "median_s": statistics.median(times),
        "min_s": min(times),
        "reference_ms": 1e3 * statistics.median(refs),
        # Per repeat, so a spell that slows both cancels out.
        "per_reference": statistics.median(t / r for t, r in zip(times, refs, strict=True)),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks lint", description=__doc__)
    # 49 nodes a table: 1,029, 10,045 and 100,009 nodes.
    parser.add_argument("--tables", default="21,205,2041", help="tables per graph")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    rows = [measure(int(t), args.repeats) for t in args.tables.split(",")]
    print(
        f"{'nodes':>8} {'tables':>7} {'findings':>9} {'median s':>9} {'us/node':>8} "
        f"{'ref ms':>7} {'x ref':>6}"
    )
    for r in rows:
        print(
            f"{r['nodes']:>8,} {r['tables']:>7} {r['findings']:>9} {r['median_s']:>9.3f} "
            f"{1e6 * r['median_s'] / r['nodes']:>8.2f} {r['reference_ms']:>7.1f} "
            f"{r['per_reference']:>6.1f}"
        )
    big = max(rows, key=lambda r: r["nodes"])
    verdict = "PASS" if big["median_s"] < TARGET_SECONDS_AT_100K else "FAIL"
    print(
        f"{verdict}  {big['nodes']:,} nodes in {big['median_s']:.3f} s "
        f"(target < {TARGET_SECONDS_AT_100K:g} s at 100k nodes)"
    )
    for r in rows:
        print(json.dumps({"benchmark": NAME, "kind": "measurement", **r}))
    print(json.dumps({"benchmark": NAME, "kind": "machine", **machine()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
