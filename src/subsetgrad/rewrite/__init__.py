"""The subsetgrad graph rewrites and their one registration point."""

from __future__ import annotations

from pytensor import config
from pytensor.compile.mode import Mode, get_mode, optdb

from subsetgrad.rewrite.sparse_state import SparseState
from subsetgrad.rewrite.subset_update import SubsetUpdate, build_subset_update, counters

TAG = "subsetgrad"

# Position 1.45: after canonicalize (1), so the gradient graph is in canonical
# form, and well before elemwise fusion (48-49), which hides the pattern inside
# Composite ops. Stabilize and specialize then clean up the small expressions
# the rewrite builds. Registered directly on optdb with its own tag and
# use_db_name_as_tag=False, so it is off unless a mode includes "subsetgrad".
# SparseState goes first (1.44): it needs the stateful updates whole, before
# SubsetUpdate folds their linear parts into increments.
_REWRITES = {
    "subsetgrad_sparse_state": (SparseState(), 1.44),
    "subsetgrad_subset_update": (SubsetUpdate(), 1.45),
}


def _register() -> None:
    for name, (rewriter, position) in _REWRITES.items():
        if name not in optdb.__position__:
            # Also "shape_unsafe", as PyTensor tags its own rewrites that drop a shape
            # check: a scatter whose zeros do not match the base's shape raised in the
            # dense graph; the increments do not look at that shape.
            optdb.register(
                name, rewriter, TAG, "shape_unsafe", position=position, use_db_name_as_tag=False
            )


_register()


def mode(base: str | Mode = "NUMBA") -> Mode:
    """`base` (a mode name or object) with the subsetgrad rewrites turned on."""
    return get_mode(base).including(TAG)


def rewrite_active(m: str | Mode | None = None) -> bool:
    """Whether compiling with mode `m` (default: PyTensor's default mode) runs the rewrite."""
    from pytensor.compile.mode import predefined_optimizers

    query = get_mode(m).provided_optimizer
    if isinstance(query, str):
        query = predefined_optimizers.get(query)
    if not hasattr(query, "include"):
        return False
    # optdb's own selection, for our entry: any include, every require, no exclude
    # (each a tag or a name, so `.excluding("shape_unsafe")` turns it off too), and
    # a position before the query's cutoff.
    rewriter, position = _REWRITES["subsetgrad_subset_update"]
    db = optdb.__db__

    def tagged(tag: str) -> bool:
        return rewriter in db.get(tag, ())

    cutoff = query.position_cutoff or config.optdb__position_cutoff
    return (
        any(map(tagged, query.include))
        and all(map(tagged, query.require))
        and not any(map(tagged, query.exclude))
        and position < cutoff
    )


__all__ = [
    "TAG",
    "SparseState",
    "SubsetUpdate",
    "build_subset_update",
    "counters",
    "mode",
    "rewrite_active",
]
