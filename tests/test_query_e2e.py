"""End to end on a real cluster: ingest real files, query with pushdown, with
--no-pushdown, and compare both with what uproot computes on the original file.

The oracle is uproot's own ``tree.arrays(columns, cut=...)``: no code of ours is
involved in computing the expected answer.
"""

import subprocess
import sys

import awkward as ak
import numpy as np
import pytest
import uproot

from skyhook_py import UnknownColumnError, UnknownDatasetError
from skyhook_py.errors import QueryError

pytestmark = pytest.mark.cluster

TTBAR = "nanoAOD_2015_CMS_Open_Data_ttbar.root"
HZZ = "uproot-HZZ.root"

TTBAR_CASES = [
    (["run", "event", "MET_pt", "nMuon", "Muon_pt", "Muon_eta"], "nMuon >= 1"),
    (["MET_pt", "nJet", "Jet_pt"], "(nJet >= 4) & (MET_pt > 30)"),
    (["event", "Electron_pt"], "(MET_pt > 20) | ~(nElectron == 0)"),
    (["MET_pt", "MET_phi", "Muon_pt"], "(abs(MET_phi) < 1.5) & (nMuon >= 1)"),
    (["event"], "sqrt(MET_pt) * 2 - 3 > 10"),
    (["MET_pt"], "MET_pt > 1e9"),  # nothing matches
    (["luminosityBlock", "Photon_pt"], None),  # projection only
]
HZZ_CASES = [
    (["NMuon", "Muon_Px", "Muon_Py", "MET_px"], "NMuon >= 2"),
    (["EventWeight", "NJet", "Jet_Px"], "(NJet > 1) & (MET_px > 0) | (NElectron == 2)"),
    (["MET_px", "MET_py"], "MET_px**2 + MET_py**2 > 400"),
]


@pytest.fixture(scope="module")
def datasets(session, shared_data):
    session.ingest([shared_data / TTBAR], "ttbar", tree="Events", partition_events=64)
    session.ingest([shared_data / HZZ], "hzz", tree="events", partition_events=500)
    return {"ttbar": (shared_data / TTBAR, "Events"), "hzz": (shared_data / HZZ, "events")}


def oracle(path, tree, columns, cut):
    with uproot.open(path) as f:
        return f[tree].arrays(columns, cut=cut)


def assert_same(table, expected, columns):
    got = ak.from_arrow(table)
    assert len(got) == len(expected)
    assert table.column_names == columns
    for c in columns:
        g, e = got[c], expected[c]
        assert ak.to_list(g) == ak.to_list(e), f"column {c} differs"
        # types too: the leaf dtype and whether it is a collection
        gt, et = ak.flatten(g, axis=None), ak.flatten(e, axis=None)
        assert ak.to_numpy(gt).dtype == ak.to_numpy(et).dtype, f"dtype of {c}"
        assert g.ndim == e.ndim, f"{c}: collection vs per-event"


@pytest.mark.parametrize("name,cases", [("ttbar", TTBAR_CASES), ("hzz", HZZ_CASES)])
def test_pushdown_equals_plain_read_and_uproot(session, datasets, name, cases):
    path, tree = datasets[name]
    for columns, cut in cases:
        expected = oracle(path, tree, columns, cut)
        pushed = session.run(name, columns=columns, where=cut, pushdown="on")
        plain = session.run(name, columns=columns, where=cut, pushdown="off")
        assert_same(pushed.table, expected, columns)
        assert_same(plain.table, expected, columns)
        s = pushed.summary
        assert s.events_matched == len(expected)
        assert s.partitions_pushed_down + s.partitions_pruned == s.partitions_total
        assert s.partitions_fallen_back == 0
        assert plain.summary.partitions_read == plain.summary.partitions_total - plain.summary.partitions_pruned
        if cut and len(expected) < s.events_scanned // 4:
            # a selective cut must send fewer bytes than the plain read
            assert s.bytes_returned < plain.summary.bytes_returned


def test_event_range_and_limit(session, datasets):
    path, tree = datasets["ttbar"]
    with uproot.open(path) as f:
        expected = f[tree].arrays(["event", "MET_pt"], entry_start=50, entry_stop=170)
    r = session.run("ttbar", columns=["event", "MET_pt"], event_range=(50, 170), pushdown="on")
    assert_same(r.table, expected, ["event", "MET_pt"])
    cut = expected[expected.MET_pt > 25]
    r = session.run("ttbar", columns=["event"], where="MET_pt > 25", event_range=(50, 170), limit=7)
    assert ak.to_list(ak.from_arrow(r.table)["event"]) == ak.to_list(cut.event[:7])


def test_statistics_prune_partitions(session, datasets):
    path, tree = datasets["ttbar"]
    with uproot.open(path) as f:
        met = f[tree]["MET_pt"].array(library="np")
    top = float(np.max(met[:64]))  # the first partition's maximum
    r = session.run("ttbar", columns=["MET_pt"], where=f"MET_pt > {top}", pushdown="on")
    assert r.summary.partitions_pruned >= 1
    assert sorted(ak.to_list(ak.from_arrow(r.table)["MET_pt"])) == sorted(met[met > top].tolist())


def test_errors_name_the_cause_before_any_work(session, datasets):
    with pytest.raises(UnknownColumnError, match="MET_pt"):
        session.run("ttbar", columns=["MET_Pt"])
    with pytest.raises(UnknownColumnError, match="nMuon"):
        session.run("ttbar", columns=["event"], where="nMuons > 2")
    with pytest.raises(UnknownDatasetError, match="ttbar"):
        session.run("ttbarr", columns=["event"])
    with pytest.raises(QueryError):
        session.run("ttbar", columns=["event"], where="Muon_pt > 20")  # per-object cut


def test_cli_query_writes_output(datasets, store, tmp_path):
    out = tmp_path / "sel.parquet"
    cmd = [sys.executable, "-m", "skyhook_py.cli", "--conf", store.conf, "--pool", store.pool,
           "query", "ttbar", "--columns", "event,Muon_pt", "--where", "nMuon >= 2", "--output", str(out)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "events matched" in p.stdout
    import pyarrow.parquet as pq

    path, tree = datasets["ttbar"]
    expected = oracle(path, tree, ["event", "Muon_pt"], "nMuon >= 2")
    assert_same(pq.read_table(out), expected, ["event", "Muon_pt"])
    bad = subprocess.run(cmd[:-7] + ["ttbar", "--where", "nMoun > 1"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "nMuon" in bad.stderr


def test_to_parquet_streams_the_answer_to_a_file(session, datasets, tmp_path):
    import pyarrow.parquet as pq

    path, tree = datasets["ttbar"]
    columns, cut = ["event", "MET_pt", "Muon_pt"], "nMuon >= 1"
    out = tmp_path / "sel.parquet"
    summary = session.to_parquet(out, "ttbar", columns=columns, where=cut)
    f = pq.ParquetFile(out)
    # one row group per partition's batch: written as they came, not as one table
    assert f.metadata.num_row_groups > 1
    assert_same(f.read(), oracle(path, tree, columns, cut), columns)
    assert summary.events_matched == f.metadata.num_rows
    # nothing matches: a file with the typed columns and no rows
    empty = tmp_path / "none.parquet"
    session.to_parquet(empty, "ttbar", columns=["event", "Muon_pt"], where="MET_pt > 1e9")
    t = pq.read_table(empty)
    assert t.num_rows == 0 and t.column_names == ["event", "Muon_pt"]
    assert not list(tmp_path.glob("*.part"))
