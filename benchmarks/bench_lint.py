"""Lint speed: `subsetgrad.check` on graphs of just over 1k, 10k and 100k nodes.

Three families of graphs, each with many tables of two lookups:

- "update": each table has its own cost, an SGD update from `grad(cost, W)` and
  an RMSprop-style accumulator (SG101, SG102 and SG301 have work to do);
- "subset": one cost over every table, `grad(cost, rows)` for all the lookups
  in one call under `subsetgrad.record()`, and hand-written subset updates,
  half of them `set_subtensor` (SG202 and SG203 have work to do);
- "clip": one cost over every table, every gradient clipped by their global
  norm, and RMSprop-style accumulators (every state reaches every gradient
  through the norm; SG102 and SG301 have work to do);
- "rowwise": as "update" without the state, each table stepped by the clip or
  the sign of its gradient (SG101 asks the rewrite's row-by-row analysis).

Target: under 1 s at 100k nodes, and time linear in the number of nodes.

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


def _own_cost(k: int, idx: Any) -> tuple[Any, Any, Any]:
    """Table `k`, its cost over two lookups, and the cost's full-table gradient."""
    W = pytensor.shared(np.zeros((50, 4)), name=f"W{k}")
    rows = W[idx]
    cost = (pt.tanh(rows) ** 2).sum() + (rows * W[idx[::-1]]).sum()
    return W, cost, pytensor.grad(cost, W)


def build(n_tables: int) -> tuple[list[Any], dict[Any, Any]]:
    idx = pt.lvector("idx")
    outputs: list[Any] = []
    updates: dict[Any, Any] = {}
    for k in range(n_tables):
        W, cost, g = _own_cost(k, idx)
        acc = pytensor.shared(np.zeros((50, 4)), name=f"acc{k}")
        new_acc = 0.9 * acc + 0.1 * g**2
        updates[acc] = new_acc
        updates[W] = W - 0.01 * g / pt.sqrt(new_acc + 1e-6)
        outputs.append(cost)
    return outputs, updates


def build_subset(n_tables: int) -> tuple[list[Any], dict[Any, Any]]:
    idx = pt.lvector("idx")
    with subsetgrad.record():
        tables = [pytensor.shared(np.zeros((50, 4)), name=f"W{k}") for k in range(n_tables)]
        rows = [W[idx] for W in tables]
        # The second lookup is a path `grad(cost, rows)` misses: SG202 for every table.
        cost = pt.add(
            *[
                (pt.tanh(r) ** 2).sum() + (r * W[idx[::-1]]).sum()
                for W, r in zip(tables, rows, strict=True)
            ]
        )
        grads = pytensor.grad(cost, rows)
    updates: dict[Any, Any] = {}
    for k, (W, r, g) in enumerate(zip(tables, rows, grads, strict=True)):
        updates[W] = pt.inc_subtensor(r, -0.01 * g) if k % 2 else pt.set_subtensor(r, r - 0.01 * g)
    return [cost], updates


def build_clip(n_tables: int) -> tuple[list[Any], dict[Any, Any]]:
    idx = pt.lvector("idx")
    tables = [pytensor.shared(np.zeros((50, 4)), name=f"W{k}") for k in range(n_tables)]
    states = [pytensor.shared(np.zeros((50, 4)), name=f"acc{k}") for k in range(n_tables)]
    cost = pt.add(*[(pt.tanh(W[idx]) ** 2).sum() for W in tables])
    grads = pytensor.grad(cost, tables)
    scale = 1.0 / pt.maximum(pt.sqrt(pt.add(*[(g**2).sum() for g in grads])), 1.0)
    updates: dict[Any, Any] = {}
    for W, acc, g in zip(tables, states, grads, strict=True):
        new_acc = 0.9 * acc + 0.1 * (g * scale) ** 2
        updates[acc] = new_acc
        updates[W] = W - 0.01 * g * scale / pt.sqrt(new_acc + 1e-6)
    return [cost], updates


def build_rowwise(n_tables: int) -> tuple[list[Any], dict[Any, Any]]:
    idx = pt.lvector("idx")
    outputs: list[Any] = []
    updates: dict[Any, Any] = {}
    for k in range(n_tables):
        W, cost, g = _own_cost(k, idx)
        updates[W] = W - (0.01 * pt.clip(g, -1.0, 1.0) if k % 2 else 0.001 * pt.sign(g))
        outputs.append(cost)
    return outputs, updates


FAMILIES = {"update": build, "subset": build_subset, "clip": build_clip, "rowwise": build_rowwise}


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


def measure(family: str, n_tables: int, repeats: int) -> dict[str, Any]:
    outputs, updates = FAMILIES[family](n_tables)
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
        "graph": family,
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
    # About 49, 29.5, 41 and 40 nodes a table, for graphs of about 1k, 10k and 100k nodes.
    parser.add_argument("--tables", default="21,205,2041", help="tables per 'update' graph")
    parser.add_argument("--subset-tables", default="34,339,3390", help="tables per 'subset' graph")
    parser.add_argument("--clip-tables", default="25,244,2440", help="tables per 'clip' graph")
    parser.add_argument(
        "--rowwise-tables", default="26,251,2501", help="tables per 'rowwise' graph"
    )
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    sizes = {
        "update": args.tables,
        "subset": args.subset_tables,
        "clip": args.clip_tables,
        "rowwise": args.rowwise_tables,
    }
    rows = []
    for family, tables in sizes.items():
        for t in filter(None, tables.split(",")):
            rows.append(measure(family, int(t), args.repeats))
            r = rows[-1]
            # The whole run takes minutes: show each size as it is done.
            print(f"  {family} {r['nodes']:,} nodes: {r['median_s']:.3f} s", file=sys.stderr)
    print(
        f"{'graph':>7} {'nodes':>8} {'tables':>7} {'findings':>9} {'median s':>9} "
        f"{'us/node':>8} {'ref ms':>7} {'x ref':>6}"
    )
    for r in rows:
        print(
            f"{r['graph']:>7} {r['nodes']:>8,} {r['tables']:>7} {r['findings']:>9} "
            f"{r['median_s']:>9.3f} {1e6 * r['median_s'] / r['nodes']:>8.2f} "
            f"{r['reference_ms']:>7.1f} {r['per_reference']:>6.1f}"
        )
    for family in sizes:
        measured = [r for r in rows if r["graph"] == family]
        if not measured:
            continue
        big = max(measured, key=lambda r: r["nodes"])
        if big["nodes"] < 100_000:
            print(f"n/a   {family}: no graph of 100k nodes measured")
            continue
        verdict = "PASS" if big["median_s"] < TARGET_SECONDS_AT_100K else "FAIL"
        print(
            f"{verdict}  {family}: {big['nodes']:,} nodes in {big['median_s']:.3f} s "
            f"(target < {TARGET_SECONDS_AT_100K:g} s at 100k nodes)"
        )
    for r in rows:
        print(json.dumps({"benchmark": NAME, "kind": "measurement", **r}))
    print(json.dumps({"benchmark": NAME, "kind": "machine", **machine()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
