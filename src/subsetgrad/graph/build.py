"""The builder of subset updates: a decomposed update as increments on its dense part."""

from __future__ import annotations

import pytensor.tensor as pt
from pytensor.graph.basic import Variable

from subsetgrad.graph.linear import Linear, materialize


def build_subset_update(out: Variable, lin: Linear) -> Variable | None:
    """``dense[idx_1].inc(v_1)...[idx_k].inc(v_k)`` with the dtype and type of `out`.

    Returns None when the result's type cannot be made to match `out`'s.
    """
    assert lin.dense is not None
    dtype = out.type.dtype
    new: Variable = materialize(lin.dense)
    if new.type.dtype != dtype:
        new = pt.cast(new, dtype)
    if new.type.broadcastable != out.type.broadcastable:
        # The add broadcast its dense operand up to the scatter's shape; the
        # increments need that full shape, so materialise it (never bigger than
        # the zeros the scatter allocated).
        zeros = lin.terms[0].source.inputs[0]
        new = pt.alloc(new, *zeros.shape)
    for term in lin.terms:
        values = materialize(term.values)
        if values.type.dtype != dtype:
            values = pt.cast(values, dtype)
        # Never ignore_duplicates: repeated indices must accumulate, as the scatter did.
        new = pt.inc_subtensor(new[term.index], values)
    if out.type.is_super(new.type):
        return new
    # `out` may know more static shape than `new` (a factor of static shape
    # broadcast into it); convert_variable adds the SpecifyShape, or refuses.
    converted = out.type.convert_variable(new)
    return converted if isinstance(converted, Variable) else None
