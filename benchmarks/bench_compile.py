"""What the subsetgrad rewrites add to compiling: the rewrite phase with and without them.

For each graph, NUMBA's rewrite phase (``mode.optimizer`` on a fresh FunctionGraph of
the graph, the update mapping included; no code generation) is timed with
``get_mode("NUMBA")`` and with ``subsetgrad.mode("NUMBA")``, interleaved, and the
medians compared:

- pymc: a hierarchical PyMC model with group effects, its logp and dlogp;
- transformer: a two-layer attention model over an embedding, trained with Adam;
- tables: 300 lookup tables trained with SGD;
- no-lookups: an elementwise graph of 100k nodes without any lookup.

Targets: at most 5% added on every graph; on the graph without lookups, the rewrites
must leave at once (at most 1%).
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
from pytensor.compile.aliasing import add_supervisor_to_fgraph
from pytensor.compile.io import In
from pytensor.compile.mode import get_mode
from pytensor.graph.basic import Constant
from pytensor.graph.fg import FunctionGraph
from pytensor.graph.traversal import graph_inputs

import subsetgrad
from benchmarks._common import machine

NAME = "compile"
MAX_ADDED, MAX_ADDED_WITHOUT_LOOKUPS = 0.05, 0.01

Graph = tuple[list[Any], list[Any], dict[Any, Any]]  # inputs, outputs, updates


def pymc_model() -> Graph:
    import pymc as pm

    rng = np.random.default_rng(0)
    groups, n = 40, 2000
    group = rng.integers(0, groups, size=n)
    with pm.Model() as model:
        mu = pm.Normal("mu", 0, 1)
        sigma = pm.HalfNormal("sigma", 1)
        a = pm.Normal("a", mu, sigma, shape=groups)
        b = pm.Normal("b", 0, 1)
        pm.Normal("y", a[group] + b * rng.normal(size=n), 1, observed=rng.normal(size=n))
    logp = model.logp()
    values = model.value_vars
    return values, [logp, *pytensor.grad(logp, values)], {}


def transformer() -> Graph:
    import pymc.variational.updates as updates

    rng = np.random.default_rng(0)
    V, D = 5000, 32

    def param(*shape: int, name: str) -> Any:
        return pytensor.shared(rng.normal(size=shape) * 0.1, name=name)

    E = param(V, D, name="E")
    tokens = pt.lmatrix("tokens")
    x = E[tokens]
    params = [E]
    for layer in range(2):
        q, k, v, o = (param(D, D, name=f"{n}{layer}") for n in "qkvo")
        params += [q, k, v, o]
        scores = pt.special.softmax((x @ q) @ (x @ k).transpose(0, 2, 1) / np.sqrt(D), axis=-1)
        x = x + pt.tanh((scores @ (x @ v)) @ o)
    loss = (x[:, -1] @ E.T).mean()
    return [tokens], [loss], dict(updates.adam(loss, params, learning_rate=1e-3))


def tables() -> Graph:
    rng = np.random.default_rng(0)
    idx = pt.lvector("idx")
    ws = [pytensor.shared(rng.normal(size=(50, 4)), name=f"W{k}") for k in range(300)]
    loss = pt.add(*[(pt.tanh(W[idx]) ** 2).sum() for W in ws])
    grads = pytensor.grad(loss, ws)
    return [idx], [loss], {W: W - 0.1 * g for W, g in zip(ws, grads, strict=True)}


def no_lookups(nodes: int = 100_000) -> Graph:
    x = pt.vector("x")
    out, terms = x, []
    for k in range(nodes // 4):
        out = pt.tanh(out * (1 + k % 7) + 0.5)
        if k % 500 == 0:
            terms.append(out.sum())
    return [x], [pt.add(*terms)], {}


GRAPHS: dict[str, Callable[[], Graph]] = {
    "pymc": pymc_model,
    "transformer": transformer,
    "tables": tables,
    "no-lookups": no_lookups,
}


def rewrite_time(graph: Graph, mode: Any) -> tuple[float, int]:
    """Seconds of `mode`'s rewrite phase on a fresh copy of `graph`, and its node count."""
    _, outputs, updates = graph
    pairs = list(updates.items())
    every = [*outputs, *(v for _, v in pairs)]
    roots = [v for v in graph_inputs(every) if not isinstance(v, Constant)]
    fgraph = FunctionGraph(roots, every, clone=True)
    # What pytensor.function sets: which output updates which input.
    fgraph.update_mapping = {len(outputs) + k: roots.index(t) for k, (t, _) in enumerate(pairs)}
    updated = set(fgraph.update_mapping.values())
    add_supervisor_to_fgraph(fgraph, [In(r, mutable=k in updated) for k, r in enumerate(roots)])
    nodes = len(fgraph.apply_nodes)
    start = time.perf_counter()
    mode.optimizer.rewrite(fgraph)
    return time.perf_counter() - start, nodes


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m benchmarks {NAME}", description=__doc__)
    parser.add_argument("--graphs", nargs="+", default=list(GRAPHS), choices=list(GRAPHS))
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    modes = {"without": get_mode("NUMBA"), "with": subsetgrad.mode("NUMBA")}
    print(f"{'graph':<12} {'nodes':>8} {'without (s)':>12} {'with (s)':>10} {'added':>8}")
    rows = []
    for name in args.graphs:
        graph = GRAPHS[name]()
        times: dict[str, list[float]] = {m: [] for m in modes}
        nodes = 0
        for _ in range(args.rounds):
            for label, mode in modes.items():
                seconds, nodes = rewrite_time(graph, mode)
                times[label].append(seconds)
        without, with_ = (float(np.median(times[m])) for m in modes)
        added = with_ / without - 1
        limit = MAX_ADDED_WITHOUT_LOOKUPS if name == "no-lookups" else MAX_ADDED
        verdict = "PASS" if added <= limit else "FAIL"
        rows.append({"graph": name, "nodes": nodes, "without_s": without, "with_s": with_})
        print(
            f"{name:<12} {nodes:>8} {without:>12.3f} {with_:>10.3f} {added:>+8.1%}  "
            f"{verdict} (<= {limit:.0%})",
            flush=True,
        )
    for row in rows:
        print(json.dumps({"benchmark": NAME, **row}))
    print(json.dumps({"benchmark": NAME, "machine": machine()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
