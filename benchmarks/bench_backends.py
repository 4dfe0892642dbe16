"""Dense vs rewritten vs hand-written subset SGD step on each PyTensor backend.

For each backend (one process each) and table size V, three steps update their
own copy of the same D-wide float32 table from a batch of B looked-up rows:

- dense: ``W - lr * grad(cost, W)`` compiled with PyTensor's own mode for the backend;
- rewritten: the same expression with ``subsetgrad.mode(backend)`` (the rewrite, and
  the backend's in-place linker or C code);
- hand-written: the backend's own sparse step. NUMBA and CVM: PyTensor's
  ``inc_subtensor(W[idx], -lr * grad(cost, W[idx]))`` in PyTensor's mode; JAX:
  a jitted ``W.at[idx].add(-lr * g)`` with the table donated; PYTORCH: eager
  ``W.index_add_(0, idx, -lr * g)`` under ``torch.no_grad``.

Medians come from rounds in which the three steps run in a fresh random order.
Prints a table, PASS/FAIL per target, then JSON lines (measurements, targets, the
machine, versions and the device). Not a test: it exits 0 unless something crashes.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

NAME = "backends"
D = 64
B = 1024
LR = 0.01
VARIANTS = ("dense", "rewritten", "hand-written")
BACKENDS = ("NUMBA", "CVM", "JAX", "PYTORCH")
DEFAULT_SIZES = (10_000, 100_000, 1_000_000)
DEFAULT_REPEATS = 60
# A size stops taking rounds after this many seconds (at least MIN_REPEATS rounds):
# PyTorch's dense step at V=1e6 takes seconds.
BUDGET_S = 90.0
MIN_REPEATS = 7
WARMUP = 3
MAX_BATCHES = 64
SEED = 2024

# Targets of the issue.
SPEEDUP_V = 1_000_000
MIN_SPEEDUP = {"NUMBA": 100.0, "CVM": 100.0, "JAX": 100.0, "PYTORCH": 30.0}
MAX_REWRITTEN_OVER_HAND = 1.5

Batch = tuple[np.ndarray, np.ndarray, np.ndarray]


@dataclass(frozen=True)
class Measurement:
    """Step times of one variant at one backend and table size, in milliseconds."""

    backend: str
    V: int
    variant: str
    median_ms: float
    p25_ms: float
    p75_ms: float
    min_ms: float
    repeats: int


@dataclass(frozen=True)
class Target:
    """One pass/fail criterion and the figure it was judged on."""

    name: str
    backend: str
    value: float | None
    relation: str
    limit: float
    hand_written: float | None = None  # the same figure for the hand-written step

    @property
    def passed(self) -> bool | None:
        if self.value is None:
            return None
        return self.value <= self.limit if self.relation == "<=" else self.value >= self.limit

    @property
    def verdict(self) -> str:
        return {True: "PASS", False: "FAIL", None: "SKIP"}[self.passed]


class Step:
    """A compiled step on its own table: call it with a batch; `table()` reads the table."""

    def __init__(self, call: Callable[..., Any], table: Callable[[], np.ndarray]) -> None:
        self.call = call
        self.table = table


def synced(call: Callable[..., Any], result: Callable[[], Any]) -> Callable[..., None]:
    """`call`, then wait for `result()`: JAX dispatches asynchronously."""

    def run(*batch: np.ndarray) -> None:
        call(*batch)
        result().block_until_ready()

    return run


# --------------------------------------------------------------------------- #
# The steps
# --------------------------------------------------------------------------- #
def pytensor_step(variant: str, backend: str, table: np.ndarray) -> Step:
    import pytensor
    import pytensor.tensor as pt
    from pytensor.compile.mode import get_mode

    import subsetgrad

    W = pytensor.shared(table, name="W")
    idx = pt.lvector("idx")
    target = pt.matrix("target", dtype="float32")
    y = pt.vector("y", dtype="float32")
    lr = pt.constant(np.float32(LR), name="lr")
    W_idx = W[idx]
    cost = (((W_idx * target).sum(axis=1) - y) ** 2).sum()
    if variant == "hand-written":
        new_W = pt.inc_subtensor(W_idx, -lr * pytensor.grad(cost, W_idx))
    else:
        new_W = W - lr * pytensor.grad(cost, W)
    mode = subsetgrad.mode(backend) if variant == "rewritten" else get_mode(backend)
    before = subsetgrad.counters["subset_update"]
    f = pytensor.function([idx, target, y], [], updates={W: new_W}, mode=mode, trust_input=True)
    fired = subsetgrad.counters["subset_update"] - before
    if fired != int(variant == "rewritten"):
        raise RuntimeError(f"{variant} step on {backend}: the rewrite fired {fired} times")
    call = f
    if backend == "JAX":
        call = synced(f, lambda: W.get_value(borrow=True))
    return Step(call, lambda: np.asarray(W.get_value()))


def jax_hand_step(table: np.ndarray) -> Step:
    import jax
    import jax.numpy as jnp

    def cost(rows: Any, target: Any, y: Any) -> Any:
        return jnp.sum((jnp.sum(rows * target, axis=1) - y) ** 2)

    def step(W: Any, idx: Any, target: Any, y: Any) -> Any:
        g = jax.grad(cost)(W[idx], target, y)
        return W.at[idx].add(-np.float32(LR) * g)

    jit_step = jax.jit(step, donate_argnums=0)
    state = {"W": jnp.asarray(table)}

    def call(idx: np.ndarray, target: np.ndarray, y: np.ndarray) -> None:
        state["W"] = jit_step(state["W"], idx, target, y)

    return Step(synced(call, lambda: state["W"]), lambda: np.asarray(state["W"]))


def torch_hand_step(table: np.ndarray) -> Step:
    import torch

    W = torch.tensor(table)
    lr = np.float32(LR)

    def call(idx: np.ndarray, target: np.ndarray, y: np.ndarray) -> None:
        i = torch.as_tensor(idx)
        t = torch.as_tensor(target)
        with torch.no_grad():
            rows = W[i]
            residual = (rows * t).sum(dim=1) - torch.as_tensor(y)
            W.index_add_(0, i, (-lr * 2) * residual[:, None] * t)

    return Step(call, lambda: W.numpy().copy())


def build(variant: str, backend: str, table: np.ndarray) -> Step:
    if variant == "hand-written" and backend == "JAX":
        return jax_hand_step(table)
    if variant == "hand-written" and backend == "PYTORCH":
        return torch_hand_step(table)
    return pytensor_step(variant, backend, table)


def make_batches(V: int, count: int, rng: np.random.Generator) -> list[Batch]:
    """`count` batches of (idx, target, y), a quarter of each batch repeats of its rows."""
    batches = []
    for _ in range(count):
        idx = rng.integers(0, V, size=B)
        dup = rng.random(B) < 0.25
        idx[dup] = rng.choice(idx[~dup], size=int(dup.sum()))
        target = (rng.standard_normal((B, D)) / np.sqrt(D)).astype(np.float32)
        y = rng.standard_normal(B).astype(np.float32)
        batches.append((idx.astype(np.int64), target, y))
    return batches


def measure(backend: str, V: int, repeats: int, log: Callable[[str], None]) -> list[Measurement]:
    """Compile, check and time the three steps at one backend and size."""
    rng = np.random.default_rng([SEED, V])
    table = (rng.standard_normal((V, D)) * 0.1).astype(np.float32)
    batches = make_batches(V, min(repeats, MAX_BATCHES), rng)
    log(f"{backend} V={V:.0e}: compiling")
    steps = {variant: build(variant, backend, table) for variant in VARIANTS}
    del table
    for s in steps.values():
        s.call(*batches[0])
    reference = steps["dense"].table()
    for variant in VARIANTS[1:]:
        got = steps[variant].table()
        if not np.allclose(got, reference, rtol=1e-5, atol=1e-6):
            err = float(np.max(np.abs(got - reference)))
            raise RuntimeError(f"{backend} {variant} step differs from dense (max |diff| {err:g})")
    del reference, got
    for i in range(WARMUP):
        for s in steps.values():
            s.call(*batches[(i + 1) % len(batches)])
    log(f"{backend} V={V:.0e}: timing up to {repeats} rounds")
    times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    started = time.perf_counter()
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for r in range(repeats):
            batch = batches[r % len(batches)]
            for k in rng.permutation(len(VARIANTS)):
                variant = VARIANTS[k]
                start = time.perf_counter()
                steps[variant].call(*batch)
                times[variant].append(time.perf_counter() - start)
            if r + 1 >= MIN_REPEATS and time.perf_counter() - started > BUDGET_S:
                break
    finally:
        if gc_was_enabled:
            gc.enable()
    result = []
    for variant, seconds in times.items():
        ms = np.array(seconds) * 1e3
        p25, median, p75 = np.percentile(ms, [25, 50, 75])
        result.append(
            Measurement(
                backend, V, variant, float(median), float(p25), float(p75), float(ms.min()), len(ms)
            )
        )
    del steps
    gc.collect()
    return result


def device(backend: str) -> str:
    """Where the backend's steps ran."""
    if backend == "JAX":
        import jax

        return str(jax.devices()[0])
    if backend == "PYTORCH":
        return "cpu (PyTensor's PyTorch linker takes and returns NumPy arrays)"
    return "cpu"


def versions(backend: str) -> dict[str, str | None]:
    from importlib import metadata

    dists = {"JAX": ("jax", "jaxlib"), "PYTORCH": ("torch",)}.get(backend, ())
    out: dict[str, str | None] = {}
    for d in dists:
        try:
            out[d] = metadata.version(d)
        except metadata.PackageNotFoundError:
            out[d] = None
    return out


def run_backend(backend: str, sizes: Sequence[int], repeats: int) -> list[dict[str, Any]]:
    """Measure one backend in this process; return its JSON records."""
    warnings.filterwarnings("ignore", "PyTensor could not link to a BLAS installation")
    warnings.filterwarnings("ignore", "Skipping CheckAndRaise")
    threads = "default"
    if backend == "PYTORCH":
        import torch

        # Two cores shared with other work: torch's thread pool spins and stalls
        # under contention (medians of 30 ms instead of 0.4 ms were seen with 2).
        torch.set_num_threads(1)
        threads = "torch.set_num_threads(1)"

    def log(message: str) -> None:
        print(f"[{NAME}] {message}", file=sys.stderr, flush=True)

    records: list[dict[str, Any]] = []
    for V in sizes:
        for m in measure(backend, V, repeats, log):
            records.append({"kind": "measurement", **asdict(m), "D": D, "B": B, "dtype": "float32"})
    records.append(
        {
            "kind": "backend",
            "backend": backend,
            "device": device(backend),
            "threads": threads,
            "versions": versions(backend),
        }
    )
    return records


# --------------------------------------------------------------------------- #
# Targets and report
# --------------------------------------------------------------------------- #
def judge(results: Sequence[Measurement], sizes: Sequence[int]) -> list[Target]:
    median = {(m.backend, m.V, m.variant): m.median_ms for m in results}
    backends = list(dict.fromkeys(m.backend for m in results))
    targets = []
    for b in backends:

        def ratio(V: int, top: str, bottom: str, b: str = b) -> float | None:
            if (b, V, top) not in median or (b, V, bottom) not in median:
                return None
            return median[b, V, top] / median[b, V, bottom]

        targets.append(
            Target(
                f"dense/rewritten at V={SPEEDUP_V:.0e}",
                b,
                ratio(SPEEDUP_V, "dense", "rewritten"),
                ">=",
                MIN_SPEEDUP.get(b, 100.0),
                ratio(SPEEDUP_V, "dense", "hand-written"),
            )
        )
        targets += [
            Target(
                f"rewritten/hand-written at V={V:.0e}",
                b,
                ratio(V, "rewritten", "hand-written"),
                "<=",
                MAX_REWRITTEN_OVER_HAND,
            )
            for V in sizes
        ]
    return targets


def format_table(results: Sequence[Measurement]) -> str:
    median = {(m.backend, m.V, m.variant): m.median_ms for m in results}
    rows = dict.fromkeys((m.backend, m.V) for m in results)
    header = (
        f"{'backend':<8} {'V':>9} {'dense ms':>10} {'rewritten ms':>13} {'hand ms':>9}"
        f" {'dense/rewr':>11} {'rewr/hand':>10} {'rounds':>7}"
    )
    lines = [f"float32 table, D={D}, B={B}; median step time", header, "-" * len(header)]
    counts = {(m.backend, m.V): m.repeats for m in results}
    for b, V in rows:
        dense, rewr, hand = (median[b, V, v] for v in VARIANTS)
        lines.append(
            f"{b:<8} {V:>9,d} {dense:>10.3f} {rewr:>13.4f} {hand:>9.4f}"
            f" {dense / rewr:>10.1f}x {rewr / hand:>9.3f}x {counts[b, V]:>7d}"
        )
    return "\n".join(lines)


def format_target(t: Target) -> str:
    figure = "not measured" if t.value is None else f"{t.value:.3f}"
    line = f"{t.verdict}  {t.backend:<8} {t.name}: {figure} (target {t.relation} {t.limit:g}"
    if t.hand_written is not None:
        line += f"; hand-written: {t.hand_written:.3f}"
    return line + ")"


# --------------------------------------------------------------------------- #
# Command line
# --------------------------------------------------------------------------- #
def _csv(convert: Callable[[str], Any]) -> Callable[[str], list[Any]]:
    return lambda text: [convert(part) for part in text.split(",") if part.strip()]


def _size(text: str) -> int:
    value = float(text)
    if value < 1 or value != int(value):
        raise argparse.ArgumentTypeError(f"not a table size: {text!r}")
    return int(value)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=f"python -m benchmarks {NAME}", description=(__doc__ or "").splitlines()[0]
    )
    parser.add_argument(
        "--backends", type=_csv(str.upper), default=list(BACKENDS), help="e.g. NUMBA,JAX"
    )
    parser.add_argument(
        "--sizes", type=_csv(_size), default=list(DEFAULT_SIZES), help="table rows, e.g. 1e4,1e6"
    )
    parser.add_argument(
        "--repeats", type=int, default=DEFAULT_REPEATS, help="rounds per backend and size (at most)"
    )
    parser.add_argument("--json-only", action="store_true", help="print only the JSON lines")
    parser.add_argument("--in-process", metavar="BACKEND", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    unknown = set(args.backends) - set(BACKENDS)
    if unknown:
        parser.error(f"unknown backends {sorted(unknown)}; have {', '.join(BACKENDS)}")
    return args


def json_line(record: dict[str, Any]) -> str:
    return json.dumps({"benchmark": NAME, **record})


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.in_process:
        for record in run_backend(args.in_process, args.sizes, args.repeats):
            print(json_line(record), flush=True)
        return 0

    records: list[dict[str, Any]] = []
    start = time.perf_counter()
    for backend in args.backends:
        # One process per backend: JAX, torch and Numba each own thread pools and
        # allocators, and a previous backend's memory must not count against the next.
        cmd = [
            sys.executable,
            "-m",
            "benchmarks",
            NAME,
            "--in-process",
            backend,
            "--sizes",
            ",".join(map(str, args.sizes)),
            "--repeats",
            str(args.repeats),
        ]
        done = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, env=dict(os.environ))
        if done.returncode != 0:
            print(f"[{NAME}] {backend} failed (exit {done.returncode})", file=sys.stderr)
            records.append({"kind": "failure", "backend": backend, "exit": done.returncode})
            continue
        records += [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    print(f"[{NAME}] done in {time.perf_counter() - start:.0f} s", file=sys.stderr)

    fields = Measurement.__dataclass_fields__
    results = [
        Measurement(**{k: r[k] for k in fields}) for r in records if r["kind"] == "measurement"
    ]
    targets = judge(results, args.sizes)
    if not args.json_only and results:
        print(format_table(results))
        print()
        print("\n".join(format_target(t) for t in targets))
        for r in records:
            if r["kind"] == "backend":
                print(f"INFO  {r['backend']:<8} device {r['device']}; threads {r['threads']}")
        print()
    from benchmarks._common import machine

    for r in records:
        print(json_line({k: v for k, v in r.items() if k != "benchmark"}))
    for t in targets:
        print(json_line({"kind": "target", **asdict(t), "passed": t.passed, "verdict": t.verdict}))
    print(json_line({"kind": "machine", **machine()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
