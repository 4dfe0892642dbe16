"""The shared matcher: zeros, index uniqueness, decomposition limits."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from pytensor.graph.basic import Apply, Variable

from subsetgrad.graph import (
    GraphIndex,
    ancestors,
    decompose_graph,
    depends_on,
    index_has_mask,
    index_of,
    indices_provably_unique,
    is_bool_index,
    is_zero,
    scatter_dependent,
    source_masks,
)


@pytest.mark.parametrize(
    ("index", "unique"),
    [
        (pt.arange(2, 6), True),
        (pt.arange(-1, -4, -1), True),  # -1, -2, -3: distinct rows whenever in range
        (pt.arange(0, -3, -1), False),  # 0, -1, -2: row 0 and row -2 meet in a table of 2
        (pt.arange(-2, 2), False),
        (pt.as_tensor(np.array([3, 1, 2])), True),
        (pt.as_tensor(np.array([3, 1, 3])), False),
        (pt.as_tensor(np.array([1, -1])), False),  # the last row may be row 1
        (pt.lvector(), False),
        (pt.lscalar(), True),
    ],
)
def test_indices_provably_unique(index: pt.TensorVariable, unique: bool) -> None:
    assert indices_provably_unique((index,), advanced=True) is unique


def test_two_constant_arrays_jointly() -> None:
    i = pt.as_tensor(np.array([0, 0, 1]))
    j = pt.as_tensor(np.array([0, 1, 0]))
    assert indices_provably_unique((i, j), advanced=True)
    assert not indices_provably_unique((i, pt.as_tensor(np.array([1, 1, 0]))), advanced=True)


def test_is_zero() -> None:
    W = pt.dmatrix("W")
    assert is_zero(pt.zeros_like(W))
    assert is_zero(pt.zeros((3, 2)))
    assert is_zero(pt.second(W, 0.0))
    assert not is_zero(pt.ones_like(W))
    assert not is_zero(W)
    assert is_zero(pt.constant(np.array([0.0, -0.0])))
    assert not is_zero(pt.constant(np.array([0.0, np.nan])))
    assert not is_zero(pt.constant(np.array([False, True])))


@pytest.mark.parametrize("dtype", ["int64", "uint8", "int8"])
def test_integer_values_are_not_linear(dtype: str) -> None:
    """Integer arithmetic wraps and integer casts truncate: never decomposed."""
    idx = pt.lvector("idx")
    scatter = pt.zeros((4, 3), dtype=dtype)[idx].inc(pt.matrix("v", dtype=dtype))
    out = pt.dmatrix("W") - scatter
    dec = decompose_graph(GraphIndex.from_outputs([out]))
    assert out not in dec.linear
    cast = pt.cast(pt.dmatrix("W") + pt.zeros((4, 3))[idx].inc(pt.dmatrix("v")), "int64")
    dec = decompose_graph(GraphIndex.from_outputs([cast]))
    assert cast not in dec.linear


def _graph_with_a_dense_increment() -> list[Variable]:
    """Two tables' gradients (scatters into zeros) and an increment of a dense base."""
    idx = pt.lvector("idx")
    outs: list[Variable] = []
    for k in range(2):
        W = pytensor.shared(np.zeros((5, 3)), name=f"W{k}")
        g = pytensor.grad((pt.tanh(W[idx]) ** 2).sum(), W)
        outs += [W - 0.1 * g / pt.sqrt(g**2 + 1.0), (g * 2).sum()]
    outs.append(pt.inc_subtensor(pt.dmatrix("D")[idx], 1.0) * 3)
    return outs


def test_inc_region_is_topological() -> None:
    index = GraphIndex.from_outputs(_graph_with_a_dense_increment())
    region = index.inc_region
    downstream = [
        n for n in index.nodes if any(v.owner in index.incs for v in ancestors(n.outputs))
    ]
    assert len(region) == len(set(region)) and set(region) == set(downstream)
    position = {node: k for k, node in enumerate(region)}
    for node in region:
        assert all(position[i.owner] < position[node] for i in node.inputs if i.owner in position)


def test_index_pass_orders_the_graph_and_gathers_the_region_uses() -> None:
    """One pass gives every node after its inputs, and the region variables' full uses."""
    outs = _graph_with_a_dense_increment()
    index = GraphIndex.from_outputs(outs)
    position = {node: k for k, node in enumerate(index.nodes)}
    assert len(position) == len(index.nodes)
    for node in index.nodes:
        assert all(position[i.owner] < position[node] for i in node.inputs if i.owner)
    # Every use of a region variable, as the uses of the whole graph list them.
    assert index.region_vars == {o for n in index.inc_region for o in n.outputs}
    for var in index.region_vars:
        assert index.region_clients.get(var, []) == index.clients.get(var, [])
    every_use: dict[Variable, set[tuple[Apply, int]]] = {}
    for var in ancestors(outs):
        if var.owner is not None:
            for j, i in enumerate(var.owner.inputs):
                every_use.setdefault(i, set()).add((var.owner, j))
    assert {v: set(uses) for v, uses in index.clients.items()} == every_use


def test_source_masks_agree_with_the_ancestors() -> None:
    outs = _graph_with_a_dense_increment()
    index = GraphIndex.from_outputs(outs)
    inputs = [v for n in index.nodes for v in n.inputs if v.owner is None and v.ndim == 1]
    # A node's output and a graph input (no owner) among the sources.
    sources = {index.incs[0].outputs[0]: 1, inputs[0]: 2}
    masks = source_masks(sources, index)
    for var in {v for n in index.nodes for v in (*n.inputs, *n.outputs)}:
        seen = set(ancestors([var]))
        expected = sum(bit for s, bit in sources.items() if s in seen)
        assert masks.get(var, 0) == expected, var


def test_scatter_dependent_leaves_out_dense_increments() -> None:
    index = GraphIndex.from_outputs(_graph_with_a_dense_increment())
    assert len(index.scatters) < len(index.incs)
    expected = {
        out
        for n in index.nodes
        for out in n.outputs
        if any(v.owner in index.scatters for v in ancestors([out]))
    }
    assert scatter_dependent(index) == expected


def _chain_of_lookups(n: int) -> tuple[list[Variable], list[Variable]]:
    """`n` lookups of one table and the running sums that add them up one by one."""
    x, idx = pt.dmatrix("x"), pt.lvector("idx")
    rows = [x[idx + k] for k in range(n)]
    total, sums = rows[0], []
    for r in rows[1:]:
        total = total + r
        sums.append(total)
    return rows, sums


def test_depends_on_agrees_with_the_ancestors(monkeypatch: pytest.MonkeyPatch) -> None:
    import subsetgrad.graph.index as graph

    n = 40
    rows, sums = _chain_of_lookups(n)
    index = GraphIndex.from_outputs(sums)
    passes: list[int] = []
    real = graph.source_masks
    monkeypatch.setattr(graph, "source_masks", lambda *a: passes.append(1) or real(*a))
    # Each sum reads the row it adds: answered a step up, with no mask pass.
    direct = [(s, {r}) for s, r in zip(sums, rows[1:], strict=True)]
    assert depends_on(direct, index) == [True] * len(direct)
    assert not passes
    # No sum but the last reads the last row, so asking each earlier sum about it
    # climbs the whole chain below it. That spends the budget, and one mask pass
    # answers the rest, among them the last questions, whose answers are yes.
    queries = [*direct, *((s, {rows[-1]}) for s in sums[:-1]), *((s, {rows[0]}) for s in sums)]
    expected = [any(v in srcs for v in ancestors([var])) for var, srcs in queries]
    assert depends_on(queries, index) == expected
    assert expected.count(False) == n - 2 and expected[-1]
    assert len(passes) == 1


@pytest.mark.parametrize(
    "build",
    [
        lambda x, i, m, s: x[i],
        lambda x, i, m, s: x[m],
        lambda x, i, m, s: x[:, m[0]],
        lambda x, i, m, s: x[s:, i, m[0, 0]],
        lambda x, i, m, s: x[s:5:2, i],
        lambda x, i, m, s: pt.inc_subtensor(x[m], 1.0),
        lambda x, i, m, s: pt.set_subtensor(x[1:, i, :2], 0.0),
    ],
)
def test_has_mask_agrees_with_the_index(build: Callable[..., Variable]) -> None:
    x, i, s = pt.tensor3("x"), pt.lvector("i"), pt.lscalar("s")
    node: Apply = build(x, i, pt.tensor3("m", dtype="bool"), s).owner
    assert index_has_mask(node) == any(is_bool_index(e) for e in index_of(node))


def test_identity_at_zero_does_not_confuse_decay_rates() -> None:
    """``1.0 * acc`` is unchanged at zero gradient and ``0.9 * acc`` is not, in either order."""
    from subsetgrad.graph import GraphIndex, identity_at_zero, scatter_dependent

    answers = {}
    for rho in (1.0, 0.9):
        W = pytensor.shared(np.ones((6, 2)), name="W")
        acc = pytensor.shared(np.zeros((6, 2)), name="acc")
        idx = pt.lvector("idx")
        g = pytensor.grad((W[idx] ** 2).sum(), W)
        value = rho * acc + 0.1 * g**2
        index = GraphIndex.from_outputs([value])
        dependent = scatter_dependent(index)
        answers[rho] = identity_at_zero(
            value, acc, [n.outputs[0] for n in index.scatters], dependent
        )
    assert answers == {1.0: True, 0.9: False}


@pytest.mark.parametrize(
    ("form", "unchanged"),
    [
        # adagrad with a global-norm clip: zero at the row, whatever the norm
        (lambda acc, g: acc + (g / pt.maximum(pt.sqrt((g**2).sum()), 1.0)) ** 2, True),
        # the sum is not zero at an untouched row while other rows have gradients
        (lambda acc, g: acc * (1.0 + g.sum()), False),
        # a transpose mixes rows and columns
        (lambda acc, g: acc + g.T.T[::-1], False),
    ],
)
def test_identity_at_zero_is_per_row(form: Callable[..., Any], unchanged: bool) -> None:
    """Only what is computed element by element from the gradient is zero at an untouched row."""
    from subsetgrad.graph import GraphIndex, identity_at_zero, scatter_dependent

    W = pytensor.shared(np.ones((6, 2)), name="W")
    acc = pytensor.shared(np.zeros((6, 2)), name="acc")
    idx = pt.lvector("idx")
    g = pytensor.grad((W[idx] ** 2).sum(), W)
    value = form(acc, g)
    index = GraphIndex.from_outputs([value])
    scatters = [n.outputs[0] for n in index.scatters]
    assert identity_at_zero(value, acc, scatters, scatter_dependent(index)) is unchanged
