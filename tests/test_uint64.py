"""uint64 values >= 2**63 and int64 values past 2**53 (issue 12, "uint64 min/max through
int64"): aggregates and pruning must be exact, identical in the object class and the
reference, and equal to NumPy on uproot's arrays of a ROOT file written here."""

from __future__ import annotations

import errno as _errno
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

BIG = 2**63
# per partition of 4 events: values >= 2**63 in some, small ones in others, so that the
# merge across partitions compares uint64 values too
U = np.array([BIG + 5, 2**64 - 1, 3, BIG,       17, 4, 2**64 - 2, 9,
              BIG + 1, BIG + 2, BIG + 3, BIG + 4,  7, 8, 6, 5], dtype=np.uint64)
# int64 values past 2**53: float64 has no exact value for them
V = np.array([2**62 + 1] * 4 + [2**62 + 3] * 4 + [-(2**62) - 1] * 4 + [2**53 + 1] * 4, dtype=np.int64)
JAG = [[BIG + 1, 1], [], [2**64 - 1], [2, 3, BIG]] * 4


@pytest.fixture(scope="module")
def big_file(tmp_path_factory):
    import awkward as ak
    import uproot

    path = tmp_path_factory.mktemp("u64") / "u64.root"
    with uproot.recreate(path) as f:   # a TTree (mktree; f["t"] = ... would write an RNTuple)
        f.mktree("t", {"u": np.uint64, "v": np.int64, "j": "var * uint64"})
        flat = np.array([x for row in JAG for x in row], dtype=np.uint64)
        jag = ak.unflatten(flat, [len(row) for row in JAG])
        f["t"].extend({"u": U, "v": V, "j": jag})
    return path


@pytest.fixture(scope="module")
def big_dataset(session, big_file):
    session.ingest([big_file], "u64", tree="t", partition_events=4)
    return "u64"


def _numpy(big_file):
    import uproot

    return uproot.open(big_file)["t"].arrays(["u", "v", "j"], library="np")


def test_the_file_holds_what_was_written(big_file):
    a = _numpy(big_file)
    assert a["u"].dtype == np.uint64 and (a["u"] == U).all()
    assert int(a["u"].max()) == 2**64 - 1


@pytest.mark.cluster
@pytest.mark.parametrize("pushdown", ["on", "off"])
def test_uint64_aggregates_match_numpy(session, big_dataset, big_file, pushdown):
    a = _numpy(big_file)
    u, v = a["u"], a["v"]
    flat_j = np.concatenate([x.astype(np.uint64) for x in a["j"]])
    want = {
        "umin": int(u.min()), "umax": int(u.max()), "usum": int(np.sum(u, dtype=np.uint64)),
        "ucount": len(u),
        # uint64 + a weak int stays uint64 (NEP 50) and wraps
        "u1max": int((u + 1).max()), "u1min": int((u + 1).min()),
        "jmin": int(flat_j.min()), "jmax": int(flat_j.max()),
        "vmin": int(v.min()), "vmax": int(v.max()),
    }
    aggs = [{"kind": "min", "name": "umin", "x": "u"}, {"kind": "max", "name": "umax", "x": "u"},
            {"kind": "sum", "name": "usum", "x": "u"}, {"kind": "count", "name": "ucount", "x": "u"},
            {"kind": "max", "name": "u1max", "x": "u + 1"}, {"kind": "min", "name": "u1min", "x": "u + 1"},
            {"kind": "min", "name": "jmin", "x": "j"}, {"kind": "max", "name": "jmax", "x": "j"},
            {"kind": "min", "name": "vmin", "x": "v"}, {"kind": "max", "name": "vmax", "x": "v"}]
    got = session.aggregate(big_dataset, aggs, pushdown=pushdown)
    assert got == want
    # with a cut selecting only values >= 2**63 (no uint64 literal >= 2**63 can be sent)
    sel = u > 2**62
    got = session.aggregate(big_dataset, aggs[:3], where="u > 2**62", pushdown=pushdown)
    assert got == {"umin": int(u[sel].min()), "umax": int(u[sel].max()),
                   "usum": int(np.sum(u[sel], dtype=np.uint64))}


@pytest.mark.cluster
@pytest.mark.parametrize("cut", ["v < 2**62 + 2", "v <= 2**62 + 1", "v == 2**62 + 3", "v > 2**62 + 2",
                                 "v >= 2**62 + 3", "v == 2**53 + 1", "v > 2**53", "-v > -(2**62) - 2",
                                 "u > 2**62", "u < 2**62", "v != 2**62 + 1",
                                 # literals >= 2**63 (uint64 literals) and a negated uint64
                                 "u > 2**63", "u == 2**64 - 1", "u < 2**63 + 2", "u >= 2**63 + 4",
                                 "u <= 2**63", "-u > 0"])
@pytest.mark.parametrize("pushdown", ["on", "off"])
def test_pruning_is_sound_past_2_53(session, big_dataset, big_file, cut, pushdown):
    # a literal rounded to the nearest float64 (2**62 + 2 -> 2**62) proved `v < 2**62 + 2`
    # false for the partition holding 2**62 + 1: the whole partition was pruned
    a = _numpy(big_file)
    want = np.flatnonzero(eval(cut, {}, {"u": a["u"], "v": a["v"]}))
    got = session.run(big_dataset, columns=["v"], where=cut, pushdown=pushdown).table
    assert got.num_rows == len(want), (cut, got.num_rows, len(want))
    assert got.column("v").to_pylist() == a["v"][want].tolist()


@pytest.mark.cluster
def test_statistics_at_ingest_bound_the_values(session, big_dataset, big_file):
    # the manifest's float64 statistics are rounded outwards: every value within them
    m = session.manifest(big_dataset)
    stats = m.column_stats("u")
    lo, hi = stats[0], stats[1]
    for j, part in enumerate(np.split(U, 4)):
        assert lo[j] <= float(int(part.min())) and all(int(x) >= lo[j] for x in part)
        assert all(int(x) <= hi[j] for x in part)


def test_reference_and_merge_keep_uint64_exact():
    # no cluster: the reference over two partitions, merged through the codec's wire form
    import pyarrow as pa

    from skyhook_py.query import aggregates, codec, reference
    from skyhook_py.query.ir import AggKind, Aggregation, col

    aggs = [Aggregation(AggKind.Min, "lo", col("u")), Aggregation(AggKind.Max, "hi", col("u")),
            Aggregation(AggKind.Sum, "s", col("u"))]
    partials = []
    for part in np.split(U, 4):
        res = reference.scan_table(pa.table({"u": part}), aggregations=aggs)
        wire = codec.decode_scan_reply(codec.encode_scan_reply(res))
        assert [p.is_unsigned for p in wire.aggregates] == [True] * 3
        partials.append(wire.aggregates)
    got = aggregates.finalize(aggregates.merge(partials), aggs)
    assert got == {"lo": int(U.min()), "hi": int(U.max()), "s": int(np.sum(U, dtype=np.uint64))}


def test_grpc_values_keep_uint64_exact():
    from skyhook_py.service import wire

    for v in (2**63, 2**64 - 1, 2**63 - 1, -(2**63), 0):
        assert wire.value_from_proto(wire.value_to_proto(v)) == v
    # beyond 64 bits it is a float, as before
    assert wire.value_from_proto(wire.value_to_proto(2**64)) == float(2**64)


# -- uint64 literals of [2^63, 2^64) (LiteralKind UInt, appended 2026-12) ---------------------------
# Before it the request carried int64 literals only and the compiler refused these; now each
# cut or expression below is compared with NumPy 2 on the same arrays (weak Python ints, NEP 50).

LITERALS = [2**63, 2**63 + 1, 2**64 - 1]
COMPARISONS = ["==", "!=", "<", "<=", ">", ">="]
# uint64 arithmetic with a weak int: NumPy keeps uint64 and wraps
ARITHMETIC = ["+", "-", "*", "//", "%", "**", "/"]
RUNNER = Path(__file__).resolve().parents[1] / "build" / "bin" / "skyhook_scan_local"
needs_runner = pytest.mark.skipif(not RUNNER.exists(), reason=f"{RUNNER} is not built (make build)")
# the local tables: the values of the ROOT file's partitions plus the literals and their
# neighbours, so that every comparison is tight somewhere
U_LOCAL = np.concatenate([U, np.array([x + d for x in LITERALS for d in (-1, 0, 1) if 0 <= x + d < 2**64],
                                      dtype=np.uint64)])
V_LOCAL = np.concatenate([V, np.array([2**63 - 1, -(2**63), 0, -1, 1, 2**62, -5, 9][:len(U_LOCAL) - len(V)],
                                      dtype=np.int64)])

def _local_table():
    import pyarrow as pa

    return pa.table({"u": U_LOCAL, "v": V_LOCAL, "u8": U_LOCAL.astype(np.uint8),
                     "f": U_LOCAL.astype(np.float32)})


def _schema():
    from skyhook_py.query import ir

    return {"u": ir.ColumnType("uint", False), "v": ir.ColumnType("int", False),
            "u8": ir.ColumnType("uint", False), "f": ir.ColumnType("float", False)}


def _numpy_env():
    return {"u": U_LOCAL, "v": V_LOCAL, "u8": U_LOCAL.astype(np.uint8), "f": U_LOCAL.astype(np.float32),
            "where": np.where}


def _np_eval(text):
    """NumPy 2's answer to a cut string or expression, or the exception class it raises."""
    import warnings

    try:
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return eval(text, {}, _numpy_env())
    except (OverflowError, TypeError) as e:
        return type(e)


def _run_local(request: bytes, table, tmp_path) -> tuple[int, bytes]:
    import pyarrow as pa

    req, obj, out = tmp_path / "request.bin", tmp_path / "obj.arrow", tmp_path / "reply.bin"
    req.write_bytes(request)
    with pa.OSFile(str(obj), "wb") as f, pa.ipc.new_file(f, table.schema) as w:
        w.write_table(table)
    if out.exists():
        out.unlink()
    r = subprocess.run([str(RUNNER), str(req), str(obj), str(out)], capture_output=True, text=True, timeout=120,
                       check=False)
    assert r.returncode >= 0, f"runner crashed with signal {-r.returncode}: {r.stderr}"
    return r.returncode, (out.read_bytes() if r.returncode == 0 else r.stderr.encode())


def _equal(got, want) -> bool:
    got, want = np.asarray(got), np.asarray(want)
    if got.shape != want.shape:
        return False
    if want.dtype.kind == "f":
        return bool(np.all((got == want) | (np.isnan(got) & np.isnan(want))))
    return got.tolist() == want.tolist()


def _texts(column, ops, lit):
    return [f"{column} {op} {lit}" for op in ops] + [f"{lit} {op} {column}" for op in ops]


def test_uint64_literals_travel_as_uint_kind():
    from skyhook_py._generated import skyhook_scan_generated as fb
    from skyhook_py.query import codec, ir
    from skyhook_py.query import compile as qc

    for lit in LITERALS:
        q = qc.compile_query(_schema(), where=f"u > {lit}", columns=["u"])
        data = codec.encode_scan_request(outputs=q.outputs, where=q.where)
        r = fb.ScanRequest.GetRootAs(data, 0)
        kinds = {r.Nodes(i).LiteralKind(): r.Nodes(i).IntValue()
                 for i in range(r.NodesLength()) if r.Nodes(i).Op() == ir.Op.Literal}
        assert kinds == {fb.LiteralKind.UInt: lit - 2**64}   # the uint64's bits
        back = codec.decode_scan_request(data)
        assert ir.same(back.where, q.where) and back.where.args[1].value == lit


@needs_runner
@pytest.mark.parametrize("lit", LITERALS)
@pytest.mark.parametrize("column", ["u", "v", "u8", "f"])
def test_literal_cuts_match_numpy_local(lit, column, tmp_path):
    """Every comparison, both operand orders, as the cut: the reference and the class
    (local runner) select exactly the rows NumPy selects."""
    from skyhook_py.query import codec, reference
    from skyhook_py.query import compile as qc

    table = _local_table()
    for text in _texts(column, COMPARISONS, lit):
        want = np.flatnonzero(_np_eval(text))
        q = qc.compile_query(_schema(), where=text, columns=["u"])
        ref = reference.scan_table(table, outputs=q.outputs, where=q.where)
        assert ref.table.column("u").to_pylist() == U_LOCAL[want].tolist(), text
        status, reply = _run_local(codec.encode_scan_request(outputs=q.outputs, where=q.where), table, tmp_path)
        assert status == 0, (text, reply)
        got = codec.decode_scan_reply(reply)
        assert got.table.column("u").to_pylist() == U_LOCAL[want].tolist(), text


@needs_runner
@pytest.mark.parametrize("lit", LITERALS)
def test_uint64_arithmetic_matches_numpy_local(lit, tmp_path):
    """uint64 column OP literal and literal OP column, as output columns and aggregated: NumPy's
    uint64 results (wrapping), bit for bit, from the reference and from the class."""
    from skyhook_py.query import codec, reference
    from skyhook_py.query import compile as qc

    table = _local_table()
    texts = _texts("u", ARITHMETIC + COMPARISONS, lit) + [f"where(u > {lit}, u, {lit})", f"u + {lit} + {lit}"]
    exprs = {f"e{i}": t for i, t in enumerate(texts)}
    aggs = [{"kind": k, "name": f"{k}{i}", "x": t} for i, t in enumerate(texts[:3]) for k in ("sum", "min", "max")]
    q = qc.compile_query(_schema(), expressions=exprs, aggregations=aggs)
    ref = reference.scan_table(table, outputs=q.outputs, aggregations=q.aggregations)
    status, reply = _run_local(codec.encode_scan_request(outputs=q.outputs, aggregations=q.aggregations),
                               table, tmp_path)
    assert status == 0, reply
    got = codec.decode_scan_reply(reply)
    for name, text in exprs.items():
        want = _np_eval(text)
        assert isinstance(want, np.ndarray), (text, want)
        for who, res in (("reference", ref), ("class", got)):
            col = res.table.column(name)
            assert col.type.to_pandas_dtype() == want.dtype, (who, text, col.type, want.dtype)
            assert _equal(col.to_numpy(), want), (who, text, col.to_pylist(), want.tolist())
    for i, t in enumerate(texts[:3]):
        x = _np_eval(t)
        want = {"sum": int(np.sum(x, dtype=np.uint64)), "min": int(x.min()), "max": int(x.max())}
        for who, res in (("reference", ref), ("class", got)):
            by = {a.name: a for a in res.aggregates}
            for k in want:
                a = by[f"{k}{i}"]
                assert a.is_unsigned and a.int_value % 2**64 == want[k], (who, t, k, a)


@needs_runner
@pytest.mark.parametrize("lit", LITERALS)
def test_int64_and_float_with_wide_literals_match_numpy_local(lit, tmp_path):
    """int64 column: true division (NumPy's float64 loop) works, other arithmetic is NumPy's
    OverflowError (a QueryError); a float32 column converts the literal to float32."""
    from skyhook_py.errors import QueryError
    from skyhook_py.query import codec, reference
    from skyhook_py.query import compile as qc

    table = _local_table()
    ok = [f"v / {lit}", f"{lit} / v", f"arctan2(v, {lit})", f"f + {lit}", f"{lit} - f", f"f * {lit}"]
    exprs = {f"e{i}": t for i, t in enumerate(ok)}
    q = qc.compile_query(_schema(), expressions=exprs)
    ref = reference.scan_table(table, outputs=q.outputs)
    status, reply = _run_local(codec.encode_scan_request(outputs=q.outputs), table, tmp_path)
    assert status == 0, reply
    got = codec.decode_scan_reply(reply)
    env = dict(_numpy_env(), arctan2=np.arctan2)
    for name, text in exprs.items():
        with np.errstate(all="ignore"):
            want = eval(text, {}, env)
        for who, res in (("reference", ref), ("class", got)):
            col = res.table.column(name)
            assert col.type.to_pandas_dtype() == want.dtype, (who, text, col.type, want.dtype)
            assert _equal(col.to_numpy(), want), (who, text)
    for text in _texts("v", ["+", "-", "*", "//", "%", "**"], lit):
        assert _np_eval(text) is OverflowError, text
        with pytest.raises(QueryError, match="OverflowError"):
            qc.compile_query(_schema(), expressions={"e": text})


@needs_runner
@pytest.mark.parametrize("lit", LITERALS)
def test_narrow_uint_arithmetic_is_refused_like_numpy(lit, tmp_path):
    """uint8 + 2**63: NumPy raises OverflowError; the compiler cannot tell uint8 from uint64
    (ColumnType has no width), so both evaluators refuse it: EvaluationError / EINVAL."""
    from skyhook_py.errors import EvaluationError
    from skyhook_py.query import codec, reference
    from skyhook_py.query import compile as qc

    table = _local_table()
    for text in _texts("u8", ["+", "-", "*", "//", "%"], lit) + [f"where(u8 > 1, u8, {lit})"]:
        if "where" not in text:   # np.where alone wraps instead; we refuse it (formats/README.md)
            assert _np_eval(text) is OverflowError, text
        q = qc.compile_query(_schema(), expressions={"e": text})
        with pytest.raises(EvaluationError) as e:
            reference.scan_table(table, outputs=q.outputs)
        assert e.value.errno == _errno.EINVAL
        status, reply = _run_local(codec.encode_scan_request(outputs=q.outputs), table, tmp_path)
        assert status == _errno.EINVAL and b"out of bounds for uint8" in reply, (text, status, reply)


@needs_runner
def test_uint64_literal_between_literals_is_refused_by_both(tmp_path):
    """The compiler folds literal-only operations exactly (Python ints); a request that
    still has one with a uint64 literal has no 64-bit type for it: EINVAL in both."""
    from skyhook_py.errors import EvaluationError
    from skyhook_py.query import codec, ir, reference
    from skyhook_py.query import compile as qc

    table = _local_table()
    q = qc.compile_query(_schema(), where="u > 2**63 + 1 - 1", columns=["u"])
    assert q.where.args[1].value == 2**63   # folded, then sent as a uint64 literal
    big = ir.Literal(2**63)
    for e in (ir.call(ir.Op.Add, big, 1), ir.call(ir.Op.Gt, big, 1), ir.call(ir.Op.Neg, big),
              ir.call(ir.Op.Where, ir.col("u") > 1, big, 5), ir.call(ir.Op.Sqrt, big)):
        with pytest.raises(EvaluationError) as err:
            reference.scan_table(table, outputs=(("x", e),))
        assert err.value.errno == _errno.EINVAL, e
        status, reply = _run_local(codec.encode_scan_request(outputs=(("x", e),)), table, tmp_path)
        assert status == _errno.EINVAL and b"uint64 literal needs an array operand" in reply, (e, reply)


@needs_runner
def test_unknown_literal_kind_is_einval(tmp_path):
    """What a class built before LiteralKind UInt does with it (checked by hand with the
    previous build: "node 1: unknown literal kind", exit 22): the next unknown kind, 4,
    gets the same answer from this one, and the Python decoder refuses it too."""
    from skyhook_py._generated import skyhook_scan_generated as fb
    from skyhook_py.errors import ProtocolError
    from skyhook_py.query import codec

    data = bytearray(codec.encode_scan_request(outputs=(("x", ir_gt_uint()),)))

    r = fb.ScanRequest.GetRootAs(bytes(data), 0)
    lit = next(r.Nodes(i) for i in range(r.NodesLength()) if r.Nodes(i).LiteralKind() == fb.LiteralKind.UInt)
    o = lit._tab.Offset(10)   # vtable slot 3 (literal_kind): field index 3 -> 4 + 2*3
    assert o, "literal_kind is stored"
    pos = lit._tab.Pos + o
    assert data[pos] == fb.LiteralKind.UInt
    data[pos] = 4
    status, reply = _run_local(bytes(data), _local_table(), tmp_path)
    assert status == _errno.EINVAL and b"unknown literal kind" in reply, reply
    with pytest.raises(ProtocolError, match="unknown literal kind"):
        codec.decode_scan_request(bytes(data))


def ir_gt_uint():
    from skyhook_py.query import ir

    return ir.col("u") > ir.Literal(2**63 + 1)


# cuts with literals >= 2**63 whose float64 neighbours differ from them (2**64 - 1 is
# 2**64 in float64, 2**63 + 1 is 2**63): the statistics prune only what NumPy rejects
WIDE_CUTS = [f"u {op} {lit}" for lit in LITERALS for op in COMPARISONS] + [
    "u > 2**64 - 2", "u >= 2**63 + 4", "u < 2**63 + 2", "u == 2**63 + 5", "v < 2**63", "v > 2**63",
    "v != 2**64 - 1", "-u > 0", "-u < 2**63", "-v > 0"]


def _partition_manifest():
    import pyarrow as pa

    from skyhook_py.storage.manifest import Manifest, Partition
    from skyhook_py.transcode import stats

    schema = pa.schema([("u", pa.uint64()), ("v", pa.int64())])
    parts = []
    for i, (pu, pv) in enumerate(zip(np.split(U, 4), np.split(V, 4))):
        st = stats.table_stats(pa.table({"u": pu, "v": pv}))
        st = __import__("json").loads(stats.to_json(st))   # as stored (JSON)
        parts.append(Partition(f"part.u64.w.{i:06d}", 4 * i, 4 * i + 4, 1000, source=0, entry_start=4 * i,
                               entry_stop=4 * i + 4, stats=st))
    return Manifest("u64", 1, schema, parts)


@pytest.mark.parametrize("cut", WIDE_CUTS)
def test_pruning_with_literals_past_2_63_is_exact(cut):
    """No cluster: the planner on the partitions' real statistics keeps every partition
    with a row NumPy selects, and prunes those whose float64 bounds exclude the literal."""
    from skyhook_py.query import compile as qc
    from skyhook_py.query import planner

    m = _partition_manifest()
    q = qc.compile_query(m.column_types(), where=cut, columns=["u"])
    kept = {t.partition for t in planner.plan(m, q, "on").tasks}
    env = {"u": U, "v": V}
    with np.errstate(all="ignore"):
        sel = eval(cut, {}, env)
    for i, part in enumerate(np.split(sel, 4)):
        if part.any():
            assert i in kept, f"{cut}: partition {i} holds selected rows but was pruned"
    # exactness where float64 can tell: partition 3 (values 5..8) is below 2**63 and
    # partition 2 (2**63 + 1 .. 2**63 + 4) above 2**63 + 4 - 2048 (float64 spacing there)
    if cut in ("u >= 2**63 + 4", "u == 2**63 + 5", "u > 9223372036854775808", "u >= 9223372036854775809"):
        assert 3 not in kept, cut
    if cut == "u < 9223372036854775808":
        assert 2 not in kept, cut


def _any_all(fn, jag, lit_cmp):
    return np.array([fn(lit_cmp(np.asarray(x, dtype=np.uint64))) for x in jag], dtype=bool)


@pytest.mark.cluster
@pytest.mark.parametrize("pushdown", ["on", "off"])
def test_wide_literal_cuts_through_the_osd(session, big_dataset, big_file, pushdown):
    """Every comparison with 2**63, 2**63 + 1, 2**64 - 1 as the cut, on the uint64 and the
    int64 column and on a uint64 collection, in the OSD (pushdown on) and in the client's
    reference (off): exactly NumPy's rows."""
    import operator

    a = _numpy(big_file)
    env = {"u": a["u"], "v": a["v"]}
    texts = [t for lit in LITERALS for c in ("u", "v") for t in _texts(c, COMPARISONS, lit)]
    for text in texts:
        with np.errstate(all="ignore"):
            want = np.flatnonzero(eval(text, {}, env))
        r = session.run(big_dataset, columns=["u"], where=text, pushdown=pushdown)
        assert r.table.column("u").to_pylist() == a["u"][want].tolist(), text
        if pushdown == "on":
            assert r.summary.partitions_read == 0, r.summary
    for fn, name in ((np.any, "any"), (np.all, "all")):
        for lit in LITERALS:
            for sym, op in (("==", operator.eq), ("<", operator.lt), (">=", operator.ge)):
                text = f"{name}(j {sym} {lit})"
                want = np.flatnonzero(_any_all(fn, a["j"], lambda x, op=op, lit=lit: op(x, lit)))
                got = session.run(big_dataset, columns=["u"], where=text, pushdown=pushdown).table
                assert got.column("u").to_pylist() == a["u"][want].tolist(), text


@pytest.mark.cluster
@pytest.mark.parametrize("pushdown", ["on", "off"])
def test_wide_literal_arithmetic_through_the_osd(session, big_dataset, big_file, pushdown):
    """uint64 column (and collection) OP literal, both orders, as output columns and as
    aggregated values: NumPy's uint64 results, wrapping, bit for bit."""
    a = _numpy(big_file)
    u = a["u"]
    texts = [t for lit in LITERALS for t in _texts("u", ARITHMETIC, lit)]
    exprs = {f"e{i}": t for i, t in enumerate(texts)}
    exprs["jsum"] = "j + 2**63"
    exprs["jmul"] = "(2**64 - 1) * j"
    r = session.run(big_dataset, expressions=exprs, pushdown=pushdown)
    for name, text in exprs.items():
        col = r.table.column(name)
        if name.startswith("j"):
            lit = 2**63 if name == "jsum" else 2**64 - 1
            with np.errstate(all="ignore"):
                want = [((np.asarray(x, np.uint64) + lit) if name == "jsum" else (lit * np.asarray(x, np.uint64))).tolist()
                        for x in a["j"]]
            assert col.to_pylist() == want, text
            continue
        with np.errstate(all="ignore"):
            want = eval(text, {}, {"u": u})
        assert col.type.to_pandas_dtype() == want.dtype, (text, col.type)
        assert _equal(col.to_numpy(), want), (text, col.to_pylist(), want.tolist())
    aggs, want = [], {}
    for i, text in enumerate(["u + 2**63", "(2**64 - 1) * u", "u - (2**63 + 1)"]):
        with np.errstate(all="ignore"):
            x = eval(text, {}, {"u": u})
        for k, fn in (("sum", lambda x: np.sum(x, dtype=np.uint64)), ("min", np.min), ("max", np.max)):
            aggs.append({"kind": k, "name": f"{k}{i}", "x": text})
            want[f"{k}{i}"] = int(fn(x))
    assert session.aggregate(big_dataset, aggs, pushdown=pushdown) == want


def test_narrow_uint_width_from_the_manifest_refuses_at_compile_time():
    """With the manifest's widths (ColumnType.bits) the compiler refuses uint8 + 2**63 as
    NumPy does (OverflowError) before any partition is read, and answers a comparison of
    uint8 with 2**63 by its constant; uint64 gets a uint64 literal."""
    import pyarrow as pa

    from skyhook_py.errors import QueryError
    from skyhook_py.query import compile as qc
    from skyhook_py.query import ir
    from skyhook_py.storage.manifest import column_type

    schema = {n: column_type(t, n) for n, t in
              [("u", pa.uint64()), ("u8", pa.uint8()), ("j", pa.list_(pa.uint32()))]}
    assert (schema["u8"].bits, schema["j"].bits) == (8, 32) and schema["u8"] == ir.ColumnType("uint", False)
    for text in ["u8 + 2**63", "2**64 - 1 - u8", "where(u8 > 1, u8, 2**63)", "(u8 + 1) * 2**63", "j % 2**63"]:
        with pytest.raises(QueryError, match=r"does not fit in uint(8|32): NumPy raises OverflowError"):
            qc.compile_query(schema, expressions={"e": text})
    q = qc.compile_query(schema, where="u8 < 2**63", columns=["u"])
    assert ir.same(q.where, ir.col("u8") == ir.col("u8"))   # true everywhere, no literal left
    q = qc.compile_query(schema, expressions={"e": "sum(j) + 2**63", "f": "u + (2**64 - 1)"})
    assert [e.args[1].is_uint64 for _, e in q.outputs] == [True, True]


# -- random expressions of uint64/int64 columns and wide literals, against NumPy --------------------

WIDE_POOL = [0, 1, 7, 2**32 + 3, 2**63 - 1, 2**63, 2**63 + 1, 2**64 - 2, 2**64 - 1]


def _u64_strategies():
    from hypothesis import strategies as st

    def exprs(depth):
        leaf = st.sampled_from(["u", "w", "u", "w", "v", "x"])
        if depth == 0:
            return leaf
        sub = exprs(depth - 1)
        lit = st.sampled_from(WIDE_POOL).map(str)
        binary = st.tuples(sub, st.sampled_from(["+", "-", "*", "//", "%", "**", "/"]),
                           st.one_of(sub, lit), st.booleans()).map(
            lambda t: f"({t[2]} {t[1]} {t[0]})" if t[3] else f"({t[0]} {t[1]} {t[2]})")
        return st.one_of(leaf, binary)

    cut = st.tuples(exprs(2), st.sampled_from(COMPARISONS), st.sampled_from(WIDE_POOL), st.booleans()).map(
        lambda t: f"{t[2]} {t[1]} {t[0]}" if t[3] else f"{t[0]} {t[1]} {t[2]}")
    values = st.one_of(st.sampled_from(WIDE_POOL), st.integers(0, 2**64 - 1))
    table = st.integers(0, 8).flatmap(lambda n: st.tuples(
        st.lists(values, min_size=n, max_size=n), st.lists(values, min_size=n, max_size=n),
        st.lists(st.integers(-(2**63), 2**63 - 1) | st.sampled_from([0, -1, 2**63 - 1, -(2**63)]),
                 min_size=n, max_size=n),
        st.lists(st.integers(0, 2**32 - 1), min_size=n, max_size=n)))
    return exprs(2), cut, table


def _hypothesis_given():
    from hypothesis import HealthCheck, given, settings

    e, c, t = _u64_strategies()

    def deco(fn):
        return settings(max_examples=int(os.environ.get("SKYHOOK_U64_EXAMPLES", "150")), deadline=None, derandomize=True,
                        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])(
            given(expr=e, cut=c, cols=t)(fn))
    return deco


@needs_runner
@_hypothesis_given()
def test_random_wide_literal_queries_match_numpy(expr, cut, cols, tmp_path_factory):
    """NumPy 2 (the oracle, on the same arrays) against the reference and the class (local
    runner): same values and types, or NumPy's OverflowError where the query is refused
    (QueryError at compile time, EINVAL from both evaluators)."""
    import warnings

    import pyarrow as pa

    from skyhook_py.errors import EvaluationError, QueryError
    from skyhook_py.query import codec, ir, reference
    from skyhook_py.query import compile as qc

    tmp_path = tmp_path_factory.mktemp("rand")
    u, w, v, x = (np.array(c, dtype=dt) for c, dt in zip(cols, (np.uint64, np.uint64, np.int64, np.uint32)))
    table = pa.table({"u": u, "w": w, "v": v, "x": x})
    schema = {"u": ir.ColumnType("uint", False, 64), "w": ir.ColumnType("uint", False, 64),
              "v": ir.ColumnType("int", False, 64), "x": ir.ColumnType("uint", False, 32)}

    def numpy(text, env):
        try:
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return np.broadcast_to(np.asarray(eval(text, {}, env)), env["u"].shape)
        except OverflowError:   # a Python int the operand's type cannot hold
            return OverflowError
        except ValueError:      # integers to negative integer powers: EDOM
            return ValueError

    # the cut on every row, the output on the selected rows only (formats/README.md)
    cols = {"u": u, "w": w, "v": v, "x": x}
    want_c = numpy(cut, cols)
    want = want_c
    if isinstance(want_c, np.ndarray):
        sel = np.flatnonzero(want_c)
        want = numpy(expr, {k: a[sel] for k, a in cols.items()})
        if want is not OverflowError and numpy(expr, cols) is OverflowError:
            want = OverflowError   # type-only errors do not depend on rows
    try:
        q = qc.compile_query(schema, where=cut, expressions={"e": expr})
    except QueryError as err:
        assert want is OverflowError, (expr, cut, err)
        return
    request = codec.encode_scan_request(outputs=q.outputs, where=q.where)
    status, reply = _run_local(request, table, tmp_path)
    try:
        ref = reference.scan_table(table, outputs=q.outputs, where=q.where)
    except EvaluationError as err:
        code = {OverflowError: _errno.EINVAL, ValueError: _errno.EDOM}.get(want)
        assert err.errno == status == code, (expr, cut, want, err, reply)
        return
    assert isinstance(want, np.ndarray), (expr, cut, want, "NumPy raised, the query ran")
    assert status == 0, (expr, cut, reply)
    got = codec.decode_scan_reply(reply)
    for who, res in (("reference", ref), ("class", got)):
        col = res.table.column("e")
        assert col.type.to_pandas_dtype() == want.dtype, (who, expr, cut, col.type, want.dtype)
        assert _equal(col.to_numpy(), want), (who, expr, cut, col.to_pylist(), want.tolist())


@needs_runner
def test_uint64_with_int64_is_float64_beside_a_wide_literal(tmp_path):
    """uint64 + int64 is float64 in NumPy: a literal >= 2**63 beside it is a float, never
    the constant answer of an int64 comparison (which the compiler gave before it knew the
    columns' widths: `(u + v) > 2**63` selected nothing)."""
    from skyhook_py.query import codec, reference
    from skyhook_py.query import compile as qc
    from skyhook_py.storage.manifest import column_type

    table = _local_table()
    schema = {n: column_type(table.schema.field(n).type, n) for n in table.column_names}
    env = {"u": U_LOCAL, "v": V_LOCAL}
    for text in ["(u + v) > 2**63", "u - v <= 2**64 - 1", "2**63 + 1 != v * u", "(u + v) + 2**63 > 2**64"]:
        with np.errstate(all="ignore"):
            want = U_LOCAL[np.flatnonzero(eval(text, {}, env))].tolist()
        if text == "(u + v) > 2**63":
            assert 0 < len(want) < len(U_LOCAL), want   # no constant answer
        q = qc.compile_query(schema, where=text, columns=["u"])
        assert reference.scan_table(table, outputs=q.outputs, where=q.where).table.column("u").to_pylist() == want
        status, reply = _run_local(codec.encode_scan_request(outputs=q.outputs, where=q.where), table, tmp_path)
        assert status == 0 and codec.decode_scan_reply(reply).table.column("u").to_pylist() == want, text


@needs_runner
@pytest.mark.parametrize("lit", LITERALS)
def test_uint_literal_beside_other_types_without_the_compiler(lit, tmp_path):
    """A request may carry a UInt literal where the compiler would have rewritten it
    (beside int64, uint8, float32): both evaluators still give NumPy's answer (exact
    comparisons, float32 conversion) or EINVAL for what NumPy refuses."""
    import warnings

    from skyhook_py.errors import EvaluationError
    from skyhook_py.query import codec, reference
    from skyhook_py.query.ir import Literal, Op, call, col

    table = _local_table()
    big = Literal(lit)
    cmp_ops = {"==": Op.Eq, "!=": Op.Ne, "<": Op.Lt, "<=": Op.Le, ">": Op.Gt, ">=": Op.Ge}
    outputs, texts = [], []
    for c in ("v", "u8", "f"):
        for sym, op in cmp_ops.items():
            outputs += [(f"{c}{sym}", call(op, col(c), big)), (f"{sym}{c}", call(op, big, col(c)))]
            texts += [f"{c} {sym} {lit}", f"{lit} {sym} {c}"]
    outputs += [("f+", col("f") + big), ("f*", big * col("f"))]
    texts += [f"f + {lit}", f"{lit} * f"]
    ref = reference.scan_table(table, outputs=tuple(outputs))
    status, reply = _run_local(codec.encode_scan_request(outputs=tuple(outputs)), table, tmp_path)
    assert status == 0, reply
    got = codec.decode_scan_reply(reply)
    for (name, _), text in zip(outputs, texts):
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            want = eval(text, {}, _numpy_env())
        for who, res in (("reference", ref), ("class", got)):
            assert _equal(res.table.column(name).to_numpy(), want), (who, text)
    for e in (col("v") + big, big - col("u8"), call(Op.Where, col("u") > 1, col("v"), big)):
        status, reply = _run_local(codec.encode_scan_request(outputs=(("e", e),)), table, tmp_path)
        assert status == _errno.EINVAL and b"out of bounds" in reply, (e, reply)
        with pytest.raises(EvaluationError) as err:
            reference.scan_table(table, outputs=(("e", e),))
        assert err.value.errno == _errno.EINVAL, e
