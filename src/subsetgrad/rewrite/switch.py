"""`enable()` and `disable()`: the rewrites in every compilation, whatever mode a library picks."""

from __future__ import annotations

from types import TracebackType

from pytensor.graph.fg import FunctionGraph
from pytensor.graph.rewriting.basic import GraphRewriter

_enabled = False


def is_enabled() -> bool:
    """Whether `enable()` is in force."""
    return _enabled


class Switch:
    """The state before an `enable()` or `disable()` call; as a context manager, restores it."""

    def __init__(self, previous: bool) -> None:
        self.previous = previous

    def __enter__(self) -> Switch:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        global _enabled
        _enabled = self.previous


def enable() -> Switch:
    """Run the subsetgrad rewrites in every compilation that follows in this process.

    That reaches every mode whose rewrites include PyTensor's ``fast_run`` or
    ``fast_compile`` (the default mode, NUMBA, CVM, JAX, PYTORCH, FAST_COMPILE and
    modes built from them), also modes a library made before the call. A mode with
    ``optimizer=None`` runs no rewrite, this one neither. ``with enable(): ...``
    restores the previous state at the end of the block.
    """
    global _enabled
    switch = Switch(_enabled)
    _enabled = True
    return switch


def disable() -> Switch:
    """Stop what `enable()` started; ``with disable(): ...`` restores the previous state.

    Modes that include the ``subsetgrad`` tag (`subsetgrad.mode`) keep the rewrites.
    """
    global _enabled
    switch = Switch(_enabled)
    _enabled = False
    return switch


class WhenEnabled(GraphRewriter):  # type: ignore[misc]
    """`rewriter`, run only while `enable()` is in force."""

    def __init__(self, rewriter: GraphRewriter) -> None:
        self.rewriter = rewriter

    def add_requirements(self, fgraph: FunctionGraph) -> None:
        if _enabled:
            self.rewriter.add_requirements(fgraph)

    def apply(self, fgraph: FunctionGraph) -> None:
        if _enabled:
            self.rewriter.apply(fgraph)
