"""Where physicists work: NanoEvents-style records with awkward alone, and
dask-awkward graphs over a Skyhook dataset (``skyhook_py.dask.from_skyhook``).

Oracles: uproot on the original file (``tree.arrays``) and the same dask graph built on
``uproot.dask`` over the original file; no code of ours computes the expected answers.
"""

import awkward as ak
import dask
import dask_awkward as dak
import numpy as np
import pytest
import uproot


pytestmark = pytest.mark.cluster

TTBAR = "nanoAOD_2015_CMS_Open_Data_ttbar.root"


def _tree(path):
    return uproot.open(path)["Events"]


# -- records without coffea -----------------------------------------------------------
def test_records_zip_collections_as_nanoevents_names_them(session, ttbar):
    cols = ["run", "event", "nMuon", "Muon_pt", "Muon_eta", "Muon_charge", "MET_pt", "MET_phi", "Jet_pt"]
    cut = "nMuon >= 1"
    events = session.run("ttbar", columns=cols, where=cut).to_awkward(records=True)
    expected = _tree(ttbar).arrays(cols, cut=cut)
    assert events.fields == ["run", "event", "Muon", "MET", "Jet"]
    assert sorted(events.Muon.fields) == ["charge", "eta", "pt"]
    assert len(events) == len(expected) > 0
    assert ak.to_list(ak.num(events.Muon, axis=1)) == ak.to_list(expected.nMuon)
    for f in ("pt", "eta", "charge"):
        assert ak.to_list(events.Muon[f]) == ak.to_list(expected[f"Muon_{f}"])
    assert ak.to_list(events.MET.pt) == ak.to_list(expected.MET_pt)
    assert ak.to_list(events.Jet.pt) == ak.to_list(expected.Jet_pt)
    assert ak.to_list(events.event) == ak.to_list(expected.event)
    # records compose with awkward as NanoEvents' do: the leading muon of each event
    assert ak.to_list(events.Muon.pt[:, 0]) == ak.to_list(expected.Muon_pt[:, 0])


def test_records_counts_must_agree(session, ttbar):
    from skyhook_py.errors import QueryError
    from skyhook_py.query.records import zip_records

    arr = ak.Array({"nMuon": [1, 2], "Muon_pt": [[1.0], [2.0]]})
    with pytest.raises(QueryError, match="nMuon"):
        zip_records(arr)


# -- dask-awkward ---------------------------------------------------------------------
def _graphs(events, records):
    if records:
        sel = events[events.MET.pt > 20]
        return {
            "n": ak.num(sel.Muon, axis=1),
            "ht": ak.sum(sel.Jet.pt, axis=1),
            "met": sel.MET.pt,
        }
    sel = events[events.MET_pt > 20]
    return {
        "n": ak.num(sel.Muon_pt, axis=1),
        "ht": ak.sum(sel.Jet_pt, axis=1),
        "met": sel.MET_pt,
    }


def test_from_skyhook_equals_uproot_dask(session, ttbar):
    from skyhook_py.dask import from_skyhook

    cut = "nJet >= 2"
    events = from_skyhook("ttbar", where=cut, session=session)
    assert isinstance(events, dak.Array)
    assert events.npartitions == len(session.manifest("ttbar").partitions) == 4
    ref = uproot.dask({ttbar: "Events"}, open_files=False)
    ref = ref[ref.nJet >= 2]
    got_graphs, ref_graphs = _graphs(events, False), _graphs(ref, False)
    # dask-awkward's optimisation asks Skyhook only for the columns the graph uses
    needed = dak.report_necessary_columns(*got_graphs.values())
    assert set(next(iter(needed.values()))) == {"MET_pt", "Muon_pt", "Jet_pt"}
    got = dask.compute(*got_graphs.values())
    exp = dask.compute(*ref_graphs.values())
    for g, e in zip(got, exp):
        assert ak.to_list(g) == ak.to_list(e)
    assert len(got[0]) > 0


def test_from_skyhook_requests_only_needed_columns(session, ttbar):
    from skyhook_py.dask import from_skyhook

    events = from_skyhook("ttbar", where="nMuon >= 1", session=session)
    io = events.dask.layers[events.name].io_func
    total = ak.sum(events.MET_pt).compute()
    requested = [c for call in io.requested for c in call]
    assert set(requested) == {"MET_pt"}, requested
    exp = _tree(ttbar).arrays(["MET_pt"], cut="nMuon >= 1").MET_pt
    assert total == pytest.approx(float(ak.sum(exp)), rel=1e-6)


def test_from_skyhook_prunes_partitions_by_event_range(session, ttbar):
    from skyhook_py.dask import from_skyhook

    events = from_skyhook("ttbar", columns=["event"], session=session, event_range=(70, 130))
    assert events.npartitions == 2  # partitions [64, 128) and [128, 192)
    assert ak.to_list(events.event.compute()) == ak.to_list(
        _tree(ttbar).arrays(["event"], entry_start=70, entry_stop=130).event)


def test_from_skyhook_records_and_hist_dask(session, ttbar):
    hist_dask = pytest.importorskip("hist.dask")

    from skyhook_py.dask import from_skyhook

    events = from_skyhook("ttbar", where="nJet >= 2", session=session, records=True)
    assert "Muon" in events.fields and "MET" in events.fields
    ref = uproot.dask({ttbar: "Events"}, open_files=False)
    ref = ref[ref.nJet >= 2]
    got, exp = _graphs(events, True), _graphs(ref, False)
    for k in got:
        assert ak.to_list(got[k].compute()) == ak.to_list(exp[k].compute()), k
    h_got = hist_dask.Hist.new.Reg(20, 0, 200, name="met").Double().fill(met=got["met"])
    h_exp = hist_dask.Hist.new.Reg(20, 0, 200, name="met").Double().fill(met=exp["met"])
    h_got, h_exp = dask.compute(h_got, h_exp)
    assert h_got.sum() > 0
    np.testing.assert_array_equal(h_got.values(flow=True), h_exp.values(flow=True))
