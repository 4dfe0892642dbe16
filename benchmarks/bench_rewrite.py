"""Dense vs rewritten vs hand-written subset SGD step on a float32 lookup table.

For each mode and table size V, three compiled steps update their own copy of
the same D-wide float32 table from a batch of B looked-up rows:

- dense: ``W - lr * grad(cost, W)`` with the rewrite off (a V x D pass);
- rewritten: the same expression with ``subsetgrad.mode`` (must fire);
- hand-written: ``inc_subtensor(W[idx], -lr * grad(cost, W[idx]))``.

Medians come from one process with the three steps interleaved round-robin.
Prints a table, PASS/FAIL per target, then JSON lines. Not a test: it exits 0
unless something crashes.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pytensor
import pytensor.tensor as pt
from pytensor.compile.mode import get_mode

import subsetgrad

NAME = "rewrite"
D = 64
B = 1024
LR = 0.01
VARIANTS = ("dense", "rewritten", "hand-written")
DEFAULT_MODES = ("NUMBA", "CVM")
DEFAULT_SIZES = (10_000, 100_000, 1_000_000)
DEFAULT_REPEATS = 200
WARMUP = 3
# Distinct pre-generated batches, cycled through. Enough that their rows do not
# all stay cached at large V: a training loop reads fresh rows every step.
MAX_BATCHES = 256
SEED = 2024

# Targets: rewritten <= 1.1x hand-written at every V; rewritten flat in V; dense
# >= 100x slower than rewritten at V=1e6.
MAX_REWRITTEN_OVER_HAND = 1.1
FLAT_SMALL_V, FLAT_LARGE_V, MAX_FLAT_RATIO = 10_000, 1_000_000, 1.5
SPEEDUP_V, MIN_SPEEDUP = 1_000_000, 100.0

Step = Callable[..., Any]
Batch = tuple[np.ndarray, np.ndarray, np.ndarray]


@dataclass(frozen=True)
class Measurement:
    """Step times of one variant at one mode and table size, in milliseconds."""

    mode: str
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
    mode: str
    value: float | None  # None: the sizes it needs were not measured
    relation: str  # "<=" or ">="
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


# --------------------------------------------------------------------------- #
# The three steps
# --------------------------------------------------------------------------- #
def build_step(variant: str, mode_name: str, table: np.ndarray) -> tuple[Step, Any]:
    """Compile one SGD step on a fresh shared copy of `table`; return it and the table."""
    W = pytensor.shared(table, name="W")  # copied: each step updates its own table
    idx = pt.lvector("idx")
    target = pt.matrix("target", dtype="float32")
    y = pt.vector("y", dtype="float32")
    # A Python float lr only autocasts to float32 when exactly representable
    # (0.01 is not) and would make the update float64; pin the dtype.
    lr = pt.constant(np.float32(LR), name="lr")
    W_idx = W[idx]
    cost = (((W_idx * target).sum(axis=1) - y) ** 2).sum()
    if variant == "hand-written":
        new_W = pt.inc_subtensor(W_idx, -lr * pytensor.grad(cost, W_idx))
    else:
        new_W = W - lr * pytensor.grad(cost, W)
    if new_W.type.dtype != "float32":
        raise TypeError(f"{variant} update is {new_W.type.dtype}, not float32")

    mode = subsetgrad.mode(mode_name) if variant == "rewritten" else get_mode(mode_name)
    before = subsetgrad.counters["subset_update"]
    # trust_input: the batches already have the exact dtypes, so skip the
    # per-call input checks and time the graph, not the argument filtering.
    f = pytensor.function([idx, target, y], [], updates={W: new_W}, mode=mode, trust_input=True)
    fired = subsetgrad.counters["subset_update"] - before
    if fired != int(variant == "rewritten"):
        raise RuntimeError(f"{variant} step on {mode_name}: the rewrite fired {fired} times")
    return f, W


def make_batches(V: int, count: int, rng: np.random.Generator) -> list[Batch]:
    """`count` batches of (idx, target, y), indices with repeats."""
    batches = []
    for _ in range(count):
        idx = rng.integers(0, V, size=B)
        # Uniform draws hardly repeat at large V; make a quarter of each batch
        # repeats of its other rows so the increments accumulate at every V.
        dup = rng.random(B) < 0.25
        idx[dup] = rng.choice(idx[~dup], size=int(dup.sum()))
        target = (rng.standard_normal((B, D)) / np.sqrt(D)).astype(np.float32)
        y = rng.standard_normal(B).astype(np.float32)
        batches.append((idx.astype(np.int64), target, y))
    return batches


def check_same_step(steps: dict[str, Step], tables: dict[str, Any], batch: Batch) -> None:
    """Run one step of each variant from the same table; they must agree."""
    for f in steps.values():
        f(*batch)
    reference = tables["dense"].get_value(borrow=True)
    for variant in VARIANTS[1:]:
        got = tables[variant].get_value(borrow=True)
        if not np.allclose(got, reference, rtol=1e-5, atol=1e-6):
            err = float(np.max(np.abs(got - reference)))
            raise RuntimeError(f"{variant} step differs from the dense one (max |diff| {err:g})")


# --------------------------------------------------------------------------- #
# Timing
# --------------------------------------------------------------------------- #
def time_steps(
    steps: dict[str, Step], batches: Sequence[Batch], repeats: int, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Seconds per call of each step, measured round-robin after `WARMUP` calls each."""
    names = list(steps)
    for i in range(WARMUP):
        for name in names:
            steps[name](*batches[i % len(batches)])
    times = {name: np.empty(repeats) for name in names}
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for r in range(repeats):
            batch = batches[r % len(batches)]
            # A fresh order each round, so no variant always follows the dense
            # step (which evicts the caches at large V).
            for k in rng.permutation(len(names)):
                name = names[k]
                start = time.perf_counter()
                steps[name](*batch)
                times[name][r] = time.perf_counter() - start
    finally:
        if gc_was_enabled:
            gc.enable()
    return times


CONFINED = "rewritten, rows < V_min"


def measure(
    mode_name: str,
    V: int,
    repeats: int,
    log: Callable[[str], None],
    confine_to: int | None = None,
) -> list[Measurement]:
    """Compile, check and time the three steps at one mode and size.

    With `confine_to`, the rewritten step is timed once more on batches drawn from
    the first `confine_to` rows only: the same work as at that V, but in this
    table, which separates cache misses from work that grows with V.
    """
    rng = np.random.default_rng([SEED, V])
    table = (rng.standard_normal((V, D)) * 0.1).astype(np.float32)
    batches = make_batches(V, min(repeats, MAX_BATCHES), rng)
    log(f"{mode_name} V={V:.0e}: compiling")
    steps: dict[str, Step] = {}
    tables: dict[str, Any] = {}
    for variant in VARIANTS:
        steps[variant], tables[variant] = build_step(variant, mode_name, table)
    del table
    check_same_step(steps, tables, batches[0])
    log(f"{mode_name} V={V:.0e}: timing {repeats} rounds")
    times = time_steps(steps, batches, repeats, rng)
    if confine_to is not None:
        confined = make_batches(confine_to, min(repeats, MAX_BATCHES), rng)
        log(f"{mode_name} V={V:.0e}: timing the rewritten step on rows < {confine_to:.0e}")
        times[CONFINED] = time_steps({"r": steps["rewritten"]}, confined, repeats, rng)["r"]
    result = []
    for variant in times:
        ms = times[variant] * 1e3
        p25, median, p75 = np.percentile(ms, [25, 50, 75])
        result.append(
            Measurement(
                mode=mode_name,
                V=V,
                variant=variant,
                median_ms=float(median),
                p25_ms=float(p25),
                p75_ms=float(p75),
                min_ms=float(ms.min()),
                repeats=repeats,
            )
        )
    del steps, tables
    gc.collect()
    return result


# --------------------------------------------------------------------------- #
# Targets and report
# --------------------------------------------------------------------------- #
def judge(
    results: Sequence[Measurement], modes: Sequence[str], sizes: Sequence[int]
) -> list[Target]:
    """The targets of the issue, per mode.

    The V and speed-up targets also carry the same figure for the hand-written
    step: when both miss, the cost is the backend's or the machine's, not the rewrite's.
    """
    median = {(m.mode, m.V, m.variant): m.median_ms for m in results}

    def ratio(mode_name: str, a: tuple[int, str], b: tuple[int, str]) -> float | None:
        if a[0] not in sizes or b[0] not in sizes:
            return None
        return median[(mode_name, *a)] / median[(mode_name, *b)]

    targets = []
    for mode_name in modes:
        targets += [
            Target(
                f"rewritten/hand-written at V={V:.0e}",
                mode_name,
                ratio(mode_name, (V, "rewritten"), (V, "hand-written")),
                "<=",
                MAX_REWRITTEN_OVER_HAND,
            )
            for V in sizes
        ]
        small, large = FLAT_SMALL_V, FLAT_LARGE_V
        targets.append(
            Target(
                f"rewritten V={large:.0e} / V={small:.0e}",
                mode_name,
                ratio(mode_name, (large, "rewritten"), (small, "rewritten")),
                "<=",
                MAX_FLAT_RATIO,
                ratio(mode_name, (large, "hand-written"), (small, "hand-written")),
            )
        )
        V = SPEEDUP_V
        targets.append(
            Target(
                f"dense/rewritten at V={V:.0e}",
                mode_name,
                ratio(mode_name, (V, "dense"), (V, "rewritten")),
                ">=",
                MIN_SPEEDUP,
                ratio(mode_name, (V, "dense"), (V, "hand-written")),
            )
        )
    return targets


def format_table(results: Sequence[Measurement]) -> str:
    median = {(m.mode, m.V, m.variant): m.median_ms for m in results}
    rows = dict.fromkeys((m.mode, m.V) for m in results)
    header = (
        f"{'mode':<6} {'V':>9} {'dense ms':>10} {'rewritten ms':>13} {'hand ms':>9}"
        f" {'dense/rewr':>11} {'rewr/hand':>10}"
    )
    lines = [
        f"float32 table, D={D}, B={B}; median step time of {results[0].repeats} rounds",
        header,
        "-" * len(header),
    ]
    for mode_name, V in rows:
        dense, rewr, hand = (median[mode_name, V, v] for v in VARIANTS)
        lines.append(
            f"{mode_name:<6} {V:>9,d} {dense:>10.3f} {rewr:>13.4f} {hand:>9.4f}"
            f" {dense / rewr:>10.1f}x {rewr / hand:>9.3f}x"
        )
    return "\n".join(lines)


def format_target(t: Target) -> str:
    figure = "not measured" if t.value is None else f"{t.value:.3f}"
    line = f"{t.verdict}  {t.mode:<6} {t.name}: {figure} (target {t.relation} {t.limit:g}"
    if t.hand_written is not None:
        line += f"; hand-written: {t.hand_written:.3f}"
    return line + ")"


from benchmarks._common import machine  # noqa: E402


def json_line(kind: str, record: dict[str, Any]) -> str:
    return json.dumps({"benchmark": NAME, "kind": kind, **record})


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
        prog=f"python -m benchmarks {NAME}", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--modes", type=_csv(str.upper), default=list(DEFAULT_MODES), help="e.g. NUMBA,CVM"
    )
    parser.add_argument(
        "--sizes", type=_csv(_size), default=list(DEFAULT_SIZES), help="table rows, e.g. 1e4,1e6"
    )
    parser.add_argument(
        "--repeats", type=int, default=DEFAULT_REPEATS, help="timed rounds per mode and size"
    )
    parser.add_argument("--json-only", action="store_true", help="print only the JSON lines")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    # None of these graphs has a BLAS op; the CVM linker warns regardless.
    warnings.filterwarnings("ignore", "PyTensor could not link to a BLAS installation")

    def log(message: str) -> None:
        print(f"[{NAME}] {message}", file=sys.stderr, flush=True)

    start = time.perf_counter()
    small, large = min(args.sizes), max(args.sizes)
    results = [
        m
        for mode_name in args.modes
        for V in args.sizes
        for m in measure(
            mode_name, V, args.repeats, log, confine_to=small if V == large > small else None
        )
    ]
    targets = judge(results, args.modes, args.sizes)
    log(f"done in {time.perf_counter() - start:.0f} s")

    if not args.json_only:
        print(format_table(results))
        print()
        print("\n".join(format_target(t) for t in targets))
        for m in results:
            if m.variant == CONFINED:
                base = next(
                    r for r in results if (r.mode, r.V, r.variant) == (m.mode, small, "rewritten")
                )
                print(
                    f"INFO  {m.mode:<6} rewritten at V={m.V:.0e} on rows < {small:.0e}: "
                    f"{m.median_ms:.4f} ms, {m.median_ms / base.median_ms:.3f}x V={small:.0e} "
                    "(same work, cold rows excluded)"
                )
        print()
    for m in results:
        print(json_line("measurement", {**asdict(m), "D": D, "B": B, "dtype": "float32"}))
    for t in targets:
        print(json_line("target", {**asdict(t), "passed": t.passed, "verdict": t.verdict}))
    print(json_line("machine", machine()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
