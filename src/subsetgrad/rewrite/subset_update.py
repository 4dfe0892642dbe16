"""``base + linear(zeros[idx].inc(v), ...) -> base[idx].inc(linear'(v))``."""

from __future__ import annotations

from pytensor.graph.fg import FunctionGraph
from pytensor.graph.rewriting.basic import GraphRewriter, copy_stack_trace

from subsetgrad.graph import GraphIndex, build_subset_update, decompose_graph, has_increment
from subsetgrad.rewrite.stats import counters, note_run


class SubsetUpdate(GraphRewriter):  # type: ignore[misc]
    """Turn every full-table update built from lookup gradients into increments.

    ``W - lr * zeros[idx].inc(v)`` becomes ``W[idx].inc(-lr * v)``, and in general
    ``dense + sum_k L_k(zeros[idx_k].inc(v_k))`` becomes
    ``dense[idx_1].inc(L_1(v_1))...``, where each ``L_k`` is the chain of
    add/sub/neg/cast and multiply/divide by scatter-free factors that the
    original graph applied. Those are exactly linear and zero-preserving, so the
    result is the same up to floating-point reassociation. Factors that vary
    along an indexed axis are gathered at the indices.

    Left alone:
    - sets whose indices may repeat (last write wins; an increment would sum);
    - increments with ``ignore_duplicates=True`` and indices that may repeat;
    - a scatter that an op broadcasts, or that meets another scatter in a
      product (not linear);
    - anything that is not base plus scatters.

    As PyTensor's own ``local_mul_zero`` does, it assumes scale factors are
    finite and divisors non-zero on the rows outside the batch: there the dense
    graph computes ``0 * inf`` or ``0 / 0``, the subset graph nothing.
    """

    def add_requirements(self, fgraph: FunctionGraph) -> None:
        from pytensor.graph.features import ReplaceValidate

        fgraph.attach_feature(ReplaceValidate())

    def apply(self, fgraph: FunctionGraph) -> None:
        note_run(fgraph)
        if not has_increment(fgraph.apply_nodes):
            return  # most graphs: one pass over the nodes, no index
        index = GraphIndex.from_fgraph(fgraph)
        dec = decompose_graph(index)
        for out, lin in list(dec.roots(index)):
            new = build_subset_update(out, lin)
            if new is None:
                counters["skipped_type"] += 1
                continue
            copy_stack_trace([out, *(t.source.outputs[0] for t in lin.terms)], new)
            fgraph.replace_all_validate([(out, new)], reason="subsetgrad_subset_update")
            counters["subset_update"] += 1
            counters["scatter"] += len(lin.terms)
