"""The user's file:line for a graph variable, from PyTensor's stack traces."""

from __future__ import annotations

import linecache
import os
import sysconfig
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path

import pytensor
from pytensor.graph.basic import Apply, Variable

import subsetgrad
from subsetgrad.graph import isa, tag_value
from subsetgrad.lint.findings import Location

# Frames in these trees are never the user's line: PyTensor itself, subsetgrad
# (its recorder wraps `grad`), the standard library and installed packages.
_LIBRARY_ROOTS = tuple(
    str(Path(p).resolve()) + os.sep
    for p in {
        os.path.dirname(pytensor.__file__),
        os.path.dirname(subsetgrad.__file__),
        sysconfig.get_paths()["stdlib"],
        sysconfig.get_paths()["platstdlib"],
        sysconfig.get_paths()["purelib"],
        sysconfig.get_paths()["platlib"],
    }
)


@lru_cache(maxsize=4096)
def is_user_file(filename: str) -> bool:
    if filename.startswith("<frozen") or not filename:
        return False
    if "site-packages" in filename or "dist-packages" in filename:
        return False
    resolved = str(Path(filename).resolve()) if not filename.startswith("<") else filename
    return not resolved.startswith(_LIBRARY_ROOTS)


_PYTENSOR_ROOT = str(Path(os.path.dirname(pytensor.__file__)).resolve()) + os.sep


@lru_cache(maxsize=4096)
def _in_pytensor(filename: str) -> bool:
    return not filename.startswith("<") and str(Path(filename).resolve()).startswith(_PYTENSOR_ROOT)


def built_by_user(var: Variable | Apply) -> bool:
    """Whether the code that asked PyTensor for `var` is the user's, not a library's.

    True when there is no trace to tell.
    """
    candidates: Iterable[Variable] = var.outputs if isa(var, (Apply,)) else (var,)
    for v in candidates:
        for summary in tag_value(v, "trace") or ():
            for frame in reversed(summary):
                if not _in_pytensor(frame[0]):
                    return is_user_file(frame[0])
    return True


def absolute(filename: str) -> str:
    """One spelling per file, so suppressions and findings meet."""
    if filename.startswith("<"):
        return filename
    # The working directory matters only to a relative path (and costs a system call).
    return _resolve("" if os.path.isabs(filename) else os.getcwd(), filename)


@lru_cache(maxsize=4096)
def _resolve(cwd: str, filename: str) -> str:
    # Keyed on the working directory too: a relative trace path depends on it.
    return str(Path(cwd, filename).resolve())


def _location(filename: str, lineno: int) -> Location:
    return _location_at(absolute(filename), lineno)


# Findings share a few lines: each line's column is read once.
@lru_cache(maxsize=16384)
def _location_at(path: str, lineno: int) -> Location:
    return Location(path, lineno, _column(path, lineno))


def refresh() -> None:
    """Forget the source lines read so far: a file may have changed since the last check."""
    _location_at.cache_clear()
    linecache.checkcache()


def _column(filename: str, lineno: int) -> int:
    """1-based column of the line's first character (traces keep the line stripped)."""
    text = linecache.getline(filename, lineno)
    return len(text) - len(text.lstrip()) + 1 if text.strip() else 1


def location_of(var: Variable | Apply | None) -> Location | None:
    """The innermost user frame that built `var` (or the node's first output)."""
    frames = _user_frames(var, innermost_only=True)
    return frames[0] if frames else None


def _user_frames(var: Variable | Apply | None, innermost_only: bool = False) -> list[Location]:
    """The user frames of the first stack trace that has any, innermost first."""
    if var is None:
        return []
    candidates: Iterable[Variable] = var.outputs if isa(var, (Apply,)) else (var,)
    for v in candidates:
        trace = tag_value(v, "trace")
        if not trace:
            continue
        # `trace` holds one or more stack summaries (merged by copy_stack_trace),
        # each outermost frame first.
        for summary in trace:
            found: list[Location] = []
            for frame in reversed(summary):
                filename = frame[0]
                if is_user_file(filename):
                    loc = _location(filename, int(frame[1]))
                    if innermost_only:
                        return [loc]
                    found.append(loc)
            if found:
                return found
    return []


def distinct_locations(items: Sequence[Variable | Apply]) -> list[Location | None]:
    """A location for each item: the innermost user frames that tell them apart.

    Two lookups built by one user function share that function's line; their
    callers' lines tell them apart. Items built on one line (in a loop) keep it.
    """
    frames = [_user_frames(item) for item in items]
    deepest = max((len(f) for f in frames), default=0)
    for depth in range(deepest):
        locs = [f[min(depth, len(f) - 1)] if f else None for f in frames]
        if len(set(locs)) == len(locs):
            return locs
    return [f[0] if f else None for f in frames]


def first_location(*items: Variable | Apply | None) -> Location | None:
    for item in items:
        loc = location_of(item)
        if loc is not None:
            return loc
    return None
