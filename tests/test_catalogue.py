"""The dataset catalogue and old versions on the real cluster (issue 15, items 1 and 5).

Metadata set at ingest (``--meta``, a YAML file) and later (``skyhook meta``: a new
version, the old one still queryable with its old metadata); ``list`` by wildcard and
``--where``; run metadata read from NanoAOD's ``Runs`` tree compared with uproot's
values; a query over several datasets equal to uproot's answers per file with the right
dataset names; ``ds@v1`` after an append equal to the answer before it, and a clear
error once gc collected it; the query key reads the catalogue and old versions but
cannot change metadata; gRPC exposes the same.

Oracles: uproot on the original files, and the metadata the tests themselves wrote.
"""

import json
import subprocess
import sys
import uuid
from pathlib import Path

import awkward as ak
import numpy as np
import pyarrow as pa
import pytest
import uproot

from skyhook_py.errors import ClusterError, QueryError, UnknownColumnError, UnknownVersionError

pytestmark = pytest.mark.cluster

DY = "nano_dy.root"
TTBAR = "nanoAOD_2015_CMS_Open_Data_ttbar.root"
HZZ = "uproot-HZZ.root"
REPO = str(Path(__file__).resolve().parents[1])
COLS = ["run", "event", "MET_pt", "nMuon", "Muon_pt"]
CUT = "MET_pt > 20"


def cli(ceph_cluster, pool, *args, keyring=None, user=None):
    cmd = [sys.executable, "-c", "import sys; from skyhook_py.cli import main; sys.exit(main())",
           "--conf", str(ceph_cluster.conf_path), "--keyring", str(keyring or ceph_cluster.admin_keyring),
           "--pool", pool, *map(str, args)]
    if user:
        cmd[5:5] = ["--user", user]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO, check=False)
    return p.returncode, p.stdout, p.stderr


def uproot_rows(path, tree="Events", cut=CUT, cols=COLS):
    with uproot.open(path) as f:
        return f[tree].arrays(cols, cut=cut)


def assert_equals_uproot(table: pa.Table, expected, cols=COLS):
    assert table.num_rows == len(expected)
    for c in cols:
        got = ak.from_arrow(table.column(c))
        assert ak.to_list(got) == ak.to_list(expected[c]), c


@pytest.fixture(scope="module")
def catalogue(ceph_cluster, pool, session, shared_data, tmp_path_factory):
    """DYJets_2018 (nano_dy, --meta), DYJets_2017 (nano_dy again, YAML through the CLI),
    ttbar_2015 (ttbar), hzz (another schema)."""
    session.ingest([shared_data / DY], "DYJets_2018", partition_events=16,
                   metadata={"year": 2018, "is_mc": True, "process": "DYJetsToLL", "sqrt_s": 13})
    d = tmp_path_factory.mktemp("meta")
    y = d / "dy2017.yaml"
    y.write_text("year: 2017\nis_mc: true\nprocess: DYJetsToLL\ncross_section_pb: 6077.22\n")
    code, _out, err = cli(ceph_cluster, pool, "ingest", shared_data / DY, "--dataset", "DYJets_2017",
                         "--partition-events", "25", "--meta-file", y, "--meta", "sqrt_s=13",
                         "--meta", "generator=madgraph")
    assert code == 0, err
    session.ingest([shared_data / TTBAR], "ttbar_2015", partition_events=64,
                   metadata={"year": 2015, "is_mc": True, "process": "ttbar", "sqrt_s": 13})
    session.ingest([shared_data / HZZ], "hzz", tree="events", metadata={"is_mc": True, "sqrt_s": 8})
    return shared_data


def test_metadata_at_ingest(session, catalogue):
    m = session.manifest("DYJets_2017")
    want = {"year": 2017, "is_mc": True, "process": "DYJetsToLL", "cross_section_pb": 6077.22,
            "sqrt_s": 13.0, "generator": "madgraph"}
    assert {k: m.metadata[k] for k in want} == want
    assert session.manifest("DYJets_2018").metadata["year"] == 2018
    d = session.describe("DYJets_2017")
    assert d["metadata"] == m.metadata
    assert [v["version"] for v in d["versions"]] == [1]


def test_run_metadata_equals_uproot(session, catalogue):
    with uproot.open(catalogue / DY) as f:
        if "Runs" not in f:
            pytest.skip("nano_dy.root has no Runs tree")
        runs = f["Runs"].arrays(library="np")
        lumis = f["LuminosityBlocks"].arrays(library="np") if "LuminosityBlocks" in f else None
    meta = session.manifest("DYJets_2018").metadata
    run_numbers = sorted(set((lumis["run"] if lumis is not None else runs["run"]).tolist()))
    covered = sorted({r for a, b in meta["runs"] for r in range(a, b + 1)})
    assert covered == run_numbers
    sumw = runs.get("genEventSumw", runs.get("genEventSumw_"))
    assert meta["sum_weights"] == pytest.approx(float(np.sum(sumw, dtype=np.float64)), rel=1e-15)
    count = runs.get("genEventCount", runs.get("genEventCount_"))
    assert meta["gen_events"] == int(np.sum(count))
    # a file without a Runs tree gives no run metadata
    with uproot.open(catalogue / TTBAR) as f:
        assert "Runs" not in f
    assert "runs" not in session.manifest("ttbar_2015").metadata


def test_list_by_pattern_and_where(ceph_cluster, pool, session, catalogue):
    def names(rows):
        return [r["name"] for r in rows]

    assert names(session.catalogue("DYJets*")) == ["DYJets_2017", "DYJets_2018"]
    assert names(session.catalogue("DYJets*", "year == 2018 and is_mc")) == ["DYJets_2018"]
    assert names(session.catalogue(None, "process in ['ttbar', 'DYJetsToLL'] and year <= 2017")) \
        == ["DYJets_2017", "ttbar_2015"]
    assert names(session.catalogue(None, "sqrt_s == 8")) == ["hzz"]
    assert names(session.catalogue(None, "1 in runs")) == ["DYJets_2017", "DYJets_2018"]
    assert names(session.catalogue(None, "events > 100 and not process")) == ["hzz"]
    rows = {r["name"]: r for r in session.catalogue()}
    assert rows["ttbar_2015"]["events"] == 200 and rows["ttbar_2015"]["version"] == 1
    code, out, err = cli(ceph_cluster, pool, "list", "DY*", "ttbar*", "--where", "year >= 2017 or year == 2015")
    assert code == 0, err
    assert out.split() == ["DYJets_2017", "DYJets_2018", "ttbar_2015"]
    code, out, err = cli(ceph_cluster, pool, "list", "--where", "year == 2018", "--json")
    assert code == 0 and [r["name"] for r in json.loads(out)] == ["DYJets_2018"]
    code, out, err = cli(ceph_cluster, pool, "list", "--where", "year == 2018 and")
    assert code == 2 and "position 16" not in err and "^" in err and "expected a value" in err   # a user error


def test_metadata_update_is_a_new_version(ceph_cluster, pool, session, catalogue):
    session.ingest([catalogue / TTBAR], "tt_meta", partition_events=50, metadata={"year": 2015})
    before = session.query("tt_meta", COLS, CUT)
    code, out, err = cli(ceph_cluster, pool, "meta", "tt_meta", "--set", "year=2016", "--set", "is_mc=true",
                         "--json")
    assert code == 0, err
    assert json.loads(out) == {"year": 2016, "is_mc": True}
    m2 = session.manifest("tt_meta")
    assert m2.version == 2 and m2.metadata == {"year": 2016, "is_mc": True}
    # the same partitions: the data did not change, nor was it rewritten
    m1 = session.manifest("tt_meta@v1")
    assert m1.version == 1 and m1.metadata == {"year": 2015}
    assert list(m1.partition_table()["object"]) == list(m2.partition_table()["object"])
    assert session.query("tt_meta@v1", COLS, CUT).equals(before)
    assert_equals_uproot(session.query("tt_meta", COLS, CUT), uproot_rows(catalogue / TTBAR))
    assert [r["name"] for r in session.catalogue("tt_meta", "year == 2016")] == ["tt_meta"]
    m3 = session.set_metadata("tt_meta", unset=["is_mc"])
    assert m3.version == 3 and m3.metadata == {"year": 2016}
    hist = session.describe("tt_meta")["versions"]
    assert [v["version"] for v in hist] == [1, 2, 3]
    assert "year=2016" in hist[1]["change"] and "+is_mc" in hist[1]["change"] and "-is_mc" in hist[2]["change"]
    code, out, err = cli(ceph_cluster, pool, "describe", "tt_meta")
    assert code == 0 and "versions kept (3)" in out and "(current)" in out, out + err
    # no change, no version
    assert session.set_metadata("tt_meta", {"year": 2016}).version == 3


def test_multi_dataset_query_equals_uproot(ceph_cluster, pool, session, catalogue, tmp_path):
    t = session.query("DYJets_*", COLS, CUT)
    assert t.column_names == ["dataset", *COLS]
    assert t.schema.field("dataset").type == pa.dictionary(pa.int32(), pa.string())
    dy = uproot_rows(catalogue / DY)
    names = t.column("dataset").to_pylist()
    assert names == ["DYJets_2017"] * len(dy) + ["DYJets_2018"] * len(dy)
    for name in ("DYJets_2017", "DYJets_2018"):
        part = t.filter(pa.compute.equal(t.column("dataset").cast(pa.string()), name))
        assert_equals_uproot(part, dy)
    # a list mixing a pattern and a name, in the order given
    t2 = session.query(["ttbar_*", "DYJets_2018"], COLS, CUT)
    tt = uproot_rows(catalogue / TTBAR)
    assert t2.column("dataset").to_pylist() == ["ttbar_2015"] * len(tt) + ["DYJets_2018"] * len(dy)
    assert_equals_uproot(t2.slice(0, len(tt)), tt)
    assert_equals_uproot(t2.slice(len(tt)), dy)
    # the CLI: one Parquet file with the dataset column
    out = tmp_path / "multi.parquet"
    code, _stdout, err = cli(ceph_cluster, pool, "query", "DYJets_*", "--columns", ",".join(COLS),
                            "--where", CUT, "-o", out)
    assert code == 0, err
    import pyarrow.parquet as pq

    back = pq.read_table(out)
    assert back.column("dataset").to_pylist() == names
    assert back.drop_columns(["dataset"]).equals(t.drop_columns(["dataset"]))


def test_multi_dataset_query_needs_compatible_datasets(session, catalogue):
    with pytest.raises(UnknownColumnError, match="MET_pt.*'hzz'"):
        session.query(["ttbar_2015", "hzz"], ["MET_pt"])
    with pytest.raises(QueryError, match="aggregat"):
        session.aggregate("DYJets_*", [{"kind": "count", "name": "n"}])
    from skyhook_py.errors import UnknownDatasetError

    with pytest.raises(UnknownDatasetError, match="nothing"):
        session.query("nothing*", ["MET_pt"])


@pytest.fixture(scope="module")
def demo_files(tmp_path_factory):
    """Two generated NanoAOD-like files with the same columns (an append needs them)."""
    from skyhook_py import demo_data

    d = tmp_path_factory.mktemp("catalogue-demo")
    return [demo_data.write_nanoaod(str(d / f"demo{i}.root"), events=n, seed=10 + i)
            for i, n in enumerate((300, 200))]


def test_old_version_after_append_and_gc(ceph_cluster, pool, session, catalogue, store, demo_files):
    first, second = demo_files
    session.ingest([first], "growing", partition_events=64)
    before = session.query("growing", COLS, CUT)
    assert_equals_uproot(before, uproot_rows(first))
    session.append([second], "growing")
    assert session.manifest("growing").version == 2
    v1 = session.query("growing@v1", COLS, CUT)
    assert v1.equals(before)
    now = session.query("growing", COLS, CUT)
    assert_equals_uproot(now, ak.concatenate([uproot_rows(first), uproot_rows(second)]))
    session.reshard("growing", partition_events=30)   # v3: v1's and v2's partitions superseded
    code, out, err = cli(ceph_cluster, pool, "gc", "growing", "--grace", "0", "--keep-versions", "3")
    assert code == 0 and "versions kept: v1, v2, v3" in out, out + err
    assert session.query("growing@v1", COLS, CUT).equals(before)
    code, out, err = cli(ceph_cluster, pool, "gc", "growing", "--grace", "0", "--keep-versions", "2")
    assert code == 0 and "collected version(s) v1" in out, out + err
    with pytest.raises(UnknownVersionError, match=r"version 1 of dataset 'growing' is no longer kept.*v2, v3"):
        session.query("growing@v1", COLS, CUT)
    # v2 shares v1's partitions: they stayed, and v2 still answers as before
    assert session.query("growing@v2", COLS, CUT).equals(now)
    code, out, err = cli(ceph_cluster, pool, "gc", "growing", "--grace", "0")
    assert code == 0, err
    objects = set(session.manifest("growing").partition_table()["object"])
    from skyhook_py.transcode.operations import _dataset_partitions

    assert set(_dataset_partitions(store, "growing")) == objects
    with pytest.raises(UnknownVersionError, match="no longer kept"):
        session.query("growing@v2", COLS, CUT)
    with pytest.raises(UnknownVersionError, match="has no version 7"):
        session.query("growing@v7", COLS, CUT)
    code, out, err = cli(ceph_cluster, pool, "query", "growing@v1", "--columns", "MET_pt")
    assert code != 0 and "no longer kept" in err, err
    assert session.query("growing", COLS, CUT).equals(now)
    from skyhook_py.errors import SkyhookError

    for op in (lambda: session.append([second], "growing@v3"), lambda: session.set_metadata("growing@v3", {"a": 1}),
               lambda: session.reshard("growing@v3")):
        with pytest.raises(SkyhookError, match="read-only"):
            op()


def test_delete_removes_kept_versions(session, catalogue, store):
    session.ingest([catalogue / TTBAR], "doomed", partition_events=100)
    session.set_metadata("doomed", {"year": 2015})
    assert store.exists("manifest.doomed@v1")
    session.delete("doomed")
    assert not [o for o in store.list_objects("manifest.doomed") if o.startswith("manifest.doomed@")
                or o == "manifest.doomed"]
    assert "doomed" not in [r["name"] for r in session.catalogue()]


def test_index_entry_only_moves_forward(session, catalogue, store):
    from skyhook_py.storage import manifest as mf

    m = session.manifest("DYJets_2018")
    entry = mf.read_index(store)["DYJets_2018"]
    # a late index update of an older version (a slow committer) does not win
    mf.update_index(store, "DYJets_2018", m.version - 1 if m.version > 1 else 0, {"metadata": {"year": 1}})
    assert mf.read_index(store)["DYJets_2018"] == entry
    # an index entry written before 2026-12 (a bare version) is still read
    store.set_omap(mf.INDEX_OBJECT, {"legacy": b"3"})
    try:
        assert mf.read_index(store)["legacy"] == {"version": 3}
        assert "legacy" not in [r["name"] for r in session.catalogue(None, "year > 0")]
    finally:
        store.set_omap(mf.INDEX_OBJECT, {}, remove_keys=("legacy",))


def test_query_key_reads_catalogue_and_old_versions_but_cannot_write(ceph_cluster, catalogue):
    """The least-privilege keys on the default pool (their caps name it)."""
    from skyhook_py.cluster import INGEST_USER, QUERY_USER
    from skyhook_py.defaults import NAMESPACE, POOL
    from skyhook_py.session import Session
    from skyhook_py.storage.rados_io import Store

    name = f"caps-{uuid.uuid4().hex[:8]}"

    def store(user):
        return Store(str(ceph_cluster.conf_path), POOL, NAMESPACE, name=user,
                     keyring=str(ceph_cluster.keyring(user)), op_timeout=20)

    with store(INGEST_USER) as ingest_store:
        ingest = Session(ingest_store, ingest_store.conf)
        ingest.ingest([catalogue / TTBAR], name, partition_events=100, metadata={"year": 2015})
        ingest.set_metadata(name, {"year": 2016})
        try:
            with store(QUERY_USER) as query_store:
                q = Session(query_store, query_store.conf)
                assert [r["name"] for r in q.catalogue(name, "year == 2016")] == [name]
                assert q.manifest(f"{name}@v1").metadata == {"year": 2015}
                assert [v.version for v in q.versions(name)] == [1, 2]
                assert_equals_uproot(q.query(f"{name}@v1", COLS, CUT), uproot_rows(catalogue / TTBAR))
                with pytest.raises(ClusterError) as e:
                    q.set_metadata(name, {"year": 1999})
                assert "nothing was committed" in str(e.value) and "permission" in str(e.value), str(e.value)
                with pytest.raises(ClusterError):
                    from skyhook_py.storage import manifest as mf

                    mf.update_index(query_store, name, 99, {"metadata": {"year": 1999}})
            m = ingest.manifest(name)
            assert m.version == 2 and m.metadata == {"year": 2016}
            from skyhook_py.storage import manifest as mf

            assert mf.read_index(ingest_store)[name]["metadata"] == {"year": 2016}
        finally:
            ingest.delete(name)


def test_grpc_exposes_the_catalogue(ceph_cluster, pool, session, catalogue):
    from skyhook_py.service.client import Client
    from skyhook_py.service.coordinator import Coordinator
    from skyhook_py.service.server import open_session, start_server

    s = open_session(ceph_cluster.conf_path, pool, user="client.admin", keyring=str(ceph_cluster.admin_keyring))
    running = start_server(Coordinator(s), "127.0.0.1:0")
    try:
        with Client(running.address, timeout=120) as c:
            assert c.catalogue("DYJets*", "year == 2018 and is_mc") == session.catalogue("DYJets*", "year == 2018 and is_mc")
            assert {"DYJets_2017", "DYJets_2018", "ttbar_2015", "hzz"} <= set(c.datasets())
            with pytest.raises(QueryError, match="expected a value"):
                c.catalogue(None, "year ==")
            session.ingest([catalogue / TTBAR], "tt_grpc", partition_events=64, metadata={"year": 2015})
            session.set_metadata("tt_grpc", {"year": 2016})
            d = c.describe("tt_grpc")
            assert d.metadata == {"year": 2016}
            assert [(v["version"], v["metadata"], v["current"]) for v in d.kept_versions] == \
                [(1, {"year": 2015}, False), (2, {"year": 2016}, True)]
            assert c.describe("tt_grpc@v1").metadata == {"year": 2015}
            assert c.query("tt_grpc@v1", COLS, CUT).equals(session.query("tt_grpc@v1", COLS, CUT))
            want = session.query("DYJets_*", COLS, CUT)
            got = c.query("DYJets_*", COLS, CUT)
            assert got.column_names == want.column_names
            assert got.column("dataset").to_pylist() == want.column("dataset").to_pylist()
            assert got.drop_columns(["dataset"]).equals(want.drop_columns(["dataset"]))
            got2 = c.query(["ttbar_2015", "DYJets_2018"], COLS, CUT)
            assert got2.column("dataset").to_pylist() == \
                session.query(["ttbar_2015", "DYJets_2018"], COLS, CUT).column("dataset").to_pylist()
            with pytest.raises(UnknownColumnError, match="hzz"):
                c.query(["ttbar_2015", "hzz"], ["MET_pt"])
            with pytest.raises(UnknownVersionError, match="no version 9"):
                c.query("tt_grpc@v9", ["MET_pt"])
    finally:
        running.stop(close_session=True)
