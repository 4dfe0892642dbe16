"""A slice of the generated differential cases (`python -m tests.generated` runs more)."""

from __future__ import annotations

import pytest

from tests.generated import check

CVM_SEEDS = range(1000, 1012)
NUMBA_SEEDS = range(2000, 2003)


@pytest.mark.parametrize(
    ("seed", "backend"),
    [*((s, "CVM") for s in CVM_SEEDS), *((s, "NUMBA") for s in NUMBA_SEEDS)],
)
def test_generated_program_matches_optimizer_none(seed: int, backend: str) -> None:
    assert check(seed, backend) is None
