"""The `skyhook query` command as users meet it (issue 13): columns with brackets and
calls, masking one collection with another, named histograms (several on one
variable), --json with histograms, -o for histograms, --show, progress, and
Session.aggregate with the Client's plain dicts.

Oracles: uproot on the original file, and hist (boost-histogram) filled with uproot's
values for histograms.
"""

import json
import logging
import subprocess
import sys
from pathlib import Path

import awkward as ak
import hist
import numpy as np
import pyarrow.parquet as pq
import pytest
import uproot

from skyhook_py.errors import QueryError
from skyhook_py.query.lang import split_columns

TTBAR = "nanoAOD_2015_CMS_Open_Data_ttbar.root"
REPO = str(Path(__file__).resolve().parents[1])


def test_split_columns_respects_brackets_calls_and_quotes():
    assert split_columns("run, Muon_pt[:,0], hypot(MET_pt, MET_phi)") == [
        "run", "Muon_pt[:,0]", "hypot(MET_pt, MET_phi)"]
    assert split_columns("a,b") == ["a", "b"]
    assert split_columns("where(nMuon > 0, 1, 2),x[{'a', 'b'}]") == ["where(nMuon > 0, 1, 2)", "x[{'a', 'b'}]"]
    assert split_columns(" event ,, ") == ["event"]


def run_cli(ceph_cluster, pool, *args):
    cmd = [sys.executable, "-c", "import sys; from skyhook_py.cli import main; sys.exit(main())",
           "--conf", str(ceph_cluster.conf_path), "--keyring", str(ceph_cluster.admin_keyring),
           "--pool", pool, "query", *map(str, args)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=180, cwd=REPO)
    return p.returncode, p.stdout, p.stderr


def _uproot(path, cols, cut=None):
    with uproot.open(path) as f:
        return f["Events"].arrays(cols, cut=cut)


@pytest.mark.cluster
def test_columns_with_brackets_and_two_argument_calls(ceph_cluster, pool, ttbar, tmp_path):
    out = tmp_path / "rows.parquet"
    code, stdout, stderr = run_cli(ceph_cluster, pool, "ttbar", "--columns",
                                   "event,Muon_pt[:,0],arctan2(MET_phi, MET_pt)", "--where", "nMuon >= 1",
                                   "-o", out)
    assert code == 0, stderr
    t = pq.read_table(out)
    assert t.column_names == ["event", "Muon_pt[:,0]", "arctan2(MET_phi, MET_pt)"]
    exp = _uproot(ttbar, ["event", "Muon_pt", "MET_phi", "MET_pt"], "nMuon >= 1")
    assert t.column("event").to_pylist() == ak.to_list(exp.event)
    np.testing.assert_array_equal(t.column("Muon_pt[:,0]").to_numpy(), ak.to_numpy(exp.Muon_pt[:, 0]))
    np.testing.assert_allclose(t.column("arctan2(MET_phi, MET_pt)").to_numpy(),
                               np.arctan2(ak.to_numpy(exp.MET_phi), ak.to_numpy(exp.MET_pt)), rtol=1e-6)


@pytest.mark.cluster
def test_masking_one_collection_with_another_is_one_clear_error(session, ttbar, ceph_cluster, pool, caplog):
    messages = []
    for pushdown in ("on", "off"):
        with pytest.raises(QueryError) as e:
            session.run("ttbar", columns=["Muon_pt[Jet_pt > 30]"], pushdown=pushdown)
        messages.append(str(e.value))
    assert messages[0] == messages[1]
    assert "collection Muon" in messages[0] and "collection Jet" in messages[0]
    # the same collection is fine, and equals awkward on uproot's arrays
    got = session.run("ttbar", columns=["Muon_pt[Muon_eta > 0]"], where="nMuon >= 1").table
    exp = _uproot(ttbar, ["Muon_pt", "Muon_eta"], "nMuon >= 1")
    assert got.column(0).to_pylist() == ak.to_list(exp.Muon_pt[exp.Muon_eta > 0])
    # the CLI: exit 2 with the message, no traceback, with and without --no-pushdown
    for extra in ([], ["--no-pushdown"]):
        code, stdout, stderr = run_cli(ceph_cluster, pool, "ttbar", "--columns", "Muon_pt[Jet_pt > 30]", *extra)
        assert code != 0 and "collection Jet" in stderr and "Traceback" not in stderr, stderr
    # the coordinator answers INVALID_ARGUMENT and does not log an internal error
    from skyhook_py.service.client import Client
    from skyhook_py.service.coordinator import Coordinator
    from skyhook_py.service.server import open_session, start_server

    s = open_session(ceph_cluster.conf_path, pool, user="client.admin", keyring=str(ceph_cluster.admin_keyring))
    running = start_server(Coordinator(s), "127.0.0.1:0")
    try:
        with caplog.at_level(logging.INFO, logger="skyhook.server"), Client(running.address, timeout=60) as c:
            with pytest.raises(QueryError, match="collection Jet"):
                c.query("ttbar", columns=["Muon_pt[Jet_pt > 30]"])
        assert not [r for r in caplog.records if "internal error" in r.getMessage()]
    finally:
        running.stop(close_session=True)


def _hist(values, bins, low, high):
    return hist.Hist.new.Reg(bins, low, high).Double().fill(values).values(flow=True)


@pytest.mark.cluster
def test_named_histograms_several_on_one_variable_json_and_output(ceph_cluster, pool, ttbar, tmp_path):
    met = ak.to_numpy(_uproot(ttbar, ["MET_pt"], "nJet >= 2").MET_pt)
    args = ["ttbar", "--where", "nJet >= 2", "--hist", "MET_pt:10:0:200", "--hist", "MET_pt:4:0:100",
            "--hist", "fine=MET_pt:50:0:100", "--json"]
    code, stdout, stderr = run_cli(ceph_cluster, pool, *args)
    assert code == 0, stderr
    d = json.loads(stdout)  # valid JSON, histograms included
    aggs = d["aggregates"]
    assert set(aggs) == {"MET_pt:10:0:200", "MET_pt:4:0:100", "fine"}
    np.testing.assert_array_equal(aggs["MET_pt:10:0:200"]["sumw"], _hist(met, 10, 0, 200))
    np.testing.assert_array_equal(aggs["MET_pt:4:0:100"]["sumw"], _hist(met, 4, 0, 100))
    np.testing.assert_array_equal(aggs["fine"]["sumw"], _hist(met, 50, 0, 100))
    assert d["events_matched"] == len(met)

    root = tmp_path / "h.root"
    code, stdout, stderr = run_cli(ceph_cluster, pool, "ttbar", "--where", "nJet >= 2",
                                   "--hist", "met=MET_pt:10:0:200", "--hist", "jet=Jet_pt:20:0:400", "-o", root)
    assert code == 0, stderr
    jets = ak.to_numpy(ak.flatten(_uproot(ttbar, ["Jet_pt"], "nJet >= 2").Jet_pt))
    with uproot.open(root) as f:
        np.testing.assert_array_equal(f["met"].to_hist().values(flow=True), _hist(met, 10, 0, 200))
        np.testing.assert_array_equal(f["jet"].to_hist().values(flow=True), _hist(jets, 20, 0, 400))

    js = tmp_path / "h.json"
    code, _, stderr = run_cli(ceph_cluster, pool, "ttbar", "--where", "nJet >= 2",
                              "--hist", "MET_pt:10:0:200", "-o", js)
    assert code == 0, stderr
    np.testing.assert_array_equal(json.loads(js.read_text())["MET_pt"]["sumw"], _hist(met, 10, 0, 200))


@pytest.mark.cluster
def test_show_prints_the_first_rows(ceph_cluster, pool, ttbar):
    code, stdout, stderr = run_cli(ceph_cluster, pool, "ttbar", "--columns", "event,MET_pt,nMuon",
                                   "--where", "nMuon >= 1", "--show", "3")
    assert code == 0, stderr
    exp = _uproot(ttbar, ["event", "MET_pt", "nMuon"], "nMuon >= 1")
    lines = stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split() == ["event", "MET_pt", "nMuon"])
    for i in range(3):
        cells = lines[header + 1 + i].split()
        assert int(cells[0]) == exp.event[i]
        assert float(cells[1]) == pytest.approx(float(exp.MET_pt[i]), rel=1e-5)
        assert int(cells[2]) == exp.nMuon[i]
    assert f"(3 of {len(exp):,} rows)" in stdout


@pytest.mark.cluster
def test_local_query_reports_progress(session, ttbar):
    seen = []
    session.run("ttbar", columns=["event"], where="MET_pt > 0", on_progress=seen.append)
    assert seen and seen[-1].partitions_done == seen[-1].partitions_total == 4


@pytest.mark.cluster
def test_session_aggregate_takes_the_clients_plain_dicts(session, ttbar):
    aggs = [{"kind": "hist1d", "name": "met", "x": "MET_pt", "bins": 10, "low": 0, "high": 200},
            {"kind": "count", "name": "n"},
            {"kind": "sum", "name": "njet", "x": "nJet"}]
    got = session.aggregate("ttbar", aggs, where="nMuon >= 1")
    exp = _uproot(ttbar, ["MET_pt", "nJet"], "nMuon >= 1")
    np.testing.assert_array_equal(got["met"].sumw, _hist(ak.to_numpy(exp.MET_pt), 10, 0, 200))
    assert got["n"] == len(exp)
    assert got["njet"] == int(ak.sum(exp.nJet))
    with pytest.raises(QueryError, match="two aggregations are named 'n'"):
        session.aggregate("ttbar", [{"kind": "count", "name": "n"}, {"kind": "count", "name": "n"}])


def _run_with_stderr_on_a_terminal(cmd):
    """Run ``cmd`` with stderr on a pseudo-terminal (stdout a pipe); returns
    (returncode, stdout, what the terminal showed)."""
    import os
    import pty
    import select

    master, slave = pty.openpty()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=slave, cwd=REPO)
    os.close(slave)
    shown = b""
    while True:
        r, _, _ = select.select([master], [], [], 0.2)
        if r:
            try:
                chunk = os.read(master, 4096)
            except OSError:   # EIO: the child closed the terminal
                break
            if not chunk:
                break
            shown += chunk
        elif p.poll() is not None:
            break
    out = p.stdout.read()
    code = p.wait(timeout=180)
    os.close(master)
    return code, out.decode(), shown.decode(errors="replace")


@pytest.mark.cluster
def test_cli_progress_on_a_terminal_and_none_when_piped(ceph_cluster, pool, ttbar):
    """`skyhook query` draws its progress bar (files and events of the partitions) when
    stderr is a terminal, and writes none of it into a pipe."""
    entries = uproot.open(ttbar)["Events"].num_entries
    parts = -(-entries // 64)   # the fixture's 64-event partitions
    args = ["ttbar", "--columns", "event", "--where", "MET_pt > 0", "--json"]
    cmd = [sys.executable, "-c", "import sys; from skyhook_py.cli import main; sys.exit(main())",
           "--conf", str(ceph_cluster.conf_path), "--keyring", str(ceph_cluster.admin_keyring),
           "--pool", pool, "query", *args]
    code, out, shown = _run_with_stderr_on_a_terminal(cmd)
    assert code == 0, shown
    assert "query [" in shown and f"files {parts}/{parts}" in shown and f"/{entries:,}" in shown
    assert json.loads(out)["rows_returned"] == int(ak.sum(_uproot(ttbar, ["MET_pt"]).MET_pt > 0))
    code, out, err = run_cli(ceph_cluster, pool, *args)
    assert code == 0, err
    assert "query [" not in err and "\x1b[2K" not in err
    assert json.loads(out)["rows_returned"] == int(ak.sum(_uproot(ttbar, ["MET_pt"]).MET_pt > 0))
