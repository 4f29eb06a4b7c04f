"""The gRPC coordinator on a real cluster: a server started in-process on port 0,
driven through skyhook_py.Client, compared with the in-process Session and with
uproot / func_adl_uproot on the original files.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import awkward as ak
import grpc
import numpy as np
import pyarrow as pa
import pytest
import uproot

from skyhook_py import QueryError, UnknownColumnError, UnknownDatasetError, UnsupportedError
from skyhook_py.query import executor as executor_mod
from skyhook_py.service.client import Client, remote_error
from skyhook_py.service.coordinator import AuthenticationError, Coordinator, QueryCancelled
from skyhook_py.query.executor import DeadlineExceeded
from skyhook_py.query.results import Progress, ResultBatch, Summary
from skyhook_py.service.server import start_server
from conftest import serve_coordinator

pytestmark = pytest.mark.cluster

TTBAR = "nanoAOD_2015_CMS_Open_Data_ttbar.root"
HZZ = "uproot-HZZ.root"
DEMO_EVENTS = 40_000


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from skyhook_py import demo_data

    d = tmp_path_factory.mktemp("grpc-data")
    return {
        "demo": demo_data.write_nanoaod(str(d / "demo.root"), events=DEMO_EVENTS, seed=3),
        "small1": demo_data.write_nanoaod(str(d / "small1.root"), events=500, seed=4),
        "small2": demo_data.write_nanoaod(str(d / "small2.root"), events=300, seed=5),
    }


@pytest.fixture(scope="module")
def datasets(session, shared_data, files):
    session.ingest([shared_data / TTBAR], "ttbar", tree="Events", partition_events=32)
    session.ingest([shared_data / HZZ], "hzz", tree="events", partition_events=500)
    session.ingest([files["demo"]], "demo", tree="Events", partition_events=1000)
    session.ingest([files["small1"]], "growing", tree="Events", partition_events=200)
    return {"ttbar": (shared_data / TTBAR, "Events"), "hzz": (shared_data / HZZ, "events")}


@pytest.fixture(scope="module")
def server(ceph_cluster, pool, datasets):
    """A coordinator on its own cluster connection, listening on a free port."""
    yield from serve_coordinator(ceph_cluster, pool, cache_bytes=64 << 20)


@pytest.fixture(scope="module")
def client(server):
    with Client(server.address, timeout=120) as c:
        yield c


def assert_tables_equal(got: pa.Table, want: pa.Table):
    assert got.column_names == want.column_names
    assert got.schema.equals(want.schema), (got.schema, want.schema)
    assert got.num_rows == want.num_rows
    assert got.combine_chunks().equals(want.combine_chunks())


CASES = [
    ("ttbar", dict(columns=["run", "event", "MET_pt", "Muon_pt"], where="nMuon >= 1")),
    ("ttbar", dict(columns=["event"], where="(nJet >= 4) & (MET_pt > 30)",
                   expressions={"good_jets": "Jet_pt[Jet_pt > 30]", "ht": "sum(Jet_pt, axis=1)"})),
    ("ttbar", dict(columns=["event", "MET_pt"], where="MET_pt > 25", event_range=(50, 170), limit=7)),
    ("ttbar", dict(columns=["MET_pt"], where="MET_pt > 1e9")),   # nothing matches
    ("hzz", dict(columns=["NMuon", "Muon_Px", "MET_px"], where="NMuon >= 2")),
    ("demo", dict(columns=["event", "Muon_pt", "Muon_eta"], where="(nMuon >= 2) & (MET_pt > 40)")),
]


@pytest.mark.parametrize("dataset,args", CASES, ids=[f"{d}-{i}" for i, (d, _) in enumerate(CASES)])
def test_results_equal_in_process_session(client, session, dataset, args):
    want = session.run(dataset, **args)
    got = client.run(dataset, use_cache=False, **args)
    assert_tables_equal(got.table, want.table)
    fields = ["events_total", "rows_returned", "partitions_total", "partitions_pruned", "manifest_version"]
    if args.get("limit") is None:  # with a limit, how far the scan ran depends on timing
        fields += ["events_scanned", "events_matched", "partitions_pushed_down", "partitions_read",
                   "partitions_fallen_back"]
    for field in fields:
        assert getattr(got.summary, field) == getattr(want.summary, field), field
    assert got.summary.cache_hit is False


def test_results_equal_uproot(client, datasets):
    path, tree = datasets["ttbar"]
    cols = ["event", "MET_pt", "Muon_pt", "Muon_eta"]
    with uproot.open(path) as f:
        expected = f[tree].arrays(cols, cut="(nMuon >= 1) & (MET_pt > 20)")
    got = ak.from_arrow(client.query("ttbar", cols, "(nMuon >= 1) & (MET_pt > 20)"))
    for c in cols:
        assert ak.to_list(got[c]) == ak.to_list(expected[c]), c
    # and the awkward / parquet converters give the same
    arr = client.to_awkward("ttbar", cols, "(nMuon >= 1) & (MET_pt > 20)")
    assert ak.to_list(arr["Muon_pt"]) == ak.to_list(expected["Muon_pt"])


def test_parquet_output_and_batches(client, tmp_path, session):
    want = session.query("demo", ["event", "Jet_pt"], "nJet >= 3")
    out = tmp_path / "sel.parquet"
    summary = client.to_parquet(out, "demo", ["event", "Jet_pt"], "nJet >= 3", output_format="parquet")
    import pyarrow.parquet as pq

    got = pq.read_table(out)
    assert got.num_rows == want.num_rows == summary.rows_returned
    assert got.column("event").to_pylist() == want.column("event").to_pylist()
    assert got.column("Jet_pt").to_pylist() == want.column("Jet_pt").to_pylist()
    batches = list(client.batches("demo", ["event"], "nJet >= 3"))
    assert all(isinstance(b, pa.RecordBatch) for b in batches)
    assert sum(b.num_rows for b in batches) == want.num_rows


def test_a_small_answer_comes_in_one_reply_a_large_one_streams(server, session, monkeypatch):
    """Client.run asks QueryWhole (one reply); an answer over the server's limit is an
    AnswerTooLargeError naming Query, that run is cancelled, the client asks again with the
    stream and from then on streams that request.  Every answer equals the in-process one."""
    from skyhook_py import defaults
    from skyhook_py.errors import AnswerTooLargeError
    from skyhook_py.service import wire

    args = dict(columns=["event", "nJet", "Jet_pt"], where="nJet >= 3")
    want = session.query("demo", **args)
    with Client(server.address, timeout=60) as c:
        # one reply holding the whole answer: its events decode to the in-process table
        answer = c._stub.QueryWhole(wire.request_to_proto("demo", query_id="whole-1", use_cache=False, **args))
        events = [ev for msg in answer.events for ev in wire.events_from_proto(msg)]
        assert isinstance(events[-1], Summary) and events[-1].rows_returned == want.num_rows
        assert_tables_equal(pa.concat_tables(e.table for e in events if isinstance(e, ResultBatch)), want)

        monkeypatch.setattr(defaults, "WHOLE_ANSWER_BYTES", want.nbytes // 4)   # read per call
        with pytest.raises(grpc.RpcError) as e:
            c._stub.QueryWhole(wire.request_to_proto("demo", query_id="whole-2", use_cache=False, **args))
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert dict(e.value.trailing_metadata())["skyhook-error"] == "AnswerTooLargeError"
        assert "ask with Query" in e.value.details()
        assert isinstance(remote_error(e.value), AnswerTooLargeError)
        assert "whole-2" not in server.coordinator.running()   # cancelled, or done and dropped

        got = c.run("demo", use_cache=False, query_id="whole-3", **args)
        assert_tables_equal(got.table, want)
        assert got.summary.rows_returned == want.num_rows
        assert c.status("whole-3")["state"] == "done"   # the streamed run, under the same id
        assert len(c._large_answers) == 1
        # remembered: the same request (another id) goes straight to the stream
        asked = []
        whole = c._stub.QueryWhole
        monkeypatch.setattr(c._stub, "QueryWhole", lambda *a, **k: asked.append(a) or whole(*a, **k))
        assert_tables_equal(c.query("demo", use_cache=False, **args), want)
        assert asked == []
        c.query("demo", ["event"], "nJet >= 3")   # another request still asks in one reply
        assert len(asked) == 1


@pytest.mark.parametrize("codec", ["lz4", "zstd"])
def test_compressed_answers_equal_plain_ones_in_fewer_bytes(server, session, client, codec):
    """Client(compression=...): the coordinator compresses the result chunks (Arrow IPC
    body compression) on a miss, on a hit and in a stream; the answers equal the
    in-process ones, in fewer bytes than the same answers sent plain."""
    import pyarrow.parquet as pq

    from skyhook_py.service import wire

    args = dict(columns=["event", "run", "nJet", "Jet_pt"], where="nJet >= 2")
    want = session.query("demo", **args)
    with Client(server.address, timeout=60, compression=codec) as c:
        for use_cache in (False, True, True):   # a miss, the hit that builds the compressed form, a hit
            assert_tables_equal(c.query("demo", use_cache=use_cache, **args), want)
        streamed = [e.table for e in c.stream("demo", use_cache=False, **args) if isinstance(e, ResultBatch)]
        assert_tables_equal(pa.concat_tables(streamed), want)
        assert_tables_equal(c.query("demo", output_format="parquet", **args), want)
    # Parquet chunks are files written with the codec
    answer = client._stub.QueryWhole(wire.request_to_proto("demo", output_format="parquet", compression=codec, **args))
    chunks = [pq.ParquetFile(pa.BufferReader(e.result.data)) for e in answer.events if e.HasField("result")]
    assert chunks and all(f.metadata.row_group(0).column(0).compression == codec.upper() for f in chunks)

    def wire_bytes(compression, use_cache):
        request = wire.request_to_proto("demo", use_cache=use_cache, compression=compression, **args)
        answer = client._stub.QueryWhole(request)
        return sum(len(e.result.data) for e in answer.events if e.HasField("result"))

    for use_cache in (False, True):   # a miss, and a hit (the cache holds both forms)
        plain, packed = wire_bytes(None, use_cache), wire_bytes(codec, use_cache)
        assert packed < 0.85 * plain, (use_cache, packed, plain)   # lz4 0.73 here: event, run compress

    bad = wire.request_to_proto("demo", **args)
    bad.options.result_compression = 7
    with pytest.raises(grpc.RpcError) as e:
        client._stub.QueryWhole(bad)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "unknown result compression 7" in e.value.details()
    with pytest.raises(ValueError, match="compression must be one of"):
        Client(server.address, compression="gzip")


def test_auto_compression_follows_the_measured_link(server, session, monkeypatch):
    """Client(compression="auto") asks plain until a reply of 1 MiB or more arrives slower
    than 150 MB/s (here: a link made slow by holding each reply back 0.2 s), then ZSTD;
    the answers equal the in-process one either way."""
    from skyhook_py import defaults
    from skyhook_py.service import wire
    from skyhook_py.service._grpc_stubs import pb

    args = dict(columns=["event", "run", "Jet_pt", "Jet_eta"])
    want = session.query("demo", **args)
    plain = len(wire.encode_table(want))
    assert 1 << 20 <= plain <= defaults.WHOLE_ANSWER_BYTES, plain   # one reply, large enough to time
    with Client(server.address, timeout=60, compression="auto") as c:
        asked, whole = [], c._stub.QueryWhole

        def slow_link(request, **kw):
            asked.append(request.options.result_compression)
            answer = whole(request, **kw)
            time.sleep(0.2)
            return answer

        monkeypatch.setattr(c._stub, "QueryWhole", slow_link)
        for _ in range(2):
            assert_tables_equal(c.query("demo", use_cache=False, **args), want)
        c.query("demo", ["event"], "nJet >= 3")   # a small answer is not timed: the choice stays
        assert asked == [pb.RESULT_UNCOMPRESSED, pb.RESULT_ZSTD, pb.RESULT_ZSTD]


def test_a_server_without_query_whole_is_asked_by_stream(session):
    """A coordinator from before QueryWhole (the method unregistered): UNIMPLEMENTED with
    no skyhook-error, so the client streams, and keeps streaming, with the same answers."""
    from concurrent import futures

    from skyhook_py.service.server import SkyhookServicer
    from skyhook_py.service import fastpath
    from skyhook_py.service._grpc_stubs import rpc

    cap = fastpath._Capture()
    rpc.add_SkyhookServicer_to_server(SkyhookServicer(Coordinator(session)), cap)
    (service, handlers), = cap.registered
    old = {name: h for name, h in handlers.items() if name != "QueryWhole"}
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, old),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with Client(f"127.0.0.1:{port}", timeout=60) as c:
            for _ in range(2):
                assert_tables_equal(c.query("demo", ["event", "Jet_pt"], "nJet >= 3"),
                                    session.query("demo", ["event", "Jet_pt"], "nJet >= 3"))
                assert c._server_has_whole is False
            with pytest.raises(UnknownColumnError):   # errors arrive as before
                c.query("demo", ["no_such_column"])
    finally:
        server.stop(0)


@pytest.mark.parametrize("coalesce", [None, 0.0])
def test_stream_order_progress_first_summary_last(client, server, coalesce):
    # by default batches arriving close together are one message; 0: one per partition
    window = server.coordinator.coalesce_seconds
    if coalesce is not None:
        server.coordinator.coalesce_seconds = coalesce
    try:
        events = list(client.stream("demo", ["event", "MET_pt"], "MET_pt > 10", use_cache=False))
    finally:
        server.coordinator.coalesce_seconds = window
    # coalesced (the default), a query that ends within the window sends no Progress at
    # all: its Summary has the totals (fastpath.coalesced); otherwise the plan's first
    if coalesce == 0.0 or isinstance(events[0], Progress):
        assert isinstance(events[0], Progress) and events[0].partitions_done == 0
        assert events[0].partitions_total == events[-1].partitions_total
    assert isinstance(events[-1], Summary)
    assert events[-1].partitions_total > 1 and events[-1].events_total == DEMO_EVENTS
    parts = [e.partition for e in events if isinstance(e, ResultBatch)]
    assert parts == sorted(parts) and len(parts) >= 1
    if coalesce == 0.0:
        assert len(set(parts)) > 1
    done = [e.partitions_done for e in events if isinstance(e, Progress)]
    assert done == sorted(done) and all(d <= events[-1].partitions_total for d in done)


def test_aggregates_over_grpc(client, session, files):
    aggs = [{"kind": "hist1d", "name": "met", "x": "MET_pt", "bins": 20, "low": 0, "high": 200},
            {"kind": "count", "name": "n"},
            {"kind": "max", "name": "lead", "x": "max(Muon_pt, axis=1)"}]
    got = client.run("demo", where="nMuon >= 1", aggregations=aggs, use_cache=False)
    from skyhook_py.query import ir, lang

    m = session.manifest("demo")
    schema = m.column_types()
    want = session.aggregate("demo", [
        ir.Aggregation(ir.AggKind.Hist1D, "met", x=lang.compile_expression("MET_pt", schema), x_axis=ir.Axis(20, 0, 200)),
        ir.Aggregation(ir.AggKind.Count, "n"),
        ir.Aggregation(ir.AggKind.Max, "lead", x=lang.compile_expression("max(Muon_pt, axis=1)", schema))],
        where="nMuon >= 1")
    assert got.table is None
    assert got.aggregates["n"] == want["n"] > 0
    assert got.aggregates["lead"] == pytest.approx(want["lead"])
    h, hw = got.aggregates["met"], want["met"]
    assert type(h).__name__ == "Histogram"
    np.testing.assert_array_equal(h.sumw, hw.sumw)
    np.testing.assert_array_equal(h.edges[0], hw.edges[0])
    # the oracle: numpy on the source file
    with uproot.open(files["demo"]) as f:
        ev = f["Events"].arrays(["MET_pt", "nMuon"], library="np")
    counts, _ = np.histogram(ev["MET_pt"][ev["nMuon"] >= 1], bins=20, range=(0, 200))
    np.testing.assert_array_equal(h.values, counts)


def test_list_and_describe(client, session):
    listed = client.datasets()
    assert {"ttbar", "hzz", "demo"} <= set(listed)
    d = client.describe("ttbar")
    m = session.manifest("ttbar")
    assert d.version == m.version == listed["ttbar"]
    assert d.num_events == 200
    assert d.schema.equals(m.schema)
    assert d.columns == m.column_types()
    assert d.partitions == [] and d.num_partitions == m.num_partitions   # a summary: partitions by page
    assert [p["object"] for p in client.partitions("ttbar", page_size=3)] == [p.object for p in m.partitions]
    with pytest.raises(UnknownDatasetError, match="ttbar") as e:
        client.describe("ttbarr")
    assert e.value.grpc_code == grpc.StatusCode.NOT_FOUND


def _first_event_or_error(client, *args, **kwargs):
    """Iterate a stream; the events seen before the error prove whether work started."""
    seen = []
    with pytest.raises(Exception) as e:
        for ev in client.stream(*args, **kwargs):
            seen.append(ev)
    return e.value, seen


def test_bad_queries_fail_before_any_work(client):
    err, seen = _first_event_or_error(client, "ttbar", ["MET_Pt"])
    assert isinstance(err, UnknownColumnError) and err.grpc_code == grpc.StatusCode.INVALID_ARGUMENT
    assert "'MET_Pt'" in str(err) and "MET_pt" in str(err)   # names it, and suggests
    assert seen == []   # no Progress: the plan never started
    err, seen = _first_event_or_error(client, "ttbar", ["event"], "nMuons > 2")
    assert isinstance(err, UnknownColumnError) and "nMuon" in str(err) and seen == []
    err, seen = _first_event_or_error(client, "ttbar", ["event"], "Muon_pt > 20")  # per-object cut
    assert isinstance(err, QueryError) and err.grpc_code == grpc.StatusCode.INVALID_ARGUMENT and seen == []
    err, seen = _first_event_or_error(client, "ttbar", ["event"], "(MET_pt > 20")
    assert err.grpc_code == grpc.StatusCode.INVALID_ARGUMENT and seen == []
    err, seen = _first_event_or_error(client, "ttbar", ["event"], "Muon.pt > 20")
    assert isinstance(err, UnsupportedError) and err.grpc_code == grpc.StatusCode.UNIMPLEMENTED and seen == []
    err, seen = _first_event_or_error(client, "nope", ["event"])
    assert isinstance(err, UnknownDatasetError) and err.grpc_code == grpc.StatusCode.NOT_FOUND and seen == []


def test_cache_hit_then_new_version_is_not_stale(client, session, ceph_cluster, files, store):
    from skyhook_py import transcode

    args = dict(columns=["event", "MET_pt"], where="MET_pt > 30")
    first = client.run("growing", **args)
    second = client.run("growing", **args)
    assert second.summary.cache_hit is True
    assert_tables_equal(second.table, first.table)
    other = Client(client.address)   # a different client (and user) hits the same entry
    assert other.run("growing", **args).summary.cache_hit is True
    other.close()
    assert client.run("growing", **dict(args, pushdown="off")).summary.cache_hit is False  # mode is in the key
    v1 = first.summary.manifest_version
    transcode.append(store, [files["small2"]], "growing", tree="Events")
    third = client.run("growing", **args)
    assert third.summary.cache_hit is False and third.summary.manifest_version > v1
    with uproot.open(files["small2"]) as f:
        extra = f["Events"].arrays(["MET_pt"], cut="MET_pt > 30")
    assert third.table.num_rows == first.table.num_rows + len(extra)
    assert_tables_equal(third.table, session.query("growing", **args))


def test_cancel_by_query_id(server, client):
    qid = "cancel-me-1"
    stream = client.stream("demo", None, None, query_id=qid, use_cache=False)  # every column
    first = next(stream)
    assert isinstance(first, Progress)
    assert qid in server.coordinator.running()
    assert client.cancel(qid) is True
    with pytest.raises(QueryCancelled) as e:
        for ev in stream:
            assert not isinstance(ev, Summary), "a cancelled query must not complete"
    assert e.value.grpc_code == grpc.StatusCode.CANCELLED
    assert client.cancel(qid) is False


def test_client_going_away_cancels(server, client):
    qid = "abandoned-1"
    stream = client.stream("demo", None, None, query_id=qid, use_cache=False)
    next(stream)
    assert qid in server.coordinator.running()
    stream.close()   # the client stops reading: the RPC is cancelled
    deadline = time.monotonic() + 30
    while qid in server.coordinator.running() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert qid not in server.coordinator.running()


def test_deadline(client):
    with pytest.raises(DeadlineExceeded) as e:
        list(client.stream("demo", None, None, deadline=0.001, use_cache=False))
    assert e.value.grpc_code == grpc.StatusCode.DEADLINE_EXCEEDED
    with pytest.raises(DeadlineExceeded) as e:   # the gRPC deadline of the call itself
        list(client.stream("demo", None, None, timeout=0.001, use_cache=False))
    assert e.value.grpc_code == grpc.StatusCode.DEADLINE_EXCEEDED


def test_missing_class_falls_back_with_the_same_answer(client, session, monkeypatch):
    """The executor calls a class the OSDs do not have: the real OSD answers -EOPNOTSUPP,
    exactly as when our class is not loaded, and the coordinator falls back to plain
    reads evaluated by the reference evaluator."""
    args = dict(columns=["event", "Muon_pt"], where="(nMuon >= 1) & (MET_pt > 20)")
    want = session.run("ttbar", pushdown="on", **args)
    monkeypatch.setattr(executor_mod, "CLASS_NAME", "skyhook_not_loaded")
    got = client.run("ttbar", pushdown="on", use_cache=False, **args)
    assert_tables_equal(got.table, want.table)
    s = got.summary
    assert s.partitions_fallen_back == s.partitions_total - s.partitions_pruned > 0
    assert s.partitions_pushed_down == 0 and len(s.fallen_back_objects) == s.partitions_fallen_back


def test_token_required(session):
    c = Coordinator(session, tokens=["s3cret", "other"])
    running = start_server(c, "127.0.0.1:0")
    try:
        for token in (None, "wrong"):
            with Client(running.address, token=token) as cl:
                with pytest.raises(AuthenticationError) as e:
                    cl.datasets()
                assert e.value.grpc_code == grpc.StatusCode.UNAUTHENTICATED
                with pytest.raises(AuthenticationError):
                    list(cl.stream("ttbar", ["event"]))
                h = cl.health()
                assert h["status"] == "SERVING"   # health needs no token
                assert h["processes"] == h["processes_answered"] == 1 and h["message"] == "serving"
        with Client(running.address, token="s3cret") as cl:
            assert "ttbar" in cl.datasets()
            assert cl.query("ttbar", ["event"]).num_rows == 200
    finally:
        running.stop()


def test_tls_with_token(session, datasets, tmp_path):
    """TLS on: a client trusting the server's certificate gets answers; a plaintext
    client does not get through."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, capture_output=True, timeout=60)
    running = start_server(Coordinator(session, tokens=["t0ken"]), "127.0.0.1:0",
                           tls_cert=str(cert), tls_key=str(key))
    try:
        assert running.tls
        with Client(running.address, token="t0ken", tls_ca=str(cert), timeout=60) as cl:
            assert cl.query("ttbar", ["event"], where="nMuon >= 1").num_rows == \
                session.query("ttbar", ["event"], where="nMuon >= 1").num_rows
        with Client(running.address, token="t0ken", timeout=10) as plain:
            with pytest.raises(Exception) as e:
                plain.datasets()
            assert "UNAVAILABLE" in repr(e.value) or "unavailable" in str(e.value).lower() \
                or getattr(e.value, "grpc_code", None) == grpc.StatusCode.UNAVAILABLE
        # the command line reaches it too, with --tls-ca (or $SKYHOOK_TLS_CA), and not without
        want = session.query("ttbar", ["event"], where="nMuon >= 1").num_rows
        q = _cli("query", "ttbar", "--columns", "event", "--where", "nMuon >= 1", "--json",
                 "--server", running.address, "--token", "t0ken", "--tls-ca", str(cert))
        assert q.returncode == 0, q.stderr
        assert json.loads(q.stdout)["rows_returned"] == want
        h = _cli("health", "--server", running.address, env={"SKYHOOK_TLS_CA": str(cert)})
        assert h.returncode == 0 and h.stdout.startswith("SERVING"), h.stderr
        refused = _cli("health", "--server", running.address, "--timeout", "3")
        assert refused.returncode == 2 and "unreachable" in refused.stderr, refused.stderr
    finally:
        running.stop()


def _cli(*args, env=None):
    """`skyhook ARGS` in a process of its own (no cluster needed: it talks to --server)."""
    return subprocess.run([sys.executable, "-m", "skyhook_py.cli", *args], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "SKYHOOK_TLS_CA": "", **(env or {})})


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def test_32_concurrent_clients(server, session):
    queries = [
        ("demo", dict(columns=["event", "Muon_pt"], where="nMuon >= 2")),
        ("demo", dict(columns=["MET_pt"], where="MET_pt > 50")),
        ("ttbar", dict(columns=["event", "Jet_pt"], where="nJet >= 2")),
        ("hzz", dict(columns=["NMuon", "MET_px"], where="NMuon >= 1")),
    ]
    want = [session.query(d, **a) for d, a in queries]
    rss_before = _rss_mb()
    errors, done = [], []

    def worker(i):
        try:
            with Client(server.address, timeout=300) as c:
                for k in range(4):
                    j = (i + k) % len(queries)
                    d, a = queries[j]
                    got = c.query(d, use_cache=bool(k % 2), **a)
                    if not got.equals(want[j]):
                        errors.append(f"client {i} query {j}: different answer")
            done.append(i)
        except Exception as e:  # noqa: BLE001 - collected and asserted below
            errors.append(f"client {i}: {type(e).__name__}: {e}")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    rss_after = _rss_mb()
    assert errors == []
    assert len(done) == 32
    assert server.coordinator.running() == []
    assert server.coordinator.cache.bytes <= server.coordinator.cache.max_bytes
    # 128 queries of a few MB each: the server must not have kept them
    print(f"RSS {rss_before:.0f} MB -> {rss_after:.0f} MB")
    assert rss_after - rss_before < 400


def test_killed_osd_during_query(server, session, ceph_cluster):
    if len(ceph_cluster.osd_ids) < 2:
        pytest.skip("needs a replicated pool on at least 2 OSDs")
    args = dict(columns=["event", "MET_pt", "Muon_pt"], where="nMuon >= 1")
    want = session.query("demo", **args)
    # the kill must matter: the victim is the primary of the last partition, still to come
    # when the first batch arrives (placement differs from pool to pool)
    primaries = [session.store.osd_for(p.object) for p in session.manifest("demo").partitions]
    victim = primaries[-1]
    batches, summary, killed_after = [], None, None
    with Client(server.address, timeout=300) as c:
        for ev in c.stream("demo", use_cache=False, **args):
            if isinstance(ev, ResultBatch):
                if not batches:
                    ceph_cluster.kill_osd(victim)
                    killed_after = ev.partition
                batches.append(ev.table)
            elif isinstance(ev, Summary):
                summary = ev
    try:
        later = [i for i, osd in enumerate(primaries) if osd == victim and i > killed_after]
        assert later, f"osd.{victim} was the primary of no partition after {killed_after}: the kill proved nothing"
        assert ceph_cluster._daemon_pids().get(f"osd.{victim}") is None, "the victim still runs"
        got = pa.concat_tables(batches)
        assert summary is not None and summary.partitions_failed == 0
        assert got.combine_chunks().equals(want.combine_chunks())
    finally:
        ceph_cluster.start_osd(victim)


# -- ServiceX-shaped queries -----------------------------------------------------------

def test_qastle_from_func_adl_matches_func_adl_uproot(client, session, datasets):
    import qastle
    from func_adl_uproot import UprootDataset

    path, tree = datasets["ttbar"]
    ds = UprootDataset(str(path), tree)
    queries = [
        ds.Where(lambda e: e.nMuon >= 1).Select(lambda e: {"met": e.MET_pt, "mu_pt": e.Muon_pt}),
        ds.Where(lambda e: e.MET_pt > 30).Select(lambda e: {"jet_pt": e.Jet_pt, "n": e.nJet}),
    ]
    for q in queries:
        text = qastle.python_ast_to_text_ast(q.query_ast)
        expected = q.value()
        got = client.run("ttbar", where=text, language="qastle", use_cache=False)
        inproc = session.run("ttbar", where=text, language="qastle")
        assert_tables_equal(got.table, inproc.table)
        arr = ak.from_arrow(got.table)
        assert len(arr) == len(expected)
        for field in expected.fields:
            assert ak.to_list(arr[field]) == ak.to_list(expected[field]), field


def test_uproot_raw_matches_uproot(client, datasets):
    path, tree = datasets["hzz"]
    query = [{"treename": tree, "filter_name": ["NMuon", "Muon_Px", "MET_px"], "cut": "NMuon >= 2"}]
    got = client.run("hzz", where=json.dumps(query), language="uproot-raw", use_cache=False)
    with uproot.open(path) as f:
        expected = f[tree].arrays(["NMuon", "Muon_Px", "MET_px"], cut="NMuon >= 2")
    arr = ak.from_arrow(got.table)
    assert len(arr) == len(expected) > 0
    for c in ["NMuon", "Muon_Px", "MET_px"]:
        assert ak.to_list(arr[c]) == ak.to_list(expected[c]), c


# -- the command line ------------------------------------------------------------------

def test_cli_query_through_server(server, datasets, tmp_path):
    out = tmp_path / "sel.parquet"
    cmd = [sys.executable, "-m", "skyhook_py.cli", "query", "ttbar", "--server", server.address,
           "--columns", "event,Muon_pt", "--where", "nMuon >= 2", "--output", str(out)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "events matched" in p.stdout
    import pyarrow.parquet as pq

    path, tree = datasets["ttbar"]
    with uproot.open(path) as f:
        expected = f[tree].arrays(["event", "Muon_pt"], cut="nMuon >= 2")
    assert pq.read_table(out).column("event").to_pylist() == ak.to_list(expected["event"])
    packed = tmp_path / "packed.arrow"   # the answer compressed on its way, the same rows
    p = subprocess.run(cmd[:-1] + [str(packed), "--compression", "zstd"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    with pa.ipc.open_file(str(packed)) as r:   # the .arrow sink writes the IPC file format
        assert r.read_all().column("Muon_pt").to_pylist() == ak.to_list(expected["Muon_pt"])
    bad = subprocess.run(cmd[:-2] + ["--where", "nMoun > 1"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "nMuon" in bad.stderr


def test_skyhook_serve_as_query_user(ceph_cluster, files, tmp_path):
    """`skyhook serve` with the least-privilege query key on the cluster's `skyhook` pool."""
    from skyhook_py import transcode
    from skyhook_py.storage.rados_io import Store

    admin = Store(str(ceph_cluster.conf_path), "skyhook", keyring=str(ceph_cluster.admin_keyring))
    name = f"grpc-serve-{os.getpid()}"
    transcode.ingest(admin, [files["small1"]], name, tree="Events")
    tokens = tmp_path / "tokens"
    tokens.write_text("# one token a line\ntok-123\n")
    proc = subprocess.Popen([sys.executable, "-m", "skyhook_py.cli", "--conf", str(ceph_cluster.conf_path),
                             "serve", "--listen", "127.0.0.1:0", "--token-file", str(tokens)],
                            stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline()
        assert "skyhook coordinator on" in line and "client.skyhook-query" in line, line
        address = line.split(" on ", 1)[1].split(" ", 1)[0]
        with Client(address, token="tok-123", timeout=60) as c:
            t = c.query(name, ["event", "MET_pt"], "MET_pt > 30")
        with uproot.open(files["small1"]) as f:
            expected = f["Events"].arrays(["event"], cut="MET_pt > 30")
        assert t.column("event").to_pylist() == ak.to_list(expected["event"])
    finally:
        proc.terminate()
        proc.wait(30)
        transcode.delete(admin, name)
        admin.close()
