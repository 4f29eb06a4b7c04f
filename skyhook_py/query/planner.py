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


@dataclasses.dataclass
class Plan:
    tasks: list
    pruned: int
    events_total: int


def plan(manifest, query: ir.Query, pushdown: str = "auto") -> Plan:
    """pushdown: "on", "off" or "auto" (plain reads where pushdown can only add work)."""
    if pushdown not in ("on", "off", "auto"):
        raise ValueError(f"pushdown must be 'on', 'off' or 'auto', got {pushdown!r}")
    start = query.event_start
    stop = query.event_stop if query.event_stop is not None else math.inf
    mode = _choose_mode(manifest, query, pushdown)
    tasks, pruned, events_total = [], 0, 0
    for i, p in enumerate(manifest.partitions):
        lo, hi = max(p.event_start, start), min(p.event_stop, stop)
        if lo >= hi:
            pruned += 1
            continue
        events_total += hi - lo
        if query.where is not None and p.stats and _truth(query.where, p.stats) is False:
            pruned += 1
            continue
        tasks.append(Task(i, p.object, lo, hi, lo - p.event_start, hi - p.event_start, p.bytes, mode))
    return Plan(tasks, pruned, events_total)


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
    per_partition = [((p.stats or {}).get("columns") or {}) for p in manifest.partitions]
    if per_partition and all(c and all("bytes" in s for s in c.values()) for c in per_partition):
        sizes: dict[str, int] = {}
        for cols in per_partition:
            for name, s in cols.items():
                sizes[name] = sizes.get(name, 0) + int(s["bytes"])
        total = sum(sizes.values())
        if total > 0:
            return sum(v for k, v in sizes.items() if k in needed) / total
    return len(needed) / max(1, len(manifest.column_types()))


# -- pruning by statistics: a three-valued abstract interpretation -----------------
# _truth returns False when the cut is false (or null) for every event of the
# partition, True when it is true for every event, None when it cannot tell.
# _interval returns (low, high, may_be_nan) bounding an expression, or None.

def _truth(expr, stats):
    cols = stats.get("columns", {})
    if isinstance(expr, Literal) and isinstance(expr.value, bool):
        return expr.value
    if not isinstance(expr, Call):
        return None
    op = expr.op
    if op == Op.And:
        a, b = (_truth(x, stats) for x in expr.args)
        if a is False or b is False:
            return False
        return True if (a is True and b is True) else None
    if op == Op.Or:
        a, b = (_truth(x, stats) for x in expr.args)
        if a is True or b is True:
            return True
        return False if (a is False and b is False) else None
    if op == Op.Not:
        a = _truth(expr.args[0], stats)
        return None if a is None else not a
    if op in ir.COMPARISON:
        return _compare(op, _interval(expr.args[0], cols), _interval(expr.args[1], cols))
    if op == Op.Any:
        # any(x) is false where x is false for every element of every event
        return False if _truth(expr.args[0], stats) is False else None
    return None


def _interval(expr, cols):
    if isinstance(expr, Literal) and not isinstance(expr.value, bool):
        v = float(expr.value)
        return (v, v, math.isnan(v))
    if isinstance(expr, Column):
        s = cols.get(expr.name)
        if not s or s.get("min") is None or s.get("max") is None:
            return None
        return (float(s["min"]), float(s["max"]), bool(s.get("nan_count", 0)))
    if isinstance(expr, Call) and expr.op == Op.Count and isinstance(expr.args[0], Column):
        s = cols.get(expr.args[0].name)
        if not s or "min_length" not in s:
            return None
        return (float(s["min_length"]), float(s["max_length"]), False)
    if isinstance(expr, Call) and expr.op == Op.Neg:
        i = _interval(expr.args[0], cols)
        return None if i is None else (-i[1], -i[0], i[2])
    return None


def _compare(op, a, b):
    if a is None or b is None:
        return None
    (alo, ahi, anan), (blo, bhi, bnan) = a, b
    nan = anan or bnan
    # NaN compares false, so "false for all" holds whatever NaNs there are,
    # while "true for all" needs no NaN
    if op == Op.Gt:
        if ahi <= blo:
            return False
        return True if (alo > bhi and not nan) else None
    if op == Op.Ge:
        if ahi < blo:
            return False
        return True if (alo >= bhi and not nan) else None
    if op == Op.Lt:
        if alo >= bhi:
            return False
        return True if (ahi < blo and not nan) else None
    if op == Op.Le:
        if alo > bhi:
            return False
        return True if (ahi <= blo and not nan) else None
    if op == Op.Eq:
        if ahi < blo or bhi < alo:
            return False
        return None
    return None
