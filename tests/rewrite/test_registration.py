"""The rewrite is opt-in: tag ``subsetgrad``, any mode, and nothing changes until asked."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from pytensor.compile.mode import Mode, get_mode, optdb

import subsetgrad
from subsetgrad.rewrite import _REWRITES, TAG, rewrite_active


def compile_sgd(mode: Mode) -> None:
    W = pytensor.shared(np.ones((6, 3)), name="W")
    idx = pt.lvector("idx")
    g = pytensor.grad((W[idx] ** 2).sum(), W)
    pytensor.function([idx], [], updates={W: W - 0.1 * g}, mode=mode)


@pytest.mark.parametrize("name", ["NUMBA", "CVM", "FAST_COMPILE", "FAST_RUN"])
def test_including_turns_it_on_and_excluding_off(name: str) -> None:
    compile_sgd(get_mode(name).including(TAG))
    assert subsetgrad.counters["subset_update"] == 1
    compile_sgd(get_mode(name).including(TAG).excluding(TAG))
    assert subsetgrad.counters["subset_update"] == 1, "fired again after excluding"


@pytest.mark.parametrize(
    "mode",
    [
        get_mode("NUMBA"),
        get_mode("NUMBA").including(TAG),
        get_mode("CVM").including(TAG),
        get_mode("FAST_COMPILE").including(TAG),
        get_mode("NUMBA").including(TAG).excluding("shape_unsafe"),
        get_mode("NUMBA").including(TAG).excluding("subsetgrad_subset_update"),
        get_mode("NUMBA").including(TAG).excluding("fusion"),
    ],
    ids=["numba", "on", "cvm", "fast-compile", "shape-unsafe-off", "off-by-name", "other-off"],
)
def test_rewrite_active_agrees_with_compiling(mode: Mode) -> None:
    """What the lint says of a mode is what compiling with it does."""
    compile_sgd(mode)
    assert rewrite_active(mode) is (subsetgrad.counters["subset_update"] == 1)


def test_off_by_default() -> None:
    for name in ["NUMBA", "CVM", "FAST_COMPILE"]:
        compile_sgd(get_mode(name))
    compile_sgd(Mode(linker="py", optimizer="fast_run"))
    assert subsetgrad.counters["subset_update"] == 0


def test_mode_helper_takes_a_name_or_a_mode() -> None:
    assert TAG in subsetgrad.mode().provided_optimizer.include
    assert type(subsetgrad.mode().linker) is type(get_mode("NUMBA").linker)
    custom = Mode(linker="py", optimizer="fast_run")
    compile_sgd(subsetgrad.mode(custom))
    assert subsetgrad.counters["subset_update"] == 1


def test_registered_under_its_own_tag_before_fusion() -> None:
    # The C backend's row increment replaces an op after fusion, before the in-place passes.
    after_fusion = {"subsetgrad_c_rows"}
    for name, (rewriter, position) in _REWRITES.items():
        assert name != TAG, "a rewrite named like the tag would be selected by name"
        fusion = optdb.__position__["elemwise_fusion"]
        assert optdb.__position__[name] == position
        assert (position > fusion) is (name in after_fusion)
        assert position < optdb.__position__["blockwise_inplace"]
        tags = {tag for tag, entries in optdb.__db__.items() if optdb[name] in entries}
        # PyTensor also files every entry under its own name and class name.
        assert tags - {name, type(rewriter).__name__} == {TAG, "shape_unsafe"}


def test_importing_changes_no_other_mode() -> None:
    """The compiled NUMBA graph is the same whether or not subsetgrad was imported."""
    script = textwrap.dedent(
        """
        import sys
        import numpy as np, pytensor, pytensor.tensor as pt
        if sys.argv[1] == "import":
            import subsetgrad
        W = pytensor.shared(np.ones((6, 3)), name="W")
        idx = pt.lvector("idx")
        g = pytensor.grad((W[idx] ** 2).sum(), W)
        f = pytensor.function([idx], [], updates={W: W - 0.1 * g}, mode="NUMBA")
        pytensor.dprint(f, print_type=True)
        """
    )
    graphs = [
        subprocess.run(
            [sys.executable, "-c", script, arg], capture_output=True, text=True, check=True
        ).stdout
        for arg in ("plain", "import")
    ]
    assert "Alloc" in graphs[0]
    assert graphs[0] == graphs[1]
