"""The IR nodes of skyhook_py.query.ir: construction, repr, identity, static checks, codec round trip."""

import math

import pytest

from skyhook_py.query import codec, ir
from skyhook_py.errors import QueryError, UnknownColumnError
from skyhook_py.query.ir import AggKind, Op, call, col, lit, same

SCHEMA = {
    "nMuon": ir.ColumnType("uint", False),
    "Muon_pt": ir.ColumnType("float", True),
    "Muon_eta": ir.ColumnType("float", True),
    "Muon_isGlobal": ir.ColumnType("bool", True),
    "Muon_charge": ir.ColumnType("int", True),
    "MET_pt": ir.ColumnType("float", False),
    "HLT_IsoMu24": ir.ColumnType("bool", False),
}


def test_operators_build_nodes_and_repr():
    pt = col("Muon_pt")
    e = (pt[pt > 20] * 2).__abs__()
    assert isinstance(e, ir.Call) and e.op == Op.Abs
    assert repr(e) == "abs((Muon_pt[(Muon_pt > 20)] * 2))"
    assert repr(call(Op.Index, pt, index=-1)) == "index(Muon_pt, -1)"
    assert repr(~(col("MET_pt") < 3.5)) == "~(MET_pt < 3.5)"
    assert repr(-col("MET_pt")) == "-MET_pt"
    assert repr(1 - col("MET_pt")) == "(1 - MET_pt)"  # reflected operands keep their order


def test_key_and_same():
    a = col("Muon_pt") > 20
    b = col("Muon_pt") > 20
    assert same(a, b) and hash(a) == hash(b)
    assert not same(a, col("Muon_pt") > 20.0)  # int and float literals differ
    assert not same(lit(True), lit(1))
    assert same(lit(math.nan), lit(math.nan))
    assert not same(call(Op.Index, col("x"), index=1), call(Op.Index, col("x"), index=2))
    assert same(None, None) and not same(a, None)
    with pytest.raises(TypeError, match="no truth value"):
        bool(a)


def test_construction_errors():
    with pytest.raises(QueryError, match="takes 2 argument"):
        call(Op.Add, col("x"))
    with pytest.raises(QueryError, match="literal must be"):
        lit("20")
    with pytest.raises(QueryError, match="bins"):
        ir.Axis(0, 0, 1)
    with pytest.raises(QueryError, match="low < high"):
        ir.Axis(10, 5, 5)
    with pytest.raises(QueryError, match="needs a value"):
        ir.Aggregation(AggKind.Sum, "s")
    with pytest.raises(QueryError, match="unique"):
        ir.Query(outputs=[("a", col("x")), ("a", col("y"))])


def test_infer_unknown_column_suggests_close_names():
    with pytest.raises(UnknownColumnError) as info:
        ir.infer(col("Muon_pT") > 20, SCHEMA, "cut")
    assert isinstance(info.value, KeyError)
    assert "Muon_pt" in info.value.suggestions
    assert "did you mean 'Muon_pt'" in str(info.value) and "cut" in str(info.value)


def test_infer_shapes():
    pt = col("Muon_pt")
    assert ir.infer(pt * 2, SCHEMA) == ir.Shape("float", True)
    assert ir.infer(call(Op.Count, pt[pt > 20]), SCHEMA) == ir.Shape("int", False)
    assert ir.infer(call(Op.Sum, col("Muon_isGlobal")), SCHEMA) == ir.Shape("int", False)
    assert ir.infer(col("MET_pt") / 2, SCHEMA).kind == "float"


def test_infer_weak_literal_keeps_unsigned_kind():
    assert ir.infer(col("nMuon") + 1, SCHEMA) == ir.Shape("uint", False)


def test_check_query_rejects_list_cut_and_bool_arithmetic():
    with pytest.raises(QueryError, match="per object"):
        ir.check_query(ir.Query(where=col("Muon_pt") > 20), SCHEMA)
    with pytest.raises(QueryError, match="needs numbers"):
        ir.check_query(ir.Query(outputs=[("x", col("HLT_IsoMu24") + 1)]), SCHEMA)
    with pytest.raises(QueryError, match="bool operands"):
        ir.check_query(ir.Query(where=col("MET_pt") & col("HLT_IsoMu24")), SCHEMA)
    with pytest.raises(QueryError, match="not a collection"):
        ir.check_query(ir.Query(outputs=[("x", col("MET_pt")[col("HLT_IsoMu24")])]), SCHEMA)
    with pytest.raises(QueryError, match="reduces a collection"):
        ir.check_query(ir.Query(outputs=[("x", call(Op.Sum, col("MET_pt")))]), SCHEMA)
    ir.check_query(ir.Query(where=call(Op.Any, col("Muon_pt") > 20) & col("HLT_IsoMu24")), SCHEMA)


def _example(op: Op) -> ir.Expr:
    pt, eta = col("Muon_pt"), col("Muon_eta")
    if op == Op.Column:
        return pt
    if op == Op.Literal:
        return lit(2.5)
    if op == Op.Index:
        return call(Op.Index, pt, index=-3)
    if op == Op.Mask:
        return pt[pt > 20]
    if op == Op.Where:
        return call(Op.Where, pt > 20, pt, eta)
    if op in (Op.And, Op.Or):
        return call(op, pt > 1, eta < 2)
    if op == Op.Not:
        return ~(pt > 1)
    if op in (Op.CrossAny, Op.CrossAll):
        return call(op, call(Op.CrossFirst, pt, col("Jet_pt")) > 1, pt, col("Jet_pt"))
    return call(op, *([pt, eta] * 4)[: ir.ARITY[op]])


@pytest.mark.parametrize("op", list(Op), ids=lambda o: o.name)
def test_every_op_round_trips_through_the_codec(op):
    e = _example(op)
    req = codec.decode_scan_request(codec.encode_scan_request(outputs=[("out", e)]))
    (name, back), = req.outputs
    assert name == "out" and same(back, e), (back, e)


@pytest.mark.parametrize("value", [True, False, 0, -7, 2**63 - 1, -(2**63), 2**63, 2**64 - 1, 0.5, -0.0,
                                   math.inf, math.nan])
def test_literals_round_trip_with_their_kind(value):
    req = codec.decode_scan_request(codec.encode_scan_request(outputs=[("v", lit(value))]))
    assert same(req.outputs[0][1], lit(value))


def test_literal_too_large_for_64_bits_is_rejected():
    # [2^63, 2^64) travels as a uint64 literal (LiteralKind UInt); beyond, nothing can
    codec.encode_scan_request(outputs=[("v", col("x") + (2**64 - 1))])
    for v in (2**64, -(2**63) - 1):
        with pytest.raises(QueryError, match="64 bits"):
            codec.encode_scan_request(outputs=[("v", col("x") + v)])


@pytest.mark.parametrize("kind", list(AggKind), ids=lambda k: k.name)
def test_every_aggregation_round_trips(kind):
    pt, eta = col("Muon_pt"), col("Muon_eta")
    kw = {}
    if kind != AggKind.Count:
        kw["x"] = pt
    if kind in (AggKind.Hist1D, AggKind.Hist2D):
        kw.update(x_axis=ir.Axis(50, 0.0, 200.0), weight=col("MET_pt") * 0.5)
    if kind == AggKind.Hist2D:
        kw.update(y=eta, y_axis=ir.Axis(20, -2.5, 2.5))
    agg = ir.Aggregation(kind, f"a_{kind.name}", **kw)
    req = codec.decode_scan_request(codec.encode_scan_request(aggregations=[agg], where=col("nMuon") > 0))
    back, = req.aggregations
    assert back.key() == agg.key()
    assert same(req.where, col("nMuon") > 0)
