"""subsetgrad: exact subset-gradient updates and a lint for PyTensor lookup tables."""

from __future__ import annotations

from subsetgrad.rewrite import TAG, counters, mode

__version__ = "0.1.0.dev0"

__all__ = ["TAG", "__version__", "counters", "mode"]
