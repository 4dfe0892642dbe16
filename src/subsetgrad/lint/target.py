"""Run what `subsetgrad check` is pointed at, under the recorder.

A target is a Python file, a module (``-m pkg.mod``) or ``module:callable`` (a
factory returning a compiled function, outputs, or updates). A script that goes
on to train is stopped, cleanly, at the first call of a compiled function,
unless `run_fully` is set; `Outcome.stops` says where, so that the command
line can say what was not run.
"""

from __future__ import annotations

import importlib
import runpy
import sys
import traceback
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytensor.graph.basic import Variable

from subsetgrad.lint.findings import Location
from subsetgrad.lint.program import Program
from subsetgrad.lint.recorder import Recording, record
from subsetgrad.lint.source import absolute, is_user_file


class TargetError(Exception):
    """The target could not be checked; the message is one line naming the problem."""


class _StopRun(BaseException):
    """Raised by the first compiled-function call: the graphs are built, stop here."""


@dataclass(frozen=True)
class Target:
    kind: str  # "file", "module" or "callable"
    spec: str

    @property
    def label(self) -> str:
        return f"-m {self.spec}" if self.kind == "module" else self.spec

    @property
    def directory(self) -> Path:
        """Where the config search starts."""
        return Path(self.spec).resolve().parent if self.kind == "file" else Path.cwd()


@dataclass(frozen=True)
class Stop:
    """A target stopped at its first call of a compiled function, at `location`."""

    target: Target
    location: Location | None


@dataclass
class Outcome:
    recording: Recording
    # Programs from a factory's symbolic return value (not compiled).
    returned: list[Program] = field(default_factory=list)
    # Python files the target ran, for suppression comments.
    files: list[str] = field(default_factory=list)
    # Where each target stopped early: the first call of a compiled function.
    stops: list[Stop] = field(default_factory=list)

    @property
    def stopped_early(self) -> bool:
        return bool(self.stops)


def parse(paths: Sequence[str], modules: Sequence[str]) -> list[Target]:
    targets = [Target("module", m) for m in modules]
    for p in paths:
        if not Path(p).exists() and ":" in p and not p.endswith(".py"):
            targets.append(Target("callable", p))
        else:
            targets.append(Target("file", p))
    return targets


def run(targets: Sequence[Target], *, run_fully: bool = False) -> Outcome:
    """Run every target inside one recording; raise TargetError on any failure."""
    with record() as rec:
        outcome = Outcome(rec)
        for target in targets:
            before = rec.compiled
            returned_before = len(outcome.returned)
            with _stop_at_first_call(enabled=not run_fully) as calls:
                _run_one(target, outcome)
            if calls:
                outcome.stops.append(Stop(target, calls[0]))
            if rec.compiled == before and len(outcome.returned) == returned_before:
                raise TargetError(f"{target.label}: built no PyTensor graph (nothing was compiled)")
    return outcome


def _run_one(target: Target, outcome: Outcome) -> None:
    if target.kind == "file":
        path = Path(target.spec)
        if not path.is_file():
            raise TargetError(f"{target.spec}: no such file")
        source = _read(path)
        try:
            compile(source, str(path), "exec")
        except SyntaxError as exc:
            raise TargetError(f"{target.spec}:{exc.lineno}: syntax error: {exc.msg}") from None
        outcome.files.append(str(path.resolve()))
        with _script_context(str(path.resolve()), [str(path)]):
            _guarded(target, lambda: runpy.run_path(str(path), run_name="__main__"))
    elif target.kind == "module":
        spec = _find_module(target.spec)
        if spec.origin and spec.origin.endswith(".py"):
            outcome.files.append(str(Path(spec.origin).resolve()))
        with _script_context(None, [spec.origin or target.spec]):
            _guarded(
                target,
                lambda: runpy.run_module(target.spec, run_name="__main__", alter_sys=True),
            )
    else:
        module_name, _, attr = target.spec.partition(":")
        spec = _find_module(module_name)
        if spec.origin and spec.origin.endswith(".py"):
            outcome.files.append(str(Path(spec.origin).resolve()))
        with _script_context(None, [target.spec]):
            module = _guarded(target, lambda: importlib.import_module(module_name))
            factory = getattr(module, attr, None)
            if not callable(factory):
                raise TargetError(f"{target.spec}: {module_name} has no callable {attr!r}")
            result = _guarded(target, factory)
        program = _program_from(result)
        if program is not None:
            outcome.returned.append(program)


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise TargetError(f"{path}: cannot read: {exc}") from None


def _find_module(name: str) -> Any:
    import importlib.util

    sys.path.insert(0, str(Path.cwd()))
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError) as exc:
        raise TargetError(f"-m {name}: {exc}") from None
    finally:
        sys.path.pop(0)
    if spec is None:
        raise TargetError(f"-m {name}: no module named {name!r}")
    return spec


def _guarded(target: Target, fn: Any) -> Any:
    """Call `fn`; turn what the target raises into a one-line TargetError."""
    try:
        return fn()
    except _StopRun:
        return None
    except SystemExit as exc:
        if exc.code in (None, 0):
            return None
        raise TargetError(f"{target.label}: exited with status {exc.code}") from None
    except TargetError:
        raise
    except Exception as exc:
        where = ""
        for frame in reversed(traceback.extract_tb(exc.__traceback__)):
            if is_user_file(frame.filename):
                where = f" (at {Path(frame.filename).name}:{frame.lineno})"
                break
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise TargetError(
            f"{target.label}: {type(exc).__name__} while running the target{where}"
            + (f": {message}" if message else "")
        ) from exc


@contextmanager
def _script_context(script: str | None, argv: list[str]) -> Iterator[None]:
    """Run like ``python script``: argv, and the script's folder (or cwd) first on sys.path."""
    old_argv, old_path = sys.argv[:], sys.path[:]
    sys.argv = argv
    sys.path.insert(0, str(Path(script).parent) if script else str(Path.cwd()))
    try:
        yield
    finally:
        sys.argv, sys.path[:] = old_argv, old_path


@contextmanager
def _stop_at_first_call(*, enabled: bool) -> Iterator[list[Location | None]]:
    """While enabled, calling any compiled PyTensor function ends the run.

    Yields the list of where such calls were made (a target that catches
    BaseException may go on to call again; the first is where it stopped).
    """
    calls: list[Location | None] = []
    if not enabled:
        yield calls
        return
    from pytensor.compile.executor import Function

    original = Function.__call__

    def stop(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(_call_site())
        raise _StopRun

    Function.__call__ = stop
    try:
        yield calls
    finally:
        Function.__call__ = original


def _call_site() -> Location | None:
    """The user's line that called the compiled function (from inside `stop`)."""
    stack = traceback.extract_stack()[:-2]  # without `_call_site` and `stop`
    for frame in reversed(stack):
        if is_user_file(frame.filename):
            return Location(absolute(frame.filename), frame.lineno or 0)
    # No user frame (a target installed as a package): its direct caller.
    return Location(absolute(stack[-1].filename), stack[-1].lineno or 0) if stack else None


def _program_from(result: Any) -> Program | None:
    """A factory's return value: a compiled function (already recorded), or a graph."""
    if result is None or hasattr(result, "maker"):
        return None
    from subsetgrad.rewrite import rewrite_active

    outputs: Any = None
    updates: Any = None
    if isinstance(result, Mapping):
        updates = result
    elif isinstance(result, Variable):
        outputs = result
    elif isinstance(result, tuple) and len(result) == 2 and isinstance(result[1], Mapping):
        outputs, updates = result
    elif isinstance(result, list | tuple) and all(isinstance(v, Variable) for v in result):
        outputs = list(result)
    else:
        raise TargetError(
            f"factory returned {type(result).__name__}; expected a compiled function, "
            "outputs, an updates dict, or (outputs, updates)"
        )
    return Program.from_symbolic(outputs, updates, rewrite_active(None))
