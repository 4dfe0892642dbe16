"""A PyTorch linker under which a table's row increment writes to the table's storage.

PyTensor's `PytorchLinker` excludes every rewrite tagged "inplace", so its
`AdvancedIncSubtensor` dispatch always clones the table before ``index_put_``: a
subset step copies the whole table on every call. `InplacePytorchLinker` allows
those rewrites. PyTensor's destroy handler then decides, as on the C backend, which
increments may overwrite their input; for those the dispatch skips the clone and
runs ``x.index_put_(indices, y, accumulate=True)`` (repeated indices sum) on the
table's own storage, which PyTensor shares with the shared variable's NumPy array
(``torch.as_tensor`` on the way in, ``.numpy()`` on the way out).

Only the PyTorch dispatches of `IncSubtensor` and `AdvancedIncSubtensor` read their
op's ``inplace`` flag; other ops marked in place still compute a new tensor.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from pytensor.link.pytorch.linker import PytorchLinker


def _same_array(out: Any, inp: Any) -> bool:
    """Whether NumPy arrays `out` and `inp` are views of the same memory, alike."""
    return (
        isinstance(inp, np.ndarray)
        and isinstance(out, np.ndarray)
        and out.ctypes.data == inp.ctypes.data
        and out.shape == inp.shape
        and out.strides == inp.strides
        and out.dtype == inp.dtype
    )


class InplacePytorchLinker(PytorchLinker):  # type: ignore[misc]
    """`PytorchLinker` that lets PyTensor's in-place rewrites run.

    Use it through `subsetgrad.backends.backend_mode("PYTORCH")`.
    """

    incompatible_rewrites = tuple(r for r in PytorchLinker.incompatible_rewrites if r != "inplace")

    def jit_compile(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        inner = super().jit_compile(fn)

        def call(*inputs: Any) -> tuple[Any, ...]:
            outs = inner(*inputs)
            # A table updated in place comes back as a new NumPy view of a tensor that
            # holds the input array: return the input array itself, as the C backend
            # does, instead of a chain of views that grows by one every step.
            return tuple(next((i for i in inputs if _same_array(out, i)), out) for out in outs)

        return call
