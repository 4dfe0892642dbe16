"""Sparse optimizer updates for lookup tables: exact, lazy and catch-up policies."""

from __future__ import annotations

from subsetgrad.optim.policy import POLICIES, SparseUpdateError, SparseUpdates, sparse_updates

__all__ = ["POLICIES", "SparseUpdateError", "SparseUpdates", "sparse_updates"]
