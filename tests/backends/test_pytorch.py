"""PyTorch: the table's row increment runs in place on the shared variable's storage."""

from __future__ import annotations

import warnings

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from pytensor.compile.mode import Mode, get_mode
from pytensor.tensor.subtensor import AdvancedIncSubtensor

import subsetgrad
from subsetgrad.backends import backend_mode
from tests.backends import steps

pytestmark = pytest.mark.backends
torch = pytest.importorskip("torch")

from subsetgrad.backends.pytorch import InplacePytorchLinker  # noqa: E402


@pytest.fixture(autouse=True)
def _quiet() -> None:
    warnings.filterwarnings("ignore", "Skipping CheckAndRaise", UserWarning)


def in_place() -> Mode:
    return backend_mode("PYTORCH").including("subsetgrad")


def increments(f: object) -> list[tuple[bool, bool]]:
    """(set_instead_of_inc, inplace) of each advanced increment in the compiled graph."""
    return [
        (n.op.set_instead_of_inc, n.op.inplace)
        for n in f.maker.fgraph.toposort()  # type: ignore[attr-defined]
        if isinstance(n.op, AdvancedIncSubtensor)
    ]


def test_backend_mode() -> None:
    m = backend_mode("PYTORCH")
    assert isinstance(m.linker, InplacePytorchLinker)
    assert "inplace" not in m.linker.incompatible_rewrites
    assert m.provided_optimizer == get_mode("PYTORCH").provided_optimizer


@pytest.mark.parametrize("kind", ["sgd", "adagrad"])
def test_step_structure_and_in_place(kind: str) -> None:
    f, shared = steps.compile_step(kind, in_place())
    incs = increments(f)
    assert incs and all(inplace for _, inplace in incs)
    fgraph = f.maker.fgraph
    for s in shared:
        [inp] = [i for i in fgraph.inputs if i.name == s.name]
        writers = [c.op for c, k in fgraph.clients[inp] if k == 0 and hasattr(c.op, "inplace")]
        assert [(w.set_instead_of_inc, w.inplace) for w in writers] == [(kind == "adagrad", True)]
    steps.assert_no_dense_pass(f.maker.fgraph, shared)
    f(*steps.batch(steps.INDICES["repeats"]))
    buffers = [s.get_value(borrow=True) for s in shared]
    pointers = [b.ctypes.data for b in buffers]
    before = [b.copy() for b in buffers]
    f(*steps.batch(steps.INDICES["repeats"]))
    assert [s.get_value(borrow=True).ctypes.data for s in shared] == pointers
    # The same array object, not a view of a tensor holding it (a chain of views that
    # would grow every step).
    assert all(s.get_value(borrow=True) is b for s, b in zip(shared, buffers, strict=True))
    # The borrowed arrays are the tables' storage: they see the step, like on C.
    assert all(not np.array_equal(b, o) for b, o in zip(buffers, before, strict=True))


def test_stock_linker_clones() -> None:
    """Without the in-place linker, the rewritten step still copies the table."""
    f, [W] = steps.compile_step("sgd", get_mode("PYTORCH").including("subsetgrad"))
    assert increments(f) == [(False, False)]
    f(*steps.batch(steps.INDICES["repeats"]))
    p = W.get_value(borrow=True).ctypes.data
    f(*steps.batch(steps.INDICES["repeats"]))
    assert W.get_value(borrow=True).ctypes.data != p


CASES = [
    pytest.param(kind, case, id=f"{kind}-{case}")
    for kind in ("sgd", "adagrad")
    for case in steps.INDICES
]


@pytest.mark.parametrize(("kind", "case"), CASES)
def test_step_matches_dense_and_unrewritten(kind: str, case: str) -> None:
    idx = steps.INDICES[case]
    got = steps.run_steps(kind, in_place(), idx)
    dense = steps.run_steps(kind, get_mode("PYTORCH"), idx)
    # The graph as built (optimizer=None) runs on the C backend: PyTensor's PyTorch
    # dispatch has no `Second`, which an unrewritten gradient contains.
    plain = steps.run_steps(kind, Mode(linker="cvm", optimizer=None), idx)
    for want in (dense, plain):
        steps.assert_close(got, want, "float32")


def test_repeated_indices_sum_exactly() -> None:
    """index_put_(accumulate=True): every repeat adds (float64, integer-valued data)."""
    W = pytensor.shared(np.zeros((4, 3)), name="W")
    idx = pt.lvector("idx")
    y = pt.matrix("y")
    f = pytensor.function([idx, y], [], updates={W: pt.inc_subtensor(W[idx], y)}, mode=in_place())
    assert increments(f) == [(False, True)]
    i = np.array([1, 1, -1, 1, 0])
    v = np.arange(15.0).reshape(5, 3)
    f(i, v)
    want = np.zeros((4, 3))
    np.add.at(want, i, v)
    np.testing.assert_array_equal(W.get_value(), want)


def test_subsetgrad_mode_uses_the_linker() -> None:
    m = subsetgrad.mode("PYTORCH")
    assert isinstance(m.linker, InplacePytorchLinker)
    assert subsetgrad.rewrite_active(m)
