"""servicex uproot-raw JSON, written by servicex 3's own query class, vs uproot.arrays().

The oracle is uproot's ``TTree.arrays(expressions, cut=, filter_name=, aliases=)``
on the source file, the call the ServiceX transformer makes with the same dict.
"""

from __future__ import annotations

import json

import awkward as ak
import pytest
import uproot

servicex_query = pytest.importorskip("servicex.query")

from test_lang_cut import HZZ, SMALL_DY, assert_close, load, run_query  # noqa: E402

from skyhook_py.query import ir  # noqa: E402
from skyhook_py.errors import QueryError, UnknownColumnError, UnsupportedError  # noqa: E402
from skyhook_py.query.lang import compile_query, compile_uproot_raw  # noqa: E402

UPROOT_ARGS = ("expressions", "cut", "filter_name", "aliases")

CASES = [
    (SMALL_DY, {"treename": "tree", "filter_name": ["Muon_pt", "nMuon"], "cut": "nMuon >= 2"}),
    (SMALL_DY, {"treename": "tree", "filter_name": "Jet_*", "cut": "(nJet >= 2) & (MET_pt > 20)"}),
    (SMALL_DY, {"treename": "tree", "filter_name": "/Muon_.*/"}),
    (SMALL_DY, {"treename": "tree", "expressions": ["Muon_pt[Muon_pt > 20]", "MET_pt"], "cut": "nMuon >= 1"}),
    (SMALL_DY, {"treename": "tree", "expressions": ["mpt", "MET_pt", "ht"],
                "aliases": {"mpt": "Muon_pt * 2", "ht": "sqrt(MET_pt) + mpt2", "mpt2": "MET_pt / 2"},
                "cut": "ht > 10"}),
    (HZZ, {"treename": "events", "expressions": "hypot(MET_px, MET_py)", "cut": "NMuon >= 2"}),
    (HZZ, {"treename": "events", "expressions": ["Muon_E[Muon_E > 30]", "Muon_Px[Muon_E > 30]"],
           "filter_name": "ignored_when_expressions_given"}),
]


def _uproot(source, sub):
    kwargs = {k: sub[k] for k in UPROOT_ARGS if k != "expressions" and sub.get(k) is not None}
    return uproot.open(source[0])[source[1]].arrays(sub.get("expressions"), **kwargs)


@pytest.mark.parametrize("source,sub", CASES, ids=[json.dumps(s)[:60] for _, s in CASES])
def test_uproot_raw_matches_uproot(source, sub):
    events, table, schema = load(*source)
    text = servicex_query.UprootRaw([sub]).generate_selection_string()
    (tree, query), = compile_uproot_raw(text, schema)
    assert tree == source[1]
    result = run_query(table, query)
    expected = _uproot(source, sub)
    assert result.column_names == expected.fields
    assert result.num_rows == len(expected) > 0
    for name in expected.fields:
        assert_close(result.column(name).to_pylist(), expected[name].tolist(), name)


def test_servicex_json_shape_is_what_we_accept():
    """The exact JSON servicex 3 sends, nulls included, and a bare dict."""
    text = servicex_query.UprootRaw({"treename": "Events", "filter_name": "Muon_*", "cut": "nMuon >= 2"}) \
        .generate_selection_string()
    assert json.loads(text) == [{
        "treename": "Events", "expressions": None, "cut": "nMuon >= 2", "filter_name": "Muon_*",
        "filter_typename": None, "aliases": None, "fail_on_missing_trees": None,
        "use_standard_awkward_axis": None,
    }]
    schema = load(*SMALL_DY)[2]
    (tree, q), = compile_uproot_raw(text, schema)
    assert tree == "Events" and [n for n, _ in q.outputs] == ["Muon_charge", "Muon_pt"]
    assert ir.same(q.where, ir.col("nMuon") >= 2)
    assert compile_uproot_raw(json.loads(text)[0], schema)[0][1].key() == q.key()
    assert compile_query("uproot-raw", text, schema).key() == q.key()


def test_awkward_reductions_default_to_one_value_per_event():
    """ServiceX's transformer lets ak.sum(x) mean axis=1 unless use_standard_awkward_axis."""
    events, table, schema = load(*SMALL_DY)
    sub = {"treename": "tree", "expressions": ["MET_pt"], "cut": "ak.count_nonzero(Muon_pt > 20) >= 2"}
    (_, q), = compile_uproot_raw([sub], schema)
    expected = events[ak.count_nonzero(events.Muon_pt > 20, axis=1) >= 2]
    result = run_query(table, q)
    assert result.num_rows == len(expected) > 0
    assert_close(result.column("MET_pt").to_pylist(), expected.MET_pt.tolist())
    with pytest.raises(UnsupportedError, match="without axis="):
        compile_uproot_raw([{**sub, "use_standard_awkward_axis": True}], schema)


def test_several_trees_give_several_queries():
    schema = load(*SMALL_DY)[2]
    out = compile_uproot_raw([{"treename": ["a", "b"], "filter_name": "MET_pt"},
                              {"treename": {"tree": "renamed"}, "expressions": "nJet"}], schema)
    assert [t for t, _ in out] == ["a", "b", "tree"]
    with pytest.raises(QueryError, match="3 trees"):
        compile_query("uproot-raw", [{"treename": ["a", "b", "c"], "filter_name": "MET_pt"}], schema)


SCHEMA = {"nMuon": ir.ColumnType("uint", False), "Muon_pt": ir.ColumnType("float", True),
          "MET_pt": ir.ColumnType("float", False)}


@pytest.mark.parametrize("query,error,message", [
    ([{"copy_histograms": "h*"}], UnsupportedError, "copy_histograms"),
    ([{"treename": "t", "filter_typename": "float"}], UnsupportedError, "filter_typename"),
    ([{"treename": "t", "cutt": "nMuon > 1"}], QueryError, "did you mean 'cut'"),
    ([{"treename": "t", "filter_name": "Muon_ptt"}], QueryError, "matches no column; did you mean 'Muon_pt'"),
    ([{"treename": "t", "expressions": ["Muon_ptt"]}], UnknownColumnError, "did you mean 'Muon_pt'"),
    ([{"treename": "t", "cut": "nMuon >= 2 and foo(MET_pt)"}], UnsupportedError, "foo()"),
    ([{"treename": "t", "cut": "Muon_pt > 20"}], QueryError, "one value per object"),
    ([{"treename": "t", "aliases": {"a": "b + 1", "b": "a * 2"}, "expressions": "a"}], QueryError, "cycle"),
    ([{"cut": "nMuon > 1"}], QueryError, "needs a treename"),
    ("[{\"treename\": ", QueryError, "not valid JSON"),
    ([], QueryError, "non-empty list"),
    ([{"treename": "t", "expressions": [1]}], QueryError, "list of strings"),
])
def test_invalid_uproot_raw(query, error, message):
    with pytest.raises(error) as e:
        compile_uproot_raw(query, SCHEMA)
    assert message in str(e.value)


def test_unsupported_cut_points_into_the_cut():
    with pytest.raises(UnsupportedError) as e:
        compile_uproot_raw([{"treename": "t", "cut": "(nMuon >= 2) & e.MET_pt"}], SCHEMA)
    assert e.value.source == "(nMuon >= 2) & e.MET_pt" and e.value.position == 15
