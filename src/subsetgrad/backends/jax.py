"""A JAX linker that donates the buffers of the shared variables a function updates.

PyTensor's `JAXLinker` jits without buffer donation, so XLA cannot write an output
into an input's buffer: a step that changes a few rows of a table still copies the
whole table on every call. `DonatingJAXLinker` passes ``donate_argnums`` for the
inputs that the function replaces by an update (``fgraph.update_mapping``); XLA then
updates them in place. Everything else is PyTensor's JAX linker, unchanged.

Donation is skipped where it is unsafe:

- a static argument (a scalar shape input, `JAXLinker.scalar_shape_inputs`) or an
  input that is not a tensor;
- an input the function also returns as an output (or whose update is itself);
- at call time, an argument whose array is also passed in another position (two
  shared variables holding one array, set with ``borrow=True``): JAX refuses to
  donate a buffer that is used twice in a call, so that argument is copied first
  and the copy is donated.

It also casts each node's result to the dtype the graph declares. PyTensor's JAX
dispatch of a sum with a wider accumulator returns the accumulator's dtype (float64
for a float32 sum); a float64 increment of a float32 table then makes XLA convert
the whole table to float64 and back, which costs as much as the copy donation
saves. The C and Numba backends store such a sum at its declared dtype too.

The caveat: after a call, the array a donated shared variable held before it is
deleted. A value taken earlier with ``get_value(borrow=True)`` raises
``RuntimeError: Array has been deleted`` when read; it never changes silently.
``get_value()`` (a copy) is unaffected.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from pytensor.link.jax.linker import JAXLinker
from pytensor.tensor.type import TensorType


def donated_inputs(fgraph: Any, static: Sequence[int] = ()) -> tuple[int, ...]:
    """Positions of `fgraph`'s inputs whose buffers a donating call may consume.

    The inputs replaced by an update, less static arguments, non-tensors, and inputs
    that are themselves an output of the graph.
    """
    mapping = getattr(fgraph, "update_mapping", None) or {}
    outputs = set(fgraph.outputs)
    positions = []
    for i in sorted(set(mapping.values())):
        inp = fgraph.inputs[i]
        if i in static or not isinstance(inp.type, TensorType) or inp in outputs:
            continue
        positions.append(i)
    return tuple(positions)


def _typed(op: Any, node: Any = None, **kwargs: Any) -> Any:
    """`jax_funcify` of `node`, with each result cast to its output's declared dtype."""
    from pytensor.link.jax.dispatch import jax_funcify

    fn = jax_funcify(op, node=node, **kwargs)
    if node is None:
        return fn
    dtypes = [getattr(out.type, "dtype", None) for out in node.outputs]

    def cast(value: Any, dtype: str | None) -> Any:
        if dtype is None or getattr(value, "dtype", dtype) == dtype:
            return value
        return value.astype(dtype)

    if len(dtypes) == 1:

        def typed(*args: Any) -> Any:
            return cast(fn(*args), dtypes[0])

    else:

        def typed(*args: Any) -> Any:
            return (
                type(out)(map(cast, out, dtypes))
                if isinstance(out := fn(*args), list | tuple)
                else out
            )

    return typed


def _buffer(arg: Any) -> Any:
    """A key that is equal for two arguments holding the same buffer."""
    try:
        return ("jax", arg.unsafe_buffer_pointer())
    except Exception:
        return ("id", id(arg))


class DonatingJAXLinker(JAXLinker):  # type: ignore[misc]
    """`JAXLinker` that donates the buffers of updated shared variables to XLA.

    Use it through `subsetgrad.backends.backend_mode("JAX")`. The donated inputs of
    the last compiled function are in `donated`.
    """

    donated: tuple[int, ...] = ()

    def fgraph_convert(
        self, fgraph: Any, input_storage: Any, storage_map: Any, **kwargs: Any
    ) -> Any:
        from pytensor.link.jax.dispatch import jax_typify
        from pytensor.link.utils import fgraph_to_python

        # The parent replaces shared RNG inputs and finds the static shape inputs;
        # the graph is then converted again with the dtype casts.
        super().fgraph_convert(fgraph, input_storage, storage_map, **kwargs)
        return fgraph_to_python(
            fgraph,
            _typed,
            type_conversion_fn=jax_typify,
            fgraph_name="jax_funcified_fgraph",
            input_storage=input_storage,
            storage_map=storage_map,
            **kwargs,
        )

    def jit_compile(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        import jax
        import jax.numpy as jnp

        static = tuple(self.scalar_shape_inputs)
        donated = donated_inputs(self.fgraph, static)
        self.donated = donated
        if not donated:
            return super().jit_compile(fn)  # type: ignore[no-any-return]

        jit_fn = jax.jit(fn, static_argnums=static, donate_argnums=donated)
        static_set = set(static)

        def call(*args: Any) -> Any:
            if static_set:
                args = tuple(int(a) if i in static_set else a for i, a in enumerate(args))
            # A buffer passed twice cannot be donated: donate a copy of it instead.
            seen: dict[Any, int] = {}
            for i, arg in enumerate(args):
                if i not in static_set:
                    key = _buffer(arg)
                    seen[key] = seen.get(key, 0) + 1
            if any(seen[_buffer(args[i])] > 1 for i in donated):
                args = tuple(
                    jnp.array(arg, copy=True) if i in donated and seen[_buffer(arg)] > 1 else arg
                    for i, arg in enumerate(args)
                )
            return jit_fn(*args)

        return call
