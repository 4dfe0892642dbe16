"""The subset-update rewrite: structure of the compiled graph, and the numbers."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytensor
import pytest
from pytensor.compile.mode import Mode, get_mode
from pytensor.tensor.basic import Alloc, AllocEmpty
from pytensor.tensor.elemwise import Elemwise
from pytensor.tensor.subtensor import AdvancedIncSubtensor

import subsetgrad
from tests.cases import (
    LOOKUP_IDS,
    LOOKUPS,
    TABLE,
    UPDATE_IDS,
    UPDATES,
    Lookup,
    Update,
    cost_of,
    rewrite_applies,
)

REFERENCE = Mode(linker="py", optimizer=None)


def build(lookup: Lookup, update: Update, dtype: str = "float64") -> tuple[Any, ...]:
    W = pytensor.shared(TABLE.astype(dtype), name="W")
    idx_inputs, x = lookup.build(W)
    g = pytensor.grad(cost_of(x), W)
    extra, new_W = update.build(W, g)
    return W, [*idx_inputs, *extra], new_W


def step(lookup: Lookup, update: Update, mode: Mode | str) -> tuple[np.ndarray, Any]:
    """One compiled training step; returns the new table and the function."""
    W, inputs, new_W = build(lookup, update)
    f = pytensor.function(inputs, [], updates={W: new_W}, mode=mode)
    f(*lookup.values, *update.values)
    return W.get_value(), f


def fired(f: Any) -> None:
    """Fail unless the compiled `f` updates its table by increments, with no zeros table."""
    fg = f.maker.fgraph
    allocs = [n for n in fg.apply_nodes if isinstance(n.op, Alloc | AllocEmpty)]
    assert not allocs, f"a dense allocation survived: {allocs}"
    update = fg.outputs[-1].owner
    assert isinstance(update.op, AdvancedIncSubtensor), update
    assert not update.op.set_instead_of_inc and not update.op.ignore_duplicates


def updated_in_place(f: Any) -> None:
    """W's update is a chain of in-place increments that starts at W itself."""
    fg = f.maker.fgraph
    table = fg.inputs[fg.update_mapping[len(fg.outputs) - 1]]
    node = fg.outputs[-1].owner
    while isinstance(node.op, AdvancedIncSubtensor) and node.inputs[0] is not table:
        assert node.op.destroy_map == {0: [0]}
        node = node.inputs[0].owner
    assert isinstance(node.op, AdvancedIncSubtensor) and node.inputs[0] is table
    assert node.op.destroy_map == {0: [0]}, "W is copied, not updated in place"
    dense_readers = [
        c for c, _ in fg.clients[table] if isinstance(c.op, Elemwise) and c.outputs[0].ndim == 2
    ]
    assert not dense_readers, f"a V x D elementwise pass reads W: {dense_readers}"


def check_against_references(lookup: Lookup, update: Update, mode_name: str) -> Any:
    got, f = step(lookup, update, subsetgrad.mode(mode_name))
    assert subsetgrad.counters["subset_update"] == 1
    dense, _ = step(lookup, update, get_mode(mode_name))
    reference, _ = step(lookup, update, REFERENCE)
    np.testing.assert_allclose(got, reference, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got, dense, rtol=1e-12, atol=1e-12)
    assert not np.allclose(got, TABLE), "the step changed nothing: the test would not see a bug"
    return f


@pytest.mark.parametrize("mode_name", ["NUMBA", "CVM"])
@pytest.mark.parametrize("update", UPDATES, ids=UPDATE_IDS)
def test_update_forms(update: Update, mode_name: str) -> None:
    f = check_against_references(LOOKUPS[0], update, mode_name)
    fired(f)
    if not update.keeps_dense_pass:
        updated_in_place(f)


@pytest.mark.parametrize("mode_name", ["NUMBA", "CVM"])
@pytest.mark.parametrize("lookup", LOOKUPS, ids=LOOKUP_IDS)
def test_lookup_forms(lookup: Lookup, mode_name: str) -> None:
    f = check_against_references(lookup, UPDATES[0], mode_name)
    fired(f)
    updated_in_place(f)


@pytest.mark.parametrize("update", UPDATES, ids=UPDATE_IDS)
@pytest.mark.parametrize("lookup", LOOKUPS, ids=LOOKUP_IDS)
def test_every_lookup_with_every_update(lookup: Lookup, update: Update) -> None:
    """The full cross product, on the Python linker so that it stays quick."""
    got, _ = step(lookup, update, Mode(linker="py", optimizer="fast_run").including("subsetgrad"))
    assert subsetgrad.counters["subset_update"] == int(rewrite_applies(lookup, update))
    reference, _ = step(lookup, update, REFERENCE)
    np.testing.assert_allclose(got, reference, rtol=1e-12, atol=1e-12)


def test_fast_compile_removes_the_zeros_table() -> None:
    got, f = step(LOOKUPS[0], UPDATES[0], subsetgrad.mode("FAST_COMPILE"))
    assert subsetgrad.counters["subset_update"] == 1
    fired(f)
    reference, _ = step(LOOKUPS[0], UPDATES[0], REFERENCE)
    np.testing.assert_allclose(got, reference, rtol=1e-12)


@pytest.mark.parametrize("indices", [np.array([], dtype="int64"), np.array([-1, -1, -12, 0])])
def test_empty_and_negative_index_vectors(indices: np.ndarray) -> None:
    lookup = LOOKUPS[0]
    edge = type(lookup)(lookup.name, lookup.build, [indices])
    got, f = step(edge, UPDATES[0], subsetgrad.mode("NUMBA"))
    fired(f)
    reference, _ = step(edge, UPDATES[0], REFERENCE)
    np.testing.assert_allclose(got, reference, rtol=1e-12)
