"""The user's file:line for a graph variable, from PyTensor's stack traces."""

from __future__ import annotations

import linecache
import os
import sysconfig
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

import pytensor
from pytensor.graph.basic import Apply, Variable

import subsetgrad
from subsetgrad.graph import isa
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


def _column(filename: str, lineno: int) -> int:
    """1-based column of the line's first character (traces keep the line stripped)."""
    text = linecache.getline(filename, lineno)
    return len(text) - len(text.lstrip()) + 1 if text.strip() else 1


def location_of(var: Variable | Apply | None) -> Location | None:
    """The innermost user frame that built `var` (or the node's first output)."""
    if var is None:
        return None
    candidates: Iterable[Variable] = var.outputs if isa(var, (Apply,)) else (var,)
    for v in candidates:
        trace = getattr(v.tag, "trace", None)
        if not trace:
            continue
        # `trace` holds one or more stack summaries (merged by copy_stack_trace),
        # each outermost frame first.
        for summary in trace:
            for frame in reversed(summary):
                filename, lineno = frame[0], frame[1]
                if is_user_file(filename):
                    return Location(absolute(filename), int(lineno), _column(filename, lineno))
    return None


def first_location(*items: Variable | Apply | None) -> Location | None:
    for item in items:
        loc = location_of(item)
        if loc is not None:
            return loc
    return None
