"""The planner: which partitions a query must touch, which rows of each, and how.

It prunes partitions by the query's event range and by the partition statistics
(a partition whose min/max prove that the cut is false for every event is
skipped), and chooses per partition between pushdown (the object class does the
work in the OSD) and a plain read (the client reads the object and evaluates the
query with the reference evaluator).  It reads no data and calls no OSD.
"""

from __future__ import annotations

import dataclasses
import enum
import math

import numpy as np

from ..storage import pieces
from . import ir
from .ir import Call, Column, Literal, Op


class Mode(str, enum.Enum):
    PUSHDOWN = "pushdown"
    READ = "read"


@dataclasses.dataclass(frozen=True)
class Task:
    partition: int      # index in manifest.partitions
    object: str
    event_start: int    # dataset-wide events covered by this task
    event_stop: int
    row_start: int      # rows of the partition object
    row_stop: int
    bytes: int          # size of the partition object
    mode: Mode
    partition_rows: int = -1   # rows of the whole partition object (-1: unknown)


@dataclasses.dataclass
class Plan:
    tasks: list
    pruned: int
    events_total: int


def plan(manifest, query: ir.Query, pushdown: str = "auto") -> Plan:
    """pushdown: "on", "off" or "auto" (plain reads where pushdown can only add work).

    Vectorised over the manifest's partition table and the statistics of the columns
    the cut references (nothing else of the manifest is read)."""
    if pushdown not in ("on", "off", "auto"):
        raise ValueError(f"pushdown must be 'on', 'off' or 'auto', got {pushdown!r}")
    start = query.event_start
    stop = query.event_stop if query.event_stop is not None else math.inf
    mode = _choose_mode(manifest, query, pushdown)
    t = manifest.partition_table()
    es, ee = t["event_start"], t["event_stop"]
    lo = np.maximum(es, start)
    hi = np.minimum(ee, stop) if stop != math.inf else ee
    in_range = lo < hi
    events_total = int((hi - lo)[in_range].sum())
    keep = in_range
    if query.where is not None and len(es):
        stats = _ColumnStats(manifest)
        keep = keep & (_vtruth(query.where, stats, len(es)) != FALSE)
    idx = np.flatnonzero(keep)
    objects, sizes = t["object"], t["bytes"]
    tasks = [Task(int(i), str(objects[i]), int(lo[i]), int(hi[i]), int(lo[i] - es[i]),
                  int(hi[i] - es[i]), int(sizes[i]), mode, int(ee[i] - es[i])) for i in idx]
    return Plan(tasks, len(es) - len(idx), events_total)


# With at least this fraction of a partition's bytes needed, a plain read of the whole
# object beats pushdown: the OSD would decode, filter and re-encode almost all of the
# object to save little on the wire.  Measured (benchmarks/results/2026-11-22-small,
# loopback, coalesced reads in the class): pushdown wins at 10 and at 100 of 148
# columns at every selectivity (28-82 ms against 125-135 ms for our plain read), and
# loses only when every column is read (demo, 28 of 28 columns, 17 % selected:
# 78 ms pushdown, 64 ms plain read).
READ_FRACTION = 0.9


def _choose_mode(manifest, query: ir.Query, pushdown: str) -> Mode:
    if pushdown == "on":
        return Mode.PUSHDOWN
    if pushdown == "off":
        return Mode.READ
    # auto.  Aggregations reply with a few numbers, and a limit lets the OSD stop
    # early: pushdown.  Otherwise weigh the bytes the query needs.
    if query.aggregations or query.limit is not None:
        return Mode.PUSHDOWN
    return Mode.READ if needed_fraction(manifest, query) >= READ_FRACTION else Mode.PUSHDOWN


def needed_fraction(manifest, query: ir.Query) -> float:
    """The fraction of the dataset's bytes in the columns the query reads (by the
    statistics' per-column sizes; by column count where a partition has none)."""
    needed = query.columns()
    sizes = manifest.column_bytes()
    if sizes:
        total = sum(sizes.values())
        if total > 0:
            return sum(v for k, v in sizes.items() if k in needed) / total
    return len(needed) / max(1, len(manifest.column_types()))


# -- pruning by statistics: a three-valued abstract interpretation, vectorised -------
# _vtruth gives, per partition, FALSE when the cut is false (or null) for every event
# of the partition, TRUE when it is true for every event, UNKNOWN when it cannot tell.
# _vinterval bounds an expression per partition: (low, high, may_be_nan, known).
# Statistics per column: pieces.STAT_FIELDS rows (min, max, null_count, nan_count,
# bytes, min_length, max_length), NaN where absent.
FALSE, TRUE, UNKNOWN = 0, 1, 2


class _ColumnStats:
    def __init__(self, manifest):
        self.manifest = manifest
        self._got = {}

    def get(self, name):
        if name not in self._got:
            self._got[name] = self.manifest.column_stats(name)
        return self._got[name]

    def value_dtype(self, expr) -> np.dtype | None:
        """The NumPy type of ``expr``'s values (list elements for a collection), where
        ``_vinterval`` bounds it; None when unknown."""
        import pyarrow as pa

        if isinstance(expr, Column):
            try:
                t = self.manifest.schema.field(expr.name).type
            except (KeyError, AttributeError):
                return None
            while pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
                t = t.value_type
            try:
                return np.dtype(t.to_pandas_dtype())
            except (NotImplementedError, TypeError):
                return None
        if isinstance(expr, Literal) and not isinstance(expr.value, bool):
            return np.dtype(np.float64)   # a Python number: negated exactly, no wrap
        if isinstance(expr, Call) and expr.op == Op.Count:
            return np.dtype(np.int64)
        if isinstance(expr, Call) and expr.op == Op.Neg:
            return self.value_dtype(expr.args[0])
        return None


def _vtruth(expr, stats, n):
    if isinstance(expr, Literal) and isinstance(expr.value, bool):
        return np.full(n, TRUE if expr.value else FALSE, np.int8)
    unknown = np.full(n, UNKNOWN, np.int8)
    if not isinstance(expr, Call):
        return unknown
    op = expr.op
    if op in (Op.And, Op.Or):
        a, b = (_vtruth(x, stats, n) for x in expr.args)
        out = unknown.copy()
        if op == Op.And:
            out[(a == TRUE) & (b == TRUE)] = TRUE
            out[(a == FALSE) | (b == FALSE)] = FALSE
        else:
            out[(a == FALSE) & (b == FALSE)] = FALSE
            out[(a == TRUE) | (b == TRUE)] = TRUE
        return out
    if op == Op.Not:
        a = _vtruth(expr.args[0], stats, n)
        out = unknown.copy()
        out[a == TRUE] = FALSE
        out[a == FALSE] = TRUE
        return out
    if op in ir.COMPARISON:
        return _vcompare(op, _vinterval(expr.args[0], stats, n), _vinterval(expr.args[1], stats, n), n)
    if op == Op.Any:
        a = _vtruth(expr.args[0], stats, n)
        out = unknown.copy()
        out[a == FALSE] = FALSE
        return out
    return unknown


def _vinterval(expr, stats, n):
    """(low, high, may_be_nan, known) arrays, or None when unknown for all."""
    if isinstance(expr, Literal) and not isinstance(expr.value, bool):
        # an integer past 2^53 has no float64: bound it by the floats either side (as the
        # statistics are), or a rounded literal could prove false what is true
        lo, hi = pieces.lower_bound(expr.value), pieces.upper_bound(expr.value)
        return (np.full(n, lo), np.full(n, hi), np.full(n, math.isnan(lo)), np.ones(n, bool))
    if isinstance(expr, Column):
        s = stats.get(expr.name)
        if s is None:
            return None
        lo, hi = s[0], s[1]
        known = ~(np.isnan(lo) | np.isnan(hi))
        return (lo, hi, s[3] > 0, known)   # as _interval: an absent nan_count counts as 0
    if isinstance(expr, Call) and expr.op == Op.Count and isinstance(expr.args[0], Column):
        s = stats.get(expr.args[0].name)
        if s is None:
            return None
        lo, hi = s[5], s[6]
        return (lo, hi, np.zeros(n, bool), ~(np.isnan(lo) | np.isnan(hi)))
    if isinstance(expr, Call) and expr.op == Op.Neg:
        i = _vinterval(expr.args[0], stats, n)
        t = stats.value_dtype(expr.args[0])
        if i is None or t is None or t.kind in "ub":
            return None   # -u wraps modulo 2**bits (NumPy): [-hi, -lo] would be wrong
        lo, hi, nan, known = i
        if t.kind == "i":   # -INT_MIN wraps to INT_MIN: bounded only when the min is above it
            known = known & (lo > float(np.iinfo(t).min))
        return (-hi, -lo, nan, known)
    return None


def _vcompare(op, a, b, n):
    out = np.full(n, UNKNOWN, np.int8)
    if a is None or b is None:
        return out
    (alo, ahi, anan, ak), (blo, bhi, bnan, bk) = a, b
    known = ak & bk
    ok = known & ~(anan | bnan)
    with np.errstate(invalid="ignore"):
        if op == Op.Gt:
            false, true = ahi <= blo, alo > bhi
        elif op == Op.Ge:
            false, true = ahi < blo, alo >= bhi
        elif op == Op.Lt:
            false, true = alo >= bhi, ahi < blo
        elif op == Op.Le:
            false, true = alo > bhi, ahi <= blo
        elif op == Op.Eq:
            false, true = (ahi < blo) | (bhi < alo), np.zeros(n, bool)
        else:
            return out
    out[ok & true] = TRUE
    out[known & false] = FALSE
    return out
