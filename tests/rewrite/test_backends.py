"""The subset-update rewrite on the JAX and PyTorch backends (``./dev test-backends``).

Every lookup form in `tests.cases.LOOKUPS` (repeated and negative indices
included) with the plain, per-column, per-row and weight-decay updates is
compiled with ``subsetgrad.mode("JAX")`` / ``subsetgrad.mode("PYTORCH")``; the
rewrite must fire and two training steps must match
``Mode(linker="py", optimizer=None)``. Without jax or torch installed the
tests skip.

Backend limitations (the dense graph fails the same way on that backend, which
`test_limitations_are_the_backends` checks), marked xfail:

- JAX, ``W[mask]``: PyTensor's JAX backend cannot index with a boolean mask
  that is a runtime input; under ``jax.jit`` it raises
  ``NonConcreteBooleanIndexError``.
- PyTorch, ``W[:, idx]`` and ``take(W, idx, axis=1)``: PyTensor's PyTorch
  backend has no ``AdvancedIncSubtensor`` with possibly repeated indices next
  to a slice ("IncSubtensor with potential duplicates indexes and slice
  indexing not implemented in PyTorch"); the dense gradient needs the same op.

``W[mask]`` with a per-column or per-row scale is left unrewritten on every
backend (`tests.cases.rewrite_applies`): gathering the factor at the mask would
need ``nonzero``, which PyTensor cannot run on PyTorch, or a V x D broadcast.

With PyTensor's own JAX and PyTorch linkers (``get_mode(b).including("subsetgrad")``)
the rewritten step is exact but writes a new table every call: PyTensor's JAX linker
jits without buffer donation, and its PyTorch linker excludes the in-place rewrites.
``subsetgrad.mode(b)`` swaps in the linkers of `subsetgrad.backends`, which update
the table in place; tests/backends checks that.

`test_pytensor_linkers_copy_the_table` keeps the "copied" claim checked.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytensor
import pytest
from pytensor.compile.mode import Mode, get_mode
from pytensor.tensor.basic import Alloc, AllocEmpty
from pytensor.tensor.subtensor import AdvancedIncSubtensor

import subsetgrad
from subsetgrad.graph import is_scatter_into_zeros
from tests.cases import LOOKUPS, TABLE, UPDATES, Lookup, Update, cost_of, rewrite_applies

pytestmark = pytest.mark.backends

REFERENCE = Mode(linker="py", optimizer=None)

# PyTensor mode name -> the module it needs.
BACKENDS = {"JAX": "jax", "PYTORCH": "torch"}

UPDATE_NAMES = ["W - lr*g", "W - col*g", "W - row*g", "W*(1-lr*wd) - lr*g", "W - lr*(g + wd*W)"]
SELECTED_UPDATES = [u for u in UPDATES if u.name in UPDATE_NAMES]
assert len(SELECTED_UPDATES) == len(UPDATE_NAMES)

_TORCH_SLICE = (
    "PyTensor's PyTorch backend does not implement AdvancedIncSubtensor with possibly "
    "repeated indices next to a slice; the dense gradient of this lookup needs it too"
)
# (backend, lookup name) -> (reason, exceptions the dense and rewritten graphs raise)
LIMITATIONS: dict[tuple[str, str], tuple[str, tuple[type[BaseException], ...]]] = {
    ("JAX", "mask"): (
        "PyTensor's JAX backend cannot index with a runtime boolean mask "
        "(NonConcreteBooleanIndexError, an IndexError, under jax.jit)",
        (IndexError,),
    ),
    ("PYTORCH", "cols"): (_TORCH_SLICE, (NotImplementedError,)),
    ("PYTORCH", "take1"): (_TORCH_SLICE, (NotImplementedError,)),
}


def need(backend: str) -> None:
    module = BACKENDS[backend]
    pytest.importorskip(
        module, reason=f"the {backend} backend needs {module}; `./dev test-backends` installs it"
    )


def build(lookup: Lookup, update: Update) -> tuple[Any, list[Any], Any]:
    W = pytensor.shared(TABLE.copy(), name="W")
    idx_inputs, x = lookup.build(W)
    g = pytensor.grad(cost_of(x), W)
    extra, new_W = update.build(W, g)
    return W, [*idx_inputs, *extra], new_W


def train(lookup: Lookup, update: Update, mode: Mode, steps: int = 2) -> tuple[np.ndarray, Any]:
    """Compile one step with `mode`, take `steps` of them; the final table and the function."""
    W, inputs, new_W = build(lookup, update)
    f = pytensor.function(inputs, [], updates={W: new_W}, mode=mode)
    for _ in range(steps):
        f(*lookup.values, *update.values)
    return np.asarray(W.get_value()), f


def assert_increments(f: Any) -> None:
    """The compiled update is an accumulating increment, with no dense zeros table left.

    Integer allocations are allowed: gathering a factor along an axis it is
    broadcast on indexes it with ``zeros_like(idx)``, which is batch-sized.
    """
    fg = f.maker.fgraph
    allocs = [
        n
        for n in fg.apply_nodes
        if isinstance(n.op, Alloc | AllocEmpty) and n.outputs[0].dtype.startswith("float")
    ]
    assert not allocs, f"a dense allocation survived: {allocs}"
    scatters = [n for n in fg.apply_nodes if is_scatter_into_zeros(n)]
    assert not scatters, f"a full-table scatter survived: {scatters}"
    update = fg.outputs[-1].owner
    assert isinstance(update.op, AdvancedIncSubtensor), update
    assert not update.op.set_instead_of_inc and not update.op.ignore_duplicates


def cases() -> Iterator[Any]:
    for backend in BACKENDS:
        for update in SELECTED_UPDATES:
            for lookup in LOOKUPS:
                marks = []
                if (backend, lookup.name) in LIMITATIONS:
                    reason, raises = LIMITATIONS[backend, lookup.name]
                    marks.append(pytest.mark.xfail(reason=reason, raises=raises, strict=True))
                yield pytest.param(
                    backend,
                    lookup,
                    update,
                    id=f"{backend}-{lookup.name}-{update.name}",
                    marks=marks,
                )


@pytest.mark.parametrize(("backend", "lookup", "update"), list(cases()))
def test_rewritten_steps_match_reference(backend: str, lookup: Lookup, update: Update) -> None:
    need(backend)
    got, f = train(lookup, update, subsetgrad.mode(backend))
    applies = rewrite_applies(lookup, update)
    assert subsetgrad.counters["subset_update"] == int(applies)
    if applies:
        assert_increments(f)
    want, _ = train(lookup, update, REFERENCE)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    assert not np.allclose(got, TABLE), "the steps changed nothing: the test would not see a bug"


@pytest.mark.parametrize(("backend", "lookup_name"), sorted(LIMITATIONS))
def test_limitations_are_the_backends(backend: str, lookup_name: str) -> None:
    """Each xfail above fails the same way without subsetgrad, so it is not the rewrite's.

    When PyTensor lifts a limitation this fails: drop the entry from LIMITATIONS.
    """
    need(backend)
    _reason, raises = LIMITATIONS[backend, lookup_name]
    (lookup,) = [lk for lk in LOOKUPS if lk.name == lookup_name]
    for update in SELECTED_UPDATES:
        with pytest.raises(raises):
            train(lookup, update, get_mode(backend), steps=1)


def _buffer_address(value: Any) -> int:
    if hasattr(value, "unsafe_buffer_pointer"):  # a jax Array
        return int(value.unsafe_buffer_pointer())
    return int(np.asarray(value).__array_interface__["data"][0])


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_pytensor_linkers_copy_the_table(backend: str) -> None:
    """Backs the module docstring: with PyTensor's own linker the step writes a new W.

    If this starts failing, PyTensor has learnt to update W in place there (JAX
    buffer donation, PyTorch in-place increments): update the docs.
    """
    need(backend)
    lookup, update = LOOKUPS[0], SELECTED_UPDATES[0]
    W, inputs, new_W = build(lookup, update)
    mode = get_mode(backend).including("subsetgrad")
    f = pytensor.function(inputs, [], updates={W: new_W}, mode=mode)
    assert subsetgrad.counters["subset_update"] == 1
    f(*lookup.values)
    before = W.get_value(borrow=True)  # kept alive, so its address cannot be reused
    f(*lookup.values)
    after = W.get_value(borrow=True)
    assert _buffer_address(after) != _buffer_address(before)


@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize("name", ["adagrad_by_hand", "sign_sgd", "clipped_sgd"])
def test_sparse_state_matches_reference(backend: str, name: str) -> None:
    """The sort-based row deduplication of `SparseState` runs on JAX and PyTorch too."""
    from tests.rewrite import test_sparse_state as sparse

    need(backend)
    build = sparse.REWRITTEN[name]
    got = sparse.run(build, subsetgrad.mode(backend))
    assert subsetgrad.counters["sparse_state"] >= 1
    for a, b in zip(got, sparse.run(build, REFERENCE), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize(
    ("name", "policy"), [("adam", "lazy"), ("momentum", "catchup"), ("adam", "catchup")]
)
def test_sparse_updates_match_reference(backend: str, name: str, policy: str) -> None:
    """`sparse_updates`' steps and flush, compiled for JAX and PyTorch."""
    from tests.optim.test_sparse_updates import check_against_reference, pymc_updates

    need(backend)
    if backend == "PYTORCH" and name == "adam":
        # The bias correction's beta**t is a Pow, which PyTensor's PyTorch backend
        # lacks (it calls torch.power): PyMC's dense Adam fails the same way.
        W, idx = pytensor.shared(np.ones((4, 2))), pytensor.tensor.lvector()
        dense = pymc_updates(name)((W[idx] ** 2).sum(), W, {})
        with pytest.raises(AttributeError, match="power"):
            pytensor.function([idx], [], updates=dense, mode=backend)
        pytest.xfail("PyTensor's PyTorch backend has no Pow")
    check_against_reference(pymc_updates(name), name, policy, "float64", backend, steps=8)
