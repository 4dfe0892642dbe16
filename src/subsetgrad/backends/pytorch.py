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

from pytensor.link.pytorch.linker import PytorchLinker


class InplacePytorchLinker(PytorchLinker):  # type: ignore[misc]
    """`PytorchLinker` that lets PyTensor's in-place rewrites run.

    Use it through `subsetgrad.backends.backend_mode("PYTORCH")`.
    """

    incompatible_rewrites = tuple(r for r in PytorchLinker.incompatible_rewrites if r != "inplace")
