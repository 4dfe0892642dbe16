"""Catch-up: the zero-gradient steps a row skipped, applied in closed form.

With the gradient set to zero, one step of most optimizers is a *linear* map of
each row's parameter and state with constant coefficients::

    momentum   v' = mu v               p' = p + mu v
    nesterov   v' = mu v               p' = p + mu**2 v
    rmsprop    acc' = rho acc          p' = p
    adadelta   acc' = rho acc, delta' = rho delta

so ``k`` skipped steps are the matrix power ``A**k``. `zero_gradient_map` reads
``A`` off the update's algebra (gradient replaced by zero, then PyTensor's
canonicalize/stabilize/specialize), and `power_coefficients` builds ``A**k``
for a per-row ``k`` from the eigendecomposition of ``A``, computed once in
float64: ``A**k = P diag(lambda**k) P^-1``. Each entry of ``A**k`` is then a
sum of ``n`` per-row powers, and catching up is ``n**2`` multiply-adds per
element, with ``n`` the number of variables in the group (at most 3).

Adam's and Adamax's parameter step at zero gradient, ``a_t m' / (sqrt(v') + eps)``,
is not linear in the state and changes with the step; `zero_gradient_map`
reports it as not linear, and the policy says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pytensor.scalar as ps
import pytensor.tensor as pt
from pytensor.graph.basic import Constant, Variable
from pytensor.graph.replace import clone_replace
from pytensor.graph.rewriting.utils import rewrite_graph
from pytensor.tensor.basic import get_underlying_scalar_constant_value
from pytensor.tensor.elemwise import DimShuffle, Elemwise

from subsetgrad.graph import describe, strip_wrappers
from subsetgrad.optim.rows import RowGroup, RowUpdateError

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


def zero_gradient_map(group: RowGroup) -> LinearMap:
    """The group's one-step map at zero gradient, or RowUpdateError if it is not linear."""
    zeros = {g: pt.constant(np.zeros((1,) * g.type.ndim, dtype=g.type.dtype)) for g in group.grads}
    outs = clone_replace([group.values[k] for k in group.keys], replace=zeros, rebuild_strict=False)
    simplified = rewrite_graph(outs, include=("canonicalize", "stabilize", "specialize"))
    keys = group.keys
    matrix = np.zeros((len(keys), len(keys)))
    for a, out in enumerate(simplified):
        coefficients = _linear(out, set(keys))
        if coefficients is None:
            raise RowUpdateError(
                f"at zero gradient the update of {describe(keys[a])} is not a constant "
                "linear map of the table and its state (Adam-style steps that depend on "
                "the step count have no closed form here)"
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
        kf = pt.cast(k, "float64")
        total: Variable | None = None
        for wi, lam in terms:
            part = pt.constant(wi) if lam == 1.0 else wi * pt.power(lam, kf)
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
