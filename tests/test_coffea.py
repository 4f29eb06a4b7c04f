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
