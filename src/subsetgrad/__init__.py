"""subsetgrad: exact subset-gradient updates and a lint for PyTensor lookup tables."""

from __future__ import annotations

from subsetgrad._version import __version__
from subsetgrad.lint import (
    RULES,
    Finding,
    Location,
    Severity,
    check,
    check_function,
    record,
)
from subsetgrad.optim import POLICIES, SparseUpdateError, SparseUpdates, sparse_updates
from subsetgrad.rewrite import TAG, counters, disable, enable, mode, rewrite_active

__all__ = [
    "POLICIES",
    "RULES",
    "TAG",
    "Finding",
    "Location",
    "Severity",
    "SparseUpdateError",
    "SparseUpdates",
    "__version__",
    "check",
    "check_function",
    "counters",
    "disable",
    "enable",
    "mode",
    "record",
    "rewrite_active",
    "sparse_updates",
]
