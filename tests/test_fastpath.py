"""The coordinator's fast path (skyhook_py.service.fastpath) on a real cluster: repeated
queries skip compiling, cache hits are sent as ready-made messages.  Answers are
compared with uproot on the original files and with the uncached answer; the tracked
status of a hit with that of the miss that filled the cache.
"""

from __future__ import annotations

import awkward as ak
import numpy as np
import pyarrow as pa
import pytest
import uproot

from skyhook_py.query import tracker
from skyhook_py.query.results import Progress, ResultBatch, Summary
from skyhook_py.service import wire
from skyhook_py.service.client import Client
from conftest import serve_coordinator

pytestmark = pytest.mark.cluster

TTBAR = "nanoAOD_2015_CMS_Open_Data_ttbar.root"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from skyhook_py import demo_data

    d = tmp_path_factory.mktemp("fastpath-data")
    return {"a": demo_data.write_nanoaod(str(d / "a.root"), events=600, seed=11),
            "b": demo_data.write_nanoaod(str(d / "b.root"), events=400, seed=12)}


@pytest.fixture(scope="module")
def datasets(session, shared_data, files):
    session.ingest([shared_data / TTBAR], "ttbar", tree="Events", partition_events=32)
    session.ingest([files["a"]], "grows", tree="Events", partition_events=150)
    return {"ttbar": shared_data / TTBAR}


@pytest.fixture(scope="module")
def server(ceph_cluster, pool, datasets):
    yield from serve_coordinator(ceph_cluster, pool, cache_bytes=64 << 20)


@pytest.fixture(scope="module")
def client(server):
    with Client(server.address, timeout=120) as c:
        yield c


def _uproot(path, cols, cut):
    with uproot.open(path) as f:
        return f["Events"].arrays(cols, cut=cut)


def _equal_to(table: pa.Table, expected, cols):
    got = ak.from_arrow(table)
    for c in cols:
        assert ak.to_list(got[c]) == ak.to_list(expected[c]), c


def test_hit_is_one_result_message_equal_to_uproot(client, server, datasets):
    cols = ["event", "MET_pt", "Muon_pt"]
    where = "(nMuon >= 1) & (MET_pt > 20)"
    expected = _uproot(datasets["ttbar"], cols, where)
    miss = list(client.stream("ttbar", cols, where))
    miss_id = client.last_query_id
    hit = list(client.stream("ttbar", cols, where))
    hit_id = client.last_query_id
    miss_batches = [e for e in miss if isinstance(e, ResultBatch)]
    hit_batches = [e for e in hit if isinstance(e, ResultBatch)]
    assert len(miss_batches) >= 1           # batches arriving close together: one message
    assert len(hit_batches) == 1            # the cached answer, coalesced
    # a hit is its rows and the Summary (which has the totals): no Progress message
    assert [type(e) for e in hit] == [ResultBatch, Summary]
    assert (hit[-1].partitions_total, hit[-1].events_total) == (miss[-1].partitions_total, miss[-1].events_total)
    assert hit_batches[0].partition == miss_batches[0].partition
    _equal_to(hit_batches[0].table, expected, cols)
    _equal_to(pa.concat_tables([b.table for b in miss_batches]), expected, cols)
    s_miss, s_hit = miss[-1], hit[-1]
    assert s_miss.cache_hit is False and s_hit.cache_hit is True
    assert s_hit.server_seconds > 0 and s_hit.seconds >= 0
    for f in ("dataset", "manifest_version", "events_total", "events_scanned", "events_matched",
              "rows_returned", "partitions_total", "partitions_pruned", "partitions_pushed_down",
              "partitions_fallen_back", "fallen_back_objects", "aggregates"):
        assert getattr(s_hit, f) == getattr(s_miss, f), f
    assert s_hit.rows_returned == len(expected)
    # the hit is tracked like the miss: done, complete, the same rows and bytes delivered
    a, b = client.status(miss_id), client.status(hit_id)
    assert a["state"] == b["state"] == tracker.DONE and a["complete"] and b["complete"]
    assert b["rows_delivered"] == a["rows_delivered"] == len(expected)
    assert b["bytes_delivered"] == a["bytes_delivered"] > 0
    assert b["events_processed"] == a["events_processed"] == a["events_total"]
    assert "cache" in b["message"]
    assert hit_id not in server.coordinator.running() and miss_id not in server.coordinator.running()
    # the cache counts the ready-to-send form too, within its bound
    c = server.coordinator.cache
    assert c.bytes == sum(n for _, n in c._entries.values()) <= c.max_bytes


def _raw_messages(server, request):
    """The QueryEvent messages of one Query call, as the wire carries them."""
    import grpc

    from skyhook_py.service._grpc_stubs import rpc

    with grpc.insecure_channel(server.address) as channel:
        return list(rpc.SkyhookStub(channel).Query(request, timeout=120))


@pytest.mark.parametrize("summary_with_rows", [True, False])
def test_summary_rides_with_the_last_rows_only_for_a_client_that_reads_it(server, datasets, summary_with_rows):
    """A request with QueryOptions.summary_with_rows gets the Summary in the message of
    its last result chunk (QueryEvent.final_summary), on a miss and on a hit: one message
    fewer.  One without (an older client) gets a Summary message of its own, and never a
    final_summary.  Both parse to the same events, equal to uproot."""

    cols = ["event", "MET_pt", "Muon_eta"]
    where = "(nMuon >= 1) & (MET_pt > 25)"
    expected = _uproot(datasets["ttbar"], cols, where)
    request = wire.request_to_proto("ttbar", columns=cols, where=where, summary_with_rows=summary_with_rows)
    request.options.no_cache = True
    miss = _raw_messages(server, request)
    request.options.no_cache = False
    _raw_messages(server, request)   # fills the cache
    hit = _raw_messages(server, request)
    for msgs, cached in ((miss, False), (hit, True)):
        kinds = [m.WhichOneof("event") for m in msgs]
        finals = [m.HasField("final_summary") for m in msgs]
        if summary_with_rows:
            assert "summary" not in kinds and finals[-1] and sum(finals) == 1
            assert kinds[-1] == "result"
        else:
            assert kinds[-1] == "summary" and not any(finals)
        events = [ev for m in msgs for ev in wire.events_from_proto(m)]
        assert isinstance(events[-1], Summary) and events[-1].cache_hit is cached
        assert events[-1].rows_returned == len(expected) > 0
        rows = pa.concat_tables([e.table for e in events if isinstance(e, ResultBatch)])
        _equal_to(rows, expected, cols)
    assert len(hit) == (1 if summary_with_rows else 2)


def test_hit_of_an_empty_answer_keeps_its_columns(client):
    cols = ["event", "MET_pt"]
    miss = client.run("ttbar", cols, "MET_pt > 1e9")
    hit = client.run("ttbar", cols, "MET_pt > 1e9")
    assert hit.summary.cache_hit is True
    assert hit.table.num_rows == miss.table.num_rows == 0
    assert hit.table.schema.equals(miss.table.schema) and hit.table.column_names == cols


def test_hit_of_aggregates(client, datasets):
    aggs = [{"kind": "count", "name": "n"},
            {"kind": "hist1d", "name": "met", "x": "MET_pt", "bins": 10, "low": 0, "high": 200}]
    miss = client.run("ttbar", where="nMuon >= 1", aggregations=aggs)
    hit = client.run("ttbar", where="nMuon >= 1", aggregations=aggs)
    assert hit.summary.cache_hit is True and miss.summary.cache_hit is False
    expected = _uproot(datasets["ttbar"], ["MET_pt"], "nMuon >= 1")
    met = ak.to_numpy(expected["MET_pt"])
    assert hit.aggregates["n"] == miss.aggregates["n"] == len(met)
    want, _ = np.histogram(met, bins=10, range=(0, 200))
    np.testing.assert_array_equal(hit.aggregates["met"].values, want)
    np.testing.assert_array_equal(hit.aggregates["met"].sumw, miss.aggregates["met"].sumw)


def test_other_output_format_of_a_cached_answer(client, datasets):
    cols = ["event", "MET_pt"]
    where = "MET_pt > 40"
    client.run("ttbar", cols, where)                                   # fills the cache
    got = client.run("ttbar", cols, where, output_format="parquet")    # replayed, encoded again
    assert got.summary.cache_hit is True
    _equal_to(got.table, _uproot(datasets["ttbar"], cols, where), cols)


def test_repeats_skip_compiling_but_never_serve_an_old_version(client, server, store, files):
    from skyhook_py import transcode

    compiled = server.coordinator.compiled
    cols = ["event", "MET_pt"]
    where = "MET_pt > 35"
    first = client.run("grows", cols, where, use_cache=False)
    hits = compiled.hits
    again = client.run("grows", cols, where, use_cache=False, deadline=60)   # deadline: a per-call field
    assert compiled.hits == hits + 1 and again.summary.cache_hit is False
    assert again.table.equals(first.table)
    _equal_to(first.table, _uproot(files["a"], cols, where), cols)
    # another selection is another entry, with its own answer
    other = client.run("grows", cols, "MET_pt > 70", use_cache=False)
    _equal_to(other.table, _uproot(files["a"], cols, "MET_pt > 70"), cols)
    # a commit gives a new manifest object: compiled again, the new events answered
    client.run("grows", cols, where)    # and cached
    transcode.append(store, [files["b"]], "grows", tree="Events")
    misses = compiled.misses
    after = client.run("grows", cols, where)
    assert compiled.misses == misses + 1 and after.summary.cache_hit is False
    want_b = _uproot(files["b"], cols, where)
    assert after.table.num_rows == first.table.num_rows + len(want_b)
    assert after.table.column("event").to_pylist()[first.table.num_rows:] == ak.to_list(want_b["event"])
    assert client.run("grows", cols, where).summary.cache_hit is True


def test_a_cancelled_hit_is_not_left_running(client, server):
    cols = ["event", "MET_pt"]
    client.run("ttbar", cols, "MET_pt > 45")              # cached
    stream = client.stream("ttbar", cols, "MET_pt > 45")
    first = next(stream)                                   # the rows, then stop reading
    assert isinstance(first, ResultBatch)
    stream.close()
    qid = client.last_query_id
    import time

    end = time.monotonic() + 30
    while qid in server.coordinator.running() and time.monotonic() < end:
        time.sleep(0.05)
    assert qid not in server.coordinator.running()
    assert client.status(qid)["state"] in (tracker.DONE, tracker.CANCELLED)


def test_request_token_ignores_only_the_per_call_fields():
    from skyhook_py.service import wire

    def token(**kw):
        args = dict(columns=["event", "MET_pt"], where="MET_pt > 30")
        args.update(kw)
        return wire.request_token(wire.request_to_proto("demo", **args))

    base = token()
    # the same query asked again, by another call: the same token
    assert token(query_id="a1") == token(query_id="b2") == base
    assert token(deadline=5.0) == token(use_cache=False) == token(output_format="parquet") == base
    # anything that changes what is asked: another token
    others = [token(where="MET_pt > 31"), token(columns=["event"]), token(columns=["MET_pt", "event"]),
              token(pushdown="off"), token(limit=3), token(event_range=(0, 10)),
              token(expressions={"x": "MET_pt * 2"}), token(allow_partial=True),
              wire.request_token(wire.request_to_proto("other", columns=["event", "MET_pt"],
                                                           where="MET_pt > 30"))]
    assert len({base, *others}) == len(others) + 1


def test_concatenated_parts_parse_as_one_event():
    """What send_hit relies on: a serialized QueryEvent(query_id) + a body + a second
    summary part parse as one QueryEvent with the fields of all three."""
    from skyhook_py.service._grpc_stubs import pb

    body = pb.QueryEvent(summary=pb.Summary(dataset="d", rows_returned=7, events_total=100)).SerializeToString()
    prefix = pb.QueryEvent(query_id="q1").SerializeToString()
    tail = pb.QueryEvent(summary=pb.Summary(cache_hit=True, seconds=0.5, server_seconds=0.25)).SerializeToString()
    ev = pb.QueryEvent.FromString(prefix + body + tail)
    assert ev.query_id == "q1" and ev.WhichOneof("event") == "summary"
    s = ev.summary
    assert (s.dataset, s.rows_returned, s.events_total) == ("d", 7, 100)
    assert s.cache_hit is True and s.seconds == 0.5 and s.server_seconds == 0.25


def test_compiled_entries_hold_their_manifest_weakly():
    import gc

    from skyhook_py.service.fastpath import CompiledQueries

    class M:   # stands in for a Manifest: only its identity matters here
        pass

    c = CompiledQueries(size=2)
    m1, m2 = M(), M()
    c.put(b"t", m1, "q1", "k1")
    assert c.get(b"t", m1) == ("q1", "k1")
    assert c.get(b"t", m2) is None          # another manifest object: compiled again
    del m1
    gc.collect()
    assert c.get(b"t", M()) is None         # an entry never keeps its manifest alive
    for i in range(3):
        c.put(b"%d" % i, m2, i, i)
    assert len(c) == 2 and c.get(b"0", m2) is None and c.get(b"2", m2) == (2, 2)


def test_an_osd_answer_under_4_mib_is_forwarded_as_it_came_and_a_larger_one_is_cut():
    """wire.event_to_protos: a partition's Arrow IPC stream from the OSD up to
    FORWARD_BYTES (under gRPC's default 4 MiB message limit) goes out as it came, one
    message, not cut and encoded again; a larger one is cut into chunks of about
    CHUNK_BYTES, each under the limit.  Both decode to the same rows."""
    import numpy as np

    from skyhook_py.service.wire import CHUNK_BYTES, FORWARD_BYTES

    def batch(rows):
        t = pa.table({"x": pa.array(np.arange(rows, dtype=np.float64))})
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, t.schema) as w:
            w.write_table(t)
        return ResultBatch(3, t, sink.getvalue().to_pybytes())

    mid = batch(300_000)                     # 2.4 MB: over a chunk, under the forward limit
    assert CHUNK_BYTES < len(mid.ipc) <= FORWARD_BYTES
    msgs = list(wire.event_to_protos(mid, "q"))
    assert len(msgs) == 1 and msgs[0].result.data == mid.ipc and msgs[0].result.num_rows == 300_000
    big = batch(600_000)                     # 4.8 MB: cut
    assert len(big.ipc) > FORWARD_BYTES
    msgs = list(wire.event_to_protos(big, "q"))
    assert len(msgs) > 1 and all(len(m.SerializeToString()) < 4 << 20 for m in msgs)
    got = pa.concat_tables([wire.decode_table(m.result.data) for m in msgs])
    assert got.equals(big.table)


# -- a miss's batches sent together (fastpath.coalesced), without a cluster --------------

def _batch(partition, values):
    return ResultBatch(partition, pa.table({"x": pa.array(values, pa.int64())}))


def test_coalesced_merges_close_batches_in_order_and_a_fast_query_sends_rows_and_summary_only():
    from skyhook_py.service.fastpath import coalesced

    first = Progress(0, 3, 0, 30)
    events = [first, _batch(0, [1, 2]), Progress(1, 3, 10, 30), _batch(1, [3]),
              Progress(2, 3, 20, 30), _batch(2, [4, 5]), Summary(rows_returned=5)]
    out = list(coalesced(iter(events), window=60.0))
    assert isinstance(out[0], ResultBatch) and out[0].partition == 0
    assert out[0].table.column("x").to_pylist() == [1, 2, 3, 4, 5]
    assert isinstance(out[1], Summary) and len(out) == 2   # the Summary supersedes the progress
    # for a client that reads final_summary: the merged batch and the Summary as one LastBatch
    from skyhook_py.service.fastpath import LastBatch

    one = list(coalesced(iter(events), window=60.0, summary_with_rows=True))
    assert len(one) == 1 and isinstance(one[0], LastBatch)
    assert one[0].batch.table.column("x").to_pylist() == [1, 2, 3, 4, 5] and one[0].summary.rows_returned == 5
    # an answer without rows keeps its Summary message
    assert [type(e) for e in coalesced(iter([first, Summary()]), window=60.0, summary_with_rows=True)] == [Summary]


def test_coalesced_sends_the_plan_and_progress_of_a_slow_query():
    """Within the window the plan's Progress is held; once the window has passed it goes
    out (the client learns the query's size and id), and a progress that arrives while
    batches are held goes out after them."""
    import time

    from skyhook_py.query.executor import Idle
    from skyhook_py.service.fastpath import coalesced

    first = Progress(0, 3, 0, 30)

    def events():
        yield first
        yield Idle()                     # too early: still held
        time.sleep(0.03)
        yield Idle()                     # the window has passed: the plan goes out
        yield _batch(0, [1])
        yield Progress(1, 3, 10, 30)     # held after the batch
        time.sleep(0.03)
        yield Idle()
        yield Summary(rows_returned=1)

    out = list(coalesced(events(), window=0.02))
    assert out[0] is first
    assert isinstance(out[1], ResultBatch) and out[2] == Progress(1, 3, 10, 30)
    assert isinstance(out[3], Summary) and len(out) == 4


def test_coalesced_sends_held_batches_once_the_window_has_passed():
    import time

    from skyhook_py.query.executor import Idle
    from skyhook_py.query.results import PartitionFailure
    from skyhook_py.service.fastpath import coalesced

    sent = []

    def events():
        yield _batch(0, [1])
        yield Idle()                    # too early: still held
        assert sent == []
        time.sleep(0.03)
        yield Idle()                    # the window has passed: sent before the next event
        assert [b.table.num_rows for b in sent] == [1]
        yield _batch(1, [2])
        yield PartitionFailure(2, "obj", 5, "EIO")   # a failure sends what is held first
        yield _batch(3, [3])
        yield _batch(4, [4])            # the stream ends: what is held goes out

    out = []
    for ev in coalesced(events(), window=0.02):
        sent.append(ev)
        out.append(ev)
    kinds = [type(e).__name__ for e in out]
    assert kinds == ["ResultBatch", "ResultBatch", "PartitionFailure", "ResultBatch"]
    assert [e.partition for e in out if isinstance(e, ResultBatch)] == [0, 1, 3]
    assert out[-1].table.column("x").to_pylist() == [3, 4]


def test_coalesced_never_holds_more_than_a_chunk():
    from skyhook_py.service.fastpath import coalesced

    events = [_batch(i, list(range(100))) for i in range(4)]   # 800 bytes each
    out = list(coalesced(iter(events), window=60.0, chunk_bytes=1600))
    assert [e.table.num_rows for e in out] == [200, 200]


def _ipc(table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    return sink.getvalue().to_pybytes()


def test_spliced_ipc_streams_decode_to_the_concatenated_tables():
    from skyhook_py.service.wire import splice_ipc_streams

    jagged = pa.list_(pa.float32())
    tables = [pa.table({"event": pa.array([3 * i, 3 * i + 1], pa.int64()),
                        "Muon_pt": pa.array([[1.5, float(i)], None], jagged),
                        "ok": pa.array([True, i % 2 == 0])}) for i in range(5)]
    tables.append(tables[0].slice(0, 0))          # an empty answer keeps its place
    got = pa.ipc.open_stream(splice_ipc_streams([_ipc(t) for t in tables])).read_all()
    assert got.equals(pa.concat_tables(tables)) and got.schema.equals(tables[0].schema, check_metadata=True)
    # streams that cannot be spliced: a different schema, a cut stream, no stream, bytes of another kind
    other = _ipc(pa.table({"event": pa.array([1], pa.int32())}))
    whole = _ipc(tables[1])
    garbage_length = whole[:4] + (-8).to_bytes(4, "little", signed=True) + whole[8:]
    for bad in ([_ipc(tables[0]), other], [_ipc(tables[0]), whole[:-8]], [whole, None], [b"PAR1" + whole],
                [garbage_length], [whole[:12]], []):
        assert splice_ipc_streams(bad) is None


def test_coalesced_splices_the_osds_streams_and_merges_tables_without_one():
    from skyhook_py.service.fastpath import coalesced
    from skyhook_py.service.wire import IpcRows

    batches = [_batch(i, [2 * i, 2 * i + 1]) for i in range(3)]
    with_ipc = [ResultBatch(b.partition, b.table, _ipc(b.table)) for b in batches]
    out = list(coalesced(iter(with_ipc + [Summary(rows_returned=6)]), window=60.0))
    assert isinstance(out[0], IpcRows) and out[0].partition == 0 and out[0].num_rows == 6
    assert wire.decode_table(out[0].ipc).column("x").to_pylist() == list(range(6))
    msg = list(wire.event_to_protos(out[0], "q"))
    assert len(msg) == 1 and msg[0].result.data == out[0].ipc and msg[0].result.num_rows == 6
    # one batch without its stream (a sliced or decompressed answer): the tables are merged
    mixed = list(coalesced(iter(with_ipc[:2] + batches[2:]), window=60.0))
    assert isinstance(mixed[0], ResultBatch) and mixed[0].table.column("x").to_pylist() == list(range(6))
