"""Compiled row increments of a matrix (or N-D) table for PyTensor's C backend.

PyTensor's `AdvancedIncSubtensor` has C code only for a 1-D target; ``W[idx].inc(v)``
on a matrix falls back to `perform`, which calls ``np.add.at`` from Python.
`AdvancedIncRows` is the same op (a subclass with the same props and the same
`perform`) with C code for the leading-axis form ``x[idx] (+)= y``, any table rank,
any index rank. `specialize_rows_c` swaps it in for the stock op; `c_rows_db`
packages that rewrite for an optdb entry, tagged "cxx_only" so that modes whose
linker runs no C code (NUMBA, JAX, PYTORCH, and the VM without a compiler) leave
the stock op in place.

Semantics are NumPy's, exactly: an increment sums repeated indices (like
``np.add.at``), a set keeps the last write, a negative index wraps once, an index
out of range raises IndexError before anything is written, and the arithmetic is
``x = x_dtype(x + y)`` in the promoted type of the two, as the ufunc does. Nodes the
C code does not cover (float16, complex or integer tables, `ignore_duplicates`,
other index forms, a `y` of another rank) are left to the stock op.
"""

from __future__ import annotations

from typing import Any

from pytensor.graph.rewriting.basic import dfs_rewriter, node_rewriter
from pytensor.graph.rewriting.db import SequenceDB
from pytensor.tensor.subtensor import AdvancedIncSubtensor

_FLOATS = ("float32", "float64")
# Signed integers and unsigned ones that fit in npy_intp (uint64 does not).
_INDEX_DTYPES = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32")


def _covered(node: Any) -> bool:
    """Whether the C code of `AdvancedIncRows` implements `node` (an increment node)."""
    op = node.op
    if op.idx_list != (0,) or op.ignore_duplicates or len(node.inputs) != 3:
        return False
    x, y, idx = node.inputs
    return bool(
        x.type.ndim >= 2
        and x.type.dtype in _FLOATS
        and y.type.dtype in _FLOATS
        and idx.type.ndim >= 1
        and idx.type.dtype in _INDEX_DTYPES
        and y.type.ndim == idx.type.ndim + x.type.ndim - 1
    )


class AdvancedIncRows(AdvancedIncSubtensor):  # type: ignore[misc]
    """`AdvancedIncSubtensor` of whole rows, ``x[idx] (+)= y``, in C for any table rank.

    Selected by `specialize_rows_c` on the C backend; other backends dispatch it as
    the stock op (it is a subclass with the same props and `perform`).
    """

    def c_code(self, node: Any, name: str, inputs: list[str], outputs: list[str], sub: Any) -> str:
        if not _covered(node):
            # Anything else runs the stock op's code (C for 1-D tables, else perform).
            return str(super().c_code(node, name, inputs, outputs, sub))
        x_, y_, idx_ = node.inputs
        x, y, idx = inputs
        (out,) = outputs
        fail = sub["fail"]
        ni = idx_.type.ndim
        nr = x_.type.ndim - 1  # trailing (row) dimensions
        out_t = node.outputs[0].type.dtype_specs()[1]
        y_t = y_.type.dtype_specs()[1]
        idx_t = idx_.type.dtype_specs()[1]
        assign = "=" if self.set_instead_of_inc else "+="
        # A `y` dimension of length 1 broadcasts when its type says so. For a single
        # vector index the stock op refuses runtime broadcasting; otherwise NumPy's
        # add.at broadcasts it.
        y_bcast = y_.type.broadcastable
        strict = ni == 1
        bcast_ok = ", ".join(str(int(b or not strict)) for b in y_bcast)
        runtime_msg = self._runtime_broadcast_error_msg

        # Nested loops over the index dims (k walks the validated rows in C order),
        # then over the row dims; the last row dim is a tight loop.
        lines = []
        for d in range(ni):
            lines.append(f"for (npy_intp i{d} = 0; i{d} < PyArray_DIMS({idx})[{d}]; i{d}++) {{")
        y_row = " + ".join(f"i{d} * ys[{d}]" for d in range(ni))
        lines.append("char* orow = out_base + rows[k++] * os[0];")
        lines.append(f"const char* yrow = y_base + {y_row};")
        for r in range(nr - 1):
            lines.append(f"for (npy_intp j{r} = 0; j{r} < PyArray_DIMS({out})[{r + 1}]; j{r}++) {{")
        o_off = " + ".join(["0", *(f"j{r} * os[{r + 1}]" for r in range(nr - 1))])
        y_off = " + ".join(["0", *(f"j{r} * ys[{ni + r}]" for r in range(nr - 1))])
        lines.append(
            f"""
            {out_t}* o = ({out_t}*)(orow + {o_off});
            const {y_t}* v = (const {y_t}*)(yrow + {y_off});
            if (o_unit && y_unit) {{
                for (npy_intp j = 0; j < inner; j++) o[j] {assign} v[j];
            }} else {{
                for (npy_intp j = 0; j < inner; j++)
                    *({out_t}*)((char*)o + j * o_step) {assign}
                        *(const {y_t}*)((const char*)v + j * y_step);
            }}"""
        )
        lines.append("}" * (nr - 1 + ni))
        scatter = "\n".join(lines)

        if self.inplace:
            take_out = f"""
            if ({out} != {x}) {{
                Py_XDECREF({out});
                Py_INCREF({x});
                {out} = {x};
            }}"""
        else:
            take_out = f"""
            Py_XDECREF({out});
            {out} = {self.copy_of_x(x)};
            if (!{out}) {{ {fail} }}"""

        return f"""
        {take_out}
        {{
            const int ni = {ni};
            const int ny = {ni + nr};
            const int bcast_ok[{ni + nr}] = {{{bcast_ok}}};
            npy_intp target[{ni + nr}];
            npy_intp ys[{ni + nr}];
            npy_intp os[{nr + 1}];
            if (PyArray_NDIM({y}) != ny || PyArray_NDIM({idx}) != ni
                    || PyArray_NDIM({out}) != {nr + 1}) {{
                PyErr_SetString(PyExc_ValueError, "AdvancedIncRows: unexpected ranks");
                {fail}
            }}
            for (int d = 0; d < ni; d++) target[d] = PyArray_DIMS({idx})[d];
            for (int d = 0; d < {nr}; d++) target[ni + d] = PyArray_DIMS({out})[d + 1];
            for (int d = 0; d < {nr + 1}; d++) os[d] = PyArray_STRIDES({out})[d];
            for (int d = 0; d < ny; d++) {{
                npy_intp yd = PyArray_DIMS({y})[d];
                if (yd == target[d]) {{
                    ys[d] = PyArray_STRIDES({y})[d];
                }} else if (yd == 1 && bcast_ok[d]) {{
                    ys[d] = 0;
                }} else if (yd == 1) {{
                    PyErr_SetString(PyExc_ValueError, "{runtime_msg}");
                    {fail}
                }} else {{
                    PyErr_Format(PyExc_ValueError,
                        "shape mismatch: value array of shape %lld along axis %d could not"
                        " be broadcast to indexing result of shape %lld",
                        (long long)yd, d, (long long)target[d]);
                    {fail}
                }}
            }}

            npy_intp n = PyArray_SIZE({idx});
            npy_intp shape0 = PyArray_DIMS({out})[0];
            npy_intp* rows = (npy_intp*)malloc(sizeof(npy_intp) * (n > 0 ? n : 1));
            if (rows == NULL) {{
                PyErr_NoMemory();
                {fail}
            }}
            /* First pass: wrap and check every index, so that an IndexError leaves
               the table untouched (the op may run in place). */
            {{
                npy_intp ctr[{ni}];
                const char* p = PyArray_BYTES({idx});
                for (int d = 0; d < ni; d++) ctr[d] = 0;
                for (npy_intp k = 0; k < n; k++) {{
                    npy_intp raw = (npy_intp)*(const {idx_t}*)p;
                    npy_intp r = raw < 0 ? raw + shape0 : raw;
                    if (r < 0 || r >= shape0) {{
                        PyErr_Format(PyExc_IndexError,
                            "index %lld is out of bounds for axis 0 with size %lld",
                            (long long)raw, (long long)shape0);
                        free(rows);
                        {fail}
                    }}
                    rows[k] = r;
                    for (int d = ni - 1; d >= 0; d--) {{
                        p += PyArray_STRIDES({idx})[d];
                        if (++ctr[d] < PyArray_DIMS({idx})[d]) break;
                        p -= PyArray_STRIDES({idx})[d] * PyArray_DIMS({idx})[d];
                        ctr[d] = 0;
                    }}
                }}
            }}
            /* Second pass: the writes, in index order (repeats sum, or the last wins). */
            if (n > 0) {{
                char* out_base = PyArray_BYTES({out});
                const char* y_base = PyArray_BYTES({y});
                npy_intp inner = target[ny - 1];
                npy_intp o_step = os[{nr}];
                npy_intp y_step = ys[ny - 1];
                int o_unit = o_step == (npy_intp)sizeof({out_t});
                int y_unit = y_step == (npy_intp)sizeof({y_t});
                npy_intp k = 0;
                {scatter}
            }}
            free(rows);
        }}
        """

    def c_code_cache_version(self) -> tuple[int, ...]:
        return (1,)


@node_rewriter([AdvancedIncSubtensor])  # type: ignore[untyped-decorator]
def specialize_rows_c(fgraph: Any, node: Any) -> list[Any] | None:
    """Replace a whole-row `AdvancedIncSubtensor` the C code covers by `AdvancedIncRows`."""
    op = node.op
    if type(op) is not AdvancedIncSubtensor or not _covered(node):
        return None
    new_op = AdvancedIncRows(
        op.idx_list,
        inplace=op.inplace,
        set_instead_of_inc=op.set_instead_of_inc,
        ignore_duplicates=op.ignore_duplicates,
    )
    return list(new_op.make_node(*node.inputs).outputs)


def c_rows_db(*tags: str) -> SequenceDB:
    """An optdb entry running `specialize_rows_c`, selected by `tags` unless C is excluded.

    The rewrite inside is tagged "cxx_only" as well as `tags`: the query that selects
    the entry also queries it, so a linker that excludes "cxx_only" gets an empty
    pass. Register the entry after specialize and before the in-place passes (which
    keep the op's class), e.g. at position 49.7.
    """
    db = SequenceDB()
    db.register(
        "specialize_rows_c",
        dfs_rewriter(specialize_rows_c),
        *tags,
        "cxx_only",
        position=0,
    )
    return db
