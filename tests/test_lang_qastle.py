"""qastle as the real packages write it, compiled and evaluated, vs func_adl_uproot.

The qastle texts are produced at test time by the real frontends (servicex 3's
``query.FuncADL_Uproot`` and func_adl's ``UprootDataset``), in the three
spellings (servicex's ``(call Select ...)``, the method-call form of collection
operators, and the LINQ-node form ``(Select ...)`` that ``qastle.insert_linq_nodes``
gives).  The oracle is func_adl_uproot running the same query on the ROOT file.
"""

from __future__ import annotations

import ast

import awkward as ak
import pytest

qastle = pytest.importorskip("qastle")
func_adl_uproot = pytest.importorskip("func_adl_uproot")
servicex_query = pytest.importorskip("servicex.query")

from test_lang_cut import SMALL_DY, TTBAR, TTBAR_COLUMNS, assert_close, load, run_query  # noqa: E402

from skyhook_py.query import ir  # noqa: E402
from skyhook_py.errors import QueryError, UnknownColumnError, UnsupportedError  # noqa: E402
from skyhook_py.query.lang import compile_qastle, compile_query  # noqa: E402


def method_form(query) -> str:
    """The qastle func_adl 3 produces: method calls for collection operators."""
    return qastle.python_ast_to_text_ast(query.query_ast)


def linq_form(query) -> str:
    """The same query with every operator as a LINQ node: (Select (Where ...) ...)."""
    import copy

    return qastle.python_ast_to_text_ast(qastle.insert_linq_nodes(copy.deepcopy(query.query_ast)))


# Each query is a chain of (operator, lambda source).  Strings, because func_adl
# finds a Python lambda's source by inspecting the caller's line, which breaks on
# lambdas nested in tables like this one; func_adl parses the strings itself.
QUERIES = {
    "event cut, dict": [("Where", "lambda e: e.nMuon >= 2"),
                        ("Select", "lambda e: {'pt': e.Muon_pt, 'met': e.MET_pt}")],
    "collection Where": [("Select", "lambda e: {'pt': e.Muon_pt.Where(lambda m: m > 20), 'n': e.nJet}")],
    "count in cut, list": [("Where", "lambda e: e.Muon_pt.Where(lambda m: m > 20).Count() >= 1"),
                           ("Select", "lambda e: [e.MET_pt, e.nJet]")],
    "tuple": [("Select", "lambda e: (e.MET_pt * 2, e.event)")],
    "single value": [("Where", "lambda e: e.MET_pt > 30"), ("Select", "lambda e: e.MET_pt")],
    "reductions": [("Where", "lambda e: e.nJet > 0"), ("Select", """lambda e: {
        'sum': e.Jet_pt.Where(lambda j: j > 30).Select(lambda j: j * 2).Sum(),
        'max': e.Jet_pt.Max(), 'min': e.Jet_pt.Min(), 'first': e.Jet_pt.First(),
        'count': e.Jet_pt.Count()}""")],
    "any/all": [("Select", """lambda e: {'any': e.Jet_pt.Any(lambda j: j > 50),
        'all': e.Muon_pt.All(lambda m: m > 10),
        'anym': e.Jet_pt.Where(lambda j: j > 20).Any(lambda j: j > 60)}""")],
    "arithmetic and functions": [
        ("Where", "lambda e: (e.MET_pt > 10 and e.nJet >= 1) or not (e.nMuon == 0)"),
        ("Select", """lambda e: {'x': abs(e.MET_pt - 40) / 2 + e.nJet ** 2, 's': np.sqrt(e.MET_pt),
            'c': e.Muon_charge.Where(lambda q: q > 0).Count(),
            'mix': e.Jet_pt.Where(lambda j: j > e.MET_pt).Count(),
            'w': e.MET_pt if e.nJet > 2 else e.MET_pt * 0.5}""")],
    "chained selects": [("Select", "lambda e: {'pt': e.Muon_pt, 'met': e.MET_pt}"),
                        ("Where", "lambda r: r.met > 20"),
                        ("Select", "lambda r: {'npt': r.pt.Where(lambda p: p > 25).Count(), 'met': r.met}")],
}


def build(query, chain):
    for operator, source in chain:
        query = getattr(query, operator)(source)
    return query


def _oracle(name, path, tree):
    query = build(func_adl_uproot.UprootDataset(str(path), tree), QUERIES[name])
    return query, query.value()


def _compare(result_table, oracle):
    got = {c: result_table.column(c).to_pylist() for c in result_table.column_names}
    if oracle.fields:
        assert sorted(got) == sorted(oracle.fields)
        for f in oracle.fields:
            assert_close(got[f], oracle[f].tolist(), f)
    else:
        assert list(got) == ["col1"]
        assert_close(got["col1"], oracle.tolist())


@pytest.mark.parametrize("form", ["method", "linq"])
@pytest.mark.parametrize("name", list(QUERIES))
def test_func_adl_query_matches_func_adl_uproot(name, form):
    events, table, schema = load(*SMALL_DY)
    query, oracle = _oracle(name, *SMALL_DY)
    text = method_form(query) if form == "method" else linq_form(query)
    if form == "linq":
        assert text.startswith("(Select")
    compiled = compile_qastle(text, schema)
    result = run_query(table, compiled)
    assert 0 < result.num_rows
    assert result.num_rows == len(oracle)
    _compare(result, oracle)


def test_servicex_qastle_on_nanoaod():
    """servicex 3's own query classes write the text; func_adl_uproot on the file is the oracle."""
    events, table, schema = load(*TTBAR, tuple(TTBAR_COLUMNS))
    chain = [("Where", "lambda e: e.Muon_pt.Where(lambda m: m > 20).Count() >= 1"),
             ("Select", "lambda e: {'eta': e.Muon_eta.Where(lambda m: m > -1.5), 'met': e.MET_pt, 'n': e.nJet}")]
    text = build(servicex_query.FuncADL_Uproot().FromTree("Events"), chain).generate_selection_string()
    assert text.startswith("(call Select (call Where (call EventDataset 'bogus.root' 'Events')")
    compiled = compile_qastle(text, schema)
    oracle = build(func_adl_uproot.UprootDataset(str(TTBAR[0]), "Events"), chain).value()
    result = run_query(table, compiled)
    assert 0 < result.num_rows == len(oracle) < table.num_rows
    _compare(result, oracle)


def test_collection_access_masks_every_field():
    """e.Muon.Where(lambda m: m.pt > 20).Select(lambda m: m.eta) is Muon_eta[Muon_pt > 20]."""
    events, table, schema = load(*TTBAR, tuple(TTBAR_COLUMNS))
    sx = build(servicex_query.FuncADL_Uproot().FromTree("Events"), [
        ("Where", "lambda e: e.Muon.Where(lambda m: m.pt > 20).Count() >= 1"),
        ("Select", """lambda e: {
            'eta': e.Muon.Where(lambda m: m.pt > 20).Select(lambda m: m.eta),
            'pt': e.Muon.pt, 'nmu': e.Muon.Count(),
            'q': e.Muon.Where(lambda m: m.pt > 20).Where(lambda m: abs(m.eta) < 2.1).Select(lambda m: m.charge)}""")])
    compiled = compile_qastle(sx.generate_selection_string(), schema)
    assert ir.same(dict(compiled.outputs)["eta"], ir.col("Muon_eta")[ir.col("Muon_pt") > 20])
    result = run_query(table, compiled)
    # awkward on the flat NanoAOD names is the oracle
    mu = events[ak.count_nonzero(events.Muon_pt > 20, axis=1) >= 1]
    keep = mu.Muon_pt > 20
    assert result.num_rows == len(mu) > 0
    assert_close(result.column("eta").to_pylist(), mu.Muon_eta[keep].tolist())
    assert_close(result.column("pt").to_pylist(), mu.Muon_pt.tolist())
    assert result.column("nmu").to_pylist() == ak.num(mu.Muon_pt).tolist()
    assert result.column("q").to_pylist() == mu.Muon_charge[keep & (abs(mu.Muon_eta) < 2.1)].tolist()


def test_three_spellings_compile_to_the_same_query():
    schema = load(*SMALL_DY)[2]
    texts = [
        "(call Select (call Where (call EventDataset) (lambda (list e) (> (call (attr (attr e 'Muon_pt') 'Count')) 1)))"
        " (lambda (list e) (attr e 'MET_pt')))",
        "(Select (Where (call EventDataset) (lambda (list e) (> (Count (attr e 'Muon_pt')) 1)))"
        " (lambda (list e) (attr e 'MET_pt')))",
        "(call (attr (call (attr (call EventDataset) 'Where') (lambda (list e) (> (call Count (attr e 'Muon_pt')) 1)))"
        " 'Select') (lambda (list e) (attr e 'MET_pt')))",
    ]
    keys = {compile_qastle(t, schema).key() for t in texts}
    assert len(keys) == 1
    q = compile_query("qastle", texts[0], schema)
    assert ir.same(q.where, ir.call(ir.Op.Count, ir.col("Muon_pt")) > 1)


# -- errors, before any data is read --------------------------------------------------------------

SCHEMA = {
    "nMuon": ir.ColumnType("uint", False), "Muon_pt": ir.ColumnType("float", True),
    "Muon_eta": ir.ColumnType("float", True), "MET_pt": ir.ColumnType("float", False),
    "Jet_pt": ir.ColumnType("float", True),
}


def _text(chain):
    return build(servicex_query.FuncADL_Uproot().FromTree("Events"), chain).generate_selection_string()


def test_unknown_column_suggests_close_matches():
    with pytest.raises(UnknownColumnError) as e:
        compile_qastle(_text([("Select", "lambda e: {'pt': e.Muon_ptt}")]), SCHEMA)
    assert "Muon_pt" in e.value.suggestions and "qastle query, at position" in str(e.value)
    with pytest.raises(UnknownColumnError, match="did you mean 'Muon_pt'"):
        compile_qastle(_text([("Select", "lambda e: e.Muon.ptt")]), SCHEMA)


@pytest.mark.parametrize("chain,what", [
    ([("SelectMany", "lambda e: e.Muon_pt")], "LINQ operator SelectMany"),
    ([("Select", "lambda e: e.Jet_pt.OrderBy(lambda j: j)")], "LINQ operator OrderBy"),
    ([("Select", "lambda e: e.Jet.Select(lambda j: e.Muon.Where(lambda m: m.pt > j.pt).Count())")],
     "nested loop"),
    ([("Select", "lambda e: e.Muon.Select(lambda m: {'pt': m.pt})")], "record per object"),
    ([("Select", "lambda e: e.Muon.Select(lambda m: m.pt())")], "method call .pt()"),
    ([("Select", "lambda e: e.Muon_pt.ElementAt(e.nMuon)")], "ElementAt with an index"),
])
def test_unsupported_constructs_are_named(chain, what):
    text = _text(chain)
    with pytest.raises(UnsupportedError) as e:
        compile_qastle(text, SCHEMA)
    assert what in str(e.value)
    if e.value.position is not None:
        assert e.value.source == text and 0 <= e.value.position < len(text)


def test_unsupported_position_points_at_the_operator():
    text = "(call Select (call EventDataset) (lambda (list e) (call (attr (attr e 'Muon_pt') 'Zip'))))"
    with pytest.raises(UnsupportedError, match="Zip") as e:
        compile_qastle(text, SCHEMA)
    assert text[e.value.position:].startswith("(call (attr (attr e 'Muon_pt') 'Zip')")


@pytest.mark.parametrize("text,message", [
    ("(call Select (call EventDataset) (lambda (list e) (attr e 'MET_pt')", "unexpected end"),
    ("", "empty"),
    ("(call Select (call EventDataset) (lambda (list e) (> (attr e 'MET_pt') 1)))) x", "invalid qastle"),
    ("(call Where (call EventDataset) (lambda (list e) (attr e 'Muon_pt')))", "without Select"),
    ("(call Select (call Where (call EventDataset) (lambda (list e) (> (attr e 'Muon_pt') 1))) "
     "(lambda (list e) (attr e 'MET_pt')))", "one value per object"),
    ("(call Select (call EventDataset) (lambda (list e) (attr f 'MET_pt')))", "unknown name 'f'"),
    ("(+ 1 2)", "start from EventDataset"),
    ("(Count (call EventDataset))", "Count over the events"),
    ("(Where (call EventDataset) (attr e 'MET_pt'))", "invalid qastle"),
])
def test_invalid_qastle(text, message):
    with pytest.raises(QueryError, match=message):
        compile_qastle(text, SCHEMA)


def test_qastle_round_trip_of_the_parser_keeps_semantics():
    """Our positioned parser gives the same tree as qastle's own text_ast_to_python_ast."""
    from skyhook_py.query.lang.qastle import parse_qastle

    text = _text([("Where", "lambda e: e.nMuon >= 2"), ("Select", "lambda e: {'pt': e.Muon_pt}")])
    ours, _ = parse_qastle(text)
    theirs = qastle.unwrap_ast(qastle.text_ast_to_python_ast(text))
    assert ast.dump(ours) == ast.dump(theirs)
