"""The building blocks of catch-up: per-row powers."""

from __future__ import annotations

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest

from subsetgrad.optim.catchup import powers

STEPS = np.array([0, 1, 2, 255, 256, 257, 5000, 70_000, 1_000_000], dtype=np.int64)


@pytest.mark.parametrize(
    "base",
    [0.9, 0.999, 0.5, -0.5, -0.9, 0.0, 1.0, -1.0, 1 - 1e-9],
    ids=lambda b: f"{b:g}",
)
@pytest.mark.parametrize("mode", ["FAST_COMPILE", "NUMBA"])
def test_powers_equal_numpy(base: float, mode: str) -> None:
    """Table lookups where the powers die out, exp where they do not (1 - 1e-9), signs."""
    k = pt.lvector("k")
    (out,) = powers([base], k)
    got = pytensor.function([k], out, mode=mode)(STEPS)
    expected = np.power(base, STEPS.astype(np.float64))
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-300)
