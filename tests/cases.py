"""Lookup forms and update expressions shared by the rewrite and lint tests."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytensor
import pytensor.tensor as pt
from pytensor.graph.basic import Variable

V, D = 12, 5
RNG = np.random.default_rng(1234)
TABLE = RNG.normal(size=(V, D))


@dataclass(frozen=True)
class Lookup:
    """A lookup form: builds ``W[...]`` from fresh symbolic inputs, with test values."""

    name: str
    build: Callable[[Variable], tuple[list[Variable], Variable]]
    values: list[Any] = field(default_factory=list)


def _rows(W: Variable) -> tuple[list[Variable], Variable]:
    idx = pt.lvector("idx")
    return [idx], W[idx]


def _rows_matrix(W: Variable) -> tuple[list[Variable], Variable]:
    idx = pt.lmatrix("idx")
    return [idx], W[idx]


def _cols(W: Variable) -> tuple[list[Variable], Variable]:
    idx = pt.lvector("idx")
    return [idx], W[:, idx]


def _pairs(W: Variable) -> tuple[list[Variable], Variable]:
    i, j = pt.lvector("i"), pt.lvector("j")
    return [i, j], W[i, j]


def _rows_at_col(W: Variable) -> tuple[list[Variable], Variable]:
    idx = pt.lvector("idx")
    return [idx], W[idx, 2]


def _take0(W: Variable) -> tuple[list[Variable], Variable]:
    idx = pt.lvector("idx")
    return [idx], pt.take(W, idx, axis=0)


def _take1(W: Variable) -> tuple[list[Variable], Variable]:
    idx = pt.lvector("idx")
    return [idx], pt.take(W, idx, axis=1)


def _mask(W: Variable) -> tuple[list[Variable], Variable]:
    mask = pt.matrix("mask", dtype="bool")
    return [mask], W[mask]


# Every index vector repeats an entry and has a negative one.
LOOKUPS = [
    Lookup("rows", _rows, [np.array([3, 1, 3, -1, 7, 3])]),
    Lookup("rows_matrix", _rows_matrix, [np.array([[3, 1, 3], [-1, 7, 3]])]),
    Lookup("cols", _cols, [np.array([1, 4, 1, -2])]),
    Lookup("pairs", _pairs, [np.array([1, 2, 1, -1]), np.array([0, 3, 0, 4])]),
    Lookup("rows_at_col", _rows_at_col, [np.array([3, 1, 3, -1])]),
    Lookup("take0", _take0, [np.array([3, 1, 3, -1, 7])]),
    Lookup("take1", _take1, [np.array([0, 4, 0, -1])]),
    Lookup("mask", _mask, [RNG.random((V, D)) > 0.6]),
]
LOOKUP_IDS = [lk.name for lk in LOOKUPS]


def cost_of(x: Variable) -> Variable:
    return ((pt.tanh(x) - 0.3) ** 2).sum()


@dataclass(frozen=True)
class Update:
    """An update expression ``f(W, g)`` with its extra inputs and their values."""

    name: str
    build: Callable[[Variable, Variable], tuple[list[Variable], Variable]]
    values: list[Any] = field(default_factory=list)
    # Part of the update stays a dense V x D pass (weight decay).
    keeps_dense_pass: bool = False


def _lr_shared() -> Variable:
    return pytensor.shared(np.asarray(0.1, dtype=pytensor.config.floatX), name="lr")


def _u(fn: Callable[..., Variable], *inputs: Variable) -> Any:
    return lambda W, g: (list(inputs), fn(W, g, *inputs))


UPDATES = [
    Update("W - lr*g", lambda W, g: ([], W - 0.1 * g)),
    Update("W + (-lr)*g", lambda W, g: ([], W + (-_lr_shared()) * g)),
    Update("W - g*lr", lambda W, g: (lambda lr: ([lr], W - g * lr))(pt.dscalar("lr")), [0.05]),
    Update("W - g/k", lambda W, g: ([], W - g / 4.0)),
    Update("-(lr*g) + W", lambda W, g: (lambda lr: ([], -(lr * g) + W))(_lr_shared())),
    Update(
        "W - col*g",
        lambda W, g: (lambda c: ([c], W - c * g))(pt.dvector("col")),
        [np.linspace(0.1, 0.5, D)],
    ),
    Update(
        "W - row*g",
        lambda W, g: (lambda r: ([r], W - r * g))(pt.dmatrix("row", shape=(None, 1))),
        [np.linspace(0.1, 1.0, V)[:, None]],
    ),
    Update("W*(1-lr*wd) - lr*g", lambda W, g: ([], W * (1 - 0.1 * 0.01) - 0.1 * g), [], True),
    Update("W - lr*(g + wd*W)", lambda W, g: ([], W - 0.1 * (g + 0.01 * W)), [], True),
]
UPDATE_IDS = [u.name for u in UPDATES]
# Factors that vary along the table's axes (not a scalar learning rate).
VARYING = {"W - col*g", "W - row*g"}


def rewrite_applies(lookup: Lookup, update: Update) -> bool:
    """Whether the rewrite is expected to fire on this pair.

    A factor that varies along a boolean mask's axes is left alone: gathering
    it would need ``nonzero`` (missing on PyTorch) or a V x D broadcast.
    """
    return not (lookup.name == "mask" and update.name in VARYING)
