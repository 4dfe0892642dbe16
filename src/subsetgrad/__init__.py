"""subsetgrad: exact subset-gradient updates and a lint for PyTensor lookup tables."""

from __future__ import annotations

from subsetgrad.rewrite import TAG, counters, mode, rewrite_active

__version__ = "0.1.0.dev0"

from subsetgrad.lint import (
    RULES,
    Finding,
    Location,
    Severity,
    check,
    check_function,
    record,
)

__all__ = [
    "RULES",
    "TAG",
    "Finding",
    "Location",
    "Severity",
    "__version__",
    "check",
    "check_function",
    "counters",
    "mode",
    "record",
    "rewrite_active",
]
