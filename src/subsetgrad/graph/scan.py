"""Lookup gradients accumulated inside a Scan: which loop carries can become per-step rows.

The gradient of ``E[ids_t]`` read inside a loop is a second (backward) Scan with a
carry ``acc`` of the table's shape, updated on every step as::

    acc' = acc + zeros[idx_t].inc(v_t) [+ zeros[idx'_t].inc(v'_t) ...]

so after the loop ``acc_T = acc_0 + sum_t zeros[idx_t].inc(v_t)``: one scatter of
every step's rows. `scan_accumulators` finds such carries; the rewrite then
emits ``idx_t`` and ``v_t`` as per-step outputs and builds that one scatter after
the loop, and the lint says whether a Scan's gradient will be made sparse.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import pytensor.scalar as ps
from pytensor.graph.basic import Apply, Constant, Variable
from pytensor.scan.op import Scan
from pytensor.scan.utils import ScanArgs
from pytensor.tensor.basic import get_underlying_scalar_constant_value
from pytensor.tensor.elemwise import Elemwise
from pytensor.tensor.rewriting.shape import ShapeFeature
from pytensor.tensor.subtensor import Subtensor

from subsetgrad.graph.ops import FLOAT_DTYPES, index_of, is_inc, is_zero, isa, value_inputs
from subsetgrad.graph.rows import row_index


@dataclass(frozen=True)
class Accumulator:
    """A sit-sot carry of a Scan that only sums scatters of whole rows into zeros."""

    #: Position among the Scan's sit-sot outputs.
    position: int
    #: The inner increments ``zeros[idx_t].inc(v_t)`` summed into the carry each step.
    terms: tuple[Apply, ...]
    #: The outer ``out[-1]`` reads of the carry's trace: the gradient after the loop.
    finals: tuple[Variable, ...]
    #: The outer zeros the terms scatter into (the table's shape); None when the step
    #: builds them itself.
    zeros: Variable | None


@dataclass(frozen=True)
class ScanGradient:
    """What `scan_accumulators` found in one Scan node."""

    node: Apply
    accumulators: tuple[Accumulator, ...]
    #: Sit-sot carries of the table's shape that read a scatter but cannot be
    #: made per-step rows, with the reason (for the lint).
    refused: Mapping[int, str]


def scan_accumulators(
    node: Apply, clients: Mapping[Variable, Sequence[tuple[Apply, int]]]
) -> ScanGradient:
    """The carries of Scan `node` that accumulate lookup gradients, and why others do not.

    `clients` are the outer graph's (a FunctionGraph's, or a `GraphIndex`'s).
    """
    op = node.op
    assert isinstance(op, Scan)
    found: list[Accumulator] = []
    refused: dict[int, str] = {}
    args = ScanArgs.from_node(node)
    inner_nodes = op.fgraph.toposort()
    scatters = [n for n in inner_nodes if is_inc(n)]
    if not scatters:
        return ScanGradient(node, (), {})
    if op.info.as_while:
        return ScanGradient(
            node, (), dict.fromkeys(range(len(args.inner_in_sit_sot)), "a while loop")
        )
    if any(isinstance(n.op, Scan) for n in inner_nodes):
        nested = dict.fromkeys(range(len(args.inner_in_sit_sot)), "a nested Scan")
        return ScanGradient(node, (), nested)
    inner_clients = op.fgraph.clients
    outer_of = dict(zip(args.inner_in_non_seqs, args.outer_in_non_seqs, strict=True))
    shapes: ShapeFeature | None = None
    memo: dict[Variable, Variable] = {}

    def zero(var: Variable) -> bool:
        outer = outer_of.get(var)
        return is_zero(outer) if outer is not None else is_zero(var)

    for k, (acc, new) in enumerate(zip(args.inner_in_sit_sot, args.inner_out_sit_sot, strict=True)):
        if getattr(acc.type, "dtype", None) not in FLOAT_DTYPES or acc.type.ndim < 1:
            continue
        leaves = _summands(new, inner_clients)
        if not any(leaf.owner is not None and is_inc(leaf.owner) for leaf in leaves):
            continue  # not a lookup's gradient
        reason, terms = _accumulation_refusal(acc, leaves, zero, inner_clients)
        finals = None
        if reason is None:
            finals = _last_reads(args.outer_out_sit_sot[k], clients)
            if finals is None:
                reason = "the loop's trace of the gradient is read, not only its last value"
        if reason is None:
            if shapes is None:
                fgraph, memo = op.fgraph.unfreeze(return_memo=True)
                shapes = ShapeFeature()
                fgraph.attach_feature(shapes)
            inner_inputs = {memo[v] for v in op.inner_inputs}
            for t in terms:
                per_step = [memo[t.inputs[1]], memo[row_index(index_of(t))]]
                if any(not _shape_fixed(v, shapes, inner_inputs) for v in per_step):
                    reason = "the rows looked up change shape from step to step"
                    break
        if reason is not None:
            refused[k] = reason
            continue
        assert finals is not None
        base = terms[-1].inputs[0]  # the last increment of the last chain is on the zeros
        found.append(Accumulator(k, tuple(terms), finals, outer_of.get(base)))
    return ScanGradient(node, tuple(found), refused)


def _summands(
    var: Variable, clients: Mapping[Variable, Sequence[tuple[Apply, int]]]
) -> list[Variable]:
    """The operands of a tree of single-use Adds with root `var` (`var` itself if not an Add)."""
    out: list[Variable] = []
    stack = [var]
    while stack:
        v = stack.pop()
        node = v.owner
        if (
            node is not None
            and isa(node.op, (Elemwise,))
            and isa(node.op.scalar_op, (ps.Add,))
            and v.type.broadcastable == var.type.broadcastable
            and (v is var or len(clients.get(v, ())) == 1)
        ):
            stack.extend(reversed(node.inputs))
        else:
            out.append(v)
    return out


def _accumulation_refusal(
    acc: Variable,
    leaves: Sequence[Variable],
    zero: Callable[[Variable], bool],
    clients: Mapping[Variable, Sequence[tuple[Apply, int]]],
) -> tuple[str | None, list[Apply]]:
    """Why the summands `leaves` are not ``acc`` plus scatters into zeros (None if they
    are), and the increments, each chain of increments taken apart."""
    incs: list[Apply] = []
    if sum(leaf is acc for leaf in leaves) != 1:
        return "the carry is not the running sum of the step's gradients", incs
    if len(clients.get(acc, ())) != 1:
        return "the step reads the running gradient itself", incs
    for leaf in leaves:
        if leaf is acc:
            continue
        node = leaf.owner
        if node is None or not is_inc(node):
            return "the step adds a gradient that is not a scatter of looked-up rows", incs
        while True:
            op = node.op
            if op.set_instead_of_inc or getattr(op, "ignore_duplicates", False):
                return "a step writes rows by set, not by increment", incs
            if row_index(index_of(node)) is None:
                return "a lookup reads other than whole rows (W[idx])", incs
            if node.outputs[0].type.broadcastable != acc.type.broadcastable:
                return "a scatter is broadcast into the carry", incs
            incs.append(node)
            base = node.inputs[0]
            if base.owner is not None and is_inc(base.owner):
                if len(clients.get(base, ())) != 1:
                    return "a scatter is read elsewhere in the step", incs
                node = base.owner
                continue
            if not zero(base):
                return "a scatter is not into zeros", incs
            break
    return None, incs


def _last_reads(
    trace: Variable, clients: Mapping[Variable, Sequence[tuple[Apply, int]]]
) -> tuple[Variable, ...] | None:
    """The outer ``trace[-1]`` reads, if they are the only uses of `trace`; else None."""
    finals = []
    for client, i in clients.get(trace, ()):
        if i != 0 or not isinstance(client.op, Subtensor) or client.op.idx_list != (0,):
            return None
        (entry,) = client.inputs[1:]
        value = get_underlying_scalar_constant_value(entry, raise_not_constant=False)
        if value is entry or int(value) != -1:
            return None
        finals.append(client.outputs[0])
    return tuple(finals) or None


def _shape_fixed(var: Variable, shapes: ShapeFeature, inputs: set[Variable]) -> bool:
    """Whether `var`'s shape reads only the shapes of the step's inputs (never their values).

    A sequence slice, a carry and a non-sequence keep their shape from step to step.
    """
    if getattr(var.type, "ndim", 0) == 0:
        return True
    shape = shapes.shape_tuple(var)
    if shape is None:
        return False
    stack = list(shape)
    seen: set[Variable] = set()
    while stack:
        v = stack.pop()
        if v in seen:
            continue
        seen.add(v)
        if v in inputs:
            return False  # read by value
        if v.owner is None:
            if not isinstance(v, Constant):
                return False
            continue
        stack.extend(value_inputs(v.owner))
    return True
