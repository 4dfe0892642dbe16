"""``subsetgrad demo``: train a skip-gram model dense and rewritten, and compare.

Word2vec-style skip-gram with negative sampling on the bundled synthetic
corpus: a centre table and a context table, plain SGD updates
``W - lr * pytensor.grad(cost, W)`` on both. The same graph is compiled with the
base mode (dense updates) and with `subsetgrad.mode` (subset increments), both
runs start from the same tables and see the same batches, and the report gives
the per-step times and how far apart the final tables ended up.
"""

from __future__ import annotations

import lzma
import statistics
import time
from dataclasses import dataclass
from importlib.resources import files
from typing import Any

import numpy as np
import pytensor
import pytensor.tensor as pt
from pytensor.compile.mode import Mode, get_mode
from pytensor.tensor.sharedvar import TensorSharedVariable
from pytensor.tensor.variable import TensorVariable

import subsetgrad

CORPUS = "corpus.u16.xz"
DIM = 64
NEGATIVES = 5
WINDOW = 5
LEARNING_RATE = 0.025
WARMUP = 10
#: Steps averaged for the "loss at start" and "loss at end" figures.
LOSS_SPAN = 20
DTYPE = "float32"

Updates = dict[TensorSharedVariable, TensorVariable]


def load_corpus() -> np.ndarray:
    """The bundled corpus: word ids ``0 .. V-1`` as int32, most frequent first."""
    data = files("subsetgrad").joinpath("data", CORPUS).read_bytes()
    return np.frombuffer(lzma.decompress(data), dtype="<u2").astype(np.int32)


@dataclass(frozen=True)
class Batches:
    """Index arrays for every step: centre and context ``(S, B)``, negatives ``(S, B, K)``."""

    centre: np.ndarray
    context: np.ndarray
    negatives: np.ndarray

    def __len__(self) -> int:
        return len(self.centre)


def sample_batches(
    tokens: np.ndarray, vocab: int, steps: int, batch: int, rng: np.random.Generator
) -> Batches:
    """Skip-gram pairs within `WINDOW` of each other, negatives from unigram**0.75."""
    n = steps * batch
    pos = rng.integers(WINDOW, len(tokens) - WINDOW, size=n)
    offset = rng.integers(1, WINDOW + 1, size=n) * rng.choice([-1, 1], size=n)
    cdf = np.cumsum(np.bincount(tokens, minlength=vocab) ** 0.75)
    negatives = np.searchsorted(cdf / cdf[-1], rng.random((n, NEGATIVES)), side="right")
    return Batches(
        centre=tokens[pos].reshape(steps, batch),
        context=tokens[pos + offset].reshape(steps, batch),
        negatives=np.minimum(negatives, vocab - 1).astype(np.int32).reshape(steps, batch, -1),
    )


def build_step(
    centre_table: TensorSharedVariable, context_table: TensorSharedVariable, lr: float
) -> tuple[list[TensorVariable], TensorVariable, Updates]:
    """Inputs, mean loss per pair, and the SGD updates of one training step."""
    centre = pt.ivector("centre")
    context = pt.ivector("context")
    negatives = pt.imatrix("negatives")
    u = centre_table[centre]  # (B, D)
    v = context_table[context]  # (B, D)
    n = context_table[negatives]  # (B, K, D)
    positive = (u * v).sum(axis=-1)
    negative = (n * u[:, None, :]).sum(axis=-1)
    # -log sigmoid(x) == softplus(-x), and -log sigmoid(-x) == softplus(x).
    losses = pt.softplus(-positive) + pt.softplus(negative).sum(axis=-1)
    # Summed over the batch, as word2vec takes one SGD step of size lr per pair.
    cost = losses.sum()
    # A Python float would become a float64 constant and upcast the update.
    rate = np.asarray(lr, dtype=DTYPE)
    updates: Updates = {}
    for table in (centre_table, context_table):
        new = table - rate * pytensor.grad(cost, table)
        if new.type != table.type:
            raise TypeError(f"update of {table.name} is {new.type}, not {table.type}")
        updates[table] = new
    return [centre, context, negatives], losses.mean(), updates


@dataclass(frozen=True)
class Run:
    """One training run: final tables, loss and wall time of every step, compile time."""

    tables: tuple[np.ndarray, ...]
    losses: np.ndarray
    step_seconds: np.ndarray
    compile_seconds: float

    def ms_per_step(self, warmup: int) -> float:
        """Median step time after the first `warmup` steps, in milliseconds."""
        return 1000 * float(statistics.median(self.step_seconds[warmup:].tolist()))


def train(
    fn: Any, shared: list[TensorSharedVariable], init: list[np.ndarray], batches: Batches
) -> tuple[tuple[np.ndarray, ...], np.ndarray, np.ndarray]:
    """Reset `shared` to `init`, run `fn` on every batch; final tables, losses, step times."""
    for var, value in zip(shared, init, strict=True):
        var.set_value(value.copy(), borrow=True)
    losses = np.empty(len(batches))
    seconds = np.empty(len(batches))
    for i in range(len(batches)):
        args = batches.centre[i], batches.context[i], batches.negatives[i]
        start = time.perf_counter()
        losses[i] = fn(*args)
        seconds[i] = time.perf_counter() - start
    return tuple(var.get_value() for var in shared), losses, seconds


@dataclass(frozen=True)
class DemoResult:
    """Everything the report shows."""

    tokens: int
    vocab: int
    batch: int
    steps: int
    warmup: int
    mode: str
    dense: Run
    rewritten: Run
    #: Table updates the rewrite turned into increments (dense compile, rewritten compile).
    fired: tuple[int, int]
    scatters: int

    @property
    def speedup(self) -> float:
        return self.dense.ms_per_step(self.warmup) / self.rewritten.ms_per_step(self.warmup)

    @property
    def max_diff(self) -> tuple[float, ...]:
        """Largest absolute difference between the final tables, per table."""
        return tuple(
            float(np.max(np.abs(d.astype(np.float64) - r)))
            for d, r in zip(self.dense.tables, self.rewritten.tables, strict=True)
        )


def _compile(
    inputs: list[TensorVariable], loss: TensorVariable, updates: Updates, mode: Mode
) -> tuple[Any, float, int, int]:
    """Compile one step; the function, seconds, and how often the rewrite fired."""
    before = subsetgrad.counters.copy()
    start = time.perf_counter()
    fn = pytensor.function(inputs, loss, updates=list(updates.items()), mode=mode)
    seconds = time.perf_counter() - start
    fired = subsetgrad.counters["subset_update"] - before["subset_update"]
    scatters = subsetgrad.counters["scatter"] - before["scatter"]
    return fn, seconds, fired, scatters


def run_demo(steps: int = 300, batch: int = 256, mode: str = "NUMBA", seed: int = 0) -> DemoResult:
    """Train dense and rewritten for `steps` steps of `batch` pairs and time both."""
    if steps < 1 or batch < 1:
        raise ValueError("steps and batch must be at least 1")
    try:
        base = get_mode(mode)
    except ValueError:
        raise ValueError(f"unknown PyTensor mode {mode!r}") from None
    tokens = load_corpus()
    vocab = int(tokens.max()) + 1
    init_rng, batch_rng = np.random.default_rng(seed).spawn(2)
    # word2vec's initialisation: small uniform centre vectors, zero context vectors.
    init = [
        ((init_rng.random((vocab, DIM)) - 0.5) / DIM).astype(DTYPE),
        np.zeros((vocab, DIM), dtype=DTYPE),
    ]
    batches = sample_batches(tokens, vocab, steps, batch, batch_rng)
    shared = [
        pytensor.shared(init[0].copy(), name="centre_table"),
        pytensor.shared(init[1].copy(), name="context_table"),
    ]
    inputs, loss, updates = build_step(shared[0], shared[1], LEARNING_RATE)

    dense_fn, dense_compile, dense_fired, _ = _compile(inputs, loss, updates, base)
    sub_fn, sub_compile, sub_fired, scatters = _compile(
        inputs, loss, updates, subsetgrad.mode(base)
    )
    # One run after the other rather than interleaved steps: a dense step between
    # two subset steps would evict the rows they share from the cache.
    dense = Run(*train(dense_fn, shared, init, batches), compile_seconds=dense_compile)
    rewritten = Run(*train(sub_fn, shared, init, batches), compile_seconds=sub_compile)
    return DemoResult(
        tokens=len(tokens),
        vocab=vocab,
        batch=batch,
        steps=steps,
        warmup=min(WARMUP, steps - 1),
        mode=mode.upper(),
        dense=dense,
        rewritten=rewritten,
        fired=(dense_fired, sub_fired),
        scatters=scatters,
    )


def format_report(r: DemoResult) -> str:
    """The demo's printed report."""
    dense_ms = r.dense.ms_per_step(r.warmup)
    sub_ms = r.rewritten.ms_per_step(r.warmup)
    span = min(LOSS_SPAN, r.steps)
    start, end = r.rewritten.losses[:span].mean(), r.rewritten.losses[-span:].mean()
    loss_gap = float(np.max(np.abs(r.dense.losses - r.rewritten.losses)))
    diff_centre, diff_context = r.max_diff
    largest = max(float(np.max(np.abs(t))) for t in r.dense.tables)
    if r.fired[1]:
        fired = f"fired: {r.fired[1]} table updates ({r.scatters} scatters) became increments"
    else:
        fired = "did NOT fire: the rewritten run made dense updates too"
    if r.fired[0]:
        fired += f"; it also fired {r.fired[0]} times in the dense compile"
    compiled = (
        f"compile {r.dense.compile_seconds:.1f} s dense, "
        f"{r.rewritten.compile_seconds:.1f} s rewritten"
    )
    rows = [
        ("corpus", f"{r.tokens:,} tokens, V = {r.vocab:,} words (bundled, synthetic Zipf)"),
        ("model", f"skip-gram, {NEGATIVES} negatives, window {WINDOW}, D = {DIM}, {DTYPE}"),
        ("training", f"B = {r.batch} pairs/step, {r.steps} steps, SGD lr {LEARNING_RATE}"),
        ("mode", f"{r.mode} ({compiled})"),
        ("dense", f"{dense_ms:8.3f} ms/step"),
        (
            "rewritten",
            f"{sub_ms:8.3f} ms/step   (medians over steps {r.warmup + 1}-{r.steps}, after warm-up)",
        ),
        ("speed-up", f"{dense_ms / sub_ms:.1f}x"),
        (
            "max |diff|",
            f"{max(r.max_diff):.1e} between the final tables (centre {diff_centre:.1e}, "
            f"context {diff_context:.1e}; largest entry {largest:.2f})",
        ),
        (
            "loss",
            f"{start:.4f} -> {end:.4f} (mean of first/last {span} steps; "
            f"the runs differ by at most {loss_gap:.1e})",
        ),
        ("rewrite", fired),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
