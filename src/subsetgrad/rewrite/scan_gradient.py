"""``acc_T = acc_0 + sum_t zeros[idx_t].inc(v_t)`` carried by a Scan -> one scatter after it."""

from __future__ import annotations

import copy

import pytensor.tensor as pt
from pytensor.graph.basic import Variable
from pytensor.graph.fg import FunctionGraph
from pytensor.graph.rewriting.basic import GraphRewriter, copy_stack_trace
from pytensor.graph.traversal import ancestors
from pytensor.scan.op import Scan
from pytensor.scan.utils import ScanArgs

from subsetgrad.graph import index_of, is_zero, row_index
from subsetgrad.graph.scan import Accumulator, scan_accumulators
from subsetgrad.rewrite.stats import counters, note_run


class ScanScatter(GraphRewriter):  # type: ignore[misc]
    """Emit a loop's lookup gradients as per-step rows instead of a table-sized carry.

    The gradient of a lookup ``E[idx_t]`` made inside a Scan is a backward Scan
    whose carry, of the table's shape, adds ``zeros[idx_t].inc(v_t)`` on every
    step: O(V x D) per step. When the carry does nothing else, its last value is
    ``acc_0 + zeros[idx_all].inc(v_all)`` with every step's indices and rows
    stacked, the order of summation per row unchanged. This rewrite makes
    ``idx_t`` and ``v_t`` per-step outputs of the Scan (its carry removed) and
    builds that scatter after the loop, where `SubsetUpdate` and `SparseState`
    turn the table's update into a subset update.

    Left alone (`subsetgrad.graph.scan` says why):
    - a carry that the step reads, or adds anything but scatters of whole rows
      into zeros to (the table also used densely inside the loop);
    - a carry whose trace is read, not only its last value;
    - rows whose shape may change from step to step (a boolean mask);
    - while loops and nested Scans.
    """

    def add_requirements(self, fgraph: FunctionGraph) -> None:
        from pytensor.graph.features import ReplaceValidate

        fgraph.attach_feature(ReplaceValidate())

    def apply(self, fgraph: FunctionGraph) -> None:
        note_run(fgraph)
        for node in [n for n in fgraph.apply_nodes if isinstance(n.op, Scan)]:
            found = scan_accumulators(node, fgraph.clients)
            if found.accumulators:
                _rewrite(fgraph, node, found.accumulators)
                counters["scan_scatter"] += len(found.accumulators)


def _rewrite(fgraph: FunctionGraph, node: object, accumulators: tuple[Accumulator, ...]) -> None:
    op = node.op  # type: ignore[attr-defined]
    args = ScanArgs.from_node(node)
    _, memo = op.fgraph.unfreeze(return_memo=True)
    new = copy.copy(args)
    removed = {a.position for a in accumulators}
    for field in ("inner_in_sit_sot", "inner_out_sit_sot", "outer_in_sit_sot", "outer_out_sit_sot"):
        setattr(new, field, [v for k, v in enumerate(getattr(args, field)) if k not in removed])
    # Two per-step outputs per increment: its rows' index and values.
    per_step: list[Variable] = []
    for acc in accumulators:
        for inc in acc.terms:
            index = pt.as_tensor_variable(memo[row_index(index_of(inc))])
            per_step += [index, memo[inc.inputs[1]]]
    n_old_nit = len(args.outer_in_nit_sot)
    new.inner_out_nit_sot = [*args.inner_out_nit_sot, *per_step]
    new.outer_in_nit_sot = [*args.outer_in_nit_sot, *[node.inputs[0]] * len(per_step)]  # type: ignore[attr-defined]
    inner_outputs = [memo.get(v, v) for v in new.inner_outputs]
    # Non-sequences only the removed carries read (the zeros) are no longer passed in.
    used = set(ancestors(inner_outputs))
    keep = [k for k, v in enumerate(args.inner_in_non_seqs) if memo[v] in used]
    new.inner_in_non_seqs = [args.inner_in_non_seqs[k] for k in keep]
    new.outer_in_non_seqs = [args.outer_in_non_seqs[k] for k in keep]
    scan = Scan(
        [memo[v] for v in new.inner_inputs],
        inner_outputs,
        new.info,
        mode=op.mode,
        profile=op.profile,
        truncate_gradient=op.truncate_gradient,
        name=op.name,
        allow_gc=op.allow_gc,
    )
    outs = scan(*new.outer_inputs, return_list=True)
    made = ScanArgs.from_node(outs[0].owner)
    replacements: list[tuple[Variable, Variable]] = []

    def pair(old: list[Variable], fresh: list[Variable]) -> None:
        replacements.extend(zip(old, fresh, strict=True))

    pair(args.outer_out_mit_mot, made.outer_out_mit_mot)
    pair(args.outer_out_mit_sot, made.outer_out_mit_sot)
    pair(new.outer_out_sit_sot, made.outer_out_sit_sot)
    pair(args.outer_out_nit_sot, made.outer_out_nit_sot[:n_old_nit])
    pair(args.outer_out_shared, made.outer_out_shared)
    rows = iter(made.outer_out_nit_sot[n_old_nit:])
    for acc in accumulators:
        total = _scatter_after_loop(acc, rows, args.outer_in_sit_sot[acc.position])
        for final in acc.finals:
            copy_stack_trace(final, total)
            replacements.append((final, total))
    replacements = [(a, b) for a, b in replacements if fgraph.clients.get(a)]
    fgraph.replace_all_validate_remove(
        replacements, remove=[node], reason="subsetgrad_scan_scatter"
    )


def _scatter_after_loop(acc: Accumulator, rows: object, initial: Variable) -> Variable:
    """``acc_0 + zeros[idx_all].inc(v_all)`` from the per-step outputs in `rows`."""
    # The carry's trace starts with its initial value, of the carry's shape.
    zeros = acc.zeros if acc.zeros is not None else pt.zeros_like(initial[0])
    tail = [zeros.shape[i] for i in range(1, zeros.type.ndim)]
    total: Variable = zeros
    for _ in acc.terms:
        index, values = next(rows), next(rows)  # type: ignore[call-overload]
        total = pt.inc_subtensor(total[index.reshape((-1,))], values.reshape((-1, *tail)))
    # Usually zeros, then nothing to add.
    if not is_zero(initial):
        total = initial[0] + total
    return total
