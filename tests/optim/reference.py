"""Plain NumPy references for PyMC's optimizers on lookup tables: dense, lazy and catch-up.

The optimizers are those of ``pymc.variational.updates``: ``sgd``, ``momentum``,
``nesterov_momentum``, ``adagrad``, ``rmsprop``, ``adadelta``, ``adam`` and ``adamax``, with
PyMC's defaults (`DEFAULTS`), zero-initialised state, and the order of operations of PyMC's
source. PyTensor's rewrites reassociate a few of those sums when compiling (the momentum
velocity ``(mu*v + (p - lr*g)) - p`` becomes ``mu*v - lr*g``; adagrad's
``(accu + g**2) + eps`` becomes ``eps + accu + g**2``), so `dense_step` equals PyMC's compiled
updates to rounding, and bit for bit where nothing was reassociated.

Dtypes. All arithmetic is in the table's dtype, every hyperparameter rounded to it first: that
is what PyMC computes when ``floatX`` is the table's dtype, as a Python float constant takes
the type ``floatX``. With the default ``floatX=float64`` a float32 table does not compile at
all (the update is float64) unless every constant is exact in float32. Adam's and Adamax's
step counter ``t`` is a ``floatX`` scalar, so under ``floatX=float32`` it stops advancing at
2**24 steps.

State. ``momentum`` and ``nesterov_momentum`` keep ``velocity`` (PyMC's source stores it as
the realised change ``new_p - p``); ``adagrad`` and ``rmsprop`` keep ``accu``; ``adadelta``
keeps ``accu`` and ``delta_accu``; ``adam`` keeps ``m`` and ``v``; ``adamax`` keeps ``m`` and
``u``. The dense state also has PyMC's counter ``t``; the sparse policies take the global step
as an argument instead, and ``catchup`` keeps ``last``, the step each row is up to date with.

Policies, for a table whose gradient is nonzero only at looked-up rows, applied by
`sparse_step`. The rows may repeat: their gradient rows are always summed first (``np.unique``
and ``np.add.at``), as the updates are not linear in the gradient.

- ``exact``: update the touched rows only. Allowed only where a zero gradient changes neither
  parameter nor state (`IDENTITY_AT_ZERO`: sgd, adagrad), so that it equals the dense run.
- ``lazy``: update the touched rows only, whatever the optimizer (LazyAdam/SparseAdam
  semantics; Adam's bias correction uses the global step).
- ``catchup``: before a row is updated, and for every row at `flush`, apply in closed form the
  ``k`` zero-gradient steps it skipped since ``last``. Momentum's velocity becomes
  ``mu**k * v`` and the parameter drifts by ``v * sum_{j=1..k} mu**j`` (Nesterov: ``mu`` times
  that); rmsprop's and adadelta's accumulators decay by ``rho**k``; sgd and adagrad do not
  change. After a flush the tables equal the dense run's to floating-point tolerance.

Adam and Adamax catch-up. Over skipped steps ``t0+1 .. t0+k`` the moments decay exactly
(``m*b1**k``, ``v*b2**k``, ``u*b2**k``), and the parameter drifts by

    sum_{j=1..k} a_{t0+j} * b1**j * m / (q**j * s + eps)
      = m * sum_j w_j / (D + eps * delta_j),

where ``a_t`` is the bias-corrected rate, ``w_j = a_{t0+j} * r**j``, ``D = s + eps``,
``delta_j = q**-j - 1``, and ``s = sqrt(v)``, ``q = sqrt(b2)``, ``r = b1/q`` (Adam) or
``s = u``, ``q = b2``, ``r = b1/b2`` (Adamax). The bias correction only makes the weights
depend on the row's ``t0``: ``S_n = sum_j w_j * delta_j**n`` are per-row scalars, summed
exactly here (cut where the weights fall below 2**-60, about 400 terms at the default betas;
they depend on ``(t0, k)`` alone, so an implementation can tabulate them). The per-step
``eps`` is what has no closed form. Options:

- drop ``eps``: ``m/s * S_0``, unbounded relative error as ``s -> 0``;
- replay the ``k`` steps: exact, but costs per element and per skipped step, which is what
  catch-up is there to avoid;
- expand ``1/(D + x)`` in ``x = eps * delta_j``, to order ``N``:
  ``drift = m/D * sum_{n=0..N} (-eps/D)**n * S_n``. Since ``1/(D+x)`` minus its order-N
  expansion is ``(-x)**(N+1) / (D**(N+1) * (D+x))``, the error of one gap is at most
  ``|m|/D * (eps/D)**(N+1) * S_{N+1}`` (`catch_up` returns it; `sparse_step` and `flush` add
  it up in ``state["drift_bound"]``). Each order costs one more per-row sum and one
  multiply-add per element.

Chosen: the expansion, at order `CATCHUP_ORDER` = 3. With ``|m|/s`` at most
``(1-b1)/sqrt((1-b2)(1-b1**2/b2))`` (7.27, Adam) or ``(1-b1)/(1-b1/b2)`` (1.01, Adamax) and
``|m|/D * (eps/D)**(N+1) <= |m|/s * max_f (1-f) f**(N+1)``, the largest error of one gap, in
learning rates, at the default betas and eps (`worst_drift_bound`), and the largest measured
(float64; 400 random gaps of 1 to 1000 steps after 1 to 1000 steps of random, constant-sign
or geometrically growing gradients at scales 1e-10 to 1) are:

    order N          0        1        2        3        4
    Adam bound     8.3e-2   4.7e-4   4.9e-6   7.4e-8   1.5e-9
    Adam seen      6.6e-2   3.8e-4   3.9e-6   5.8e-8   1.2e-9
    Adamax bound   3.7e-2   3.2e-4   6.2e-6   1.8e-7   7.4e-9
    Adamax seen    2.3e-2   2.6e-4   5.4e-6   1.7e-7   6.7e-9

The worst case needs ``s`` near ``eps/4`` (gradients of about 1e-9 to 1e-7); the bound falls
as ``(eps/s)**4`` above that. At order 3 and lr = 1e-3 it is below float32 rounding of any
parameter larger than 3e-3, and with gradients of 1e-3 to 1 the measured error is float64
rounding (at most 7.5e-15 after gaps of up to 1000 steps).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

Array = NDArray[np.floating]
# Optimizer state: float arrays like the table, and integer step counters.
State = dict[str, NDArray[Any]]

OPTIMIZERS = (
    "sgd",
    "momentum",
    "nesterov_momentum",
    "adagrad",
    "rmsprop",
    "adadelta",
    "adam",
    "adamax",
)
POLICIES = ("exact", "lazy", "catchup")
IDENTITY_AT_ZERO = frozenset({"sgd", "adagrad"})
ADAPTIVE_MOMENT = frozenset({"adam", "adamax"})

DEFAULTS: dict[str, dict[str, float]] = {
    "sgd": {"learning_rate": 1e-3},
    "momentum": {"learning_rate": 1e-3, "momentum": 0.9},
    "nesterov_momentum": {"learning_rate": 1e-3, "momentum": 0.9},
    "adagrad": {"learning_rate": 1.0, "epsilon": 1e-6},
    "rmsprop": {"learning_rate": 1.0, "rho": 0.9, "epsilon": 1e-6},
    "adadelta": {"learning_rate": 1.0, "rho": 0.95, "epsilon": 1e-6},
    "adam": {"learning_rate": 1e-3, "beta1": 0.9, "beta2": 0.999, "epsilon": 1e-8},
    "adamax": {"learning_rate": 2e-3, "beta1": 0.9, "beta2": 0.999, "epsilon": 1e-8},
}

STATE_KEYS: dict[str, tuple[str, ...]] = {
    "sgd": (),
    "momentum": ("velocity",),
    "nesterov_momentum": ("velocity",),
    "adagrad": ("accu",),
    "rmsprop": ("accu",),
    "adadelta": ("accu", "delta_accu"),
    "adam": ("m", "v"),
    "adamax": ("m", "u"),
}

# The order of the expansion in ``eps`` that Adam's and Adamax's catch-up uses.
CATCHUP_ORDER = 3

# Weights below this fraction of the first are left out of the catch-up sums.
_CUTOFF = 2.0**-60


def hyperparameters(name: str, **overrides: float) -> dict[str, float]:
    """PyMC's defaults for `name`, with `overrides` applied."""
    unknown = set(overrides) - set(DEFAULTS[name])
    if unknown:
        raise TypeError(f"{name} has no hyperparameters {sorted(unknown)}")
    return {**DEFAULTS[name], **overrides}


def init_state(name: str, table: Array, policy: str = "dense") -> State:
    """Zero state for `name` on `table`, for the dense run or one of `POLICIES`."""
    if policy != "dense":
        _check_policy(name, policy)
    state = {key: np.zeros_like(table) for key in STATE_KEYS[name]}
    if policy == "dense" and name in ADAPTIVE_MOMENT:
        state["t"] = np.zeros((), dtype=table.dtype)
    if policy == "catchup":
        state["last"] = np.zeros(table.shape[0], dtype=np.int64)
        if name in ADAPTIVE_MOMENT:
            state["drift_bound"] = np.zeros(table.shape, dtype=np.float64)
    return state


def rate(
    name: str, t: NDArray[Any] | float, hyper: Mapping[str, float], dtype: np.dtype[Any]
) -> Array:
    """Adam's or Adamax's bias-corrected step size ``a_t``, computed as PyMC does in `dtype`."""
    c = np.dtype(dtype).type
    t = np.asarray(t, dtype=dtype)
    lr, b1, one = c(hyper["learning_rate"]), c(hyper["beta1"]), c(1)
    if name == "adam":
        return lr * np.sqrt(one - c(hyper["beta2"]) ** t) / (one - b1**t)
    if name == "adamax":
        return lr / (one - b1**t)
    raise ValueError(f"{name} has no bias-corrected rate")


def _advance(
    name: str, p: Array, st: Mapping[str, Array], g: Array, t: float, hyper: Mapping[str, float]
) -> tuple[Array, State]:
    """One step of `name` with gradient `g` at step `t`: the new parameter and state."""
    c = p.dtype.type
    one = c(1)
    lr = c(hyper["learning_rate"])
    if name == "sgd":
        return p - lr * g, {}
    if name in ("momentum", "nesterov_momentum"):
        mu, v = c(hyper["momentum"]), st["velocity"]
        sgd_p = p - lr * g
        if name == "momentum":
            x = mu * v + sgd_p
            return x, {"velocity": x - p}
        x = mu * v + sgd_p - p
        return mu * x + sgd_p, {"velocity": x}
    eps = c(hyper["epsilon"])
    if name == "adagrad":
        accu = st["accu"] + g**2
        return p - (lr * g / np.sqrt(accu + eps)), {"accu": accu}
    if name == "rmsprop":
        rho = c(hyper["rho"])
        accu = rho * st["accu"] + (one - rho) * g**2
        return p - (lr * g / np.sqrt(accu + eps)), {"accu": accu}
    if name == "adadelta":
        rho, delta = c(hyper["rho"]), st["delta_accu"]
        accu = rho * st["accu"] + (one - rho) * g**2
        update = g * np.sqrt(delta + eps) / np.sqrt(accu + eps)
        delta = rho * delta + (one - rho) * update**2
        return p - lr * update, {"accu": accu, "delta_accu": delta}
    b1, b2 = c(hyper["beta1"]), c(hyper["beta2"])
    a_t = rate(name, t, hyper, p.dtype)
    m = b1 * st["m"] + (one - b1) * g
    if name == "adam":
        v = b2 * st["v"] + (one - b2) * g**2
        return p - a_t * m / (np.sqrt(v) + eps), {"m": m, "v": v}
    if name == "adamax":
        u = np.maximum(b2 * st["u"], abs(g))
        return p - a_t * m / (u + eps), {"m": m, "u": u}
    raise ValueError(f"unknown optimizer {name!r}")


def dense_step(
    name: str, table: Array, state: State, grad: Array, hyper: Mapping[str, float]
) -> None:
    """One dense step of PyMC's `name` on `table` and `state`, in place."""
    t = 0.0
    if name in ADAPTIVE_MOMENT:
        state["t"] = state["t"] + table.dtype.type(1)
        t = float(state["t"])
    p, st = _advance(name, table, state, grad.astype(table.dtype, copy=False), t, hyper)
    table[...] = p
    for key, value in st.items():
        state[key][...] = value


def dedupe(rows: NDArray[np.integer], row_grads: Array) -> tuple[NDArray[np.intp], Array]:
    """The distinct rows, sorted, and the sum of each one's gradient rows."""
    unique, inverse = np.unique(np.asarray(rows), return_inverse=True)
    summed = np.zeros((unique.size, *row_grads.shape[1:]), dtype=row_grads.dtype)
    np.add.at(summed, inverse.ravel(), row_grads)
    return unique, summed


def sparse_step(
    name: str,
    policy: str,
    table: Array,
    state: State,
    rows: NDArray[np.integer],
    row_grads: Array,
    step: int,
    hyper: Mapping[str, float],
) -> None:
    """Step `step` (counted from 1) under `policy`, the gradient being `row_grads` at `rows`."""
    _check_policy(name, policy)
    rows, grads = dedupe(rows, np.asarray(row_grads, dtype=table.dtype))
    if policy == "catchup":
        last = state["last"][rows]
        if np.any(last >= step):
            raise ValueError(f"step {step} is not after every touched row's last step")
        _catch_up_rows(name, table, state, rows, step - 1, hyper)
    p, st = _advance(
        name, table[rows], {k: state[k][rows] for k in STATE_KEYS[name]}, grads, step, hyper
    )
    table[rows] = p
    for key, value in st.items():
        state[key][rows] = value
    if policy == "catchup":
        state["last"][rows] = step


def flush(name: str, table: Array, state: State, step: int, hyper: Mapping[str, float]) -> None:
    """Bring every row of a catch-up `table` and `state` up to date with step `step`."""
    if "last" not in state:
        raise ValueError("flush needs a catch-up state")
    if np.any(state["last"] > step):
        raise ValueError(f"some rows are already past step {step}")
    rows = np.flatnonzero(state["last"] < step)
    _catch_up_rows(name, table, state, rows, step, hyper)


def _catch_up_rows(
    name: str,
    table: Array,
    state: State,
    rows: NDArray[np.intp],
    until: int,
    hyper: Mapping[str, float],
) -> None:
    """Apply to `rows` the zero-gradient steps from their ``last`` up to step `until`."""
    t0 = state["last"][rows]
    st = {k: state[k][rows] for k in STATE_KEYS[name]}
    p, st, bound = catch_up(name, table[rows], st, t0, until - t0, hyper)
    table[rows] = p
    for key, value in st.items():
        state[key][rows] = value
    if bound is not None:
        state["drift_bound"][rows] += bound
    state["last"][rows] = until


def catch_up(
    name: str,
    p: Array,
    st: Mapping[str, Array],
    t0: NDArray[np.integer],
    k: NDArray[np.integer],
    hyper: Mapping[str, float],
    order: int = CATCHUP_ORDER,
) -> tuple[Array, State, NDArray[np.float64] | None]:
    """Rows `p` and state `st` after zero-gradient steps ``t0+1 .. t0+k`` (per row).

    Returns the new rows, the new state and, for Adam and Adamax, a bound on each element's
    error (`order` is that of the ``eps`` expansion; see the module docstring).
    """
    dtype = p.dtype
    c = dtype.type
    k = np.asarray(k, dtype=np.int64)
    col = (slice(None),) + (None,) * (p.ndim - 1)

    def decay(x: float) -> Array:
        # Powers in float64 of the hyperparameter as rounded to the table's dtype.
        return np.power(float(c(x)), k).astype(dtype)[col]

    if name in IDENTITY_AT_ZERO:
        return p.copy(), {key: v.copy() for key, v in st.items()}, None
    if name in ("momentum", "nesterov_momentum"):
        mu = float(c(hyper["momentum"]))
        drift = mu * (1 - mu**k) / (1 - mu) if mu != 1 else k.astype(np.float64)
        if name == "nesterov_momentum":
            drift = mu * drift
        v = st["velocity"]
        return p + v * drift.astype(dtype)[col], {"velocity": v * decay(mu)}, None
    if name == "rmsprop":
        return p.copy(), {"accu": st["accu"] * decay(hyper["rho"])}, None
    if name == "adadelta":
        rho = decay(hyper["rho"])
        return p.copy(), {"accu": st["accu"] * rho, "delta_accu": st["delta_accu"] * rho}, None
    if name not in ADAPTIVE_MOMENT:
        raise ValueError(f"unknown optimizer {name!r}")
    b1, b2, eps = (float(c(hyper[key])) for key in ("beta1", "beta2", "epsilon"))
    second = "v" if name == "adam" else "u"
    m0, x0 = st["m"], st[second]
    s = np.sqrt(x0.astype(np.float64)) if name == "adam" else x0.astype(np.float64)
    sums = [x[col] for x in drift_sums(name, t0, k, hyper, dtype, order + 1)]
    den = s + eps
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.where(den > 0, m0 / den, 0.0)
        frac = np.where(den > 0, eps / den, 0.0)
    series = sums[order]
    for n in reversed(range(order)):
        series = sums[n] - frac * series
    bound = np.abs(scale) * frac ** (order + 1) * sums[order + 1]
    new = {"m": m0 * decay(b1), second: x0 * decay(b2)}
    return p - (scale * series).astype(dtype), new, bound


def drift_sums(
    name: str,
    t0: NDArray[np.integer],
    k: NDArray[np.integer],
    hyper: Mapping[str, float],
    dtype: np.dtype[Any],
    top: int,
) -> list[NDArray[np.float64]]:
    """Per row, ``S_n = sum_{j=1..k} w_j * delta_j**n`` for n = 0 .. `top`."""
    c = np.dtype(dtype).type
    b1, b2 = float(c(hyper["beta1"])), float(c(hyper["beta2"]))
    q = math.sqrt(b2) if name == "adam" else b2
    r = b1 / q
    t0, k = np.asarray(t0, dtype=np.int64), np.asarray(k, dtype=np.int64)
    span = int(k.max(initial=0))
    slowest = r / q**top
    if slowest < 1:
        span = min(span, math.ceil(math.log(_CUTOFF) / math.log(slowest)))
    j = np.arange(1, span + 1)
    a = rate(name, t0[:, None] + j, hyper, dtype).astype(np.float64)
    w = np.where(j <= k[:, None], a * r**j, 0.0)
    delta = np.expm1(-j * math.log(q))
    return [(w * delta**n).sum(axis=1) for n in range(top + 1)]


def worst_drift_bound(name: str, hyper: Mapping[str, float], order: int = CATCHUP_ORDER) -> float:
    """The largest error bound of one Adam or Adamax catch-up, in learning rates.

    The maximum over gaps, start steps and states: ``|m|/s`` is at most `moment_ratio`, and
    ``|m|/D * (eps/D)**(order+1)`` at most that times ``max_f (1-f) * f**(order+1)``.
    """
    starts = np.concatenate([np.arange(200), np.geomspace(200, 1e7, 40).astype(np.int64)])
    gaps = np.full(starts.size, 2**40)
    sums = drift_sums(name, starts, gaps, hyper, np.dtype(np.float64), order + 1)
    f = (order + 1) / (order + 2)
    peak = (1 - f) * f ** (order + 1)
    return moment_ratio(name, hyper) * peak * float(sums[-1].max()) / hyper["learning_rate"]


def moment_ratio(name: str, hyper: Mapping[str, float]) -> float:
    """The largest ``|m|/sqrt(v)`` (Adam) or ``|m|/u`` (Adamax) any gradients can produce."""
    b1, b2 = hyper["beta1"], hyper["beta2"]
    if name == "adam":
        return (1 - b1) / math.sqrt((1 - b2) * (1 - b1**2 / b2))
    return (1 - b1) / (1 - b1 / b2)


def _check_policy(name: str, policy: str) -> None:
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}")
    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r}")
    if policy == "exact" and name not in IDENTITY_AT_ZERO:
        raise ValueError(f"{name} changes rows with a zero gradient: 'exact' does not apply")
