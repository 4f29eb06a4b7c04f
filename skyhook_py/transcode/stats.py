"""Per-column statistics of a partition (the JSON of formats/README.md "Statistics").

For every column: ``min``/``max`` ignoring NaN (absent when there is no non-NaN
value), ``null_count``, ``nan_count``; for a list column the values are over all
elements and ``min_length``/``max_length`` over the lists.  The planner prunes
partitions with them; nothing here reads or writes storage.
"""

from __future__ import annotations

import json
import math

import pyarrow as pa
import pyarrow.compute as pc

STATS_VERSION = 1
XATTR = "skyhook.stats"


def _is_list(t: pa.DataType) -> bool:
    return pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)


def _scalar(v):
    v = v.as_py()
    if isinstance(v, float) and math.isnan(v):
        return None
    return v


def column_stats(column: pa.ChunkedArray | pa.Array) -> dict:
    if isinstance(column, pa.Array):
        column = pa.chunked_array([column])
    out = {}
    values = column
    nulls = column.null_count
    if _is_list(column.type):
        lengths = pc.list_value_length(column)
        mm = pc.min_max(lengths)
        out["min_length"] = mm["min"].as_py() if mm["min"].is_valid else 0
        out["max_length"] = mm["max"].as_py() if mm["max"].is_valid else 0
        values = pc.list_flatten(column)
        nulls += values.null_count
    nan_count = 0
    if pa.types.is_floating(values.type):
        nan_count = pc.sum(pc.is_nan(values)).as_py() or 0
    if len(values) - values.null_count - nan_count > 0:
        mm = pc.min_max(values)  # Arrow's min_max skips nulls and NaN
        lo, hi = _scalar(mm["min"]), _scalar(mm["max"])
        if lo is not None:
            out["min"], out["max"] = lo, hi
    out["null_count"] = nulls
    out["nan_count"] = nan_count
    # uncompressed Arrow bytes: the planner weighs pushdown against a plain read with it
    out["bytes"] = column.nbytes
    return out


def table_stats(table: pa.Table) -> dict:
    return {"version": STATS_VERSION, "rows": table.num_rows,
            "columns": {name: column_stats(table.column(name)) for name in table.column_names}}


def to_json(stats: dict) -> bytes:
    # +-Infinity may be a float column's min or max: JSON extension tokens, as Python reads them
    return json.dumps(stats, separators=(",", ":"), allow_nan=True).encode()
