"""Skims kept in storage and tracked requests, on a real cluster.

Every skim is checked against uproot/awkward on the original ROOT file with the same
cut (the oracle), and against querying the source; failures and kills must leave no
dataset (and gc must clear what a kill left).  Request statuses are checked while a
query runs (a paused consumer) and after, with a corrupted partition listed exactly.
"""

from __future__ import annotations

import errno
import json
import math
import os
import subprocess
import sys
import uuid

import awkward as ak
import numpy as np
import pyarrow as pa
import pytest
import uproot

from skyhook_py import transcode as T
from skyhook_py.errors import (
    DatasetExistsError,
    NoWriterError,
    ObjectClassError,
    SkyhookError,
    UnknownColumnError,
    UnknownDatasetError,
    UnknownRequestError,
)
from skyhook_py.query import tracker
from skyhook_py.storage import manifest as mf
from skyhook_py.transcode import operations

pytestmark = pytest.mark.cluster

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CUT = "(nMuon >= 1) & ak.any(Muon_pt > 25, axis=1)"
COLUMNS = ["nMuon", "Muon_pt", "Muon_eta", "MET_pt"]
IDENTITY = ["run", "luminosityBlock", "event"]


def oracle(path, columns, cut=lambda a: (a["nMuon"] >= 1) & ak.any(a["Muon_pt"] > 25, axis=1)):
    """uproot/awkward on the original file: the selected events, as Python lists."""
    a = uproot.open(path)["Events"].arrays(sorted(set(columns) | {"nMuon", "Muon_pt", "MET_pt"}),
                                           library="ak")
    sel = a[cut(a)]
    return {c: ak.to_list(sel[c]) for c in columns}


def as_lists(table: pa.Table, columns):
    return {c: table.column(c).to_pylist() for c in columns}


def objects_of(store, dataset):
    return operations._dataset_partitions(store, dataset) + operations._dataset_pieces(store, dataset)


def _flip_middle(store, obj):
    good = store.read(obj)
    bad = bytearray(good)
    bad[len(bad) // 2] ^= 0x40
    store.write_full(obj, bytes(bad))
    return good


# -- skims in-process -----------------------------------------------------------------
def test_skim_equals_uproot_and_the_source_query(session, ttbar):
    src = session.manifest("ttbar")
    status = None
    from skyhook_py.session import new_status

    status = new_status("ttbar", kind="skim")
    m = session.skim("ttbar", "ttbar_mu", where=CUT, columns=COLUMNS, partition_events=50,
                     status=status)
    want = oracle(ttbar, COLUMNS + IDENTITY)
    n = len(want["MET_pt"])
    assert 0 < n < src.num_events
    # the stored skim, read back through a query, equals uproot with the same cut
    got = session.query("ttbar_mu", columns=COLUMNS + IDENTITY)
    assert as_lists(got, COLUMNS + IDENTITY) == want
    # ... and equals the source queried with the same cut
    direct = session.query("ttbar", columns=COLUMNS + IDENTITY, where=CUT)
    assert got.equals(direct)
    # identity columns kept although not asked for, first; then the columns asked
    assert m.schema.names == IDENTITY + COLUMNS
    assert m.num_events == n and m.num_partitions == math.ceil(n / 50)
    # provenance: source dataset and version, the query, counts
    m2 = session.manifest("ttbar_mu")
    p = m2.provenance
    assert p["kind"] == "skim" and p["source"]["dataset"] == "ttbar"
    assert p["source"]["version"] == src.version and p["source"]["created"] == src.created
    assert p["query"]["where"] == CUT and p["query"]["columns"] == IDENTITY + COLUMNS
    assert p["events_selected"] == n and p["events_scanned"] == src.num_events
    assert m2.sources[0].path == f"skyhook:ttbar@v{src.version}" and m2.sources[0].entries == n
    d = T.describe(session.store, "ttbar_mu")
    assert d["provenance"] == p
    assert "skim of 'ttbar' v1 where" in T.render_description(d)
    # statistics were written: the MET_pt range of each partition is its own
    met = np.asarray(want["MET_pt"], dtype=np.float64)
    s = m2.column_stats("MET_pt")
    for i, part in enumerate(m2.partitions):
        chunk = met[part.event_start:part.event_stop]
        assert s[0][i] <= chunk.min() and s[1][i] >= chunk.max()
    # the in-process status of the skim says it all
    assert status.state == tracker.DONE and status.complete and status.output == "ttbar_mu"
    assert status.statement().startswith(f"complete: all {src.num_events:,} events of ")
    # a second skim of the same name is refused; the first stays
    with pytest.raises(DatasetExistsError):
        session.skim("ttbar", "ttbar_mu", where=CUT, columns=COLUMNS)
    assert session.manifest("ttbar_mu").identity() == m2.identity()


def test_skim_of_a_skim_with_a_computed_column(session, ttbar):
    if "ttbar_mu" not in session.datasets():
        session.skim("ttbar", "ttbar_mu", where=CUT, columns=COLUMNS, partition_events=50)
    m = session.skim("ttbar_mu", "ttbar_mu_met", where="MET_pt > 40", columns=["MET_pt"],
                     expressions={"lead_mu_pt": "Muon_pt[:, 0]"}, format="parquet", compression="zstd")
    want = oracle(ttbar, ["MET_pt"] + IDENTITY + ["Muon_pt"],
                  cut=lambda a: (a["nMuon"] >= 1) & ak.any(a["Muon_pt"] > 25, axis=1) & (a["MET_pt"] > 40))
    got = session.query("ttbar_mu_met")
    assert got.column_names == IDENTITY + ["MET_pt", "lead_mu_pt"]
    assert as_lists(got, IDENTITY + ["MET_pt"]) == {k: want[k] for k in IDENTITY + ["MET_pt"]}
    assert got.column("lead_mu_pt").to_pylist() == [v[0] for v in want["Muon_pt"]]
    assert m.encoding == {"format": "parquet", "compression": "zstd"}
    p = session.manifest("ttbar_mu_met").provenance
    assert p["source"]["dataset"] == "ttbar_mu" and p["source"]["provenance"]["source"]["dataset"] == "ttbar"
    # reshard of a skim keeps its provenance and its rows
    T.reshard(session.store, "ttbar_mu_met", partition_events=7)
    m3 = session.manifest("ttbar_mu_met")
    assert m3.version == 2 and m3.provenance == p
    assert session.query("ttbar_mu_met").equals(got)


def test_bad_skims_leave_nothing(session, store, ttbar):
    with pytest.raises(UnknownColumnError):
        session.skim("ttbar", "bad1", where="nMuonn >= 1", columns=COLUMNS)
    with pytest.raises(UnknownDatasetError):
        session.skim("no_such_ds", "bad2", where="nMuon >= 1")
    with pytest.raises(SkyhookError, match="not be queryable by name"):
        session.skim("ttbar", "bad3", where="nMuon >= 1", columns=["Muon_pt[:, 0]"])
    with pytest.raises(SkyhookError, match="cannot overwrite its source"):
        session.skim("ttbar", "ttbar", where="nMuon >= 1")
    for name in ("bad1", "bad2", "bad3"):
        assert objects_of(store, name) == []
        assert mf.current_version(store, name) is None
        with pytest.raises(UnknownDatasetError):
            T.gc(store, name, grace=0)


def test_skim_failing_midway_removes_what_it_wrote(session, store, ttbar):
    """A corrupted source partition late in the scan: the skim has written partitions
    by then; it fails with the partition's error and removes them; the status lists
    exactly the corrupted partition."""
    session.ingest([ttbar], "ttbar_small_parts", tree="Events", partition_events=20)
    src = session.manifest("ttbar_small_parts")
    victim = src.partitions[-3]
    good = _flip_middle(store, victim.object)
    from skyhook_py.session import new_status

    status = new_status("ttbar_small_parts", kind="skim")
    try:
        with pytest.raises(ObjectClassError) as e:
            session.skim("ttbar_small_parts", "half", where="nMuon >= 0", columns=["MET_pt"],
                         partition_events=10, status=status, pushdown="on")
        assert e.value.errno == errno.EBADMSG
    finally:
        store.write_full(victim.object, good)
    assert mf.current_version(store, "half") is None and objects_of(store, "half") == []
    assert status.state == tracker.FAILED and not status.complete
    assert status.rows_delivered >= 20   # so the skim had written partitions (of 10 events) by then
    assert [(u.partition, u.object, u.event_start, u.event_stop) for u in status.failures] == \
        [(len(src.partitions) - 3, victim.object, victim.event_start, victim.event_stop)]
    # the partitions after the failed one were not reached, and are listed as such
    rest = status.unprocessed()
    assert [u.partition for u in rest] == [len(src.partitions) - 3, len(src.partitions) - 2,
                                           len(src.partitions) - 1]
    assert all(u.reason.startswith("not reached") for u in rest[1:])


def _cli(ceph_cluster, pool, *args, fault=None):
    env = dict(os.environ, PYTHONPATH=REPO)
    env.pop("SKYHOOK_FAULT", None)
    if fault:
        env["SKYHOOK_FAULT"] = fault
    cmd = [sys.executable, "-m", "skyhook_py.cli", "--conf", str(ceph_cluster.conf_path),
           "--keyring", str(ceph_cluster.admin_keyring), "--pool", pool, *map(str, args)]
    p = subprocess.run(cmd, env=env, capture_output=True, timeout=300, check=False)
    return p.returncode, p.stdout.decode(), p.stderr.decode()


def test_killed_skim_leaves_no_dataset_and_gc_clears_it(session, store, ceph_cluster, pool, ttbar):
    session.ingest([ttbar], "ttbar_k", tree="Events", partition_events=100) \
        if "ttbar_k" not in session.datasets() else None
    before = session.query("ttbar_k", columns=["MET_pt", "event"])
    code, out, err = _cli(ceph_cluster, pool, "skim", "ttbar_k", "--into", "killed", "--where", "nMuon >= 0",
                          "--columns", "MET_pt", "--partition-events", "100",
                          fault="kill-after-partitions=2")
    assert code == -9, err
    assert mf.current_version(store, "killed") is None
    assert "killed" not in session.datasets()
    assert len(operations._dataset_partitions(store, "killed")) == 2   # orphans, named by nobody
    # the source is intact
    assert session.query("ttbar_k", columns=["MET_pt", "event"]).equals(before)
    # gc of the never-committed name removes the orphans (grace 0: no writer is running)
    assert len(T.gc(store, "killed", grace=0)) == 2
    assert objects_of(store, "killed") == []
    # the same command, not killed, makes the skim (and prints its request id)
    code, out, err = _cli(ceph_cluster, pool, "skim", "ttbar_k", "--into", "killed", "--where", "nMuon >= 0",
                          "--columns", "MET_pt", "--json")
    assert code == 0, err
    d = json.loads(out)
    assert d["num_events"] == session.manifest("ttbar_k").num_events
    assert d["statement"].startswith("complete: all ")
    assert session.query("killed", columns=["MET_pt", "event"]).equals(before)
    code, out, err = _cli(ceph_cluster, pool, "skim", "ttbar_k", "--into", "killed2", "--where", "nMuonn > 1")
    assert code == 2 and "nMuonn" in err and "killed2" not in session.datasets()


# -- tracked requests in-process ----------------------------------------------------------
def test_status_while_running_and_after(session, ttbar):
    """A paused consumer: the status shows the progress so far, then the end."""
    if "ttbar_small_parts" not in session.datasets():
        session.ingest([ttbar], "ttbar_small_parts", tree="Events", partition_events=20)
    from skyhook_py.query.results import ResultBatch
    from skyhook_py.session import new_status

    m, q = session.build_query("ttbar_small_parts", columns=["MET_pt"], where="MET_pt > 0")
    status = new_status("ttbar_small_parts")
    stream = session.stream_query(m, q, pushdown="on", status=status)
    seen = 0
    for ev in stream:
        if isinstance(ev, ResultBatch):
            seen += 1
            if seen == 3:
                break
    assert status.state == tracker.RUNNING
    assert 3 <= status.partitions_done < status.partitions_planned == m.num_partitions
    assert status.events_processed < status.events_total == m.num_events
    assert status.statement().startswith("running: ")
    stream.close()   # the consumer goes away
    assert status.state == tracker.CANCELLED
    assert len(status.unprocessed()) == m.num_partitions - status.partitions_done

    r = session.run("ttbar_small_parts", columns=["MET_pt"], where="MET_pt > 0")
    st = r.status
    assert st.complete and st.partitions_done == m.num_partitions
    assert st.events_processed == st.events_total == m.num_events
    assert st.rows_delivered == r.table.num_rows and st.bytes_delivered > 0
    assert st.statement() == f"complete: all {m.num_events:,} events of {m.num_partitions} partitions processed"
    # statistics that exclude partitions count as processing their events
    r = session.run("ttbar_small_parts", columns=["MET_pt"], where="MET_pt > 1e9")
    assert r.status.complete and r.status.partitions_planned < r.status.partitions_total
    assert "skipped by their statistics" in r.status.statement()


def test_partial_result_lists_the_failed_partition_exactly(session, store, ttbar):
    if "ttbar_small_parts" not in session.datasets():
        session.ingest([ttbar], "ttbar_small_parts", tree="Events", partition_events=20)
    m = session.manifest("ttbar_small_parts")
    victim = m.partitions[5]
    good = _flip_middle(store, victim.object)
    try:
        r = session.run("ttbar_small_parts", columns=["MET_pt"], fail_fast=False, pushdown="on")
    finally:
        store.write_full(victim.object, good)
    st = r.status
    assert st.state == tracker.DONE and not st.complete
    assert [(u.partition, u.object, u.event_start, u.event_stop, u.errno) for u in st.unprocessed()] == \
        [(5, victim.object, victim.event_start, victim.event_stop, errno.EBADMSG)]
    assert st.events_processed == m.num_events - victim.num_events
    assert st.statement().startswith(f"incomplete: 1 partition(s) not processed ({victim.num_events:,} events of ")


def test_tracker_history_is_bounded():
    t = tracker.RequestTracker(history=3)
    for i in range(6):
        s = t.new(f"r{i}")
        if i != 4:
            s.finish(tracker.DONE)
    assert t.ids() == ["r2", "r3", "r4", "r5"]   # r4 still runs: never dropped
    with pytest.raises(UnknownRequestError, match="r0"):
        t.get("r0")


# -- through the gRPC coordinator ------------------------------------------------------
@pytest.fixture(scope="module")
def grpc_server(ceph_cluster, pool, store, ttbar):
    from skyhook_py.service.coordinator import Coordinator
    from skyhook_py.service.server import open_session, open_writer, start_server

    s = open_session(ceph_cluster.conf_path, pool, user="client.admin", keyring=str(ceph_cluster.admin_keyring))
    w = open_writer(ceph_cluster.conf_path, pool, user="client.admin", keyring=str(ceph_cluster.admin_keyring))
    running = start_server(Coordinator(s, writer=w), "127.0.0.1:0")
    yield running
    running.stop(close_session=True)


def test_skim_through_the_coordinator(grpc_server, session, ttbar):
    from skyhook_py.service.client import Client

    seen = []
    with Client(grpc_server.address, timeout=300) as c:
        done = c.skim("ttbar", "ttbar_mu_grpc", where=CUT, columns=COLUMNS, partition_events=64,
                      on_progress=seen.append)
        st = c.status(done["request_id"])
        want = oracle(ttbar, COLUMNS + IDENTITY)
        assert done["num_events"] == len(want["MET_pt"]) and done["version"] == 1
        assert done["provenance"]["source"]["dataset"] == "ttbar"
        assert seen and seen[-1].partitions_done == seen[-1].partitions_total
        assert st["kind"] == "skim" and st["state"] == "done" and st["complete"]
        assert st["output"] == "ttbar_mu_grpc" and st["unprocessed"] == []
        got = c.query("ttbar_mu_grpc", columns=COLUMNS + IDENTITY)
        assert as_lists(got, COLUMNS + IDENTITY) == want
        # the skim exists already: ALREADY_EXISTS, nothing changed
        with pytest.raises(DatasetExistsError):
            c.skim("ttbar", "ttbar_mu_grpc", where=CUT, columns=COLUMNS)
        # a bad cut: INVALID_ARGUMENT naming the column; nothing written
        with pytest.raises(UnknownColumnError, match="nMuonn"):
            c.skim("ttbar", "bad_grpc", where="nMuonn > 0")
        assert mf.current_version(session.store, "bad_grpc") is None
        assert objects_of(session.store, "bad_grpc") == []


def test_query_status_through_the_coordinator(grpc_server, session, store, ttbar):
    import grpc

    from skyhook_py.service.client import Client
    from skyhook_py.service.coordinator import QuerySpec

    if "ttbar_small_parts" not in session.datasets():
        session.ingest([ttbar], "ttbar_small_parts", tree="Events", partition_events=20)
    m = session.manifest("ttbar_small_parts")
    c = grpc_server.coordinator
    with Client(grpc_server.address, timeout=120) as client:
        # while running: the coordinator's run, paused by its consumer after 3 batches
        run = c.start(QuerySpec("ttbar_small_parts", columns=["MET_pt"], pushdown="on",
                                query_id="paused-1", use_cache=False))
        events = run.events()
        batches = 0
        from skyhook_py.query.results import ResultBatch

        for ev in events:
            batches += isinstance(ev, ResultBatch)
            if batches == 3:
                break
        st = client.status("paused-1")
        assert st["state"] == "running" and st["kind"] == "query"
        assert 3 <= st["partitions_done"] < st["partitions_planned"] == m.num_partitions
        assert st["events_processed"] < st["events_total"] == m.num_events
        events.close()
        st = client.status("paused-1")
        assert st["state"] == "cancelled" and not st["complete"]
        assert len(st["unprocessed"]) == m.num_partitions - st["partitions_done"]

        # after: a query by the client's id, complete
        t = client.query("ttbar_small_parts", columns=["MET_pt"], query_id="q-ok", use_cache=False)
        st = client.status("q-ok")
        assert st["complete"] and st["rows_delivered"] == t.num_rows == m.num_events
        assert st["statement"] == (f"complete: all {m.num_events:,} events of {m.num_partitions} "
                                   "partitions processed")
        client.query("ttbar_small_parts", columns=["MET_pt"], query_id="q-ok2")
        assert client.status("q-ok2")["complete"]   # a cache hit is complete too
        assert client.last_query_id == "q-ok2"

        # a failed partition, with allow_partial: listed exactly
        victim = m.partitions[7]
        good = _flip_middle(store, victim.object)
        try:
            r = client.run("ttbar_small_parts", columns=["MET_pt"], query_id="q-partial",
                           allow_partial=True, use_cache=False, pushdown="on")
        finally:
            store.write_full(victim.object, good)
        assert len(r.failures) == 1
        st = client.status("q-partial")
        assert st["state"] == "done" and not st["complete"]
        assert [(u["partition"], u["object"], u["event_start"], u["event_stop"], u["errno"])
                for u in st["unprocessed"]] == \
            [(7, victim.object, victim.event_start, victim.event_stop, errno.EBADMSG)]

        # unknown id: NOT_FOUND
        with pytest.raises(UnknownRequestError) as e:
            client.status("no-such-request")
        assert e.value.grpc_code == grpc.StatusCode.NOT_FOUND
    # finished statuses are in the pool too: another coordinator (a restart) reads them
    from skyhook_py.service.coordinator import Coordinator

    assert c.tracker.persist.flush(30)
    other = Coordinator(c.session, writer=c.writer)
    st = other.request_status("q-partial")
    assert st.state == tracker.DONE and not st.complete
    assert [(u.partition, u.object, u.errno) for u in st.unprocessed()] == [(7, victim.object, errno.EBADMSG)]
    assert other.request_status("q-ok").complete
    with pytest.raises(UnknownRequestError):
        other.request_status("paused-2")


def test_read_only_coordinator_refuses_skims(ceph_cluster, pool, ttbar):
    import grpc

    from skyhook_py.service.client import Client
    from skyhook_py.service.coordinator import Coordinator
    from skyhook_py.service.server import open_session, start_server

    s = open_session(ceph_cluster.conf_path, pool, user="client.admin", keyring=str(ceph_cluster.admin_keyring))
    with start_server(Coordinator(s), "127.0.0.1:0") as running, \
            Client(running.address, timeout=60) as c:
        with pytest.raises(NoWriterError, match="--ingest-keyring") as e:
            c.skim("ttbar", "nope", where="nMuon > 0")
        assert e.value.grpc_code == grpc.StatusCode.FAILED_PRECONDITION
    s.close()


def test_least_privilege_coordinator_skims_with_the_ingest_key(ceph_cluster, ttbar):
    """The coordinator reads as the query key (pushdown only) and writes the skim as the
    ingest key, on the cluster's default pool where those keys have their caps."""
    from skyhook_py.defaults import INGEST_USER, POOL, QUERY_USER
    from skyhook_py.service.client import Client
    from skyhook_py.service.coordinator import Coordinator
    from skyhook_py.service.server import open_session, open_writer, start_server
    from skyhook_py.session import Session

    tag = uuid.uuid4().hex[:6]
    src, dst = f"lp-src-{tag}", f"lp-skim-{tag}"
    with open_writer(ceph_cluster.conf_path, POOL, INGEST_USER, str(ceph_cluster.keyring(INGEST_USER))) as w:
        ingest = Session(w, w.conf)
        ingest.ingest([ttbar], src, tree="Events", partition_events=200)
        s = open_session(ceph_cluster.conf_path, POOL, user=QUERY_USER,
                         keyring=str(ceph_cluster.keyring(QUERY_USER)))
        w2 = open_writer(ceph_cluster.conf_path, POOL, INGEST_USER, str(ceph_cluster.keyring(INGEST_USER)))
        try:
            with start_server(Coordinator(s, writer=w2), "127.0.0.1:0") as running, \
                    Client(running.address, timeout=300) as c:
                done = c.skim(src, dst, where=CUT, columns=COLUMNS, pushdown="on")
                got = c.query(dst, columns=COLUMNS + IDENTITY)
            assert as_lists(got, COLUMNS + IDENTITY) == oracle(ttbar, COLUMNS + IDENTITY)
            assert done["num_events"] == got.num_rows
            # the query key alone cannot write: the in-process skim as it fails, leaving nothing
            with pytest.raises(SkyhookError):
                Session(s.store, s.conf).skim(src, f"{dst}-ro", where=CUT, columns=COLUMNS)
            assert mf.current_version(w, f"{dst}-ro") is None
        finally:
            s.close()
            w2.close()
            for name in (src, dst):
                try:
                    T.delete(w, name)
                except UnknownDatasetError:
                    pass


def test_coordinator_killed_midway_through_a_skim(session, store, ceph_cluster, pool, ttbar):
    """`skyhook serve --ingest-keyring ...` as its own process, SIGKILLed (fault
    injection) after writing 2 partitions of a skim: the client gets an error, no
    dataset exists, the source is intact and gc clears the orphans; a coordinator
    started again runs the skim, and `skyhook status` / `skyhook skim --server` work."""
    from skyhook_py.errors import ClusterError
    from skyhook_py.service.client import Client

    if "ttbar_k" not in session.datasets():
        session.ingest([ttbar], "ttbar_k", tree="Events", partition_events=100)
    before = session.query("ttbar_k", columns=["MET_pt", "event"])
    admin = str(ceph_cluster.admin_keyring)

    def serve(fault=None):
        env = dict(os.environ, PYTHONPATH=REPO)
        env.pop("SKYHOOK_FAULT", None)
        if fault:
            env["SKYHOOK_FAULT"] = fault
        p = subprocess.Popen([sys.executable, "-m", "skyhook_py.cli", "--conf", str(ceph_cluster.conf_path),
                              "--pool", pool, "serve", "--listen", "127.0.0.1:0", "--as-user", "client.admin",
                              "--as-keyring", admin, "--ingest-user", "client.admin", "--ingest-keyring", admin],
                             env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
        line = p.stderr.readline().decode()
        assert "skyhook coordinator on " in line and "skims written as client.admin" in line, line
        return p, line.split("skyhook coordinator on ", 1)[1].split()[0]

    p, address = serve("kill-after-partitions=2")
    try:
        with Client(address, timeout=120) as c, pytest.raises(ClusterError):
            c.skim("ttbar_k", "killed_srv", where="nMuon >= 0", columns=["MET_pt"], partition_events=100)
        assert p.wait(timeout=60) == -9
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert mf.current_version(store, "killed_srv") is None
    assert len(operations._dataset_partitions(store, "killed_srv")) == 2
    assert session.query("ttbar_k", columns=["MET_pt", "event"]).equals(before)
    assert len(T.gc(store, "killed_srv", grace=0)) == 2 and objects_of(store, "killed_srv") == []

    p, address = serve()
    try:
        code, out, err = _cli(ceph_cluster, pool, "skim", "ttbar_k", "--into", "killed_srv", "--where",
                              "nMuon >= 0", "--columns", "MET_pt", "--server", address, "--json")
        assert code == 0, err
        done = json.loads(out)
        assert done["num_events"] == before.num_rows
        assert session.query("killed_srv", columns=["MET_pt", "event"]).equals(before)
        code, out, err = _cli(ceph_cluster, pool, "status", done["request_id"], "--server", address)
        assert code == 0, err
        assert f"complete: all {before.num_rows:,} events of " in out and "skim of dataset 'ttbar_k'" in out
        code, out, err = _cli(ceph_cluster, pool, "status", "nope", "--server", address)
        assert code == 2 and "no request with id 'nope'" in err
    finally:
        p.terminate()
        p.wait(timeout=60)
    # the finished request's status outlives the coordinator (kept in the pool by its writer identity)
    p, address = serve()
    try:
        code, out2, err = _cli(ceph_cluster, pool, "status", done["request_id"], "--server", address, "--json")
        assert code == 0, err
        st = json.loads(out2)
        assert st["complete"] and st["kind"] == "skim" and st["output"] == "killed_srv"
        assert st["events_total"] == before.num_rows and st["unprocessed"] == []
    finally:
        p.terminate()
        p.wait(timeout=60)


def test_skim_status_while_running_then_cancelled(grpc_server, session, store, tmp_path, monkeypatch):
    """A slow skim in the coordinator (a sleep per written partition) of a source of 100
    partitions: its status shows progress while it runs; Cancel(request_id) stops it,
    nothing is committed, and the partitions not reached are listed."""
    import threading
    import time

    from skyhook_py import demo_data
    from skyhook_py.errors import QueryCancelled
    from skyhook_py.service.client import Client

    path = demo_data.write_nanoaod(str(tmp_path / "slow.root"), events=2000, seed=21)
    session.ingest([path], "slow_src", tree="Events", partition_events=20)
    monkeypatch.setenv("SKYHOOK_FAULT", "sleep-per-partition=0.3")
    outcome = {}

    def run():
        with Client(grpc_server.address, timeout=300) as c:
            try:
                outcome["done"] = c.skim("slow_src", "cancelled_skim", where="nMuon >= 0", columns=["MET_pt"],
                                         partition_events=20, request_id="slow-skim")
            except Exception as e:  # noqa: BLE001 - checked below
                outcome["error"] = e

    t = threading.Thread(target=run)
    t.start()
    try:
        with Client(grpc_server.address, timeout=60) as c:
            deadline = time.monotonic() + 120
            while True:
                try:
                    st = c.status("slow-skim")
                    if st["rows_delivered"] >= 40:
                        break
                except UnknownRequestError:
                    pass
                assert time.monotonic() < deadline, "the skim never made progress"
                time.sleep(0.1)
            assert st["state"] == "running" and st["kind"] == "skim" and st["output"] == "cancelled_skim"
            assert 2 <= st["partitions_done"] < st["partitions_planned"] == 100
            assert st["events_processed"] < st["events_total"] == 2000
            assert c.cancel("slow-skim")
    finally:
        t.join(timeout=120)
    assert isinstance(outcome.get("error"), QueryCancelled), outcome
    with Client(grpc_server.address, timeout=60) as c:
        st = c.status("slow-skim")
    assert st["state"] == "cancelled" and not st["complete"] and "cancelled" in st["message"]
    assert len(st["unprocessed"]) == 100 - st["partitions_done"] > 0
    assert all(u["reason"].startswith("not reached") for u in st["unprocessed"])
    assert mf.current_version(store, "cancelled_skim") is None
    assert objects_of(store, "cancelled_skim") == []


def test_servicex_front_end_tracks_its_requests(session, ttbar):
    """The ServiceX-style front end records each transformation's query in its
    RequestTracker under the transformation's id (the S3 upload is not part of this)."""
    import time

    pytest.importorskip("boto3")
    from skyhook_py.service.servicex import ServiceXFrontend

    front = ServiceXFrontend(session, "http://127.0.0.1:9", "k", "s")   # no S3 there: uploads fail
    rid = front.submit({"codegen": "uproot-raw", "did": "skyhook://ttbar", "result-format": "parquet",
                        "selection": json.dumps([{"treename": "Events", "filter_name": ["MET_pt"],
                                                  "cut": "nMuon >= 1"}])})
    deadline = time.monotonic() + 60
    while True:
        try:
            st = front.tracker.get(rid)
            if st.state != tracker.RUNNING:
                break
        except UnknownRequestError:
            pass
        assert time.monotonic() < deadline
        time.sleep(0.05)
    n = len(oracle(ttbar, ["MET_pt"], cut=lambda a: a["nMuon"] >= 1)["MET_pt"])
    assert st.complete and st.rows_delivered == n and st.dataset == "ttbar"
    total = uproot.open(ttbar)["Events"].num_entries
    assert st.as_dict()["statement"].startswith(f"complete: all {total:,} events of ")
    # the same over HTTP, by the transformation's id
    import urllib.request

    from skyhook_py.service.servicex import serve

    running = serve(front)
    try:
        with urllib.request.urlopen(f"{running.url}/servicex/transformation/{rid}/skyhook-status",
                                    timeout=30) as r:
            over_http = json.loads(r.read())
    finally:
        running.stop()
    assert over_http["statement"] == st.as_dict()["statement"] and over_http["rows_delivered"] == n
