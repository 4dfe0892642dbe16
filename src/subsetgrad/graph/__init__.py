"""The core matcher, shared by the rewrite, the optimizer policies and the lint.

Split by topic, each module importing only those before it:

- `ops`: predicates on ops and variables (is this a lookup, a scatter into zeros,
  are these indices provably unique?);
- `index`: `GraphIndex`, a graph's nodes and clients built once, and walks over it;
- `linear`: the linear decomposition ``x == dense + sum_k zeros[idx_k].inc(v_k)``;
- `algebra`: the zero-gradient algebra (is an update the identity where g = 0?);
- `rows`: row groups, a table and its state advanced elementwise from a lookup
  gradient, and the row step that computes them for the looked-up rows;
- `build`: the builder of subset updates from a decomposition;
- `naming`: how tables are named in messages.
"""

from __future__ import annotations

from subsetgrad.graph.algebra import identity_at_zero, scatters_behind, token
from subsetgrad.graph.build import build_subset_update
from subsetgrad.graph.index import (
    GraphIndex,
    ancestors,
    depends_on,
    downstream,
    scatter_dependent,
    source_masks,
)
from subsetgrad.graph.linear import (
    Decomposition,
    Expr,
    Lazy,
    Linear,
    Scatter,
    advanced_axes,
    decompose_graph,
    gather,
    materialize,
    strip_casts,
)
from subsetgrad.graph.naming import describe, megabytes, shape_of, shape_text, table_bytes
from subsetgrad.graph.ops import (
    FLOAT_DTYPES,
    INC_OPS,
    LOOKUP_OPS,
    Index,
    axes_covered,
    has_increment,
    index_has_mask,
    index_of,
    indices_provably_unique,
    is_bool_index,
    is_inc,
    is_lookup,
    is_output_node,
    is_scatter_into_zeros,
    is_subclass,
    is_term,
    is_zero,
    isa,
    linear_kind,
    linear_kind_of,
    row_local,
    same_table,
    strip_wrappers,
    table_key,
    tag_value,
    value_inputs,
)
from subsetgrad.graph.rows import (
    Analysis,
    RowGroup,
    Rows,
    RowUpdateError,
    analyse,
    changed_at_zero,
    linear_without_state,
    mark_equal_writes,
    row_index,
    row_values,
    touched_rows,
    write_rows,
    writes_equal_at_repeats,
)

__all__ = [
    "FLOAT_DTYPES",
    "INC_OPS",
    "LOOKUP_OPS",
    "Analysis",
    "Decomposition",
    "Expr",
    "GraphIndex",
    "Index",
    "Lazy",
    "Linear",
    "RowGroup",
    "RowUpdateError",
    "Rows",
    "Scatter",
    "advanced_axes",
    "analyse",
    "ancestors",
    "axes_covered",
    "build_subset_update",
    "changed_at_zero",
    "decompose_graph",
    "depends_on",
    "describe",
    "downstream",
    "gather",
    "has_increment",
    "identity_at_zero",
    "index_has_mask",
    "index_of",
    "indices_provably_unique",
    "is_bool_index",
    "is_inc",
    "is_lookup",
    "is_output_node",
    "is_scatter_into_zeros",
    "is_subclass",
    "is_term",
    "is_zero",
    "isa",
    "linear_kind",
    "linear_kind_of",
    "linear_without_state",
    "mark_equal_writes",
    "materialize",
    "megabytes",
    "row_index",
    "row_local",
    "row_values",
    "same_table",
    "scatter_dependent",
    "scatters_behind",
    "shape_of",
    "shape_text",
    "source_masks",
    "strip_casts",
    "strip_wrappers",
    "table_bytes",
    "table_key",
    "tag_value",
    "token",
    "touched_rows",
    "value_inputs",
    "write_rows",
    "writes_equal_at_repeats",
]
