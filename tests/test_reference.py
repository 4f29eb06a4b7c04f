"""The reference evaluator against awkward/NumPy written by hand, on real NanoAOD files.

Each oracle below is an independent awkward expression (never our own output),
e.g. ``ak.sum(ev.Muon_pt[ev.Muon_pt > 20], axis=1)`` for ``sum(Muon_pt[Muon_pt > 20])``.
"""

import errno
from pathlib import Path

import awkward as ak
import numpy as np
import pyarrow as pa
import pytest

from skyhook_py.query import aggregates, ir, reference
from skyhook_py.errors import UnknownColumnError
from skyhook_py.query.ir import AggKind, Op, call, col

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
BRANCHES = ["nMuon", "Muon_pt", "Muon_eta", "Muon_phi", "Muon_charge", "nJet", "Jet_pt", "Jet_eta",
            "MET_pt", "nElectron", "Electron_pt"]


@pytest.fixture(scope="module", params=["nanoAOD_2015_CMS_Open_Data_ttbar.root", "nano_dy.root"])
def events(request):
    uproot = pytest.importorskip("uproot")
    path = DATA / request.param
    if not path.exists():
        pytest.skip(f"{path} missing")
    ev = uproot.open(path)["Events"].arrays(BRANCHES)
    return ev, ak.to_arrow_table(ev, extensionarray=False)


def values(result_column):
    return ak.from_arrow(result_column).to_list() if not isinstance(result_column, list) else result_column


def run(table, **outputs):
    res = reference.scan_table(table, outputs=list(outputs.items()))
    return {k: res.table.column(k).to_pylist() for k in outputs}


def assert_same(got, want):
    """Exact equality, NaN equal to NaN, None to None (lists compared element by element)."""
    want = ak.to_list(want)
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want)):
        if isinstance(w, list):
            assert len(g) == len(w), (i, g, w)
            for a, b in zip(g, w):
                assert a == b or (a is not None and b is not None and np.isnan(a) and np.isnan(b)), (i, g, w)
        else:
            assert g == w or (g is not None and w is not None and np.isnan(g) and np.isnan(w)), (i, g, w)


def test_object_mask_and_reductions(events):
    ev, t = events
    pt, eta = col("Muon_pt"), col("Muon_eta")
    good = pt[(pt > 20) & (abs(eta) < 2.4)]
    got = run(t, s=call(Op.Sum, good), n=call(Op.Count, good), nz=call(Op.CountNonzero, pt > 20),
              mx=call(Op.Max, good), mn=call(Op.Min, col("Jet_pt")), any=call(Op.Any, pt > 50),
              all=call(Op.All, pt > 5), mean=call(Op.Mean, col("Jet_pt")))
    g = ev.Muon_pt[(ev.Muon_pt > 20) & (abs(ev.Muon_eta) < 2.4)]
    assert_same(got["s"], ak.sum(g, axis=1))
    assert_same(got["n"], ak.num(g))
    assert_same(got["nz"], ak.count_nonzero(ev.Muon_pt > 20, axis=1))
    assert_same(got["mx"], ak.max(g, axis=1))             # None for no good muon
    assert_same(got["mn"], ak.min(ev.Jet_pt, axis=1))
    assert_same(got["any"], ak.any(ev.Muon_pt > 50, axis=1))
    assert_same(got["all"], ak.all(ev.Muon_pt > 5, axis=1))
    jet64 = ak.values_astype(ev.Jet_pt, np.float64)
    with np.errstate(invalid="ignore"):
        want_mean = ak.mask(ak.sum(jet64, axis=1) / ak.num(ev.Jet_pt), ak.num(ev.Jet_pt) > 0)
    assert_same(got["mean"], want_mean)
    assert any(n == 0 for n in got["n"]), "the files have events without good muons: empty lists are covered"


def test_element_access_with_missing_values(events):
    ev, t = events
    jet = col("Jet_pt")
    got = run(t, first=call(Op.First, jet), last=call(Op.Last, jet), third=call(Op.Index, jet, index=2),
              second_last=call(Op.Index, jet, index=-2))
    padded = ak.pad_none(ev.Jet_pt, 3, axis=1)
    assert_same(got["first"], ak.firsts(ev.Jet_pt))
    assert_same(got["third"], padded[:, 2])
    assert_same(got["last"], ak.mask(ak.firsts(ev.Jet_pt[:, ::-1]), ak.num(ev.Jet_pt) > 0))
    assert_same(got["second_last"], ak.firsts(ev.Jet_pt[:, ::-1][:, 1:]))


def test_computed_columns_broadcasting_and_float32_math(events):
    ev, t = events
    pt, eta = col("Muon_pt"), col("Muon_eta")
    got = run(t, pz=pt * call(Op.Sinh, eta), rel=pt / col("MET_pt"), shifted=col("nMuon") + 1,
              dphi=col("Muon_phi") - call(Op.First, col("Muon_phi")))
    assert_same(got["pz"], ev.Muon_pt * np.sinh(ev.Muon_eta))      # float32 throughout
    assert_same(got["rel"], ev.Muon_pt / ev.MET_pt)                # event-level broadcast
    assert_same(got["shifted"], ev.nMuon + 1)
    # awkward makes the whole list None where firsts() is None; formats/README.md keeps a list
    # (empty here, since no muon means no first muon)
    assert_same(got["dphi"], ak.fill_none(ev.Muon_phi - ak.firsts(ev.Muon_phi), [], axis=0))
    res = reference.scan_table(t, outputs=[("pz", pt * call(Op.Sinh, eta)), ("n", col("nMuon") + 1)])
    assert res.table.schema.field("pz").type == pa.list_(pa.field("item", pa.float32(), nullable=False))
    assert res.table.schema.field("n").type == pa.uint32()         # weak literal keeps uint32


def test_cut_row_range_and_limit(events):
    ev, t = events
    cut = (col("nMuon") >= 1) & (call(Op.First, col("Jet_pt")) > 30)   # no jet: null cut drops the event
    res = reference.scan_table(t, outputs=[("pt", col("Muon_pt"))], where=cut,
                               row_start=3, row_stop=35, limit=4)
    part = ev[3:35]
    mask = ak.fill_none((part.nMuon >= 1) & (ak.firsts(part.Jet_pt) > 30), False)
    assert_same(res.table.column("pt").to_pylist(), part.Muon_pt[mask][:4])
    assert res.figures["rows_scanned"] == 32
    assert res.figures["rows_matched"] == int(ak.sum(mask))
    assert res.figures["rows_returned"] == min(4, int(ak.sum(mask)))


def test_histograms_against_numpy(events):
    ev, t = events
    ax = ir.Axis(20, 0.0, 100.0)
    aggs = [ir.Aggregation(AggKind.Hist1D, "h", col("Jet_pt"), x_axis=ax, weight=col("MET_pt")),
            ir.Aggregation(AggKind.Hist2D, "h2", col("Jet_pt"), y=col("Jet_eta"), x_axis=ax,
                           y_axis=ir.Axis(10, -2.5, 2.5)),
            ir.Aggregation(AggKind.Count, "n"), ir.Aggregation(AggKind.Sum, "s", col("Jet_pt")),
            ir.Aggregation(AggKind.Max, "mx", col("nJet")), ir.Aggregation(AggKind.Mean, "m", col("MET_pt"))]
    res = reference.scan_table(t, aggregations=aggs)
    final = aggregates.finalize(aggregates.merge([res.aggregates]), aggs)
    x = ak.to_numpy(ak.flatten(ev.Jet_pt)).astype(np.float64)
    w = ak.to_numpy(ak.flatten(ak.broadcast_arrays(ev.MET_pt, ev.Jet_pt)[0])).astype(np.float64)
    inner = (x >= 0) & (x < 100)           # np.histogram closes its last bin: compare [low, high) only
    want, _ = np.histogram(x[inner], bins=20, range=(0, 100), weights=w[inner])
    h = final["h"]
    np.testing.assert_allclose(h.values, want, rtol=1e-12)
    assert h.sumw[0] == pytest.approx(w[x < 0].sum()) and h.sumw[-1] == pytest.approx(w[x >= 100].sum())
    np.testing.assert_allclose(h.variances, np.histogram(x[inner], 20, (0, 100), weights=w[inner] ** 2)[0], rtol=1e-12)
    y = ak.to_numpy(ak.flatten(ev.Jet_eta)).astype(np.float64)
    inner2 = inner & (y >= -2.5) & (y < 2.5)
    want2, _, _ = np.histogram2d(x[inner2], y[inner2], bins=[20, 10], range=[(0, 100), (-2.5, 2.5)])
    np.testing.assert_array_equal(final["h2"].values, want2)
    assert final["h2"].sumw.sum() == len(x) and final["h2"].count == len(x)
    assert final["n"] == len(ev)
    assert final["s"] == pytest.approx(float(np.sum(x)), rel=1e-12)
    assert final["mx"] == int(ak.max(ev.nJet)) and isinstance(final["mx"], int)
    assert final["m"] == pytest.approx(float(np.mean(ak.to_numpy(ev.MET_pt).astype(np.float64))), rel=1e-12)


def test_partitions_merge_to_the_whole(events):
    ev, t = events
    aggs = [ir.Aggregation(AggKind.Sum, "s", col("nMuon")), ir.Aggregation(AggKind.Min, "mn", col("Muon_pt")),
            ir.Aggregation(AggKind.Hist1D, "h", col("Muon_pt"), x_axis=ir.Axis(10, 0, 50)),
            ir.Aggregation(AggKind.Mean, "m", col("Muon_pt")), ir.Aggregation(AggKind.Count, "c", col("Muon_pt"))]
    whole = aggregates.finalize(aggregates.merge([reference.scan_table(t, aggregations=aggs).aggregates]), aggs)
    k = t.num_rows // 3
    parts = [reference.scan_table(t.slice(a, b - a), aggregations=aggs).aggregates
             for a, b in ((0, k), (k, k), (k, 2 * k), (2 * k, t.num_rows))]   # one is empty
    merged = aggregates.finalize(aggregates.merge(parts), aggs)
    assert merged["s"] == whole["s"] == int(ak.sum(ev.nMuon))
    assert merged["mn"] == whole["mn"] == float(ak.min(ev.Muon_pt))
    assert merged["c"] == whole["c"] == int(ak.sum(ak.num(ev.Muon_pt)))
    np.testing.assert_array_equal(merged["h"].sumw, whole["h"].sumw)
    assert merged["m"] == pytest.approx(whole["m"], rel=1e-12)


def table(**cols):
    return pa.table(cols)


def test_float32_sums_are_sequential_like_awkward():
    rng = np.random.default_rng(7)
    x = (rng.random(5000) * 1000).astype(np.float32)
    t = table(x=pa.array([x.tolist(), []], pa.list_(pa.float32())))
    got = reference.evaluate(t, call(Op.Sum, col("x"))).to_pylist()
    seq = np.float32(0)
    for v in x:
        seq = np.float32(seq + v)
    assert got == [float(seq), 0.0]
    assert got[0] == float(ak.sum(ak.unflatten(x, [len(x)]), axis=1)[0])   # awkward adds sequentially too
    assert np.float32(got[0]) != np.sum(x)                     # NumPy's pairwise sum differs here


def test_nan_in_min_max_propagates_unlike_awkward():
    t = table(x=pa.array([[1.0, np.nan, 0.0], [2.0]]))
    assert np.isnan(reference.evaluate(t, call(Op.Min, col("x"))).to_pylist()[0])
    assert ak.min(ak.Array([[1.0, np.nan, 0.0]]), axis=1).to_list() == [0.0]   # the documented difference


def test_nulls_inside_collections():
    t = table(a=pa.array([[1.0, 2.0], [3.0], []]), b=pa.array([[], [5.0], [6.0]]))
    a, fb = col("a"), call(Op.First, col("b"))
    got = reference.scan_table(t, outputs=[("d", a - fb), ("m", a[a > fb]), ("s", call(Op.Sum, a - fb)),
                                           ("c", call(Op.Count, a[a > fb])), ("w", call(Op.Where, a > 1.5, a, fb))])
    d = ak.Array([[1.0, 2.0], [3.0], []]) - ak.firsts(ak.Array([[], [5.0], [6.0]]))
    assert d.to_list() == [None, [-2.0], []]      # awkward: the whole list is None
    assert got.table.column("d").to_pylist() == [[None, None], [-2.0], []]   # formats/README.md: lists stay
    assert got.table.column("m").to_pylist() == [[None, None], [], []]     # a null mask keeps a null (awkward)
    assert got.table.column("s").to_pylist() == [0.0, -2.0, 0.0]
    assert got.table.column("c").to_pylist() == [2, 0, 0]
    assert got.table.column("w").to_pylist() == [[None, 2.0], [3.0], []]
    assert got.table.schema.field("d").type.value_field.nullable
    assert not got.table.schema.field("s").nullable


@pytest.mark.parametrize("expr, code, match", [
    (col("i") ** col("j"), errno.EDOM, "negative integer powers"),
    (col("l") + col("k"), errno.EINVAL, "different lengths"),
    (col("u") + -1, errno.EINVAL, "does not fit in uint32"),
    (col("f") + col("bo"), errno.EINVAL, "needs numbers"),
])
def test_errors_carry_the_class_errno(expr, code, match):
    t = table(i=pa.array([2, 3], pa.int32()), j=pa.array([1, -1], pa.int32()), u=pa.array([1, 2], pa.uint32()),
              l=pa.array([[1], [2, 3]]), k=pa.array([[1], [2]]), f=pa.array([1.0, 2.0]), bo=pa.array([True, False]))
    with pytest.raises(reference.EvaluationError, match=match) as info:
        reference.evaluate(t, expr)
    assert info.value.errno == code
    assert isinstance(info.value, ValueError)


def test_negative_power_only_on_selected_rows_and_non_null_elements():
    t = table(i=pa.array([2, 3], pa.int32()), j=pa.array([1, -1], pa.int32()))
    res = reference.scan_table(t, outputs=[("p", col("i") ** col("j"))], where=col("j") > 0)
    assert res.table.column("p").to_pylist() == [2]


def test_weak_literals_follow_nep50():
    t = table(u=pa.array([0, 7], pa.uint8()), f=pa.array([20.1, 20.2], pa.float32()))
    assert reference.evaluate(t, col("u") > -1).to_pylist() == [True, True]
    assert reference.evaluate(t, col("u") == 300).to_pylist() == [False, False]
    # 20.1 becomes float32(20.1): equal to the stored float32, not greater
    assert reference.evaluate(t, col("f") > 20.1).to_pylist() == (np.array([20.1, 20.2], np.float32) > 20.1).tolist()
    assert reference.evaluate(t, col("f") + 1).type == pa.float32()
    assert reference.evaluate(t, col("u") // 0).to_pylist() == [0, 0]
    assert reference.evaluate(t, (col("u") + (2 - 1)) * 1.5).type == pa.float64()


def test_unknown_column_names_close_matches():
    t = table(Muon_pt=pa.array([[1.0]]))
    with pytest.raises(UnknownColumnError, match="Muon_pt"):
        reference.evaluate(t, col("Muon_Pt"))


def test_fixed_size_and_large_lists_behave_like_lists():
    fixed = pa.FixedSizeListArray.from_arrays(pa.array([1, 2, 3, 4], pa.int16()), 2)
    t = table(f=fixed, g=pa.array([[1, 1], [2, 2]], pa.large_list(pa.int16())))
    got = reference.evaluate(t, col("f") * col("g"))
    assert got.type == pa.list_(pa.field("item", pa.int16(), nullable=False))
    assert got.to_pylist() == [[1, 2], [6, 8]]
