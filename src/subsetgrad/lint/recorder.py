"""Record every graph compiled and every `pytensor.grad` call made inside a block."""

from __future__ import annotations

import functools
import sys
import traceback
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import count
from typing import Any, ClassVar

import pytensor
import pytensor.gradient
from pytensor.compile.mode import optdb
from pytensor.graph.basic import Variable
from pytensor.graph.fg import FunctionGraph
from pytensor.graph.rewriting.basic import GraphRewriter
from pytensor.scan import basic as scan_basic

from subsetgrad.graph import LOOKUP_OPS, is_lookup, tag_value
from subsetgrad.lint.engine import analyse_all
from subsetgrad.lint.findings import Finding, Location
from subsetgrad.lint.program import Program
from subsetgrad.lint.source import absolute, is_user_file, location_of
from subsetgrad.rewrite import ran_on

CAPTURE_NAME = "subsetgrad_capture"
SETTLE_NAME = "subsetgrad_capture_settle"
# Deep enough that the user's frame survives PyTensor's own frames inside `grad`.
TRACE_LIMIT = 48

_active: list[Recording] = []


# --------------------------------------------------------------------------- #
# The record of pytensor.grad calls (SG202 reads it)
# --------------------------------------------------------------------------- #
GRAD_TAG = "subsetgrad_grad"


@dataclass(eq=False)
class GradCall:
    """One ``pytensor.grad(cost, wrt)`` call seen by the recorder, for one `wrt`."""

    cost: Variable
    wrt: Variable
    location: Location | None
    # The gradient that carries this call in its tag (clones of it carry it too).
    grad: Variable | None = None
    # Order of creation: tagged gradients are listed in it, so findings do not vary by run.
    seq: int = field(init=False)

    #: The calls still alive; none means no graph carries a tag, and none is searched for.
    live: ClassVar[weakref.WeakSet[GradCall]] = weakref.WeakSet()
    _made: ClassVar[Iterator[int]] = count()

    def __post_init__(self) -> None:
        self.seq = next(GradCall._made)
        GradCall.live.add(self)

    @property
    def table(self) -> Variable | None:
        owner = self.wrt.owner
        if owner is not None and isinstance(owner.op, LOOKUP_OPS):
            return owner.inputs[0]
        return None


#: Tag on a table read inside a Scan's step: where (SG103 points there).
LOOP_LOOKUP_TAG = "subsetgrad_loop_lookup"


def loop_lookup(table: Variable) -> Location | None:
    """Where `record()` saw `table` looked up inside a Scan's step function, if it did."""
    found = tag_value(table, LOOP_LOOKUP_TAG)
    return found if isinstance(found, Location) else None


def _note_loop_lookups(outputs: Any, step_inputs: Sequence[Any]) -> None:
    """Tag each table that the step's `outputs` look up (read from outside the step)."""
    inside = {v for v in step_inputs if isinstance(v, Variable)}
    stack = [v for v in _variables(outputs) if v not in inside]
    seen = set(stack)
    while stack:
        node = stack.pop().owner
        if node is None:
            continue
        table = node.inputs[0]
        first = table.owner is None and table not in inside and loop_lookup(table) is None
        if first and is_lookup(node):
            where = location_of(node)
            if where is not None:
                setattr(table.tag, LOOP_LOOKUP_TAG, where)
        for i in node.inputs:
            if i not in seen and i not in inside:
                seen.add(i)
                stack.append(i)


def _variables(value: Any) -> Iterator[Variable]:
    """The variables in what a step function returned (a variable, tuples, lists, dicts)."""
    if isinstance(value, Variable):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _variables(k)
            yield from _variables(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _variables(v)


def call_of(var: Variable) -> GradCall | None:
    """The `pytensor.grad` call whose result `var` is (or is a clone of), if recorded."""
    call = tag_value(var, GRAD_TAG)
    return call if isinstance(call, GradCall) else None


@dataclass
class Recording:
    """What a `record()` block saw: compiled graphs and gradient calls."""

    grad_calls: list[GradCall] = field(default_factory=list)
    _captured: list[tuple[Program, weakref.ref[FunctionGraph]]] = field(default_factory=list)
    compiled: int = 0

    @property
    def programs(self) -> list[Program]:
        """The graphs as they were before any rewrite, one per compiled function."""
        for program, live in self._captured:
            fgraph = live()
            if program.rewrite_active is None and fgraph is not None:
                program.rewrite_active = ran_on(fgraph)
        return [p for p, _ in self._captured]

    def findings(
        self, *, select: Iterable[str] | None = None, ignore: Iterable[str] | None = None
    ) -> list[Finding]:
        return analyse_all(self.programs, select=select, ignore=ignore)


# Live graph -> the program captured from it, until the same compile settles it.
_pending: weakref.WeakKeyDictionary[FunctionGraph, Program] = weakref.WeakKeyDictionary()
# Live graph -> the program captured from it, for `check_function`, while the function lives.
_captured: weakref.WeakKeyDictionary[FunctionGraph, Program] = weakref.WeakKeyDictionary()


def captured(fgraph: FunctionGraph) -> Program | None:
    """The graph a `record()` block saw compiled as `fgraph`, before any rewrite."""
    return _captured.get(fgraph)


class _Capture(GraphRewriter):  # type: ignore[misc]
    """Registered first in optdb: keeps a copy of each graph before it is rewritten."""

    def apply(self, fgraph: FunctionGraph) -> None:
        mapping = getattr(fgraph, "update_mapping", None)
        if not _active or mapping is None:
            return  # Scan and OpFromGraph inner graphs have no update mapping
        snapshot = fgraph.clone()
        snapshot.update_mapping = dict(mapping)
        program = Program.from_fgraph(snapshot)
        _pending[fgraph] = _captured[fgraph] = program
        for rec in _active:
            rec._captured.append((program, weakref.ref(fgraph)))
            rec.compiled += 1


class _Settle(GraphRewriter):  # type: ignore[misc]
    """Registered last: the rewrites have run, so record whether ours was among them."""

    def apply(self, fgraph: FunctionGraph) -> None:
        program = _pending.pop(fgraph, None)
        if program is not None:
            program.rewrite_active = ran_on(fgraph)


def _install_capture() -> None:
    # Tags that every predefined mode's query includes; no-ops outside `record()`.
    tags = ("fast_run", "fast_compile", "minimum_compile")
    for name, rewriter, position in [
        (CAPTURE_NAME, _Capture(), -2),
        (SETTLE_NAME, _Settle(), 1000),
    ]:
        if name not in optdb:
            optdb.register(name, rewriter, *tags, position=position, use_db_name_as_tag=False)


def _caller_location() -> Location | None:
    for frame in reversed(traceback.extract_stack()):
        if is_user_file(frame.filename):
            return Location(absolute(frame.filename), frame.lineno or 0, 1)
    return None


def _recording_grad(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def grad(cost: Variable, wrt: Any, *args: Any, **kwargs: Any) -> Any:
        result = original(cost, wrt, *args, **kwargs)
        if not _active:
            return result  # a module kept this wrapper after its block ended
        wrts = list(wrt) if isinstance(wrt, list | tuple) else [wrt]
        results = list(result) if isinstance(result, list | tuple) else [result]
        location: Location | None = None
        for w, g in zip(wrts, results, strict=False):
            if not isinstance(w, Variable) or not isinstance(g, Variable):
                continue
            if w.owner is None or not is_lookup(w.owner):
                continue  # only gradients with respect to a lookup matter (SG202)
            location = location or _caller_location()
            call = GradCall(cost, w, location, g)
            setattr(g.tag, GRAD_TAG, call)
            for rec in _active:
                rec.grad_calls.append(call)
        return result

    return grad


def _recording_scan(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def scan(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if not _active:
            return original(fn, *args, **kwargs)

        @functools.wraps(fn)
        def step(*inputs: Any) -> Any:
            outputs = fn(*inputs)
            _note_loop_lookups(outputs, inputs)
            return outputs

        return original(step, *args, **kwargs)

    return scan


@contextmanager
def record() -> Iterator[Recording]:
    """Record the graphs compiled and the gradients taken inside the block.

    Patches `pytensor.grad` and `pytensor.scan` wherever a loaded module holds
    them (so ``from pytensor import grad`` done earlier is covered too; a step
    function's lookups are noted for SG103), deepens PyTensor's stack traces
    so that findings reach the user's line, and keeps a pre-rewrite copy of every
    graph compiled (every linker runs at least PyTensor's minimum rewrites, even
    with ``optimizer=None``). The copy lives as long as its compiled function,
    for `check_function`.
    """
    _install_capture()
    rec = Recording()
    originals = {"grad": pytensor.gradient.grad, "scan": scan_basic.scan}
    wrappers = {
        "grad": _recording_grad(originals["grad"]),
        "scan": _recording_scan(originals["scan"]),
    }
    patched: list[tuple[Any, str]] = []
    if not _active:
        for module in list(sys.modules.values()):
            for name, original in originals.items():
                try:
                    if getattr(module, name, None) is original:
                        setattr(module, name, wrappers[name])
                        patched.append((module, name))
                except Exception:
                    continue
    old_limit = pytensor.config.traceback__limit
    pytensor.config.traceback__limit = max(old_limit, TRACE_LIMIT)
    _active.append(rec)
    try:
        yield rec
    finally:
        _active.remove(rec)
        pytensor.config.traceback__limit = old_limit
        for module, name in patched:
            setattr(module, name, originals[name])
        if not _active:
            # Modules imported inside the block copied a wrapper; give them theirs back.
            for module in list(sys.modules.values()):
                for name, original in originals.items():
                    try:
                        held = getattr(module, name, None)
                        if getattr(held, "__wrapped__", None) is original and held is not original:
                            setattr(module, name, original)
                    except Exception:
                        continue
