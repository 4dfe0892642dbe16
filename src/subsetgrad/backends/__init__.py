"""Backend support for subset updates: the linker each PyTensor backend needs.

The subsetgrad rewrite turns a dense table update into a row increment; whether that
increment then runs in place depends on the backend:

- NUMBA runs it in place as is.
- C (CVM): `subsetgrad.backends.cvm` gives the increment of a matrix or N-D table
  compiled code (the stock op runs ``np.add.at`` from Python); the rewrite that
  selects it is an optdb entry made by `cvm.c_rows_db`.
- JAX: `jax.DonatingJAXLinker` donates the buffers of the shared variables a function
  updates, so XLA updates the table in place instead of copying it every call.
- PYTORCH: `pytorch.InplacePytorchLinker` lets the table's increment write to the
  shared storage instead of a clone.

`backend_mode` returns a mode with the right linker; the subsetgrad rewrite is turned
on separately, by its tag. JAX and PyTorch are imported only when such a function is
compiled.
"""

from __future__ import annotations

from pytensor.compile.mode import Mode, get_mode


def backend_mode(base: str | Mode) -> Mode:
    """`base` (a mode name or object) with the linker that updates tables in place.

    PyTensor's own JAX linker becomes the donating one and its PyTorch linker the
    in-place one, with the same optimizer query; any other mode is `get_mode(base)`
    as it is (C and NUMBA need no change of linker, and a linker subclass of your
    own is kept). The query is not changed: include the "subsetgrad" tag to rewrite
    the updates, as `subsetgrad.mode` does.
    """
    m = get_mode(base)
    from pytensor.link.jax.linker import JAXLinker
    from pytensor.link.pytorch.linker import PytorchLinker

    linker: type | None = None
    if type(m.linker) is JAXLinker:
        from subsetgrad.backends.jax import DonatingJAXLinker

        linker = DonatingJAXLinker
    elif type(m.linker) is PytorchLinker:
        from subsetgrad.backends.pytorch import InplacePytorchLinker

        linker = InplacePytorchLinker
    if linker is None:
        return m
    return Mode(linker=linker(), optimizer=m.provided_optimizer)


def copying_backend(linker: object) -> str | None:
    """ "JAX" or "PYTORCH" when `linker` is PyTensor's own one, which copies an updated
    table on every call; None for linkers that update it in place."""
    from pytensor.link.jax.linker import JAXLinker
    from pytensor.link.pytorch.linker import PytorchLinker

    if type(linker) is JAXLinker:
        return "JAX"
    if type(linker) is PytorchLinker:
        return "PYTORCH"
    return None


__all__ = ["backend_mode", "copying_backend"]
