"""The subsetgrad graph rewrites and their one registration point."""

from __future__ import annotations

from pytensor.compile.mode import Mode, get_mode, optdb, predefined_optimizers
from pytensor.graph.rewriting.basic import GraphRewriter
from pytensor.graph.rewriting.db import RewriteDatabaseQuery

from subsetgrad.backends import backend_mode, copying_backend
from subsetgrad.backends.cvm import c_rows_db
from subsetgrad.rewrite.scan_gradient import ScanScatter
from subsetgrad.rewrite.sparse_state import SparseState
from subsetgrad.rewrite.stats import counters, ran_on, reset_counters
from subsetgrad.rewrite.subset_update import SubsetUpdate
from subsetgrad.rewrite.switch import WhenEnabled, disable, enable, is_enabled

TAG = "subsetgrad"

# Position 1.45: after canonicalize (1), so the gradient graph is in canonical
# form, and well before elemwise fusion (48-49), which hides the pattern inside
# Composite ops. Stabilize and specialize then clean up the small expressions
# the rewrite builds. Registered directly on optdb with its own tag and
# use_db_name_as_tag=False, so it is off unless a mode includes "subsetgrad".
# SparseState goes first (1.44): it needs the stateful updates whole, before
# SubsetUpdate folds their linear parts into increments. ScanScatter (1.43)
# turns a Scan's table-sized gradient carry into one scatter after the loop,
# for those two to take over.
# At 49.7, after fusion and before the in-place passes (which keep the op's class),
# the C backend's row increment for matrix and N-D tables; it is tagged "cxx_only"
# inside, so linkers without C code skip it.
_REWRITES = {
    "subsetgrad_scan_scatter": (ScanScatter(), 1.43),
    "subsetgrad_sparse_state": (SparseState(), 1.44),
    "subsetgrad_subset_update": (SubsetUpdate(), 1.45),
    "subsetgrad_c_rows": (c_rows_db(TAG), 49.7),
}


# The same graph rewrites once more, under the tags every predefined mode's rewrites
# include, each a no-op unless `enable()` is in force. Run after a mode's own
# subsetgrad entries at the same position, they find nothing left to do.
EVERYWHERE = ("fast_run", "fast_compile")
_WHEN_ENABLED = {
    f"{name}_when_enabled": (WhenEnabled(rewriter), position)
    for name, (rewriter, position) in _REWRITES.items()
    if isinstance(rewriter, GraphRewriter)
}


def _register() -> None:
    for name, (rewriter, position) in _REWRITES.items():
        if name not in optdb:
            # Also "shape_unsafe", as PyTensor tags its own rewrites that drop a shape
            # check: a scatter whose zeros do not match the base's shape raised in the
            # dense graph; the increments do not look at that shape.
            optdb.register(
                name, rewriter, TAG, "shape_unsafe", position=position, use_db_name_as_tag=False
            )
    for name, (rewriter, position) in _WHEN_ENABLED.items():
        if name not in optdb:
            optdb.register(
                name,
                rewriter,
                *EVERYWHERE,
                "shape_unsafe",
                position=position,
                use_db_name_as_tag=False,
            )


_register()


def mode(base: str | Mode = "NUMBA") -> Mode:
    """`base` (a mode name or object) with the subsetgrad rewrites turned on.

    On JAX and PyTorch the mode also gets the linker that updates tables in place
    (`subsetgrad.backends.backend_mode`).
    """
    return backend_mode(base).including(TAG)


def table_copied_by(m: str | Mode | None = None) -> str | None:
    """The backend ("JAX", "PYTORCH") whose linker in mode `m` still copies an updated
    table on every call, even rewritten; None where `subsetgrad.mode` would change nothing."""
    return copying_backend(get_mode(m).linker)


def rewrite_active(m: str | Mode | None = None) -> bool:
    """Whether compiling with mode `m` (default: PyTensor's default mode) runs the rewrite."""
    query = get_mode(m).provided_optimizer
    if isinstance(query, str):
        query = predefined_optimizers.get(query)
    if not isinstance(query, RewriteDatabaseQuery):
        return False
    # optdb's own selection (tags and names, include, require, exclude, cutoff).
    selected = optdb.query(query).data
    rewriter, _ = _REWRITES["subsetgrad_subset_update"]
    gated, _ = _WHEN_ENABLED["subsetgrad_subset_update_when_enabled"]
    return rewriter in selected or (is_enabled() and gated in selected)


__all__ = [
    "TAG",
    "ScanScatter",
    "SparseState",
    "SubsetUpdate",
    "counters",
    "disable",
    "enable",
    "is_enabled",
    "mode",
    "ran_on",
    "reset_counters",
    "rewrite_active",
    "table_copied_by",
]
