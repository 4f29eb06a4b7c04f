"""The planner alone: event-range pruning, statistics pruning, the pushdown choice.

Soundness of statistics pruning is checked against brute force: a partition may
only be pruned if the cut is false for every event in it.
"""

import math

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from skyhook_py.query import ir, planner
from skyhook_py.query.ir import col
from skyhook_py.storage.manifest import Manifest, Partition


ARROW_SCHEMA = pa.schema([("MET_pt", pa.float32()), ("nMuon", pa.uint32()), ("Muon_pt", pa.list_(pa.float32())),
                          ("run", pa.int32())])
SCHEMA = {"MET_pt": ir.ColumnType("float", False), "nMuon": ir.ColumnType("uint", False),
          "Muon_pt": ir.ColumnType("float", True), "run": ir.ColumnType("int", False)}


def stats_of(values: dict) -> dict:
    cols = {}
    for name, v in values.items():
        if v and isinstance(v[0], list):  # a collection
            flat = [x for row in v for x in row]
            finite = [x for x in flat if not math.isnan(x)]
            cols[name] = {"min": min(finite) if finite else None, "max": max(finite) if finite else None,
                          "null_count": 0, "nan_count": len(flat) - len(finite),
                          "min_length": min(map(len, v)), "max_length": max(map(len, v))}
        else:
            arr = np.asarray(v, dtype=float)
            finite = arr[~np.isnan(arr)]
            cols[name] = {"min": float(finite.min()) if finite.size else None,
                          "max": float(finite.max()) if finite.size else None,
                          "null_count": 0, "nan_count": int(np.isnan(arr).sum())}
    n = len(next(iter(values.values())))
    return {"version": 1, "rows": n, "columns": cols}


def manifest_of(parts_values):
    parts, start = [], 0
    for i, vals in enumerate(parts_values):
        n = len(vals["MET_pt"])
        parts.append(Partition(f"part.x.w.{i:06d}", start, start + n, 1000, source=0, entry_start=start,
                               entry_stop=start + n, stats=stats_of(vals)))
        start += n
    return Manifest("x", 1, ARROW_SCHEMA, parts)   # in memory, as the writers build it


def test_event_range_prunes_and_sets_rows():
    m = manifest_of([{"MET_pt": [1.0] * 10, "Muon_pt": [[1.0]] * 10}] * 3)
    q = ir.Query(outputs=(("MET_pt", col("MET_pt")),), event_start=15, event_stop=22)
    p = planner.plan(m, q, "on")
    assert [(t.partition, t.row_start, t.row_stop) for t in p.tasks] == [(1, 5, 10), (2, 0, 2)]
    assert p.pruned == 1 and p.events_total == 7


def test_stats_prune_scalar_cut():
    m = manifest_of([{"MET_pt": [1.0, 5.0], "Muon_pt": [[1.0], []]},
                     {"MET_pt": [50.0, 60.0], "Muon_pt": [[30.0], [2.0]]}])
    q = ir.Query(outputs=(("MET_pt", col("MET_pt")),), where=col("MET_pt") > 40)
    p = planner.plan(m, q, "on")
    assert [t.partition for t in p.tasks] == [1]
    assert p.pruned == 1


def test_stats_prune_collection_any_and_count():
    m = manifest_of([{"MET_pt": [1.0, 5.0], "Muon_pt": [[1.0], []]},
                     {"MET_pt": [50.0, 60.0], "Muon_pt": [[30.0, 4.0], [2.0]]}])
    q = ir.Query(where=ir.call(ir.Op.Any, col("Muon_pt") > 20))
    assert [t.partition for t in planner.plan(m, q, "on").tasks] == [1]
    q = ir.Query(where=ir.call(ir.Op.Count, col("Muon_pt")) >= 2)
    assert [t.partition for t in planner.plan(m, q, "on").tasks] == [1]


def test_auto_weighs_the_bytes_a_query_needs():
    m = manifest_of([{"MET_pt": [1.0], "Muon_pt": [[1.0]]}])
    everything = ir.Query(outputs=tuple((c, col(c)) for c in SCHEMA))
    assert planner.plan(m, everything, "auto").tasks[0].mode == planner.Mode.READ
    with_cut = ir.Query(outputs=everything.outputs, where=col("MET_pt") > 0.5)
    assert planner.plan(m, with_cut, "auto").tasks[0].mode == planner.Mode.READ
    assert planner.plan(m, with_cut, "on").tasks[0].mode == planner.Mode.PUSHDOWN
    few = ir.Query(outputs=(("MET_pt", col("MET_pt")),))
    assert planner.plan(m, few, "auto").tasks[0].mode == planner.Mode.PUSHDOWN
    assert planner.plan(m, few, "off").tasks[0].mode == planner.Mode.READ
    histogram = ir.Query(aggregations=(ir.Aggregation(ir.AggKind.Sum, "s", x=col("MET_pt")),))
    assert planner.plan(m, histogram, "auto").tasks[0].mode == planner.Mode.PUSHDOWN
    with pytest.raises(ValueError, match="pushdown must be"):
        planner.plan(m, few, "sometimes")


def test_needed_fraction_uses_column_bytes():
    m = manifest_of([{"MET_pt": [1.0], "Muon_pt": [[1.0]]}])
    for p in m.partitions:
        p.stats["columns"]["MET_pt"]["bytes"] = 100
        p.stats["columns"]["Muon_pt"]["bytes"] = 900
    assert planner.needed_fraction(m, ir.Query(outputs=(("m", col("Muon_pt")),))) == 0.9
    assert planner.needed_fraction(m, ir.Query(where=col("MET_pt") > 1)) == 0.1
    # a big collection pulls the query to a plain read, a small scalar does not
    assert planner.plan(m, ir.Query(outputs=(("m", col("Muon_pt")),), where=col("MET_pt") > 0),
                        "auto").tasks[0].mode == planner.Mode.READ
    assert planner.plan(m, ir.Query(outputs=(("m", col("MET_pt")),), where=col("MET_pt") > 0),
                        "auto").tasks[0].mode == planner.Mode.PUSHDOWN


# -- soundness: pruning never drops a partition that has a matching event ------------

floats = st.one_of(st.floats(-100, 100, allow_nan=False), st.just(float("nan")))
lits = st.floats(-100, 100, allow_nan=False)
cmp_ops = st.sampled_from([ir.Op.Gt, ir.Op.Ge, ir.Op.Lt, ir.Op.Le, ir.Op.Eq, ir.Op.Ne])


@st.composite
def cuts(draw, depth=2):
    if depth == 0 or draw(st.booleans()):
        op = draw(cmp_ops)
        lhs = col("MET_pt") if draw(st.booleans()) else -col("MET_pt")
        return ir.call(op, lhs, draw(lits))
    kind = draw(st.sampled_from(["and", "or", "not"]))
    if kind == "not":
        return ~draw(cuts(depth - 1))
    a, b = draw(cuts(depth - 1)), draw(cuts(depth - 1))
    return (a & b) if kind == "and" else (a | b)


def brute(expr, met):
    """Evaluate a cut over plain numpy, as an independent oracle."""
    if isinstance(expr, ir.Column):
        return met
    if isinstance(expr, ir.Literal):
        return np.full_like(met, expr.value)
    a = [brute(x, met) for x in expr.args]
    ops = {ir.Op.Gt: np.greater, ir.Op.Ge: np.greater_equal, ir.Op.Lt: np.less,
           ir.Op.Le: np.less_equal, ir.Op.Eq: np.equal, ir.Op.Ne: np.not_equal,
           ir.Op.And: np.logical_and, ir.Op.Or: np.logical_or}
    if expr.op == ir.Op.Not:
        return ~a[0].astype(bool)
    if expr.op == ir.Op.Neg:
        return -a[0]
    return ops[expr.op](*a)


@settings(max_examples=300, deadline=None)
@given(st.lists(floats, min_size=1, max_size=8), cuts())
def test_pruning_is_sound(met, cut):
    m = manifest_of([{"MET_pt": met, "Muon_pt": [[1.0]] * len(met)}])
    p = planner.plan(m, ir.Query(where=cut), "on")
    if not p.tasks:
        assert not brute(cut, np.asarray(met, dtype=float)).any(), f"pruned a partition where {cut!r} matches"


# -- soundness with collection statistics (min/max over elements, list lengths) --------
muon_lists = st.lists(st.lists(floats, max_size=4), min_size=1, max_size=6)
small_ints = st.integers(0, 5)


@st.composite
def collection_cuts(draw, depth=2):
    if depth == 0 or draw(st.booleans()):
        kind = draw(st.sampled_from(["any", "count", "met"]))
        op = draw(cmp_ops)
        if kind == "any":
            return ir.call(ir.Op.Any, ir.call(op, col("Muon_pt"), draw(lits)))
        if kind == "count":
            return ir.call(op, ir.call(ir.Op.Count, col("Muon_pt")), ir.Literal(draw(small_ints)))
        return ir.call(op, col("MET_pt"), draw(lits))
    kind = draw(st.sampled_from(["and", "or", "not"]))
    if kind == "not":
        return ~draw(collection_cuts(depth - 1))
    a, b = draw(collection_cuts(depth - 1)), draw(collection_cuts(depth - 1))
    return (a & b) if kind == "and" else (a | b)


def brute_events(expr, met, muons):
    """Per-event truth of a cut over plain Python lists (NaN compares false)."""
    cmp = {ir.Op.Gt: lambda a, b: a > b, ir.Op.Ge: lambda a, b: a >= b, ir.Op.Lt: lambda a, b: a < b,
           ir.Op.Le: lambda a, b: a <= b, ir.Op.Eq: lambda a, b: a == b, ir.Op.Ne: lambda a, b: a != b}
    if expr.op == ir.Op.And:
        a, b = (brute_events(x, met, muons) for x in expr.args)
        return [x and y for x, y in zip(a, b)]
    if expr.op == ir.Op.Or:
        a, b = (brute_events(x, met, muons) for x in expr.args)
        return [x or y for x, y in zip(a, b)]
    if expr.op == ir.Op.Not:
        return [not x for x in brute_events(expr.args[0], met, muons)]
    if expr.op == ir.Op.Any:
        inner = expr.args[0]
        f, lit = cmp[inner.op], inner.args[1].value
        return [any(f(x, lit) for x in mu) for mu in muons]
    f = cmp[expr.op]
    lhs, rhs = expr.args
    if isinstance(lhs, ir.Call) and lhs.op == ir.Op.Count:
        return [f(len(mu), rhs.value) for mu in muons]
    return [f(m, rhs.value) for m in met]


@settings(max_examples=300, deadline=None)
@given(muon_lists, collection_cuts())
def test_pruning_is_sound_with_collection_statistics(muons, cut):
    met = [float(len(mu)) for mu in muons]
    m = manifest_of([{"MET_pt": met, "Muon_pt": muons}])
    p = planner.plan(m, ir.Query(where=cut), "on")
    if not p.tasks:
        assert not any(brute_events(cut, met, muons)), f"pruned a partition where {cut!r} matches"
