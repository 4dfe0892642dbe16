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

    JAX gets a donating linker and PyTorch an in-place one; any other mode is
    returned as `get_mode(base)` (C and NUMBA need no change of linker). The
    optimizer query is kept as is: include the subsetgrad tag to rewrite the updates.
    """
    m = get_mode(base)
    linker = m.linker
    from pytensor.link.jax.linker import JAXLinker
    from pytensor.link.pytorch.linker import PytorchLinker

    if isinstance(linker, JAXLinker):
        from subsetgrad.backends.jax import DonatingJAXLinker

        if not isinstance(linker, DonatingJAXLinker):
            return Mode(linker=DonatingJAXLinker(), optimizer=m.provided_optimizer)
    elif isinstance(linker, PytorchLinker):
        from subsetgrad.backends.pytorch import InplacePytorchLinker

        if not isinstance(linker, InplacePytorchLinker):
            return Mode(linker=InplacePytorchLinker(), optimizer=m.provided_optimizer)
    return m


__all__ = ["backend_mode"]
