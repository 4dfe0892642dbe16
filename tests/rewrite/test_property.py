"""Property test: any linear update of any lookup form agrees with the unrewritten graph."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytensor
import pytensor.tensor as pt
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pytensor.compile.mode import Mode
from pytensor.compile.sharedvalue import SharedVariable

from subsetgrad.graph import is_scatter_into_zeros
from tests.cases import cost_of

REWRITTEN = Mode(linker="py", optimizer="fast_run").including("subsetgrad")
REFERENCE = Mode(linker="py", optimizer=None)


@st.composite
def lookups(draw: st.DrawFn, shape: tuple[int, ...]) -> tuple[tuple[Any, ...], list[Any]]:
    """An index tuple: per axis a full slice, a constant scalar or an index vector, or a mask."""
    if draw(st.booleans()) and draw(st.booleans()):
        return ("mask",), [
            draw(
                st.lists(st.booleans(), min_size=int(np.prod(shape)), max_size=int(np.prod(shape)))
            )
        ]
    kinds = draw(
        st.lists(
            st.sampled_from(["slice", "scalar", "vector"]), min_size=len(shape), max_size=len(shape)
        ).filter(lambda ks: "vector" in ks)
    )
    n = draw(st.integers(0, 6))
    values = []
    for kind, size in zip(kinds, shape, strict=True):
        if kind == "vector":
            # Negative indices and repeats are in range on purpose.
            values.append(draw(st.lists(st.integers(-size, size - 1), min_size=n, max_size=n)))
        elif kind == "scalar":
            values.append(draw(st.integers(-size, size - 1)))
    return tuple(kinds), values


def index_for(kinds: tuple[str, ...], values: list[Any], shape: tuple[int, ...]) -> tuple[Any, Any]:
    """Symbolic index entries, their inputs and the numeric values for those inputs."""
    if kinds == ("mask",):
        mask = pt.tensor("mask", dtype="bool", shape=(None,) * len(shape))
        return (mask,), [(mask, np.array(values[0]).reshape(shape))]
    entries: list[Any] = []
    feeds: list[Any] = []
    it = iter(values)
    for kind in kinds:
        if kind == "slice":
            entries.append(slice(None))
        elif kind == "scalar":
            entries.append(next(it))
        else:
            v = pt.lvector()
            entries.append(v)
            feeds.append((v, np.array(next(it), dtype="int64")))
    return tuple(entries), feeds


@st.composite
def factors(draw: st.DrawFn, shape: tuple[int, ...], dtype: str) -> Any:
    """A scatter-free, finite, non-zero factor: Python float, 0-d shared, or a broadcast array."""
    kind = draw(st.sampled_from(["float", "scalar", "array"]))
    value = draw(st.floats(0.25, 4.0))
    if kind == "float":
        return value
    if kind == "scalar":
        return pytensor.shared(np.asarray(value, dtype=dtype))
    bshape = tuple(1 if draw(st.booleans()) else s for s in shape)
    data = np.random.default_rng(len(bshape)).uniform(0.25, 4.0, size=bshape).astype(dtype)
    return pytensor.shared(data, shape=tuple(1 if b == 1 else None for b in bshape))


@st.composite
def programs(draw: st.DrawFn) -> dict[str, Any]:
    shape = tuple(draw(st.lists(st.integers(1, 5), min_size=1, max_size=3)))
    dtype = draw(st.sampled_from(["float32", "float64"]))
    ops = draw(
        st.lists(st.sampled_from(["mul", "rmul", "div", "neg", "add_second", "cast"]), max_size=4)
    )
    return {
        "shape": shape,
        "dtype": dtype,
        "lookup": draw(lookups(shape)),
        "second": draw(lookups(shape)),
        "ops": ops,
        "factors": [draw(factors(shape, dtype)) for _ in ops],
        "final": draw(st.sampled_from(["W - e", "W + e", "e + W", "W*a - e"])),
    }


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(programs())
def test_linear_updates_agree_with_optimizer_none(p: dict[str, Any]) -> None:
    shape, dtype = p["shape"], p["dtype"]
    table = np.random.default_rng(0).normal(size=shape).astype(dtype)
    W = pytensor.shared(table, name="W")
    entries, feeds = index_for(*p["lookup"], shape)
    g = pytensor.grad(cost_of(W[entries]), W)
    e = g
    for op, c in zip(p["ops"], p["factors"], strict=True):
        if op == "mul":
            e = c * e
        elif op == "rmul":
            e = e * c
        elif op == "div":
            e = e / c
        elif op == "neg":
            e = -e
        elif op == "cast":
            e = pt.cast(e, "float32" if e.dtype == "float64" else "float64")
        else:
            entries2, feeds2 = index_for(*p["second"], shape)
            feeds += feeds2
            e = e + pytensor.grad(cost_of(W[entries2] * 2), W)
    out = {
        "W - e": lambda: W - e,
        "W + e": lambda: W + e,
        "e + W": lambda: e + W,
        "W*a - e": lambda: W * 0.99 - e,
    }[p["final"]]()

    inputs = [v for v, _ in feeds]
    values = [x for _, x in feeds]
    f = pytensor.function(inputs, out, mode=REWRITTEN, on_unused_input="ignore")
    # Whether subsetgrad or PyTensor's own rewrite got there (plain ``W + g``), no
    # full-table scatter may survive; except that a factor varying along a mask's
    # axes is left alone on purpose.
    masks = p["lookup"][0] == ("mask",) or (
        "add_second" in p["ops"] and p["second"][0] == ("mask",)
    )
    varying = any(
        isinstance(c, SharedVariable) and not all(c.type.broadcastable) for c in p["factors"]
    )
    if not (masks and varying):
        scatters = [n for n in f.maker.fgraph.apply_nodes if is_scatter_into_zeros(n)]
        assert not scatters
    got = f(*values)
    want = pytensor.function(inputs, out, mode=REFERENCE, on_unused_input="ignore")(*values)
    assert got.dtype == want.dtype
    # A cast moved past a sum of repeated rows rounds in float32 at a different place.
    tol = 1e-5 if dtype == "float32" or "cast" in p["ops"] else 1e-10
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)
