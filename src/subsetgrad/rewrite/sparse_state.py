"""``W, state <- F(W, state, zeros[idx].inc(v))  ->  W[s].set(F(W[s], state[s], g_rows))``."""

from __future__ import annotations

from pytensor.graph.fg import FunctionGraph
from pytensor.graph.rewriting.basic import GraphRewriter, copy_stack_trace

from subsetgrad.graph import (
    analyse,
    changed_at_zero,
    has_increment,
    linear_without_state,
    row_values,
    scatter_dependent,
    touched_rows,
    write_rows,
)
from subsetgrad.rewrite.stats import counters, note_run


class SparseState(GraphRewriter):  # type: ignore[misc]
    """Compute stateful (or nonlinear) table updates for the looked-up rows only.

    ``W, acc <- W - lr * g / sqrt(acc + g**2 + eps), acc + g**2`` (adagrad), and any
    update of a table and the state of its shape that is elementwise in the
    lookup gradient ``g`` and scalars, becomes: sort the looked-up rows, sum each
    row's gradient rows, apply the same update to those rows of the table and
    state, and write them back (`subsetgrad.graph.rows`).

    Valid only where the update is the identity at zero gradient, which is
    decided from its algebra (`identity_at_zero`: substitute ``g = 0`` and
    simplify), so rows outside the batch are unchanged in the dense graph too:
    SGD, adagrad, sign or clip of the gradient. Left alone:
    - updates a zero gradient still changes (momentum, RMSprop, Adam): the
      dense result differs on every row, which `subsetgrad.sparse_updates` makes
      an explicit choice;
    - a table with no state whose update is linear in ``g``: `SubsetUpdate`
      turns it into increments, with no sort;
    - anything that is not elementwise in the gradient (a norm, clipping by the
      global norm, a reshape).

    As `SubsetUpdate`, it assumes scale factors finite outside the batch.
    """

    def add_requirements(self, fgraph: FunctionGraph) -> None:
        from pytensor.graph.features import ReplaceValidate

        fgraph.attach_feature(ReplaceValidate())

    def apply(self, fgraph: FunctionGraph) -> None:
        note_run(fgraph)
        mapping = getattr(fgraph, "update_mapping", None)
        if not mapping or not has_increment(fgraph.apply_nodes):
            return
        pairs = [(fgraph.inputs[i], fgraph.outputs[o]) for o, i in mapping.items()]
        analysis = analyse(pairs)
        if not analysis.groups:
            return
        assert analysis.index is not None and analysis.dec is not None
        dependent = scatter_dependent(analysis.index)
        for group in analysis.groups:
            if linear_without_state(group, analysis.dec) is not None:
                continue  # SubsetUpdate's increments, no sort
            if changed_at_zero(group, dependent) is not None:
                continue
            rows = touched_rows(group)
            values = row_values(group, rows)
            replacements = []
            for key in group.keys:
                old = group.values[key]
                new = write_rows(key, rows, values[key])
                copy_stack_trace(old, new)
                replacements.append((old, new))
            fgraph.replace_all_validate(replacements, reason="subsetgrad_sparse_state")
            counters["sparse_state"] += 1
