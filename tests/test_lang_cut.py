"""Cut strings and output expressions: compiled IR vs uproot and awkward on real files.

The compiled IR is evaluated by ``skyhook_py.query.reference`` (the Python evaluator
of the IR); the oracle is uproot's own ``arrays(cut=...)`` or, for the
awkward-only spellings (``ak.``/``np.`` reductions, ``[:, i]``), awkward
evaluating the same text.  Errors are checked without touching any data.

The helpers ``load`` and ``run_query`` are shared with test_lang_qastle.py and
test_lang_uproot_raw.py.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import uproot

from skyhook_py.query import ir, reference
from skyhook_py.errors import QueryError, UnknownColumnError, UnsupportedError
from skyhook_py.query.lang import compile_cut, compile_expression, compile_query
from skyhook_py.storage.manifest import column_type

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
HZZ = (DATA / "uproot-HZZ.root", "events")
TTBAR = (DATA / "nanoAOD_2015_CMS_Open_Data_ttbar.root", "Events")
SMALL_DY = (DATA / "uproot-small-dy-withoffsets.root", "tree")

# NanoAOD: a useful subset of the 947 branches keeps the tests fast
TTBAR_COLUMNS = [
    "nMuon", "Muon_pt", "Muon_eta", "Muon_phi", "Muon_charge", "Muon_tightId", "nJet", "Jet_pt",
    "Jet_eta", "MET_pt", "MET_phi", "nElectron", "Electron_pt", "HLT_IsoMu18",
]


@functools.lru_cache(maxsize=None)
def load(path: Path, tree: str, columns: tuple | None = None):
    """(awkward array, Arrow table, IR schema) of a file's tree, read by uproot alone."""
    if not path.exists():
        pytest.skip(f"test data {path} is missing")
    events = uproot.open(path)[tree].arrays(list(columns) if columns else None)
    table = ak.to_arrow_table(events, extensionarray=False, list_to32=False)
    schema = {f.name: column_type(f.type, f.name) for f in table.schema}
    return events, table, schema


def run_query(table, query: ir.Query):
    """The result table of a Query, by the reference evaluator."""
    return reference.scan_table(table, outputs=query.outputs, where=query.where).table


def selected(table, cut: ir.Expr) -> np.ndarray:
    """Indices of the events the compiled cut keeps (a missing value drops the event)."""
    mask = reference.evaluate(table, cut).to_numpy(zero_copy_only=False)
    mask = np.asarray([bool(m) if m is not None else False for m in mask], dtype=bool)
    return np.flatnonzero(mask)


def assert_close(ours, theirs, path="value"):
    """Lists/records equal, floats to float32 rounding (the oracle may compute in float32)."""
    if isinstance(theirs, dict):
        assert set(ours) == set(theirs), path
        for k in theirs:
            assert_close(ours[k], theirs[k], f"{path}.{k}")
    elif isinstance(theirs, (list, tuple)):
        assert isinstance(ours, (list, tuple)) and len(ours) == len(theirs), f"{path}: {ours!r} != {theirs!r}"
        for i, (a, b) in enumerate(zip(ours, theirs)):
            assert_close(a, b, f"{path}[{i}]")
    elif isinstance(theirs, float) and not isinstance(theirs, bool):
        assert ours is not None and (math.isclose(ours, theirs, rel_tol=1e-6, abs_tol=1e-9)
                                     or (math.isnan(ours) and math.isnan(theirs))), f"{path}: {ours} != {theirs}"
    else:
        assert ours == theirs, f"{path}: {ours!r} != {theirs!r}"


# cut strings uproot itself understands: uproot is the oracle
UPROOT_CUTS = {
    HZZ: [
        "NMuon >= 2",
        "(NMuon >= 2) & (MET_px > 0)",
        "sqrt(MET_px**2 + MET_py**2) > 30",
        "hypot(MET_px, MET_py) > 30",
        "(abs(MET_px) < 20) | (NElectron == 0)",
        "~(NJet > 1)",
        "arctan2(MET_py, MET_px) > 1.0",
        "exp(-NJet) < 0.5",
        "log(MET_px**2 + 1) > 4",
        "(NMuon % 2 == 0) & (NMuon // 2 >= 1)",
        "where(NMuon > 0, MET_px, -MET_px) > 0",
        "(cos(MET_px) > 0) & (sin(MET_py) > 0) & (tan(MET_px) > 0)",
        "sinh(MET_px / 100) > cosh(MET_py / 100) - 1.5",
        "NMuon >= 2.5",
    ],
    TTBAR: [
        "nMuon >= 2",
        "HLT_IsoMu18 & (nJet >= 4)",
        "(MET_pt > 40) | ~HLT_IsoMu18",
        "(nMuon >= 1) & (nElectron == 0) & (MET_pt * 2 > 50)",
    ],
    SMALL_DY: [
        "nMuon >= 2",
        "(nJet >= 2) & (MET_pt > 20)",
        "event % 3 == 1",
    ],
}

# awkward spellings uproot's language lacks: awkward evaluating the text is the oracle
AWKWARD_CUTS = {
    HZZ: [
        "ak.count_nonzero(Muon_Px > 0, axis=1) >= 2",
        "ak.sum(Jet_Px, axis=1) > 10",
        "ak.max(Muon_E, axis=1) > 50",
        "ak.num(Jet_E) >= 2",
        "ak.any(abs(Muon_Pz) > 100, axis=-1)",
        "ak.all(Muon_E > 20, axis=1)",
        "np.sum(Muon_E > 30, axis=1) == 2",
        "ak.mean(Muon_E, axis=1) > 40",
        "ak.min(Muon_E, axis=1) < 30",
    ],
    TTBAR: [
        "(nMuon >= 2) & (ak.count_nonzero(Muon_pt > 20, axis=1) >= 1)",
        "ak.count_nonzero((Jet_pt > 30) & (abs(Jet_eta) < 2.4), axis=1) >= 4",
        "ak.sum(Muon_charge, axis=1) == 0",
        "ak.num(Muon_pt[Muon_charge > 0], axis=1) >= 1",
        "ak.any(np.sqrt(Muon_pt) > 5, axis=1) & (MET_pt > 20)",
        "ak.firsts(Jet_pt) > 50",
    ],
    SMALL_DY: [
        "ak.count_nonzero(Muon_pt > 20, axis=1) >= 2",
        "ak.sum(Jet_pt[Jet_jetId > 1], axis=1) > 100",
        "ak.max(Jet_pt, axis=1) > 3 * MET_pt",
    ],
}

# our own spellings (chained comparisons, and/or/not, bare reductions, x[:, i]), each with an
# awkward equivalent
EQUIVALENTS = {
    HZZ: [
        # Python would ask an array for its truth value here; we mean element-wise logic
        ("-10 < MET_px < 10", "(-10 < MET_px) & (MET_px < 10)"),
        ("(NMuon >= 1) and (EventWeight > 0.5) or NJet > 3", "((NMuon >= 1) & (EventWeight > 0.5)) | (NJet > 3)"),
        ("not (NMuon == 0)", "~(NMuon == 0)"),
        ("count_nonzero(Muon_Px > 0) >= 2", "ak.count_nonzero(Muon_Px > 0, axis=1) >= 2"),
        ("count(Jet_E) >= 1", "ak.num(Jet_E, axis=1) >= 1"),
        ("num(Jet_E, axis=1) >= 1", "ak.num(Jet_E, axis=1) >= 1"),
        ("any(Muon_E > 60)", "ak.any(Muon_E > 60, axis=1)"),
        ("Muon_E[:, 0] > 40", "ak.fill_none(ak.pad_none(Muon_E, 1)[:, 0] > 40, False)"),
        ("Muon_E[:, -1] > 40", "ak.fill_none(ak.firsts(Muon_E[:, ::-1]) > 40, False)"),
        ("Muon_E[:, 1] > 30", "ak.fill_none(ak.pad_none(Muon_E, 2)[:, 1] > 30, False)"),
    ],
    TTBAR: [
        ("sum(Jet_pt[Jet_pt > 30]) > 150", "ak.sum(Jet_pt[Jet_pt > 30], axis=1) > 150"),
        ("Muon_pt[Muon_pt > 20][:, 0] > 25",
         "ak.fill_none(ak.firsts(Muon_pt[Muon_pt > 20]) > 25, False)"),
        ("max(Muon_eta[Muon_pt > 10]) > 1",
         "ak.fill_none(ak.max(Muon_eta[Muon_pt > 10], axis=1) > 1, False)"),
    ],
}


def _awkward_mask(events, text):
    scope = {"ak": ak, "np": np, **{f: events[f] for f in events.fields}}
    scope.update(abs=np.absolute, sqrt=np.sqrt)
    return np.asarray(ak.fill_none(eval(text, scope), False), dtype=bool)  # noqa: S307 (oracle)


def _cases(table):
    return [(f, t) for f, texts in table.items() for t in texts]


def _columns(f):
    return tuple(TTBAR_COLUMNS) if f == TTBAR else None


@pytest.mark.parametrize("source,text", _cases(UPROOT_CUTS), ids=lambda x: x if isinstance(x, str) else None)
def test_cut_selects_what_uproot_selects(source, text):
    events, table, schema = load(*source, _columns(source))
    cut = compile_cut(text, schema)
    tree = uproot.open(source[0])[source[1]]
    probe = "Muon_pt" if "Muon_pt" in schema else "Muon_E" if "Muon_E" in schema else "MET_pt"
    expected = tree.arrays([probe, "event" if "event" in schema else probe], cut=text)
    rows = selected(table, cut)
    assert len(rows) == len(expected)
    assert 0 < len(rows) < table.num_rows or text in ("NMuon >= 2.5",), "the cut should select a strict subset"
    assert_close(events[probe][rows].tolist(), expected[probe].tolist())


@pytest.mark.parametrize("source,text", _cases(AWKWARD_CUTS), ids=lambda x: x if isinstance(x, str) else None)
def test_cut_selects_what_awkward_selects(source, text):
    events, table, schema = load(*source, _columns(source))
    rows = selected(table, compile_cut(text, schema))
    expected = np.flatnonzero(_awkward_mask(events, text))
    assert 0 < len(expected) < len(events), "a cut that keeps all or nothing tests little"
    np.testing.assert_array_equal(rows, expected)


@pytest.mark.parametrize("source,ours,oracle", [(f, a, b) for f, pairs in EQUIVALENTS.items() for a, b in pairs])
def test_bare_reductions_and_element_access(source, ours, oracle):
    events, table, schema = load(*source, _columns(source))
    rows = selected(table, compile_cut(ours, schema))
    expected = np.flatnonzero(_awkward_mask(events, oracle))
    assert 0 < len(expected) < len(events)
    np.testing.assert_array_equal(rows, expected)


def test_index_out_of_range_is_missing_where_awkward_raises():
    events, table, schema = load(*SMALL_DY)
    with pytest.raises(IndexError):
        events["Muon_pt"][:, 0]  # awkward: some events have no muon
    values = reference.evaluate(table, compile_expression("Muon_pt[:, 0]", schema)).to_pylist()
    expected = ak.firsts(events["Muon_pt"]).tolist()
    assert None in expected
    assert_close(values, expected)


@pytest.mark.parametrize("text,oracle", [
    ("Muon_pt[Muon_pt > 20]", "Muon_pt[Muon_pt > 20]"),
    ("Muon_eta[Muon_pt > 20]", "Muon_eta[Muon_pt > 20]"),
    ("Muon_pt[(Muon_pt > 20) & (abs(Muon_eta) < 2.1)] * 2", "Muon_pt[(Muon_pt > 20) & (abs(Muon_eta) < 2.1)] * 2"),
    ("Jet_pt - MET_pt", "Jet_pt - MET_pt"),
    ("hypot(MET_pt * cos(MET_phi), MET_pt * sin(MET_phi))", "np.hypot(MET_pt * np.cos(MET_phi), MET_pt * np.sin(MET_phi))"),
    ("ak.sum(Jet_pt, axis=1)", "ak.sum(Jet_pt, axis=1)"),
])
def test_output_expression_values(text, oracle):
    events, table, schema = load(*TTBAR, tuple(TTBAR_COLUMNS))
    values = reference.evaluate(table, compile_expression(text, schema)).to_pylist()
    scope = {"ak": ak, "np": np, "abs": np.absolute, **{f: events[f] for f in events.fields}}
    assert_close(values, eval(oracle, scope).tolist())  # noqa: S307 (oracle)


# -- the IR each construct becomes ---------------------------------------------------------------

C = ir.col


@pytest.mark.parametrize("text,expected", [
    ("a < b < c", (C("a") < C("b")) & (C("b") < C("c"))),
    ("a and b or not c", (C("a") & C("b")) | ~C("c")),
    ("-x ** 2", -(C("x") ** 2)),
    ("+x", C("x")),
    ("x[:, -2]", ir.call(ir.Op.Index, C("x"), index=-2)),
    ("numpy.absolute(x)", abs(C("x"))),
    ("awkward.count_nonzero(x, axis=-1)", ir.call(ir.Op.CountNonzero, C("x"))),
    ("ak.sum(x, 1)", ir.call(ir.Op.Sum, C("x"))),
    ("ak.firsts(x, axis=1)", ir.call(ir.Op.First, C("x"))),
    ("where(c, 1, 2.5)", ir.call(ir.Op.Where, C("c"), 1, 2.5)),
    ("True", ir.lit(True)),
    ("-9223372036854775808", ir.lit(-(2**63))),
    ("  x > 1  ", C("x") > 1),
    ("(x >\n 1)", C("x") > 1),
])
def test_ir_of_constructs(text, expected):
    assert ir.same(compile_cut(text) if text != "x[:, -2]" else compile_expression(text), expected)


# -- errors, all before any data is read ----------------------------------------------------------

SCHEMA = {
    "nMuon": ir.ColumnType("uint", False), "Muon_pt": ir.ColumnType("float", True),
    "Muon_eta": ir.ColumnType("float", True), "MET_pt": ir.ColumnType("float", False),
    "HLT_IsoMu18": ir.ColumnType("bool", False),
}


def test_unknown_column_suggests_close_matches():
    with pytest.raises(UnknownColumnError) as e:
        compile_cut("(nMuon >= 2) & (ak.max(Muon_ptt, axis=1) > 20)", SCHEMA)
    assert isinstance(e.value, KeyError)
    assert e.value.name == "Muon_ptt" and "Muon_pt" in e.value.suggestions
    assert "did you mean 'Muon_pt'" in str(e.value)


@pytest.mark.parametrize("text,what,position", [
    ("nMuon >= 2 & e.Muon_pt", "attribute access 'e.Muon_pt'", 13),
    ("foo(Muon_pt) > 2", "the function foo()", 0),
    ("ak.sum(Muon_pt, axis=0) > 2", "axis=0 in ak.sum()", 21),
    ("ak.sum(Muon_pt, axis=2) > 2", "axis=2", 21),
    ("ak.sum(Muon_pt) > 2", "without axis=", 0),
    ("MET_pt > 1 if nMuon else 2", "conditional expression", 0),
    ("(lambda x: x)(MET_pt) > 1", "lambda", 1),
    ("Muon_pt[0] > 1", "selecting one event", 0),
    ("Muon_pt[1:3] > 1", "slice over events", 0),
    ("Muon_pt[:, 0:2] > 1", "subscript", 0),
    ("MET_pt > 'abc'", "the string 'abc'", 9),
    ("len(Muon_pt) > 2", "len()", 0),
    ("nMuon ^ 2 > 1", "operator ^", 0),
    ("nMuon in [1, 2]", "'in'", 9),
    ("np.log10(MET_pt) > 1", "np.log10()", 0),
    ("ak.sum(Muon_pt, axis=1, keepdims=True) > 1", "keepdims=", 33),
    ("MET_pt > ak", "the module 'ak'", 9),
])
def test_unsupported_constructs_are_named_with_their_position(text, what, position):
    with pytest.raises(UnsupportedError) as e:
        compile_cut(text, SCHEMA)
    assert what in str(e.value)
    assert e.value.position == position and e.value.source == text
    assert "\n  " + text + "\n  " + " " * position + "^" in str(e.value)


@pytest.mark.parametrize("text,message", [
    ("MET_pt >", "invalid cut"),
    ("", "empty"),
    ("Muon_pt > 20", "one value per object"),
    ("MET_pt + 1", "must be bool"),
    ("HLT_IsoMu18 + 1 > 0", "needs numbers"),
    ("MET_pt & HLT_IsoMu18", "bool operands"),
    # NumPy 2: a Python int beyond int64 in integer arithmetic is an OverflowError
    # (compared, or beside a float, it is fine: tests/test_hardening.py)
    ("nMuon + 123456789012345678901234567890 > 0", "OverflowError"),
    ("sqrt(MET_pt, 2) > 1", "takes 1 argument"),
])
def test_invalid_cuts(text, message):
    with pytest.raises(QueryError, match=message):
        compile_cut(text, SCHEMA)


def test_compile_query_dispatches_and_names_unknown_languages():
    q = compile_query("cut", "nMuon >= 2", SCHEMA)
    assert ir.same(q.where, C("nMuon") >= 2) and q.outputs == ()
    with pytest.raises(QueryError, match="did you mean 'qastle'"):
        compile_query("qastel", "x", SCHEMA)
