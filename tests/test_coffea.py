"""coffea over Skyhook: NanoEvents with coffea's NanoAOD schema from pushdown answers,
and a coffea processor run over the Skyhook partitions.

Oracle: coffea's own NanoEventsFactory.from_root on the original file (the same
processor, the same cut applied with awkward); no code of ours computes it.
"""

import warnings

import awkward as ak
import hist
import numpy as np
import pytest


coffea = pytest.importorskip("coffea")
from coffea import processor  # noqa: E402
from coffea.nanoevents import NanoAODSchema, NanoEventsFactory  # noqa: E402

pytestmark = [pytest.mark.cluster, pytest.mark.filterwarnings("ignore")]

TTBAR = "nanoAOD_2015_CMS_Open_Data_ttbar.root"
COLUMNS = ["Muon_pt", "Muon_eta", "Muon_phi", "Muon_mass", "Muon_charge", "Jet_pt", "Jet_eta", "Jet_phi",
           "Jet_mass", "Jet_muonIdx1", "Jet_muonIdx2", "MET_pt", "MET_phi"]


def reference_events(path, cut):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ev = NanoEventsFactory.from_root({path: "Events"}, mode="eager", schemaclass=NanoAODSchema).events()
    return ev[cut(ev)]


def test_nanoevents_from_skyhook_equal_coffea_on_the_file(session, ttbar):
    from skyhook_py import coffea as sc

    ev = sc.events("ttbar", COLUMNS, where="nMuon >= 1", session=session)
    ref = reference_events(ttbar, lambda e: ak.num(e.Muon) >= 1)
    assert len(ev) == len(ref) > 0
    assert ak.to_list(ev.Muon.pt) == ak.to_list(ref.Muon.pt)
    assert ak.to_list(ev.event) == ak.to_list(ref.event)
    assert ak.to_list(ev.MET.pt) == ak.to_list(ref.MET.pt)
    # a cross-reference, resolved by coffea's schema from Jet_muonIdx1/2
    assert ak.to_list(ev.Jet.matched_muons.pt) == ak.to_list(ref.Jet.matched_muons.pt)
    # behaviours: four-vector sums
    np.testing.assert_allclose(ak.to_numpy(ak.flatten(ev.Muon.pt * np.cosh(ev.Muon.eta))),
                               ak.to_numpy(ak.flatten(ref.Muon.p)), rtol=1e-5)


class DimuonProcessor(processor.ProcessorABC):
    def process(self, events):
        mu = events.Muon[events.Muon.pt > 5]
        pairs = ak.combinations(mu, 2)
        mass = (pairs["0"] + pairs["1"]).mass
        h = hist.Hist.new.Reg(20, 0, 200, name="mass").Double().fill(mass=ak.flatten(mass))
        met = hist.Hist.new.Reg(10, 0, 200, name="met").Double().fill(met=events.MET.pt)
        return {"events": len(events), "mass": h, "met": met,
                "matched": int(ak.sum(ak.num(ak.flatten(events.Jet.matched_muons, axis=2), axis=1)))}

    def postprocess(self, accumulator):
        return accumulator


def test_processor_over_skyhook_equals_the_same_processor_on_the_file(session, ttbar):
    from skyhook_py import coffea as sc

    out, report = sc.run(DimuonProcessor(), "ttbar", COLUMNS, where="nMuon >= 2", session=session)
    ref = DimuonProcessor().process(reference_events(ttbar, lambda e: ak.num(e.Muon) >= 2))
    assert out["events"] == ref["events"] > 0
    np.testing.assert_array_equal(out["mass"].values(flow=True), ref["mass"].values(flow=True))
    np.testing.assert_array_equal(out["met"].values(flow=True), ref["met"].values(flow=True))
    assert out["matched"] == ref["matched"]
    # one chunk per Skyhook partition the planner keeps (statistics prune those whose
    # nMuon max is below 2), each asked only for the processor's columns
    assert 1 <= len(report["chunks"]) <= 4
    assert sum(c["events"] for c in report["chunks"]) == ref["events"]
    assert set(report["columns"]) == set(COLUMNS) | {"run", "luminosityBlock", "event", "nMuon", "nJet"}


def _recording(session, monkeypatch):
    """Observe the columns each Skyhook query asks for (the real Session does the work)."""
    asked = []
    real = session.run

    def run(dataset, **kw):
        asked.append(list(kw.get("columns") or []))
        return real(dataset, **kw)

    monkeypatch.setattr(session, "run", run)
    return asked


def _traced_on_the_file(path, fn):
    """coffea's own tracing of ``fn`` over NanoEvents of the original file: the oracle of
    which branches a processor touches."""
    from coffea.nanoevents.trace import trace

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ev = NanoEventsFactory.from_root({path: "Events"}, mode="virtual", schemaclass=NanoAODSchema).events()
        return set(trace(fn, ev))


class MuonMetProcessor(processor.ProcessorABC):
    """Touches a few branches only: Muon pt and eta, MET pt."""

    def process(self, events):
        good = events.Muon[(events.Muon.pt > 20) & (abs(events.Muon.eta) < 2.4)]
        met = hist.Hist.new.Reg(10, 0, 200, name="met").Double().fill(met=events.MET.pt[ak.num(good) > 0])
        return {"good_muons": int(ak.sum(ak.num(good))), "met": met}

    def postprocess(self, accumulator):
        return accumulator


def test_processor_columns_discovered_and_only_those_pushed_down(session, ttbar, monkeypatch):
    from skyhook_py import coffea as sc

    asked = _recording(session, monkeypatch)
    out, report = sc.run(MuonMetProcessor(), "ttbar", where="nMuon >= 1", session=session)
    ref = MuonMetProcessor().process(reference_events(ttbar, lambda e: ak.num(e.Muon) >= 1))
    assert out["good_muons"] == ref["good_muons"] > 0
    np.testing.assert_array_equal(out["met"].values(flow=True), ref["met"].values(flow=True))
    # the branches found without reading data are those coffea's tracing finds on the file
    oracle = _traced_on_the_file(ttbar, MuonMetProcessor().process)
    assert set(report["discovered"]) == oracle
    assert {"Muon_pt", "Muon_eta", "MET_pt"} <= oracle and "Jet_pt" not in oracle
    # and each query asked for exactly those (plus the event IDs NanoAODSchema wants)
    assert asked and all(set(a) == oracle | {"run", "luminosityBlock", "event"} for a in asked)


def test_dimuon_processor_without_columns_equals_the_file(session, ttbar, monkeypatch):
    """The processor of test_processor_over_skyhook_... with no column list: discovery
    finds the cross-reference's index branches too."""
    from skyhook_py import coffea as sc

    asked = _recording(session, monkeypatch)
    out, report = sc.run(DimuonProcessor(), "ttbar", where="nMuon >= 2", session=session)
    ref = DimuonProcessor().process(reference_events(ttbar, lambda e: ak.num(e.Muon) >= 2))
    assert out["events"] == ref["events"] > 0
    np.testing.assert_array_equal(out["mass"].values(flow=True), ref["mass"].values(flow=True))
    assert out["matched"] == ref["matched"]
    oracle = _traced_on_the_file(ttbar, DimuonProcessor().process)
    assert set(report["discovered"]) == oracle
    assert {"Jet_muonIdx1", "Jet_muonIdx2"} <= oracle
    assert all(set(a) <= oracle | {"run", "luminosityBlock", "event"} for a in asked)


def test_dask_nanoevents_project_columns_like_coffea_on_the_file(session, ttbar, monkeypatch):
    """coffea's dask mode over Skyhook: the same graph as on NanoEventsFactory.from_root
    (mode="dask") over the original file; only the branches the graph touches are asked."""
    import dask
    import dask_awkward as dak

    from skyhook_py import coffea as sc

    def graph(ev):
        ev = ev[ak.num(ev.Muon) >= 1]
        lead = ev.Muon[:, 0]
        return {"lead_pt": lead.pt, "met": ev.MET.pt,
                "matched": ak.num(ak.flatten(ev.Jet.matched_muons, axis=2), axis=1)}

    ev = sc.events("ttbar", where="nMuon >= 1", session=session, mode="dask")   # the cut pushed down too
    assert isinstance(ev, dak.Array) and ev.npartitions > 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref_ev = NanoEventsFactory.from_root({ttbar: "Events"}, mode="dask", schemaclass=NanoAODSchema).events()
    out, ref = graph(ev), graph(ref_ev)
    ours = set().union(*dak.report_necessary_columns(out).values())
    theirs = set().union(*dak.report_necessary_columns(ref).values())
    assert ours == theirs and "Jet_pt" not in ours and {"Muon_pt", "MET_pt", "Jet_muonIdx1"} <= ours
    asked = _recording(session, monkeypatch)
    got, exp = dask.compute(out, ref, scheduler="sync")
    assert len(asked) == ev.npartitions and all(set(a) == ours for a in asked)
    for k in ("lead_pt", "met", "matched"):
        assert ak.to_list(got[k]) == ak.to_list(exp[k])


def test_a_branch_missing_from_columns_is_a_clear_error(session, ttbar):
    from skyhook_py import coffea as sc
    from skyhook_py.errors import QueryError

    with pytest.raises(QueryError, match="Muon_eta.*not among the columns read"):
        sc.run(MuonMetProcessor(), "ttbar", ["Muon_pt", "MET_pt"], where="nMuon >= 1", session=session)
