"""Models written to break the row analysis that the rewrite and `sparse_updates` share.

Each `Case` builds fresh graphs on every call (a table ``W`` looked up by ``W[idx]``,
its update, maybe state and other tables), with the inputs fed at each step, and
states what the rewrite and each policy must do with it. `tests/test_adversarial.py`
runs them against the dense graph compiled without rewrites.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pymc.variational.updates as pm_updates
import pytensor
import pytensor.tensor as pt
from pytensor.compile.sharedvalue import SharedVariable
from pytensor.gradient import disconnected_grad
from pytensor.graph.basic import Variable

V, D = 12, 3
LR = 0.1

#: What a policy must do with a case: accept it and equal the dense run, refuse it
#: with a SparseUpdateError, or either of the two.
Expect = Literal["equal", "refuse", "either"]
Updates = dict[Variable, Variable]

# Rows of each step: repeats, negative indices (-2 is row 10, -12 row 0), an empty
# batch, a row and its negative alias (7 and -5), rows idle for several steps (3, 5, 0)
# and rows never looked up (4, 6, 8, 9, 11).
ROWS: tuple[tuple[int, ...], ...] = (
    (1, 2, 2),
    (-2, 3, 1, 3),
    (5, 5, 5, 0),
    (),
    (2, -12),
    (7, 1, -5, 10),
)
SCALAR_ROWS = (3, 3, -1, 5, 0, 3)
MATRIX_ROWS = (((1, 2), (2, 2)), ((-1, 0), (5, 1)), ((3, 3), (3, -12)))


def never_looked_up(rows: Sequence[Any], n_rows: int = V) -> tuple[int, ...]:
    seen = {int(r) % n_rows for step in rows for r in np.ravel(step)}
    return tuple(r for r in range(n_rows) if r not in seen)


@dataclass
class Model:
    """One build of a case: fresh shared variables and symbolic inputs."""

    inputs: list[Variable]
    updates: Updates
    #: Outputs of every step (the loss): computed before the updates, as in the dense graph.
    outputs: list[Variable] = field(default_factory=list)

    @property
    def shared(self) -> list[SharedVariable]:
        """The updated shared variables, in a stable order: what the runs compare."""
        return [k for k in self.updates if isinstance(k, SharedVariable)]


@dataclass(frozen=True)
class Case:
    """A model, the inputs of each step, and what the rewrite and the policies must do."""

    name: str
    build: Callable[[], Model]
    #: The inputs of each step.
    feeds: tuple[tuple[np.ndarray, ...], ...]
    #: The rewrite must fire (True: SparseState or SubsetUpdate, with no V x D buffer),
    #: must not turn it into a SparseState row step (False), or either (None).
    #: Whatever it does, its result must equal the dense run.
    fires: bool | None = None
    exact: Expect = "either"
    catchup: Expect = "either"
    #: None where a zero gradient changes the table or its state: lazy is then only
    #: checked to keep rows never looked up, not compared with the dense run.
    lazy: Expect | None = None
    #: Catch-up's ``fresh(outputs)``: equal to the dense outputs at every step, or refused.
    fresh: Expect = "either"
    #: Rows of ``W`` (and of its same-shaped state) that no step looks up.
    untouched: tuple[int, ...] = ()
    #: Whether the step takes ``(idx, C)`` with a vector ``idx``: then an out-of-range
    #: index is tried too.
    vector_index: bool = False
    #: With `fires`: whether the rewritten step must keep no allocation of V rows.
    small: bool = True


# --------------------------------------------------------------------------- #
# Building blocks
# --------------------------------------------------------------------------- #
Static = bool | tuple[int | None, int | None]


def table(
    name: str = "W", *, static: Static = False, seed: int = 0, shape: tuple[int, int] = (V, D)
) -> SharedVariable:
    """A random table; `static`: its static shape (all of it if True)."""
    value = np.random.default_rng(seed).normal(size=shape)
    if static:
        return pytensor.shared(value, name=name, shape=shape if static is True else static)
    return pytensor.shared(value, name=name)


def state(
    name: str, value: float = 0.0, *, static: bool = False, shape: tuple[int, int] = (V, D)
) -> SharedVariable:
    data = np.full(shape, value)
    if static:
        return pytensor.shared(data, name=name, shape=shape)
    return pytensor.shared(data, name=name)


def vector_feeds(
    rows: Sequence[Sequence[int]] = ROWS, seed: int = 1, dtype: str = "int64"
) -> tuple[Any, ...]:
    rng = np.random.default_rng(seed)
    return tuple((np.array(r, dtype=dtype), rng.normal(size=(len(r), D)) + 0.1) for r in rows)


def scalar_feeds(rows: Sequence[int] = SCALAR_ROWS, seed: int = 1) -> tuple[Any, ...]:
    rng = np.random.default_rng(seed)
    return tuple((np.int64(r), rng.normal(size=D) + 0.1) for r in rows)


def matrix_feeds(rows: Sequence[Any] = MATRIX_ROWS, seed: int = 1) -> tuple[Any, ...]:
    rng = np.random.default_rng(seed)
    return tuple(
        (np.array(r, dtype=np.int64), rng.normal(size=(*np.shape(r), D)) + 0.1) for r in rows
    )


def cost(rows: Variable, C: Variable) -> Variable:
    """A loss of the looked-up rows whose gradient reads them."""
    return (pt.tanh(rows) * C).sum()


Step = Callable[[SharedVariable, Variable, Variable], Updates]


def on_rows(step: Step, **table_kw: Any) -> Callable[[], Model]:
    """A builder: ``W`` looked up by a vector ``idx``; `step(W, g, loss)` gives the updates."""

    def build() -> Model:
        W = table(**table_kw)
        idx, C = pt.lvector("idx"), pt.matrix("C")
        loss = cost(W[idx], C)
        return Model([idx, C], step(W, pytensor.grad(loss, W), loss), [loss])

    return build


def case(
    name: str,
    step: Step,
    *,
    table_kw: dict[str, Any] | None = None,
    rows: Sequence[Sequence[int]] = ROWS,
    **expect: Any,
) -> Case:
    """A case on ``W[idx]`` with a vector ``idx`` fed `rows`."""
    return Case(
        name,
        on_rows(step, **(table_kw or {})),
        vector_feeds(rows),
        untouched=never_looked_up(rows),
        vector_index=True,
        **expect,
    )


def sgd(direction: Callable[[Variable], Variable]) -> Step:
    """``W - lr * direction(g)``."""
    return lambda W, g, loss: {W: W - LR * direction(g)}


def scaled_sign(factor: Callable[[SharedVariable, Variable], Any]) -> Step:
    """``W - lr * sign(g) * factor(W, loss)``: the identity at zero gradient, whatever
    the factor reads."""
    return lambda W, g, loss: {W: W - LR * pt.sign(g) * factor(W, loss)}


# What the policies must do with a step that is the identity at zero gradient and
# elementwise in it, reading the table row by row only: the rewrite makes it a row step.
ROW_STEP: dict[str, Any] = {
    "fires": True,
    "exact": "equal",
    "catchup": "equal",
    "lazy": "equal",
    "fresh": "equal",
}
# ... reading the table (or its state) other than row by row: W.sum(), W[0], a norm.
# The rewrite leaves it dense or computes it right; 'exact' and 'catchup' refuse.
WHOLE_TABLE: dict[str, Any] = {"exact": "refuse", "catchup": "refuse", "lazy": "either"}
# ... reading other rows through an op that keeps the table's shape (W[::-1], W @ M):
# correct if that op reads the whole table, before the step; refusing is allowed.
OTHER_ROWS: dict[str, Any] = {"exact": "either", "catchup": "either", "lazy": "either"}
# A step a zero gradient still changes (momentum, decay): 'exact' refuses.
MOVES: dict[str, Any] = {"fires": False, "exact": "refuse", "catchup": "either"}


# --------------------------------------------------------------------------- #
# States
# --------------------------------------------------------------------------- #
def adagrad(static: bool = False, mean_factor: bool = False) -> Step:
    def step(W: SharedVariable, g: Variable, loss: Variable) -> Updates:
        acc = state("acc", 0.1, static=static)
        new_acc = acc + g**2
        new_W = W - LR * g / pt.sqrt(new_acc + 1e-6)
        if mean_factor:
            new_W = W - LR * g / pt.sqrt(new_acc + 1e-6) * acc.mean()
        return {acc: new_acc, W: new_W}

    return step


def adagrad_reads_state_sum(W: SharedVariable, g: Variable, loss: Variable) -> Updates:
    """The accumulator grows by g**2 times its own total: a whole-state read."""
    acc = state("acc", 0.1)
    new_acc = acc + g**2 * acc.sum()
    return {acc: new_acc, W: W - LR * g / pt.sqrt(new_acc + 1e-6)}


def momentum(W: SharedVariable, g: Variable, loss: Variable) -> Updates:
    v = state("velocity")
    new_v = 0.9 * v - LR * g
    return {v: new_v, W: W + new_v}


def momentum_by_norm(W: SharedVariable, g: Variable, loss: Variable) -> Updates:
    """Momentum scaled by the table's norm (bug 3)."""
    v = state("velocity")
    new_v = 0.9 * v - LR * g * pt.sqrt((W**2).sum())
    return {v: new_v, W: W + new_v}


def momentum_by_velocity_max(W: SharedVariable, g: Variable, loss: Variable) -> Updates:
    v = state("velocity")
    new_v = 0.9 * v - LR * g * (1 + abs(v).max())
    return {v: new_v, W: W + new_v}


def rmsprop(static: bool = False, max_factor: bool = False) -> Step:
    def step(W: SharedVariable, g: Variable, loss: Variable) -> Updates:
        acc = state("acc", 0.1, static=static)
        new_acc = 0.9 * acc + 0.1 * g**2
        scale = 1 + acc.max() if max_factor else 1
        return {acc: new_acc, W: W - LR * g * scale / pt.sqrt(new_acc + 1e-6)}

    return step


def adagrad_sign(W: SharedVariable, g: Variable, loss: Variable) -> Updates:
    """Two states and a nonlinear step: the identity at zero."""
    acc, count = state("acc"), state("count")
    new_acc = acc + abs(g)
    return {acc: new_acc, count: count + pt.sign(g) ** 2, W: W - 0.2 * pt.sign(g) / (1 + new_acc)}


def masked(W: SharedVariable, g: Variable, loss: Variable) -> Updates:
    """Rows with a zero gradient keep their value, by a switch."""
    return {W: pt.switch(pt.neq(g, 0), W - LR * pt.tanh(g), W)}


def masked_momentum(W: SharedVariable, g: Variable, loss: Variable) -> Updates:
    """Momentum that skips rows with a zero gradient: the identity at zero gradient."""
    v = state("velocity")
    moves = pt.neq(g, 0)
    new_v = pt.switch(moves, 0.9 * v - LR * g, v)
    return {v: new_v, W: pt.switch(moves, W + new_v, W)}


def gradient_statistics(W: SharedVariable, g: Variable, loss: Variable) -> Updates:
    """Only a state follows the gradient; the table is not updated."""
    acc = state("acc", 0.1)
    return {acc: acc + g**2}


def soft_sign(W: SharedVariable, g: Variable, loss: Variable) -> Updates:
    """``g / (|g| + eps)``. (Without eps the dense step is NaN at zero gradient, which the
    rewrite assumes away, as it assumes divisors non-zero outside the batch.)"""
    return {W: W - LR * g / (abs(g) + 1e-3)}


def batch_size_factor() -> Model:
    """The step divided by the batch size (plus one: batches may be empty)."""
    W = table()
    idx, C = pt.lvector("idx"), pt.matrix("C")
    loss = cost(W[idx], C)
    g = pytensor.grad(loss, W)
    return Model([idx, C], {W: W - LR * pt.sign(g) / (1 + idx.shape[0])}, [loss])


def momentum_by(mu: float) -> Step:
    """``v' = mu v - lr g``: mu = 1 never decays (a Jordan block), mu < 0 oscillates."""

    def step(W: SharedVariable, g: Variable, loss: Variable) -> Updates:
        v = state("velocity")
        new_v = mu * v - LR * g
        return {v: new_v, W: W + new_v}

    return step


def momentum_with_spring(W: SharedVariable, g: Variable, loss: Variable) -> Updates:
    """The velocity is pulled back by the table: at zero gradient a rotation (complex
    eigenvalues), ``v' = 0.9 v - 0.05 W``, ``W' = W + v'``."""
    v = state("velocity")
    new_v = 0.9 * v - 0.05 * W - LR * g
    return {v: new_v, W: W + new_v}


def tanh_decay(W: SharedVariable, g: Variable, loss: Variable) -> Updates:
    """A decay that is not linear: ``W - 0.05 tanh(W)`` at zero gradient."""
    return {W: W - 0.05 * pt.tanh(W) - LR * pt.sign(g)}


def decaying_unused_state(W: SharedVariable, g: Variable, loss: Variable) -> Updates:
    """The table's step is the identity at zero, its state decays (and is not read)."""
    acc = state("acc", 1.0)
    return {acc: 0.9 * acc + g**2, W: W - LR * pt.sign(g)}


def momentum_with_loss(W: SharedVariable, g: Variable, loss: Variable) -> Updates:
    """Momentum whose step also reads the loss (a scalar of the looked-up rows)."""
    v = state("velocity")
    new_v = 0.9 * v - LR * g * (1 + 0.01 * loss)
    return {v: new_v, W: W + new_v}


# --------------------------------------------------------------------------- #
# Builders beyond one vector lookup
# --------------------------------------------------------------------------- #
def fresh_reads_whole_table() -> Model:
    """Momentum on the lookup loss; the monitored loss adds the table's norm (bug 3)."""
    W = table()
    idx, C = pt.lvector("idx"), pt.matrix("C")
    loss = cost(W[idx], C)
    updates = momentum(W, pytensor.grad(loss, W), loss)
    return Model([idx, C], updates, [loss + 0.01 * (W**2).sum()])


def fresh_reads_lookups(again: bool) -> Callable[[], Model]:
    """Momentum; the outputs read only the batch's rows: the loss, and (`again`) a
    lookup of them of its own."""

    def build() -> Model:
        W = table()
        idx, C = pt.lvector("idx"), pt.matrix("C")
        loss = cost(W[idx], C)
        outputs = [loss, (W[idx] ** 2).sum()] if again else [loss]
        return Model([idx, C], momentum(W, pytensor.grad(loss, W), loss), outputs)

    return build


def scalar_lookup(
    dtype: str = "int64", step: Step | None = None, static: bool = False
) -> Callable[[], Model]:
    """``W[i]`` with a 0-d index `i` (a sign step by default)."""

    def build() -> Model:
        W = table(static=static)
        i, c = pt.scalar("i", dtype=dtype), pt.vector("c")
        loss = cost(W[i], c)
        updates = (step or sgd(pt.sign))(W, pytensor.grad(loss, W), loss)
        return Model([i, c], updates, [loss])

    return build


def lookup_of_zero_d(step: Step) -> Callable[[], Model]:
    """``W[idx[0]]``: a 0-d index taken from a vector input."""

    def build() -> Model:
        W = table()
        idx, c = pt.lvector("idx"), pt.vector("c")
        loss = cost(W[idx[0]], c)
        return Model([idx, c], step(W, pytensor.grad(loss, W), loss), [loss])

    return build


def constant_lookup(step: Step) -> Callable[[], Model]:
    """``W[3]`` and ``W[[5, 5, -1]]``: indices that are constants."""

    def build() -> Model:
        W = table()
        idx, C = pt.lvector("idx"), pt.matrix("C")
        loss = cost(W[idx], C) + pt.tanh(W[3]).sum() + (W[np.array([5, 5, -1])] ** 2).sum()
        return Model([idx, C], step(W, pytensor.grad(loss, W), loss), [loss])

    return build


def matrix_lookup(step: Step) -> Callable[[], Model]:
    def build() -> Model:
        W = table()
        idx, C = pt.lmatrix("idx"), pt.tensor3("C")
        loss = cost(W[idx], C)
        return Model([idx, C], step(W, pytensor.grad(loss, W), loss), [loss])

    return build


def two_lookups(step: Step, same_index: bool = False) -> Callable[[], Model]:
    """``W[idx]`` and ``W[idx + 1]`` (or ``W[idx]`` twice) in one loss."""

    def build() -> Model:
        W = table()
        idx, C = pt.lvector("idx"), pt.matrix("C")
        other = idx if same_index else (idx + 1) % V
        loss = cost(W[idx], C) + (W[other] ** 2 * C).sum()
        return Model([idx, C], step(W, pytensor.grad(loss, W), loss), [loss])

    return build


TwoSteps = Callable[[SharedVariable, Variable, SharedVariable, Variable], Updates]


def two_tables(steps: TwoSteps, shared_index: bool = False) -> Callable[[], Model]:
    """``W[idx]`` and ``U[jdx]`` (``jdx`` = ``idx`` reversed, or ``idx`` itself)."""

    def build() -> Model:
        W, U = table(), table("U", seed=5)
        idx, C = pt.lvector("idx"), pt.matrix("C")
        jdx = idx if shared_index else idx[::-1]
        loss = cost(W[idx], C) + (pt.sin(U[jdx]) * C).sum()
        gW, gU = pytensor.grad(loss, [W, U])
        return Model([idx, C], steps(W, gW, U, gU), [loss])

    return build


def sign_and_adagrad(W: SharedVariable, gW: Variable, U: SharedVariable, gU: Variable) -> Updates:
    acc = state("acc_U", 0.1)
    new_acc = acc + gU**2
    return {
        W: W - LR * pt.sign(gW),
        acc: new_acc,
        U: U - LR * gU / pt.sqrt(new_acc + 1e-6),
    }


def sign_reading_other_table(
    W: SharedVariable, gW: Variable, U: SharedVariable, gU: Variable
) -> Updates:
    """W's step reads U row by row, and U's sum; U has its own step."""
    return {
        W: W - LR * pt.sign(gW) * (1 + 0.1 * U + 0.01 * U.sum()),
        U: U - LR * pt.clip(gU, -0.3, 0.3),
    }


def sign_reading_moving_table(
    W: SharedVariable, gW: Variable, U: SharedVariable, gU: Variable
) -> Updates:
    """U moves at zero gradient (momentum); W's step reads U's sum."""
    v = state("velocity_U")
    new_v = 0.9 * v - LR * gU
    return {W: W - LR * pt.sign(gW) * (1 + 0.01 * U.sum()), v: new_v, U: U + new_v}


def sign_reading_new_table(
    W: SharedVariable, gW: Variable, U: SharedVariable, gU: Variable
) -> Updates:
    """W's step reads the sum of U's *new* value, itself a sign step."""
    new_U = U - LR * pt.sign(gU)
    return {W: W - LR * pt.sign(gW) * (1 + 0.01 * new_U.sum()), U: new_U}


def sign_reading_new_moving_table(
    W: SharedVariable, gW: Variable, U: SharedVariable, gU: Variable
) -> Updates:
    """W's step reads the sum of U's new value, U under momentum (behind until flushed)."""
    v = state("velocity_U")
    new_v = 0.9 * v - LR * gU
    new_U = U + new_v
    return {W: W - LR * pt.sign(gW) * (1 + 0.01 * new_U.sum()), v: new_v, U: new_U}


def shared_accumulator(W: SharedVariable, gW: Variable, U: SharedVariable, gU: Variable) -> Updates:
    """One accumulator for both tables (of one shape): adagrad on their summed squares."""
    acc = state("acc", 0.1)
    new_acc = acc + gW**2 + gU**2
    return {
        acc: new_acc,
        W: W - LR * gW / pt.sqrt(new_acc + 1e-6),
        U: U - LR * gU / pt.sqrt(new_acc + 1e-6),
    }


def column_table(step: Step) -> Callable[[], Model]:
    """A table of one column, declared so (static shape (None, 1): broadcastable)."""

    def build() -> Model:
        W = pytensor.shared(np.random.default_rng(0).normal(size=(V, 1)), name="W", shape=(None, 1))
        idx, C = pt.lvector("idx"), pt.matrix("C", shape=(None, 1))
        loss = cost(W[idx], C)
        return Model([idx, C], step(W, pytensor.grad(loss, W), loss), [loss])

    return build


def column_feeds() -> tuple[Any, ...]:
    return tuple((idx, C[:, :1]) for idx, C in vector_feeds())


def two_losses() -> Model:
    """Two gradients of one table from two losses, each with its own nonlinear step."""
    W = table()
    idx, C = pt.lvector("idx"), pt.matrix("C")
    first, second = cost(W[idx], C), (W[(idx + 3) % V] ** 2).sum()
    g1, g2 = pytensor.grad(first, W), pytensor.grad(second, W)
    return Model([idx, C], {W: W - LR * pt.sign(g1) - 0.05 * pt.clip(g2, -0.3, 0.3)}, [first])


def bool_mask_lookup() -> Model:
    W = table()
    mask, C = pt.vector("mask", dtype="bool"), pt.matrix("C")
    loss = cost(W[mask], C)
    return Model([mask, C], {W: W - LR * pt.sign(pytensor.grad(loss, W))}, [loss])


def mask_feeds() -> tuple[Any, ...]:
    rng = np.random.default_rng(1)
    masks = [np.isin(np.arange(V), [1, 2]), np.isin(np.arange(V), [0, 3, 10]), np.zeros(V, bool)]
    return tuple((m, rng.normal(size=(int(m.sum()), D))) for m in masks)


def partial_columns(step: Step) -> Callable[[], Model]:
    """``W[idx][:, :2]``: whole rows looked up, two columns used."""

    def build() -> Model:
        W = table()
        idx, C = pt.lvector("idx"), pt.matrix("C")
        loss = cost(W[idx][:, :2], C[:, :2])
        return Model([idx, C], step(W, pytensor.grad(loss, W), loss), [loss])

    return build


def data_dependent_index(step: Step) -> Callable[[], Model]:
    """A second lookup whose rows are chosen by the table's values (its two smallest)."""

    def build() -> Model:
        W = table()
        idx, C = pt.lvector("idx"), pt.matrix("C")
        chosen = pt.argsort(W[:, 0])[:2]
        loss = cost(W[idx], C) + (W[chosen] ** 2).sum()
        return Model([idx, C], step(W, pytensor.grad(loss, W), loss), [loss])

    return build


def frozen_table_sum(step: Step) -> Callable[[], Model]:
    """The gradient's values read the whole table: ``W[idx] * stop_gradient(W.sum())``."""

    def build() -> Model:
        W = table()
        idx, C = pt.lvector("idx"), pt.matrix("C")
        loss = cost(W[idx] * disconnected_grad(0.1 * W.sum()), C)
        return Model([idx, C], step(W, pytensor.grad(loss, W), loss), [loss])

    return build


def weight_decay(step: Step) -> Callable[[], Model]:
    """An L2 term in the loss: the gradient is dense, every row has one."""

    def build() -> Model:
        W = table()
        idx, C = pt.lvector("idx"), pt.matrix("C")
        loss = cost(W[idx], C) + 0.005 * (W**2).sum()
        return Model([idx, C], step(W, pytensor.grad(loss, W), loss), [loss])

    return build


def output_reads_new_table() -> Model:
    """The function also returns a norm of the updated table (one value, two consumers)."""
    W = table()
    idx, C = pt.lvector("idx"), pt.matrix("C")
    loss = cost(W[idx], C)
    new_W = W - LR * pt.sign(pytensor.grad(loss, W))
    return Model([idx, C], {W: new_W}, [loss, (new_W**2).sum(), new_W[0]])


def other_update_reads_table(step: Step) -> Callable[[], Model]:
    """A second shared variable accumulates the table's sum, read before the step."""

    def build() -> Model:
        W = table()
        total = pytensor.shared(np.float64(0.0), name="total")
        idx, C = pt.lvector("idx"), pt.matrix("C")
        loss = cost(W[idx], C)
        updates = step(W, pytensor.grad(loss, W), loss)
        updates[total] = total + (W**2).sum()
        return Model([idx, C], updates, [loss])

    return build


def row_adagrad(W: SharedVariable, g: Variable, loss: Variable) -> Updates:
    """One accumulator per row (V x 1), of the row's squared gradient."""
    acc = state("acc", 0.1, shape=(V, 1))
    acc = pytensor.shared(acc.get_value(), name="acc", shape=(None, 1))
    new_acc = acc + (g**2).sum(axis=1, keepdims=True)
    return {acc: new_acc, W: W - LR * g / pt.sqrt(new_acc + 1e-6)}


def typed_index(dtype: str, step: Step) -> Callable[[], Model]:
    def build() -> Model:
        W = table()
        idx, C = pt.vector("idx", dtype=dtype), pt.matrix("C")
        loss = cost(W[idx], C)
        return Model([idx, C], step(W, pytensor.grad(loss, W), loss), [loss])

    return build


def one_row_table(step: Step) -> Callable[[], Model]:
    """A table of one row, with a static shape: its rows are broadcastable."""

    def build() -> Model:
        W = table(static=True, shape=(1, D))
        idx, C = pt.lvector("idx"), pt.matrix("C")
        loss = cost(W[idx], C)
        return Model([idx, C], step(W, pytensor.grad(loss, W), loss), [loss])

    return build


def table_of_shape(shape: tuple[int, ...], step: Step) -> Callable[[], Model]:
    """A table of `shape` (V rows of any rank) looked up by a vector ``idx``."""

    def build() -> Model:
        W = pytensor.shared(np.random.default_rng(0).normal(size=shape), name="W")
        idx = pt.lvector("idx")
        C = pt.tensor("C", shape=(None, *(None for _ in shape[1:])))
        loss = cost(W[idx], C)
        return Model([idx, C], step(W, pytensor.grad(loss, W), loss), [loss])

    return build


def shaped_feeds(tail: tuple[int, ...]) -> tuple[Any, ...]:
    rng = np.random.default_rng(1)
    return tuple(
        (np.array(r, dtype=np.int64), rng.normal(size=(len(r), *tail)) + 0.1) for r in ROWS
    )


def adagrad_like(W: SharedVariable, g: Variable, loss: Variable) -> Updates:
    """Adagrad on a table of any rank (its state of the same shape)."""
    acc = pytensor.shared(np.full(W.get_value().shape, 0.1), name="acc")
    new_acc = acc + g**2
    return {acc: new_acc, W: W - LR * g / pt.sqrt(new_acc + 1e-6)}


def counted_sign(W: SharedVariable, g: Variable, loss: Variable) -> Updates:
    """An integer state: how often each entry had a non-zero gradient."""
    count = pytensor.shared(np.zeros((V, D), dtype="int64"), name="count")
    new_count = count + pt.neq(g, 0)
    return {count: new_count, W: W - LR * pt.sign(g) / (1 + new_count)}


def flat_take() -> Model:
    """``W.take(idx)``: a lookup in the flattened table, not of rows."""
    W = table()
    idx, c = pt.lvector("idx"), pt.vector("c")
    loss = (pt.tanh(W.take(idx)) * c).sum()
    return Model([idx, c], {W: W - LR * pt.sign(pytensor.grad(loss, W))}, [loss])


def flat_feeds() -> tuple[Any, ...]:
    rng = np.random.default_rng(1)
    rows = [(1, 2, 2), (-2, 30, 31), (5, 5, 35, 0)]
    return tuple((np.array(r), rng.normal(size=len(r))) for r in rows)


def transposed_lookup() -> Model:
    """``W.T[:, idx]``: the rows of W, looked up as columns of its transpose."""
    W = table()
    idx, C = pt.lvector("idx"), pt.matrix("C")
    loss = cost(W.T[:, idx].T, C)
    return Model([idx, C], {W: W - LR * pt.sign(pytensor.grad(loss, W))}, [loss])


def momentum_decaying_by(decay: Callable[[], Any], *, updated: bool = False) -> Step:
    """``v' = decay * v - lr * g``; `updated`: the decay itself shrinks at every step."""

    def step(W: SharedVariable, g: Variable, loss: Variable) -> Updates:
        v = state("velocity")
        mu = decay()
        new_v = mu * v - LR * g
        updates = {v: new_v, W: W + new_v}
        if updated:
            updates[mu] = mu * 0.95
        return updates

    return step


def momentum_input_coefficient() -> Model:
    """The momentum coefficient is an input, different at every step."""
    W = table()
    idx, C, mu = pt.lvector("idx"), pt.matrix("C"), pt.scalar("mu")
    loss = cost(W[idx], C)
    v = state("velocity")
    new_v = mu * v - LR * pytensor.grad(loss, W)
    return Model([idx, C, mu], {v: new_v, W: W + new_v}, [loss])


def with_coefficients(feeds: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple((*f, np.float64(0.5 + 0.08 * n)) for n, f in enumerate(feeds))


def pymc_step(name: str) -> Step:
    def step(W: SharedVariable, g: Variable, loss: Variable) -> Updates:
        return dict(getattr(pm_updates, name)(loss, [W], learning_rate=0.05))

    return step


def tied_output_layer(step: Step) -> Callable[[], Model]:
    """The table is also the output layer (``W @ u``): every row has a gradient."""

    def build() -> Model:
        W = table()
        idx, C = pt.lvector("idx"), pt.matrix("C")
        u = np.array([0.3, -0.2, 0.1])
        loss = cost(W[idx], C) + pt.tanh(W @ u).sum()
        return Model([idx, C], step(W, pytensor.grad(loss, W), loss), [loss])

    return build


def advancing_shared_index() -> Model:
    """The rows come from a shared index that the step itself advances."""
    W = table()
    rows = pytensor.shared(np.array([1, 2, 2, -1]), name="rows")
    C = pt.matrix("C")
    loss = cost(W[rows], C)
    g = pytensor.grad(loss, W)
    acc = state("acc", 0.1)
    new_acc = acc + g**2
    updates = {
        acc: new_acc,
        W: W - LR * g / pt.sqrt(new_acc + 1e-6),
        rows: (rows + 3) % V,
    }
    return Model([C], updates, [loss])


def c_feeds(n: int = 4, seed: int = 1) -> tuple[Any, ...]:
    rng = np.random.default_rng(seed)
    return tuple((rng.normal(size=(n, D)) + 0.1,) for _ in range(5))


def decaying_shared_rate(W: SharedVariable, g: Variable, loss: Variable) -> Updates:
    """A shared learning rate that decays at every step."""
    lr = pytensor.shared(np.float64(LR), name="lr")
    return {W: W - lr * pt.sign(g), lr: lr * 0.9}


def grow_where_positive(W: SharedVariable, g: Variable, loss: Variable) -> Updates:
    """``where(g > 0, 1.01 W, W) - lr * clip(g)``: a switch on the gradient's sign."""
    return {W: pt.switch(pt.gt(g, 0), 1.01 * W, W) - LR * pt.clip(g, -0.3, 0.3)}


def fresh_of_new_table() -> Model:
    """Momentum; an output reads the updated table whole (the dense W + v')."""
    W = table()
    idx, C = pt.lvector("idx"), pt.matrix("C")
    loss = cost(W[idx], C)
    updates = momentum(W, pytensor.grad(loss, W), loss)
    return Model([idx, C], updates, [loss, (updates[W] ** 2).sum()])


def pairwise_scores(step: Step) -> Callable[[], Model]:
    """Scores of pairs of rows (word2vec-like): each lookup's gradient reads the other's."""

    def build() -> Model:
        W = table()
        idx, jdx, c = pt.lvector("idx"), pt.lvector("jdx"), pt.vector("c")
        loss = (pt.tanh((W[idx] * W[jdx]).sum(axis=1)) * c).sum()
        return Model([idx, jdx, c], step(W, pytensor.grad(loss, W), loss), [loss])

    return build


def pair_feeds() -> tuple[Any, ...]:
    rng = np.random.default_rng(1)
    pairs = [((1, 2, 2), (3, 1, -10)), ((5, 0), (0, 5)), ((7, 7, 1), (1, 10, -5))]
    return tuple((np.array(i), np.array(j), rng.normal(size=len(i)) + 0.1) for i, j in pairs)


# --------------------------------------------------------------------------- #
# The constants that differ between otherwise equal models (compile order)
# --------------------------------------------------------------------------- #
def alloc_factor(c: float) -> Step:
    """``W * (alloc(c) + sign(g))``: W itself at c = 1, 2 W at c = 2 (bug 1)."""
    return lambda W, g, loss: {W: W * (pt.alloc(c, *W.shape) + pt.sign(g))}


def full_like_factor(c: float) -> Step:
    return lambda W, g, loss: {W: W * (pt.full_like(W, c) + pt.sign(g))}


def scaled_table(c: float) -> Step:
    return lambda W, g, loss: {W: c * W - LR * pt.sign(g)}


def reshaped_constant_factor(c: float) -> Step:
    """A constant behind a Reshape to the table's static shape."""
    return lambda W, g, loss: {
        W: W * (pt.as_tensor(np.full(V * D, c)).reshape((V, D)) + pt.sign(g))
    }


def dot_factor(c: float) -> Step:
    """A constant inside a Dot: ``ones_like(W) @ (c * eye)``."""
    return lambda W, g, loss: {W: W * (pt.ones_like(W) @ (c * pt.eye(D)) + pt.sign(g))}


def tiled_factor(c: float) -> Step:
    """A constant row tiled over the table."""
    return lambda W, g, loss: {
        W: W * (pt.tile(pt.as_tensor(np.full((1, D), c)), (V, 1)) + pt.sign(g))
    }


def summed_alloc_factor(c: float) -> Step:
    """A constant two opaque ops deep: the mean of a stack of ``alloc(c)``."""
    return lambda W, g, loss: {W: W * (pt.alloc(c, 2, *W.shape).mean(0) + pt.sign(g))}


def decaying_state(c: float) -> Step:
    """``acc * alloc(c) + g**2``: adagrad at c = 1, RMSprop-like decay below."""

    def step(W: SharedVariable, g: Variable, loss: Variable) -> Updates:
        acc = state("acc", 1.0)
        new_acc = acc * pt.alloc(c, *acc.shape) + g**2
        return {acc: new_acc, W: W - LR * g / pt.sqrt(new_acc + 1e-6)}

    return step


#: Models that differ only in a constant: at the first value a zero gradient leaves the
#: table unchanged, at the second it does not.
COMPILE_ORDER: dict[str, tuple[Callable[[float], Step], float, float]] = {
    "alloc": (alloc_factor, 1.0, 2.0),
    "full_like": (full_like_factor, 1.0, 2.0),
    "scale": (scaled_table, 1.0, 0.5),
    "reshaped_constant": (reshaped_constant_factor, 1.0, 2.0),
    "dot": (dot_factor, 1.0, 2.0),
    "tile": (tiled_factor, 1.0, 0.5),
    "summed_alloc": (summed_alloc_factor, 1.0, 3.0),
    "state_decay": (decaying_state, 1.0, 0.9),
}


# --------------------------------------------------------------------------- #
# The cases
# --------------------------------------------------------------------------- #
def _cases() -> list[Case]:
    M = np.array([[1.0, 0.5, 0.0], [0.0, 1.0, -0.5], [0.25, 0.0, 1.0]])
    per_row = np.linspace(0.5, 2.0, V)[:, None]
    scalar = {"untouched": never_looked_up([SCALAR_ROWS])}
    return [
        # ---- the five regressions -------------------------------------------------
        case("bug1_alloc_factor_2", alloc_factor(2.0), **MOVES),
        case("bug2_sum_factor", scaled_sign(lambda W, loss: W.sum()), **WHOLE_TABLE),
        case("bug3_momentum_by_table_norm", momentum_by_norm, **MOVES | {"catchup": "refuse"}),
        Case(
            "bug3_fresh_loss_reads_table",
            fresh_reads_whole_table,
            vector_feeds(),
            **MOVES | {"catchup": "equal"},
            fresh="refuse",
            untouched=never_looked_up(ROWS),
            vector_index=True,
        ),
        case("bug4_static_table", sgd(pt.sign), table_kw={"static": True}, **ROW_STEP),
        case(
            "bug4_numpy_row_factor",
            scaled_sign(lambda W, loss: per_row),
            **ROW_STEP,
        ),
        case(
            "bug4_arange_row_factor",
            scaled_sign(lambda W, loss: pt.arange(V)[:, None]),
            **ROW_STEP,
        ),
        Case(
            "bug5_scalar_index",
            scalar_lookup(),
            scalar_feeds(),
            **OTHER_ROWS,
            **scalar,
        ),
        # ---- steps that must stay row steps --------------------------------------
        case("sign", sgd(pt.sign), **ROW_STEP),
        case("clip", sgd(lambda g: pt.clip(g, -0.3, 0.3)), **ROW_STEP),
        case("expm1", sgd(lambda g: pt.exp(g) - 1), **ROW_STEP),
        case("leaky", sgd(lambda g: pt.switch(g > 0, g, 0.25 * g)), **ROW_STEP),
        case("adagrad", adagrad(), **ROW_STEP),
        case("adagrad_sign_two_states", adagrad_sign, **ROW_STEP),
        case("alloc_factor_1", alloc_factor(1.0), **ROW_STEP | {"small": False}),
        case("full_like_factor_1", full_like_factor(1.0), **ROW_STEP | {"small": False}),
        case(
            "constant_table_factor", scaled_sign(lambda W, loss: np.full((V, D), 0.5)), **ROW_STEP
        ),
        case("column_factor", scaled_sign(lambda W, loss: np.array([1.0, 2.0, 3.0])), **ROW_STEP),
        case(
            "shared_row_factor",
            scaled_sign(lambda W, loss: pytensor.shared(per_row, name="s", shape=(None, 1))),
            **ROW_STEP,
        ),
        case("table_factor", scaled_sign(lambda W, loss: 1 + W**2), **ROW_STEP),
        # ---- static shapes --------------------------------------------------------
        case("static_table_adagrad", adagrad(), table_kw={"static": True}, **ROW_STEP),
        case("static_state_adagrad", adagrad(static=True), **ROW_STEP),
        case(
            "static_table_and_state",
            adagrad(static=True),
            table_kw={"static": True},
            **ROW_STEP,
        ),
        case(
            "static_row_factor",
            scaled_sign(lambda W, loss: pytensor.shared(per_row, name="s", shape=(V, 1))),
            **ROW_STEP,
        ),
        case(
            "static_table_numpy_factors",
            scaled_sign(lambda W, loss: per_row * np.array([1.0, 2.0, 3.0])),
            table_kw={"static": True},
            **ROW_STEP,
        ),
        case(
            "static_table_first_row",
            scaled_sign(lambda W, loss: W[0:1]),
            table_kw={"static": True},
            **WHOLE_TABLE,
        ),
        case(
            "static_rmsprop",
            rmsprop(static=True),
            table_kw={"static": True},
            **MOVES | {"catchup": "equal"},
        ),
        Case(
            "one_column_table",
            column_table(sgd(pt.sign)),
            column_feeds(),
            **ROW_STEP,
            untouched=never_looked_up(ROWS),
        ),
        # ---- scalar, 0-d, matrix and constant indices -----------------------------
        Case(
            "scalar_index_int32_adagrad",
            scalar_lookup("int32", adagrad()),
            scalar_feeds(),
            **OTHER_ROWS,
            **scalar,
        ),
        Case(
            "scalar_index_static_table",
            scalar_lookup(static=True),
            scalar_feeds(),
            **OTHER_ROWS,
            **scalar,
        ),
        Case(
            "scalar_index_momentum",
            scalar_lookup(step=momentum),
            scalar_feeds(),
            fires=False,
            exact="refuse",
            **scalar,
        ),
        Case(
            "zero_d_index_from_vector",
            lookup_of_zero_d(sgd(lambda g: pt.clip(g, -0.3, 0.3))),
            tuple((np.array(r), c) for r, (_, c) in zip(ROWS[:3], scalar_feeds(), strict=False)),
            **OTHER_ROWS,
        ),
        Case(
            "constant_indices",
            constant_lookup(sgd(pt.sign)),
            vector_feeds(),
            **OTHER_ROWS,
        ),
        Case(
            "matrix_index",
            matrix_lookup(adagrad()),
            matrix_feeds(),
            **ROW_STEP,
            untouched=never_looked_up(MATRIX_ROWS),
        ),
        # ---- several lookups, two tables -----------------------------------------
        Case(
            "two_lookups_shifted",
            two_lookups(sgd(pt.sign)),
            vector_feeds(),
            **ROW_STEP,
        ),
        Case(
            "two_lookups_same_index",
            two_lookups(adagrad(), same_index=True),
            vector_feeds(),
            **ROW_STEP,
            untouched=never_looked_up(ROWS),
        ),
        Case(
            "two_tables_sign_and_adagrad",
            two_tables(sign_and_adagrad),
            vector_feeds(),
            **ROW_STEP,
            untouched=never_looked_up(ROWS),
        ),
        Case(
            "two_tables_read_each_other",
            two_tables(sign_reading_other_table, shared_index=True),
            vector_feeds(),
            **OTHER_ROWS,
        ),
        Case(
            "two_tables_read_moving_sum",
            two_tables(sign_reading_moving_table),
            vector_feeds(),
            exact="refuse",
            catchup="refuse",
        ),
        Case(
            "two_tables_read_new_sum",
            two_tables(sign_reading_new_table),
            vector_feeds(),
            **OTHER_ROWS,
            vector_index=True,
        ),
        Case(
            "two_tables_read_new_moving_sum",
            two_tables(sign_reading_new_moving_table),
            vector_feeds(),
            exact="refuse",
            vector_index=True,
        ),
        Case(
            "two_tables_shared_accumulator",
            two_tables(shared_accumulator),
            vector_feeds(),
            **OTHER_ROWS,
            vector_index=True,
        ),
        Case("two_losses_one_table", two_losses, vector_feeds(), **OTHER_ROWS),
        # ---- other lookups and index types ---------------------------------------
        Case("bool_mask", bool_mask_lookup, mask_feeds(), **OTHER_ROWS),
        Case(
            "partial_columns",
            partial_columns(adagrad()),
            vector_feeds(),
            **ROW_STEP,
            untouched=never_looked_up(ROWS),
            vector_index=True,
        ),
        Case(
            "rows_chosen_by_values",
            data_dependent_index(sgd(pt.sign)),
            vector_feeds(),
            **OTHER_ROWS,
            vector_index=True,
        ),
        Case(
            "int32_index",
            typed_index("int32", sgd(pt.sign)),
            vector_feeds(dtype="int32"),
            **ROW_STEP,
            untouched=never_looked_up(ROWS),
            vector_index=True,
        ),
        Case(
            "uint8_index",
            typed_index("uint8", adagrad()),
            vector_feeds([[r % V for r in rows] for rows in ROWS], dtype="uint8"),
            **ROW_STEP,
            untouched=never_looked_up(ROWS),
        ),
        Case(
            "one_row_table",
            one_row_table(sgd(pt.sign)),
            vector_feeds([(0, 0), (-1,), (), (0, -1, 0)]),
            **OTHER_ROWS,
            vector_index=True,
        ),
        case("static_rows_only", adagrad(), table_kw={"static": (V, None)}, **ROW_STEP),
        case("static_columns_only", sgd(pt.sign), table_kw={"static": (None, D)}, **ROW_STEP),
        # ---- reads beside the step ------------------------------------------------
        Case(
            "gradient_reads_frozen_sum",
            frozen_table_sum(sgd(pt.sign)),
            vector_feeds(),
            **OTHER_ROWS,
            vector_index=True,
        ),
        Case(
            "gradient_reads_frozen_sum_momentum",
            frozen_table_sum(momentum),
            vector_feeds(),
            **MOVES | {"catchup": "refuse"},
            vector_index=True,
        ),
        Case(
            "weight_decay_in_loss",
            weight_decay(sgd(pt.sign)),
            vector_feeds(),
            **MOVES,
            vector_index=True,
        ),
        Case(
            "outputs_read_new_table",
            output_reads_new_table,
            vector_feeds(),
            **ROW_STEP,
            untouched=never_looked_up(ROWS),
            vector_index=True,
        ),
        Case(
            "other_update_reads_table",
            other_update_reads_table(sgd(pt.sign)),
            vector_feeds(),
            **OTHER_ROWS,
            vector_index=True,
        ),
        Case(
            "other_update_reads_moving_table",
            other_update_reads_table(momentum),
            vector_feeds(),
            **MOVES | {"catchup": "refuse"},
            vector_index=True,
        ),
        case("shape_factor", scaled_sign(lambda W, loss: 0.1 * W.shape[0]), **ROW_STEP),
        case("size_factor", scaled_sign(lambda W, loss: pt.ones_like(W).sum() / 10), **ROW_STEP),
        case("row_adagrad", row_adagrad, **OTHER_ROWS),
        case("masked_step", masked, **ROW_STEP),
        case("masked_momentum", masked_momentum, **ROW_STEP),
        case("state_only", gradient_statistics, **ROW_STEP),
        Case(
            "batch_size_factor",
            batch_size_factor,
            vector_feeds(),
            **ROW_STEP,
            untouched=never_looked_up(ROWS),
            vector_index=True,
        ),
        case("soft_sign", soft_sign, **ROW_STEP),
        # ---- tables of other ranks, other states ---------------------------------
        Case(
            "table_3d",
            table_of_shape((V, 2, 2), adagrad_like),
            shaped_feeds((2, 2)),
            **ROW_STEP,
            untouched=never_looked_up(ROWS),
            vector_index=True,
        ),
        Case(
            "table_1d",
            table_of_shape((V,), adagrad_like),
            shaped_feeds(()),
            **ROW_STEP,
            untouched=never_looked_up(ROWS),
            vector_index=True,
        ),
        case("integer_state", counted_sign, **ROW_STEP),
        Case("flat_take", flat_take, flat_feeds(), **OTHER_ROWS),
        Case("transposed_lookup", transposed_lookup, vector_feeds(), **OTHER_ROWS),
        case("pymc_adagrad", pymc_step("adagrad"), **ROW_STEP),
        case(
            "momentum_per_row_decay",
            momentum_decaying_by(
                lambda: pytensor.shared(np.linspace(0.5, 0.95, V)[:, None], shape=(None, 1))
            ),
            **MOVES,
        ),
        case(
            "momentum_per_column_decay",
            momentum_decaying_by(lambda: np.array([0.9, 0.5, 0.99])),
            **MOVES,
        ),
        case(
            "momentum_shrinking_coefficient",
            momentum_decaying_by(lambda: pytensor.shared(0.9, name="mu"), updated=True),
            **MOVES,
        ),
        Case(
            "momentum_input_coefficient",
            momentum_input_coefficient,
            with_coefficients(vector_feeds()),
            **MOVES,
            untouched=never_looked_up(ROWS),
            vector_index=True,
        ),
        Case(
            "tied_output_layer",
            tied_output_layer(sgd(pt.sign)),
            vector_feeds(),
            **MOVES,
            vector_index=True,
        ),
        Case(
            "advancing_shared_index",
            advancing_shared_index,
            c_feeds(),
            **ROW_STEP,
            untouched=(0, 3, 6, 9),
        ),
        case("decaying_shared_rate", decaying_shared_rate, **ROW_STEP),
        case("grow_where_positive", grow_where_positive, **ROW_STEP),
        Case(
            "fresh_of_new_table",
            fresh_of_new_table,
            vector_feeds(),
            **MOVES | {"catchup": "equal"},
            untouched=never_looked_up(ROWS),
            vector_index=True,
        ),
        Case("pairwise_adagrad", pairwise_scores(adagrad()), pair_feeds(), **ROW_STEP),
        Case(
            "pairwise_momentum",
            pairwise_scores(momentum),
            pair_feeds(),
            **MOVES | {"catchup": "equal"},
            fresh="equal",
        ),
        # ---- whole-table reads: reductions ----------------------------------------
        case("mean_factor", scaled_sign(lambda W, loss: W.mean()), **WHOLE_TABLE),
        case("max_factor", scaled_sign(lambda W, loss: W.max()), **WHOLE_TABLE),
        case(
            "norm_factor",
            scaled_sign(lambda W, loss: pt.sqrt((W**2).sum())),
            **WHOLE_TABLE,
        ),
        case(
            "linalg_norm_factor",
            scaled_sign(lambda W, loss: pt.linalg.norm(W)),
            **WHOLE_TABLE,
        ),
        case("column_sums", scaled_sign(lambda W, loss: W.sum(axis=0)), **WHOLE_TABLE),
        case(
            "column_max_keepdims",
            scaled_sign(lambda W, loss: W.max(axis=0, keepdims=True)),
            **WHOLE_TABLE,
        ),
        case(
            "centered_table",
            scaled_sign(lambda W, loss: W - W.mean(axis=0)),
            **WHOLE_TABLE,
        ),
        case(
            "row_sums_keepdims",
            scaled_sign(lambda W, loss: (W**2).sum(axis=1, keepdims=True)),
            **OTHER_ROWS,
        ),
        case("loss_factor", scaled_sign(lambda W, loss: loss), **WHOLE_TABLE),
        case(
            "lookup_sum_factor",
            scaled_sign(lambda W, loss: W[np.array([0, 4])].sum()),
            **WHOLE_TABLE,
        ),
        case("state_mean", adagrad(mean_factor=True), **WHOLE_TABLE),
        case("state_sum_in_state", adagrad_reads_state_sum, **WHOLE_TABLE),
        case("rmsprop_state_max", rmsprop(max_factor=True), **MOVES | {"catchup": "refuse"}),
        case(
            "momentum_velocity_max",
            momentum_by_velocity_max,
            **MOVES | {"catchup": "refuse"},
        ),
        case("momentum_reads_loss", momentum_with_loss, **MOVES),
        # ---- whole-table reads: indexing, reshapes, dots -------------------------
        case("first_row", scaled_sign(lambda W, loss: W[0]), **WHOLE_TABLE),
        case("first_entry", scaled_sign(lambda W, loss: W[0, 0]), **WHOLE_TABLE),
        case("last_row_negative", scaled_sign(lambda W, loss: W[-1]), **WHOLE_TABLE),
        case("reversed_rows", scaled_sign(lambda W, loss: W[::-1]), **OTHER_ROWS),
        case("transposed_twice", scaled_sign(lambda W, loss: W.T.T), **OTHER_ROWS),
        case(
            "flattened_entry",
            scaled_sign(lambda W, loss: W.reshape((V * D,))[1]),
            **WHOLE_TABLE,
        ),
        case(
            "reshaped_rows",
            scaled_sign(lambda W, loss: W.reshape((D, V)).T),
            **OTHER_ROWS,
        ),
        case("dot_right", scaled_sign(lambda W, loss: W @ M), **OTHER_ROWS),
        case("dot_left_transposed", scaled_sign(lambda W, loss: (M @ W.T).T), **OTHER_ROWS),
        case("gram_row", scaled_sign(lambda W, loss: (W.T @ W)[0]), **WHOLE_TABLE),
        case(
            "column_means_by_dot",
            scaled_sign(lambda W, loss: pt.ones(V) @ W / V),
            **WHOLE_TABLE,
        ),
        # ---- gradients read other than row by row --------------------------------
        case(
            "global_norm_clip",
            sgd(lambda g: pt.sign(g) / pt.maximum(1.0, pt.sqrt((g**2).sum()))),
            **OTHER_ROWS,
        ),
        case("reversed_gradient", sgd(lambda g: pt.sign(g)[::-1]), **OTHER_ROWS),
        case("gradient_times_matrix", sgd(lambda g: pt.sign(g) @ M), **OTHER_ROWS),
        # ---- steps a zero gradient still changes ---------------------------------
        case("momentum_without_decay", momentum_by(1.0), **MOVES),
        case("momentum_negative", momentum_by(-0.5), **MOVES),
        case("momentum_with_spring", momentum_with_spring, **MOVES),
        case("tanh_decay", tanh_decay, **MOVES),
        case("decaying_unused_state", decaying_unused_state, **MOVES),
        case("momentum", momentum, **MOVES | {"catchup": "equal"}),
        case("rmsprop", rmsprop(), **MOVES | {"catchup": "equal"}),
        case("decayed_sign", lambda W, g, loss: {W: 0.99 * W - LR * pt.sign(g)}, **MOVES),
        case("exp_of_gradient", sgd(lambda g: 0.1 * pt.exp(g)), **MOVES),
        case("clip_away_from_zero", sgd(lambda g: pt.clip(g, 0.1, 0.3)), **MOVES),
        case("scale_half", scaled_table(0.5), **MOVES),
        case("full_like_factor_2", full_like_factor(2.0), **MOVES),
        Case(
            "fresh_loss_of_lookups",
            fresh_reads_lookups(again=False),
            vector_feeds(),
            **MOVES | {"catchup": "equal"},
            fresh="equal",
            untouched=never_looked_up(ROWS),
            vector_index=True,
        ),
        Case(
            "fresh_second_lookup",
            fresh_reads_lookups(again=True),
            vector_feeds(),
            **MOVES | {"catchup": "equal"},
            untouched=never_looked_up(ROWS),
            vector_index=True,
        ),
    ]


CASES: dict[str, Case] = {c.name: c for c in _cases()}
assert len(CASES) == len(_cases())
