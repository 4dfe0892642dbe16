"""Catch-up: the zero-gradient steps a row skipped, applied in closed form.

`sparse_updates(..., policy="catchup")` uses this module. For a table and its state,
`plan_catch_up` reads the update's algebra at zero gradient and returns a plan:

- `LinearPlan` where one zero-gradient step is a constant linear map of each row's
  parameter and state (momentum, Nesterov, RMSprop, Adadelta; the identity for SGD and
  adagrad): ``k`` skipped steps are ``A**k``, from the eigendecomposition of ``A``;
- `MomentRatio` where the parameter step has Adam's form ``p + f(t) m / (eps + h(x))``
  (Adam, Adamax): the drift over a gap comes from a table of the rate's tail sums and an
  expansion in ``eps`` of order `ORDER` or more, within `_TOLERANCE`.

Otherwise it raises `RowUpdateError` saying why. A plan's ``apply`` catches the looked-up
rows up before a step; its ``flush`` brings every row up to date. docs/optim.md derives
the maps, Adam's series and its error bound, and the flush's table of coefficients.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pytensor
import pytensor.scalar as ps
import pytensor.tensor as pt
from pytensor.compile.mode import Mode
from pytensor.compile.sharedvalue import SharedVariable
from pytensor.graph.basic import Apply, Constant, Variable
from pytensor.graph.replace import clone_replace, graph_replace, vectorize_graph
from pytensor.graph.rewriting.utils import rewrite_graph
from pytensor.graph.traversal import ancestors, graph_inputs
from pytensor.tensor.basic import get_underlying_scalar_constant_value
from pytensor.tensor.elemwise import DimShuffle, Elemwise

from subsetgrad.graph import RowGroup, RowUpdateError, describe, strip_wrappers

# Eigenvector matrices worse conditioned than this lose too many digits.
_MAX_CONDITION = 1e8


@dataclass(frozen=True)
class LinearMap:
    """``keys' = A @ keys`` at zero gradient, `A` constant (float64)."""

    keys: tuple[Variable, ...]
    matrix: np.ndarray

    @property
    def is_identity(self) -> bool:
        return bool(np.array_equal(self.matrix, np.eye(len(self.keys))))


def at_zero_gradient(group: RowGroup) -> list[Variable]:
    """Each key's update with the gradient replaced by zero, simplified."""
    zeros = {g: pt.constant(np.zeros((1,) * g.type.ndim, dtype=g.type.dtype)) for g in group.grads}
    outs = clone_replace([group.values[k] for k in group.keys], replace=zeros, rebuild_strict=False)
    return list(rewrite_graph(outs, include=("canonicalize", "stabilize", "specialize")))


def zero_gradient_map(group: RowGroup, simplified: Sequence[Variable] | None = None) -> LinearMap:
    """The group's one-step map at zero gradient, or RowUpdateError if it is not linear."""
    if simplified is None:
        simplified = at_zero_gradient(group)
    keys = group.keys
    matrix = np.zeros((len(keys), len(keys)))
    for a, out in enumerate(simplified):
        coefficients = _linear(out, set(keys))
        if coefficients is None:
            raise RowUpdateError(
                f"at zero gradient the update of {describe(keys[a])} is not a constant "
                "linear map of the table and its state"
            )
        for var, c in coefficients.items():
            matrix[a, keys.index(var)] += c
    return LinearMap(keys, matrix)


def _constant(var: Variable) -> float | None:
    if not all(var.type.broadcastable):
        return None
    value = get_underlying_scalar_constant_value(var, elemwise=True, raise_not_constant=False)
    if value is var or isinstance(value, Variable):
        return None
    return float(np.asarray(value))


def _linear(var: Variable, basis: set[Variable]) -> dict[Variable, float] | None:
    """``var`` as ``sum_i c_i * basis_i`` with constant scalars ``c_i``, or None."""
    var = strip_wrappers(var)
    if var in basis:
        return {var: 1.0}
    if isinstance(var, Constant) or var.owner is None:
        c = _constant(var)
        return {} if c == 0.0 else None
    op = var.owner.op
    if isinstance(op, DimShuffle):
        return _linear(var.owner.inputs[0], basis)
    if not isinstance(op, Elemwise):
        return None
    scalar = op.scalar_op
    inputs = var.owner.inputs
    if isinstance(scalar, ps.Add | ps.Sub):
        total: dict[Variable, float] = {}
        for i, inp in enumerate(inputs):
            part = _linear(inp, basis)
            if part is None:
                return None
            sign = -1.0 if isinstance(scalar, ps.Sub) and i == 1 else 1.0
            for k, c in part.items():
                total[k] = total.get(k, 0.0) + sign * c
        return total
    if isinstance(scalar, ps.Neg):
        part = _linear(inputs[0], basis)
        return None if part is None else {k: -c for k, c in part.items()}
    if isinstance(scalar, ps.Mul | ps.TrueDiv):
        scale, linear_part = 1.0, None
        for i, inp in enumerate(inputs):
            c = _constant(inp)
            if c is not None:
                scale = scale / c if isinstance(scalar, ps.TrueDiv) and i == 1 else scale * c
            elif linear_part is None and not (isinstance(scalar, ps.TrueDiv) and i == 1):
                linear_part = _linear(inp, basis)
                if linear_part is None:
                    return None
            else:
                return None
        if linear_part is None:
            return {} if scale == 0.0 else None
        return {k: scale * c for k, c in linear_part.items()}
    return None


@dataclass(frozen=True)
class Power:
    """``A**k`` entry by entry: ``sum_i weights[a, b, i] * lambda_i**k``."""

    eigenvalues: np.ndarray
    weights: np.ndarray  # (n, n, n)

    def entry(self, a: int, b: int, k: Variable, dtype: str) -> Variable | None:
        """Entry (a, b) of ``A**k`` as a variable like `k`, or None when it is always zero."""
        w = self.weights[a, b]
        terms = [
            (float(wi), float(lam))
            for wi, lam in zip(w, self.eigenvalues, strict=True)
            if wi != 0.0
        ]
        if not terms:
            return None
        total: Variable | None = None
        for wi, lam in terms:
            part = pt.constant(wi) if lam == 1.0 else wi * powers([lam], k)[0]
            total = part if total is None else total + part
        assert total is not None
        return pt.cast(total, dtype)

    def is_constant(self, a: int, b: int) -> float | None:
        """The entry's value when it does not depend on k, else None."""
        values = {float(np.round(self._numeric(a, b, k), 15)) for k in (0, 1, 2, 3, 7)}
        return values.pop() if len(values) == 1 else None

    def _numeric(self, a: int, b: int, k: int) -> float:
        return float(np.sum(self.weights[a, b] * self.eigenvalues**k))


def power_coefficients(linear: LinearMap, name: str) -> Power:
    """The eigendecomposition of the map, or RowUpdateError naming `name` if unusable."""
    lam, vectors = np.linalg.eig(linear.matrix)
    if np.any(np.abs(lam.imag) > 0) or np.linalg.cond(vectors) > _MAX_CONDITION:
        raise RowUpdateError(
            f"the zero-gradient step of {name} is not diagonalizable with real eigenvalues "
            f"(eigenvalues {np.round(lam, 6).tolist()}), so it has no closed-form catch-up"
        )
    lam, vectors = lam.real, vectors.real
    inverse = np.linalg.inv(vectors)
    # weights[a, b, i] = P[a, i] * P^-1[i, b]
    weights = np.einsum("ai,ib->abi", vectors, inverse)
    weights[np.abs(weights) < 1e-15 * np.abs(weights).max(initial=1.0)] = 0.0
    return Power(lam, weights)


def powers(bases: Sequence[float], k: Variable) -> list[Variable]:
    """``base**k`` (float64) for each of `bases`, for integer `k` >= 0 (one per row).

    As ``exp(k log|base|)``: PyTensor's PyTorch backend has no ``Pow``, and an
    elementwise ``exp`` fuses with its neighbours. (A table of exact powers per
    base measured slower: each gather makes a new V-long array, and the
    allocator hands those back to the system and page-faults them in again.
    `MomentRatio.flush` gathers all of a row's coefficients in one array instead.)
    """
    kf = pt.cast(k, "float64")
    out = []
    for base in bases:
        if base == 0.0:
            out.append(pt.cast(pt.eq(k, 0), "float64"))
            continue
        power = pt.exp(kf * math.log(abs(base)))
        # (no %: PyTensor's PyTorch backend has no Mod either)
        out.append(power if base > 0 else power * (1 - 2 * (k - 2 * (k // 2))))
    return out


def _small(index: Variable) -> Variable:
    """An index into a table of under 2**31 entries, as int32.

    NUMBA gathers with a computed int64 index about ten times slower than with
    an int32 one (measured on PyTensor 3.3.7).
    """
    return pt.cast(index, "int32")


def catch_up(
    linear: LinearMap, power: Power, values: Sequence[Variable], k: Variable
) -> list[Variable]:
    """``A**k @ values`` row by row; `k` has one entry per row of the values."""
    n = len(linear.keys)
    out: list[Variable] = []
    for a in range(n):
        total: Variable | None = None
        for b in range(n):
            value = values[b]
            constant = power.is_constant(a, b)
            if constant == 0.0:
                continue
            if constant == 1.0:
                term = value
            elif constant is not None:
                term = pt.cast(constant, value.type.dtype) * value
            else:
                c = power.entry(a, b, k, value.type.dtype)
                assert c is not None
                per_row = (slice(None),) + (None,) * (value.type.ndim - 1)
                term = c[per_row] * value
            total = term if total is None else total + term
        out.append(total if total is not None else pt.zeros_like(values[a]))
    return out


# --------------------------------------------------------------------------- #
# Plans: how a row catches up, whatever the form of the zero-gradient step
# --------------------------------------------------------------------------- #
class Plan(Protocol):
    @property
    def keys(self) -> tuple[Variable, ...]: ...

    @property
    def is_identity(self) -> bool: ...

    @property
    def moving(self) -> tuple[Variable, ...]:
        """The keys that a zero-gradient step changes."""
        ...

    def apply(self, values: Sequence[Variable], k: Variable) -> list[Variable]:
        """The keys' `values` (rows) after ``k`` (one per row) zero-gradient steps."""
        ...

    def flush(self, values: Sequence[Variable], k: Variable) -> list[Variable]:
        """`apply` to whole tables (every row, none gathered)."""
        ...


@dataclass(frozen=True)
class LinearPlan:
    linear: LinearMap
    power: Power | None

    @property
    def keys(self) -> tuple[Variable, ...]:
        return self.linear.keys

    @property
    def is_identity(self) -> bool:
        return self.power is None

    @property
    def moving(self) -> tuple[Variable, ...]:
        unit = np.eye(len(self.keys))
        rows = zip(self.keys, self.linear.matrix, unit, strict=True)
        return tuple(k for k, row, e in rows if not np.array_equal(row, e))

    def apply(self, values: Sequence[Variable], k: Variable) -> list[Variable]:
        if self.power is None:
            return list(values)
        return catch_up(self.linear, self.power, values, k)

    def flush(self, values: Sequence[Variable], k: Variable) -> list[Variable]:
        return self.apply(values, k)


def plan_catch_up(group: RowGroup, updates: Mapping[Variable, Variable]) -> Plan:
    """How `group`'s rows catch up, or RowUpdateError saying why they cannot.

    `updates` are all the updates of the step: they say how a step counter advances.
    """
    simplified = at_zero_gradient(group)
    try:
        linear = zero_gradient_map(group, simplified)
    except RowUpdateError:
        ratio = moment_ratio(group, simplified, updates)
        if ratio is None:
            raise RowUpdateError(
                "at zero gradient its step is neither a constant linear map of the table "
                "and its state nor Adam's form p + f(t) m / (eps + h(x))"
            ) from None
        return ratio
    if linear.is_identity:
        return LinearPlan(linear, None)
    return LinearPlan(linear, power_coefficients(linear, group.name))


# --------------------------------------------------------------------------- #
# Adam and Adamax: p' = p + f(t) * m / (eps + h(x))
# --------------------------------------------------------------------------- #
#: Lowest order of the expansion in eps (see the module docstring); higher where
#: the decays make the terms fall slowly, up to _MAX_ORDER.
ORDER = 3
_MAX_ORDER = 12
#: Largest error bound of one gap accepted, in learning rates per unit of |m| / h.
_TOLERANCE = 1e-6
# f(t) is looked for up to this many steps; a rate that still changes is refused.
_MAX_HORIZON = 1 << 22
#: Largest table of per-gap coefficients a flush builds; past it, per row.
_MAX_TABLE = 1 << 20


@dataclass(frozen=True)
class Decay:
    """A state's zero-gradient step: ``x' = factor * x``, or ``max(factor * x, 0)``."""

    factor: float
    clipped: bool

    def apply(self, x: Variable, power: Variable, touched: Variable) -> Variable:
        """`x` after a row's gap; `power` is ``factor**gap``, `touched` is ``gap > 0``."""
        decayed = pt.cast(power, x.type.dtype)[_per_row(x)] * x
        if not self.clipped:
            return decayed
        return pt.switch(touched[_per_row(x)], pt.maximum(decayed, 0), x)


@dataclass(frozen=True)
class MomentRatio:
    """The catch-up of ``p' = p + f(t) m / (eps + h(x))`` with decaying ``m`` and ``x``."""

    keys: tuple[Variable, ...]
    #: Decay of each state (keys[1:]).
    decays: tuple[Decay, ...]
    moment: int
    norm: int
    #: ``h`` of the norm key's old value.
    h: Variable
    eps: float
    #: The step counter ``t`` that ``f`` reads (None: ``f`` is constant).
    counter: Variable | None
    #: ``rho_l`` for l = 0 .. the order of the expansion.
    rho: np.ndarray
    #: ``Ginf_l(t)`` for t = 0 .. horizon, shape (horizon + 1, order + 1).
    sums: np.ndarray

    @property
    def is_identity(self) -> bool:
        return False

    @property
    def moving(self) -> tuple[Variable, ...]:
        still = [d.factor == 1 and not d.clipped for d in self.decays]
        return (self.keys[0], *(k for k, s in zip(self.keys[1:], still, strict=True) if not s))

    def apply(self, values: Sequence[Variable], k: Variable) -> list[Variable]:
        dtype = self._dtype(values)
        series = self._series(k, dtype)
        decayed = [pt.cast(p, dtype) for p in powers([d.factor for d in self.decays], k)]
        return self._combine(values, series, decayed, pt.gt(k, 0))

    def flush(self, values: Sequence[Variable], k: Variable) -> list[Variable]:
        """`apply` to every row of the tables, with per-row coefficients looked up.

        A row's coefficients depend only on its gap `k`, and for ``k > settled`` only
        through the rate's warm-up (the last ``horizon`` steps of the counter) and
        the decays that have not underflowed. So they are computed once for each
        gap that can give a distinct value and gathered by one int32 index: one
        (V, columns) array instead of per-row powers and float64 gathers, whose
        V-long temporaries cost more in page faults than the flush's own pass.
        """
        dtype = self._dtype(values)
        settled, tabled = self._settled(dtype)
        horizon = len(self.sums) - 1 if self.counter is not None else 0
        size = settled + horizon + 2
        if size > _MAX_TABLE:
            return self.apply(values, k)
        now = pt.cast(self.counter, "int64") if self.counter is not None else 0
        # Gap of each entry: 0 .. settled + 1, then now - horizon + 1 .. now (at least
        # settled + 1): entry settled + 1 stands for every gap in (settled, now - horizon].
        j = pt.arange(size, dtype="int64")
        gaps = pt.switch(
            pt.le(j, settled + 1), j, pt.maximum(now - horizon + (j - settled - 1), settled + 1)
        )
        columns = self._series(gaps, dtype)
        bases = [d.factor for d, t in zip(self.decays, tabled, strict=True) if t]
        columns += [pt.cast(p, dtype) for p in powers(bases, gaps)]
        entry = pt.switch(
            pt.le(k, settled), k, settled + 1 + pt.clip(k - (now - horizon), 0, horizon)
        )
        entry = _small(entry)
        rows = pt.stack(columns, axis=1)[entry]
        looked_up = iter(rows[:, i] for i in range(len(columns)))
        series = [next(looked_up) for _ in self.rho]
        decayed = [
            next(looked_up) if t else pt.cast(powers([d.factor], k)[0], dtype)
            for d, t in zip(self.decays, tabled, strict=True)
        ]
        return self._combine(values, series, decayed, pt.gt(entry, 0))

    def _dtype(self, values: Sequence[Variable]) -> str:
        return str(ps.upcast(*(v.type.dtype for v in values)))

    def _settled(self, dtype: str) -> tuple[int, list[bool]]:
        """The gap after which every fade is exactly zero, and which decays are too.

        A decay is tabled if its power (cast to `dtype`) is constant from there.
        """
        settled = max(_zero_after(r, "float64") for r in self.rho)
        after = [_zero_after(d.factor, dtype) for d in self.decays]
        return settled, [a <= settled for a in after]

    def _series(self, k: Variable, dtype: str) -> list[Variable]:
        """``S_n`` for n = 0 .. order, per entry of `k`, in `dtype`."""
        fades = powers(list(self.rho), k)
        g = []  # G_l(t0, k) = Ginf_l(t0) - rho_l**k Ginf_l(t0 + k), per row
        for column, fade in zip(self.sums.T, fades, strict=True):
            if self.counter is None:
                g.append(column[0] * (1 - fade))
                continue
            horizon = len(column) - 1
            now = pt.cast(self.counter, "int64")
            ginf = pt.constant(np.ascontiguousarray(column))
            first = _small(pt.clip(now - k, 0, horizon))
            g.append(ginf[first] - fade * ginf[pt.clip(now, 0, horizon)])
        # S_n = sum_l C(n, l) (-1)**(n - l) G_l, in float64: the terms cancel.
        # (Per-row vectors: a (V, 4) @ (4, 4) dot is far slower on skinny arrays.)
        return [
            pt.cast(sum(math.comb(n, j) * (-1) ** (n - j) * g[j] for j in range(n + 1)), dtype)
            for n in range(len(self.rho))
        ]

    def _combine(
        self,
        values: Sequence[Variable],
        series_sums: Sequence[Variable],
        decayed: Sequence[Variable],
        touched: Variable,
    ) -> list[Variable]:
        """The rows after their gaps, from per-row series sums and decay powers."""
        p, m, x = values[0], values[self.moment], values[self.norm]
        dtype, row = p.type.dtype, _per_row(p)
        # Per element in the table's dtype, as the dense step computes it.
        h = graph_replace(self.h, {self.keys[self.norm]: x}, strict=False)
        eps = pt.constant(np.asarray(self.eps, dtype=dtype))
        inverse = pt.cast(1, dtype) / (pt.cast(h, dtype) + eps)
        frac = eps * inverse
        order = len(self.rho) - 1
        series = pt.cast(series_sums[order], dtype)[row]
        for n in reversed(range(order)):
            series = pt.cast(series_sums[n], dtype)[row] - frac * series
        out = [p + pt.cast(m, dtype) * inverse * series]
        out.extend(
            d.apply(v, power, touched)
            for d, v, power in zip(self.decays, values[1:], decayed, strict=True)
        )
        return out


def _zero_after(base: float, dtype: str) -> int:
    """A gap after which ``base**gap``, computed by `powers` and cast to `dtype`, is 0.

    (Or constant: 0 for a base of 1 or 0.) `sys.maxsize` if it never is. With
    margin: ``exp`` of anything below about -745 (float64), or the cast of
    anything below 2**-150 (float32), is exactly zero.
    """
    if abs(base) in (0.0, 1.0):
        return 0
    if abs(base) > 1:
        return sys.maxsize
    cutoff = math.log(2) - math.log(float(np.finfo(dtype).smallest_subnormal))
    return math.ceil((1.02 * cutoff + 1) / -math.log(abs(base)))


def _per_row(x: Variable) -> tuple[slice | None, ...]:
    ndim: int = x.type.ndim
    return (slice(None),) + (None,) * (ndim - 1)


def moment_ratio(
    group: RowGroup, simplified: Sequence[Variable], updates: Mapping[Variable, Variable]
) -> MomentRatio | None:
    """The group's zero-gradient step as `MomentRatio`, or None if it has another form.

    Raises RowUpdateError where it has the form but cannot be caught up (a rate
    that never settles, a series that does not converge).
    """
    keys = group.keys
    decays = [_decay(out, key) for out, key in zip(simplified[1:], keys[1:], strict=True)]
    if any(d is None for d in decays):
        return None
    found = _table_drift(simplified[0], keys[0])
    if found is None:
        return None
    sign, drift = found
    scalars: list[tuple[Variable, bool]] = []
    moment = norm = None
    for factor, upper in _factors(drift):
        if all(factor.type.broadcastable):
            if set(ancestors([factor])) & set(keys):
                return None
            scalars.append((factor, upper))
            continue
        bare = strip_wrappers(factor)
        if upper and bare in keys[1:] and moment is None:
            moment = keys.index(bare)
            continue
        if not upper and norm is None:
            norm = _norm(bare, keys)
            if norm is not None:
                continue
        return None
    if moment is None or norm is None:
        return None
    decay_m, decay_x = decays[moment - 1], decays[norm.key - 1]
    assert decay_m is not None and decay_x is not None
    if decay_m.clipped or (decay_x.clipped and not norm.clips_x):
        return None
    q = decay_x.factor**norm.degree
    from scipy.signal import lfilter  # (slow to import; only Adam-style catch-up needs it)

    rate: Variable = pt.constant(np.int8(sign))
    for factor, upper in scalars:
        rate = rate * factor if upper else rate / factor
    counter, values = _rate_values(group, rate, updates)
    changing = np.flatnonzero(values != values[-1])
    horizon = int(changing[-1]) + 1 if changing.size else 0

    def tail_sums(f: np.ndarray, r: float) -> np.ndarray:
        """Ginf(t) = f(t) + r Ginf(t + 1) for t <= horizon, f constant from there."""
        out = np.empty(horizon + 1)
        out[horizon] = f[-1] / (1 - r)
        if horizon:
            backward = lfilter([1.0], [1.0, -r], f[horizon - 1 :: -1], zi=[r * out[horizon]])
            out[:horizon] = backward[0][::-1]
        return out

    # The lowest order whose bound on one gap's error, per unit of |m| / h, is
    # within _TOLERANCE learning rates: peak * max_t0 S_{order+1}(t0) / |f|.
    scale = float(np.abs(values).max())
    magnitude = np.abs(values)
    for order in range(ORDER, _MAX_ORDER + 1):
        rho = decay_m.factor / q ** np.arange(1, order + 3)
        if not (q > 0 and np.all(rho < 1)):
            raise RowUpdateError(
                "its drift over skipped steps does not converge fast enough "
                f"(moment decay {decay_m.factor:g}, norm decay {q:g})"
            )
        n = order + 1
        top = sum(
            math.comb(n, j) * (-1) ** (n - j) * tail_sums(magnitude, rho[j]) for j in range(n + 1)
        )
        peak = (1 / (n + 1)) * (n / (n + 1)) ** n
        bound = peak * float(np.max(top)) / scale if scale else 0.0
        if bound <= _TOLERANCE:
            break
    else:
        raise RowUpdateError(
            f"its eps terms over skipped steps converge too slowly: at order {_MAX_ORDER} "
            f"one gap's error could reach {bound:.1e} learning rates per unit of m/h"
        )
    rho = rho[: order + 1]
    sums = np.stack([tail_sums(values, r) for r in rho], axis=1)
    return MomentRatio(
        keys=keys,
        decays=tuple(d for d in decays if d is not None),
        moment=moment,
        norm=norm.key,
        h=norm.h,
        eps=norm.eps,
        counter=counter,
        rho=rho,
        sums=sums,
    )


def _decay(out: Variable, key: Variable) -> Decay | None:
    out = strip_wrappers(out)
    clipped = False
    if _is_elemwise(out, ps.Maximum):
        inner = [i for i in out.owner.inputs if _constant(i) != 0.0]
        if len(inner) != 1 or len(out.owner.inputs) != 2:
            return None
        clipped, out = True, inner[0]
    coefficients = _linear(out, {key})
    if coefficients is None or set(coefficients) != {key} or not coefficients[key] > 0:
        return None
    return Decay(coefficients[key], clipped)


def _table_drift(out: Variable, table: Variable) -> tuple[float, Variable] | None:
    """``(sign, drift)`` for ``out = table + sign * drift``, drift free of the table."""
    out = strip_wrappers(out)
    node = out.owner
    if node is None or len(node.inputs) != 2:
        return None
    a, b = (strip_wrappers(i) for i in node.inputs)
    if _is_elemwise(out, ps.Sub) and a is table:
        sign, drift = -1.0, node.inputs[1]
    elif _is_elemwise(out, ps.Add) and table in (a, b):
        sign, drift = 1.0, node.inputs[1] if a is table else node.inputs[0]
    else:
        return None
    if table in set(ancestors([drift])):
        return None
    return sign, drift


def _factors(var: Variable, upper: bool = True) -> list[tuple[Variable, bool]]:
    """`var` as a product of factors, each with True in the numerator, False below."""
    bare = strip_wrappers(var)
    node = bare.owner
    if node is not None and isinstance(node.op, DimShuffle) and _only_broadcasts(node):
        return _factors(node.inputs[0], upper)
    if _is_elemwise(bare, ps.Mul):
        return [f for i in node.inputs for f in _factors(i, upper)]
    if _is_elemwise(bare, ps.TrueDiv):
        return [*_factors(node.inputs[0], upper), *_factors(node.inputs[1], not upper)]
    if _is_elemwise(bare, ps.Neg):
        return [(pt.constant(np.int8(-1)), upper), *_factors(node.inputs[0], upper)]
    return [(var, upper)]


@dataclass(frozen=True)
class Norm:
    """``eps + h(x)``: x is ``keys[key]``, ``h(c x) = c**degree h(x)`` for c > 0."""

    key: int
    h: Variable
    eps: float
    degree: float
    #: ``h`` takes ``max(., 0)`` of x before anything but a positive scale. A clipped
    #: state (``x' = max(beta x, 0)``) is ``beta**i max(x, 0)`` after ``i`` steps, not
    #: ``beta**i x``; ``h`` scales with it only if it clips x itself.
    clips_x: bool


def _norm(var: Variable, keys: Sequence[Variable]) -> Norm | None:
    """``eps + h(x)`` with ``eps >= 0`` and a suitable ``h`` (see `_shape_of_h`), or None."""
    if not _is_elemwise(var, ps.Add) or len(var.owner.inputs) != 2:
        return None
    for i, j in ((0, 1), (1, 0)):
        eps = _constant(var.owner.inputs[i])
        if eps is None or eps < 0:
            continue
        h = var.owner.inputs[j]
        found = _shape_of_h(h, keys)
        if found is not None:
            return Norm(found[0], h, eps, found[1], found[2])
    return None


def _shape_of_h(h: Variable, keys: Sequence[Variable]) -> tuple[int, float, bool] | None:
    """(index of x, degree, clips x) when ``h(c x) = c**d h(x)`` for c > 0 and ``h >= 0``.

    ``h`` is built from x alone by positive scales, ``sqrt`` and ``max(., 0)``, at
    least one of the last two (the expansion in eps needs ``eps + h >= eps``).
    """
    degree, var, signless = 1.0, strip_wrappers(h), False
    nearest: ps.ScalarOp | None = None  # the op closest to x other than a scale
    while var not in keys[1:]:
        node = var.owner
        if node is None:
            return None
        if isinstance(node.op, DimShuffle) and _only_broadcasts(node):
            var = strip_wrappers(node.inputs[0])
            continue
        inner = [i for i in node.inputs if _constant(i) is None]
        if len(inner) != 1 or not isinstance(node.op, Elemwise):
            return None
        scalar = node.op.scalar_op
        constants = [_constant(i) for i in node.inputs if i is not inner[0]]
        scales = isinstance(scalar, ps.Mul) and all(c is not None and c > 0 for c in constants)
        clips = isinstance(scalar, ps.Maximum) and constants == [0.0]
        if isinstance(scalar, ps.Sqrt):
            degree /= 2
        elif not (scales or clips):
            return None
        if not scales:
            signless, nearest = True, scalar
        var = strip_wrappers(inner[0])
    if not signless:
        return None
    return keys.index(var), degree, isinstance(nearest, ps.Maximum)


def _rate_values(
    group: RowGroup, rate: Variable, updates: Mapping[Variable, Variable]
) -> tuple[Variable | None, np.ndarray]:
    """The counter the rate ``f`` reads, and ``f(t)`` for t = 0, 1, ... until it settles."""
    free = [v for v in graph_inputs([rate]) if not isinstance(v, Constant)]
    if not free:
        return None, np.array([float(np.asarray(rate.eval()).item())])
    counters = [v for v in free if v.type.ndim == 0 and _counts_steps(v, updates)]
    others = [v for v in free if v not in counters[:1]]
    if others:
        names = ", ".join(describe(v) for v in others)
        raise RowUpdateError(
            f"its step size reads {names}; catch-up needs a step size computed from "
            "constants and one step counter (a shared scalar updated to itself + 1)"
        )
    counter = counters[0]
    if not _settles(rate, counter):
        raise RowUpdateError(
            "its step size reads the step counter other than through powers c**t with "
            "0 < c < 1 (a learning-rate schedule?), so it is not known to settle"
        )
    # Values below the counter's present value are never read (it only counts up).
    start = int(np.asarray(counter.get_value(borrow=True)))
    at = pt.vector(dtype=counter.type.dtype)
    batched = vectorize_graph(rate, replace={counter: at}).flatten()
    evaluate = pytensor.function([at], batched, mode=Mode(linker="py", optimizer=None))
    length = 1 << 16
    while True:
        values = np.asarray(evaluate(np.arange(length, dtype=counter.type.dtype)), "float64")
        if not np.all(np.isfinite(values[start:])):
            bad = start + int(np.flatnonzero(~np.isfinite(values[start:]))[0])
            raise RowUpdateError(f"its step size is not finite at step {bad}")
        values[:start] = np.where(np.isfinite(values[:start]), values[:start], 0.0)
        if np.all(values[length // 2 :] == values[-1]):
            return counter, values
        if length >= _MAX_HORIZON:
            raise RowUpdateError(
                f"its step size still changes after {length} steps, so skipped steps "
                "have no closed form (a decaying learning rate?)"
            )
        length *= 2


def _settles(rate: Variable, counter: Variable) -> bool:
    """Whether `rate` reads `counter` only through ``c**(a t + b)``, 0 < c < 1, a > 0.

    Such terms vanish as t grows, so the rate tends to a limit; what it is
    built from them with (+, -, *, /, sqrt, casts) keeps that. A ``switch`` or a
    floor division on t (a step schedule) could change it at any later step.
    """

    def settles(var: Variable) -> bool:
        if var is counter:
            return False
        if var.owner is None or counter not in ancestors([var]):
            return True
        node = var.owner
        if isinstance(node.op, DimShuffle):
            return settles(node.inputs[0])
        scalar = getattr(node.op, "scalar_op", None)
        if isinstance(scalar, ps.Pow):
            base, exponent = node.inputs
            c = _constant(base)
            return c is not None and 0 < c < 1 and _grows(exponent, counter)
        safe = ps.Add | ps.Sub | ps.Mul | ps.TrueDiv | ps.Neg | ps.Sqrt | ps.Cast
        return isinstance(scalar, safe) and all(settles(i) for i in node.inputs)

    return settles(rate)


def _grows(var: Variable, counter: Variable) -> bool:
    """Whether `var` is ``a * counter + b`` with a > 0."""
    var = strip_wrappers(var)
    if var is counter:
        return True
    node = var.owner
    if node is None:
        return False
    if isinstance(node.op, DimShuffle):
        return _grows(node.inputs[0], counter)
    scalar = getattr(node.op, "scalar_op", None)
    inner = [i for i in node.inputs if counter in ancestors([i])]
    constants = [_constant(i) for i in node.inputs if i not in inner]
    if len(inner) != 1 or any(c is None for c in constants):
        return False
    if isinstance(scalar, ps.Add | ps.Cast):
        return _grows(inner[0], counter)
    if isinstance(scalar, ps.Mul):
        return all(c is not None and c > 0 for c in constants) and _grows(inner[0], counter)
    return False


def _counts_steps(counter: Variable, updates: Mapping[Variable, Variable]) -> bool:
    """Whether `counter` is a shared non-negative whole number updated to ``counter + 1``."""
    if counter not in updates or not isinstance(counter, SharedVariable):
        return False
    value = float(np.asarray(counter.get_value(borrow=True)))
    if value < 0 or value != int(value):
        return False
    step = rewrite_graph(updates[counter] - counter, include=("canonicalize", "specialize"))
    return _constant(pt.as_tensor(step)) == 1.0


def _is_elemwise(var: Variable, scalar_type: type) -> bool:
    node = var.owner
    return (
        node is not None
        and isinstance(node.op, Elemwise)
        and isinstance(node.op.scalar_op, scalar_type)
    )


def _only_broadcasts(node: Apply) -> bool:
    """A DimShuffle that only adds broadcastable axes (``ExpandDims``)."""
    op = node.op
    assert isinstance(op, DimShuffle)
    return [d for d in op.new_order if d != "x"] == list(range(node.inputs[0].type.ndim))
