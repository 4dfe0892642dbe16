"""Test configuration: PyTensor raises on rewrite errors and shares one compile dir."""

from __future__ import annotations

import os
from pathlib import Path

# Must be set before pytensor (or numba) is first imported.
_root = Path(__file__).resolve().parent.parent
_compiledir = os.environ.get("SUBSETGRAD_COMPILEDIR", str(_root / ".cache" / "pytensor"))
os.environ["PYTENSOR_FLAGS"] = ",".join(
    f
    for f in (
        os.environ.get("PYTENSOR_FLAGS", ""),
        # A crashing rewrite must fail the test, not be logged and skipped.
        "on_opt_error=raise",
        "on_shape_error=raise",
        f"base_compiledir={_compiledir}",
    )
    if f
)
# Out-of-range indices corrupt memory silently in Numba without this.
os.environ.setdefault("NUMBA_BOUNDSCHECK", "1")

import pytensor  # noqa: E402

assert pytensor.config.on_opt_error == "raise"

import pytest  # noqa: E402
from hypothesis import settings  # noqa: E402

# `pytest --hypothesis-profile=thorough` is the larger generated suite.
settings.register_profile("default", max_examples=60)
settings.register_profile("thorough", max_examples=2000)
settings.load_profile("default")


@pytest.fixture(autouse=True)
def _fresh_counters() -> None:
    """Each test starts with the rewrite's counters at zero, so it can assert on them."""
    from subsetgrad.rewrite import reset_counters

    reset_counters()
