"""`subsetgrad.enable()`: the rewrites in every compilation, whatever mode a library picks."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import numpy as np
import pymc.variational.updates as pm_updates
import pytensor
import pytensor.tensor as pt
import pytest
from pytensor.compile.mode import Mode, get_mode

import subsetgrad
from subsetgrad.rewrite import is_enabled


@pytest.fixture(autouse=True)
def _switched_off() -> Iterator[None]:
    """Every test starts and ends with the switch off, whatever it does."""
    with subsetgrad.disable():
        yield


def compile_sgd(mode: Any = None) -> Any:
    W = pytensor.shared(np.ones((6, 3)), name="W")
    idx = pt.lvector("idx")
    g = pytensor.grad((W[idx] ** 2).sum(), W)
    return pytensor.function([idx], [], updates={W: W - 0.1 * g}, mode=mode)


@pytest.mark.parametrize("name", [None, "NUMBA", "CVM", "FAST_COMPILE"])
def test_enable_reaches_every_mode_and_disable_stops_it(name: str | None) -> None:
    compile_sgd(name)
    assert subsetgrad.counters["subset_update"] == 0
    subsetgrad.enable()
    assert subsetgrad.rewrite_active(name)
    compile_sgd(name)
    assert subsetgrad.counters["subset_update"] == 1
    subsetgrad.disable()
    assert not subsetgrad.rewrite_active(name)
    compile_sgd(name)
    assert subsetgrad.counters["subset_update"] == 1


def test_modes_made_before_and_after_reach_it() -> None:
    before = get_mode("CVM").excluding("fusion")
    with subsetgrad.enable():
        compile_sgd(before)
        compile_sgd(Mode(linker="py", optimizer="fast_run"))
    assert subsetgrad.counters["subset_update"] == 2


def test_optimizer_none_stays_the_reference() -> None:
    with subsetgrad.enable():
        compile_sgd(Mode(linker="py", optimizer=None))
    assert subsetgrad.counters["subset_update"] == 0


def test_a_mode_with_the_tag_runs_it_once() -> None:
    with subsetgrad.enable():
        compile_sgd(subsetgrad.mode("CVM"))
    assert subsetgrad.counters["subset_update"] == 1


def test_the_context_manager_restores_the_previous_state() -> None:
    assert not is_enabled()
    with subsetgrad.enable():
        assert is_enabled()
        with subsetgrad.disable():
            assert not is_enabled()
        assert is_enabled()
    assert not is_enabled()
    subsetgrad.enable()
    with subsetgrad.enable():
        pass
    assert is_enabled(), "a block inside an enabled program leaves it enabled"


def _library_training(name: str, steps: int) -> tuple[np.ndarray, list[float]]:
    """Training as a library does it: PyMC's optimizer, compiled in PyTensor's default mode."""
    rng = np.random.default_rng(3)
    W = pytensor.shared(rng.normal(size=(40, 5)), name="W")
    idx = pt.lvector("idx")
    loss = ((pt.tanh(W[idx]) - 0.2) ** 2).sum()
    updates = getattr(pm_updates, name)(loss, [W], learning_rate=0.05)
    step = pytensor.function([idx], loss, updates=updates)
    batches = np.random.default_rng(4).integers(-40, 40, size=(steps, 7))
    losses = [float(step(b)) for b in batches]
    return W.get_value(), losses


@pytest.mark.parametrize("name", ["sgd", "adagrad", "momentum"])
def test_code_we_do_not_control_gets_the_subset_updates(name: str) -> None:
    dense, dense_losses = _library_training(name, 5)
    with subsetgrad.enable():
        got, losses = _library_training(name, 5)
    fired = subsetgrad.counters["subset_update"] + subsetgrad.counters["sparse_state"]
    # Momentum moves every row at zero gradient: its state stays dense, exactly.
    assert fired >= 1
    np.testing.assert_allclose(got, dense, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(losses, dense_losses, rtol=1e-12)


FLAG_SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np, pytensor, pytensor.tensor as pt
    import subsetgrad
    W = pytensor.shared(np.ones((6, 3)), name="W")
    idx = pt.lvector("idx")
    g = pytensor.grad((W[idx] ** 2).sum(), W)
    mode = None if sys.argv[1] == "default" else sys.argv[1]
    pytensor.function([idx], [], updates={W: W - 0.1 * g}, mode=mode)
    print(subsetgrad.counters["subset_update"])
    """
)


@pytest.mark.parametrize(
    ("mode", "reached"), [("default", True), ("Mode", True), ("NUMBA", False), ("CVM", False)]
)
def test_the_flags_route(mode: str, reached: bool) -> None:
    """``PYTENSOR_FLAGS=optimizer_including=subsetgrad``, with ``import subsetgrad``."""
    flags = os.environ.get("PYTENSOR_FLAGS", "") + ",optimizer_including=subsetgrad"
    done = subprocess.run(
        [sys.executable, "-c", FLAG_SCRIPT, mode],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTENSOR_FLAGS": flags},
        check=True,
    )
    assert done.stdout.split()[-1] == ("1" if reached else "0")
