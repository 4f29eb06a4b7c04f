"""Hardening (issue 12) on a real cluster: no crash and no silent wrong answer on the
plain-read path, commits that never delete committed data, deadlines that hold.

Crashes are provoked in a child process (a segfault there fails the test instead of
killing the test run)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pyarrow as pa
import pytest

from skyhook_py.errors import CorruptObjectError

pytestmark = pytest.mark.cluster


def _child(ceph_cluster, pool, body: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``body`` in a fresh interpreter with ``session`` open on the test pool."""
    prelude = textwrap.dedent(f"""
        import json, sys, time
        from skyhook_py.session import Session
        session = Session.open({str(ceph_cluster.conf_path)!r}, {pool!r}, "skyhook",
                               keyring={str(ceph_cluster.admin_keyring)!r})
    """)
    return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(body)],
                          capture_output=True, text=True, timeout=timeout)


# -- item 1: the plain-read path validates what it reads -----------------------------

def _corrupt_list_offset(data: bytes, column: str) -> bytes:
    """The partition with one offset of ``column`` (a list column) made huge, in place."""
    buf = pa.py_buffer(data)
    batch = pa.ipc.open_file(buf).get_batch(0)
    offsets = batch.column(column).buffers()[1]
    width = 8 if pa.types.is_large_list(batch.column(column).type) else 4
    pos = offsets.address - buf.address + width * (len(batch) // 2)
    assert 0 < pos < len(data)
    out = bytearray(data)
    out[pos:pos + width] = (2 ** (8 * width - 2)).to_bytes(width, "little")
    return bytes(out)


@pytest.fixture(scope="module")
def corrupt_dataset(session, store, shared_data):
    session.ingest([shared_data / "uproot-HZZ.root"], "hzz_badoffset", tree="events",
                   partition_events=600)
    m = session.manifest("hzz_badoffset")
    victim = m.partitions[1].object
    bad = _corrupt_list_offset(store.read(victim), "Muon_Px")
    # the oracle: Arrow's own full validation refuses these bytes
    with pytest.raises(pa.ArrowInvalid):
        pa.ipc.open_file(pa.py_buffer(bad)).read_all().validate(full=True)
    store.write_full(victim, bad)
    return "hzz_badoffset", victim


def test_corrupt_list_offset_same_errno_on_both_paths(session, corrupt_dataset, ceph_cluster, pool):
    dataset, victim = corrupt_dataset
    # the OSD path: EBADMSG
    with pytest.raises(CorruptObjectError) as pushed:
        session.run(dataset, columns=["Muon_Px"], where="sum(Muon_Px > 10) > 0", pushdown="on")
    assert pushed.value.errno == 74
    # the plain-read path, with and without a cut, in a child (it crashed libarrow)
    for where in ("sum(Muon_Px > 10) > 0", None):
        r = _child(ceph_cluster, pool, f"""
            from skyhook_py.errors import SkyhookError
            try:
                t = session.query({dataset!r}, columns=["Muon_Px"], where={where!r}, pushdown="off")
                print(json.dumps({{"rows": t.num_rows}}))
            except SkyhookError as e:
                print(json.dumps({{"error": type(e).__name__, "errno": getattr(e, "errno", None),
                                  "message": str(e)}}))
            session.close()
        """)
        assert r.returncode == 0, (where, r.returncode, r.stderr[-2000:])
        out = json.loads(r.stdout.strip().splitlines()[-1])
        assert out.get("error") == "CorruptObjectError" and out["errno"] == 74, (where, out)
        assert victim in out["message"]


# -- item 4: an ambiguous commit never deletes committed data ----------------------------

def _zmumu_m(shared_data):
    import uproot

    return uproot.open(shared_data / "uproot-Zmumu.root")["events"]["M"].array(library="np")


def _inject(monkeypatch, store, method, *, after: bool, when=lambda *a: True):
    """``store.method`` raises a librados-like timeout before or after the real call."""
    from skyhook_py.errors import ClusterError

    real = getattr(store, method)

    def wrapped(*args, **kw):
        if not when(*args):
            return real(*args, **kw)
        if after:
            real(*args, **kw)
        raise ClusterError(f"injected: timed out on {args[0]!r} ({'after' if after else 'before'} the call)")

    monkeypatch.setattr(store, method, wrapped)


def _check_zmumu(session, dataset, shared_data):
    import numpy as np

    t = session.query(dataset, columns=["M"], pushdown="on")
    np.testing.assert_array_equal(t.column("M").to_numpy(), _zmumu_m(shared_data))


def _is_index(obj, *rest):
    from skyhook_py.storage.manifest import INDEX_OBJECT

    return obj == INDEX_OBJECT


def _inject_index_failure(monkeypatch, store):
    """The index write fails: a plain set_omap (creating the index) or the guarded
    update of an entry (storage.manifest.update_index)."""
    _inject(monkeypatch, store, "set_omap", after=False, when=_is_index)
    _inject(monkeypatch, store, "set_omap_guarded", after=False, when=_is_index)


def test_index_update_failure_keeps_committed_ingest(session, store, shared_data, monkeypatch):
    _inject_index_failure(monkeypatch, store)
    with pytest.warns(UserWarning, match="committed as version"):
        session.ingest([shared_data / "uproot-Zmumu.root"], "c_index", tree="events",
                       partition_events=500)
    monkeypatch.undo()
    _check_zmumu(session, "c_index", shared_data)


def test_manifest_replace_applied_then_timed_out_keeps_ingest(session, store, shared_data, monkeypatch):
    _inject(monkeypatch, store, "replace_guarded", after=True)
    session.ingest([shared_data / "uproot-Zmumu.root"], "c_applied", tree="events",
                   partition_events=500)
    monkeypatch.undo()
    assert "c_applied" in session.datasets()   # the index update was made after the re-read
    _check_zmumu(session, "c_applied", shared_data)


def test_reshard_index_failure_keeps_every_partition(session, store, shared_data, monkeypatch):
    session.ingest([shared_data / "uproot-Zmumu.root"], "c_reshard", tree="events",
                   partition_events=500)
    _inject_index_failure(monkeypatch, store)
    with pytest.warns(UserWarning, match="committed as version 2"):
        session.reshard("c_reshard", partition_events=700)
    monkeypatch.undo()
    m = session.manifest("c_reshard")
    assert m.version == 2 and all(store.exists(p.object) for p in m.partitions)
    _check_zmumu(session, "c_reshard", shared_data)


def test_replace_timed_out_before_apply_keeps_partitions_for_gc(session, store, shared_data, monkeypatch):
    from skyhook_py.errors import ClusterError
    from skyhook_py.transcode import operations

    session.ingest([shared_data / "uproot-Zmumu.root"], "c_before", tree="events",
                   partition_events=500)
    old = session.manifest("c_before")
    _inject(monkeypatch, store, "replace_guarded", after=False)
    with pytest.raises(ClusterError, match="partitions were kept"):
        session.reshard("c_before", partition_events=700)
    monkeypatch.undo()
    assert session.manifest("c_before").version == old.version
    # the new writer's partitions are still there (the replace might yet be applied)...
    extra = set(operations._dataset_partitions(store, "c_before")) - {p.object for p in old.partitions}
    assert extra
    # ...and gc removes them once the operator knows it did not happen
    assert set(operations.gc(store, "c_before", grace=0)) == extra
    _check_zmumu(session, "c_before", shared_data)


def test_lost_race_still_discards(session, store, shared_data, monkeypatch):
    from skyhook_py.errors import ConcurrentUpdateError
    from skyhook_py.transcode import operations

    session.ingest([shared_data / "uproot-Zmumu.root"], "c_race", tree="events",
                   partition_events=500)
    old = session.manifest("c_race")
    real = store.replace_guarded

    def stale(obj, data, key, expected, new):   # another writer commits first
        real(obj, old.to_json(), key, expected, str(int(expected) + 1))
        return real(obj, data, key, expected, new)

    monkeypatch.setattr(store, "replace_guarded", stale)
    with pytest.raises(ConcurrentUpdateError):
        session.reshard("c_race", partition_events=700)
    monkeypatch.undo()
    left = set(operations._dataset_partitions(store, "c_race")) - {p.object for p in old.partitions}
    assert not left


# -- items 8 and 9: deadlines hold with a stopped OSD; abandoned calls are safe ------------

import contextlib  # noqa: E402
import signal  # noqa: E402
import time  # noqa: E402

DEADLINE = 3.0


@contextlib.contextmanager
def _stopped_osd(ceph_cluster, osd: int):
    """osd.<osd> SIGSTOPped (a hung OSD: no error, no answer) for the block."""
    # nodown: under load the scene can outlast the 5 s heartbeat grace, and an OSD the
    # mon marked down has its requests resent to a replica: an answer instead of a hang
    ceph_cluster.ceph("osd", "set", "nodown")
    ceph_cluster.kill_osd(osd, signal.SIGSTOP)
    try:
        yield osd
    finally:
        ceph_cluster.start_osd(osd)
        ceph_cluster.ceph("osd", "unset", "nodown")
        # if the mon marked it down meanwhile, peering moves primaries for a while: the
        # next test's choice of OSD by its objects must see the final placement
        ceph_cluster.wait_settled()


@pytest.fixture(scope="module")
def slow_dataset(session, shared_data):
    session.ingest([shared_data / "uproot-HZZ.root"], "dl", tree="events", partition_events=100)
    return "dl"


def _manifest_osd(store, dataset):
    from skyhook_py.storage.manifest import manifest_object

    osd = store.osd_for(manifest_object(dataset))
    assert osd is not None
    return osd


def _partition_only_osd(store, session, dataset):
    """An OSD that is primary of some partitions of ``dataset`` but not of its manifest."""
    m_osd = _manifest_osd(store, dataset)
    for p in session.manifest(dataset).partitions:
        osd = store.osd_for(p.object)
        if osd is not None and osd != m_osd:
            return osd
    pytest.fail("every partition shares the manifest's primary OSD")


def test_session_deadline_covers_the_manifest_read(session, store, slow_dataset, ceph_cluster):
    from skyhook_py.errors import DeadlineExceeded

    with _stopped_osd(ceph_cluster, _manifest_osd(store, slow_dataset)):
        t0 = time.monotonic()
        with pytest.raises(DeadlineExceeded):
            session.run(slow_dataset, columns=["Muon_Px"], deadline=DEADLINE, pushdown="on")
        took = time.monotonic() - t0
    assert took <= DEADLINE + 1, took


def test_session_deadline_covers_the_manifest_pieces(session, store, ceph_cluster, shared_data):
    """The pieces of a format-2 manifest (partition table, statistics) are read while the
    query is planned: a hung OSD holding one of them ends in DeadlineExceeded too (it was
    a ClusterError after librados's op timeout)."""
    from skyhook_py.errors import DeadlineExceeded

    ceph_cluster.wait_settled()
    for i in range(12):   # piece names are random: ingest until the table is elsewhere
        name = f"pieces{i}"
        session.ingest([shared_data / "uproot-HZZ.root"], name, tree="events", partition_events=500)
        table = session.manifest(name).pieces.segments[0]["table"]   # always read
        osd = store.osd_for(table)
        if osd not in (None, _manifest_osd(store, name)):
            break
    else:
        pytest.fail("12 ingests all put the partition table beside the header")
    with _stopped_osd(ceph_cluster, osd):
        t0 = time.monotonic()
        with pytest.raises(DeadlineExceeded):
            session.run(name, columns=["Muon_Px"], deadline=DEADLINE, pushdown="on")
        took = time.monotonic() - t0
    assert took <= DEADLINE + 1, took


def test_client_deadline_covers_the_manifest_read(store, slow_dataset, ceph_cluster, pool):
    from skyhook_py.errors import DeadlineExceeded
    from skyhook_py.service.client import Client
    from skyhook_py.service.coordinator import Coordinator
    from skyhook_py.service.server import open_session, start_server

    s = open_session(ceph_cluster.conf_path, pool, user="client.admin",
                     keyring=str(ceph_cluster.admin_keyring))
    running = start_server(Coordinator(s), "127.0.0.1:0")
    try:
        with Client(running.address, timeout=120) as c:
            c.run(slow_dataset, columns=["Muon_Px"], use_cache=False)   # warm: the server works
            with _stopped_osd(ceph_cluster, _manifest_osd(store, slow_dataset)):
                t0 = time.monotonic()
                with pytest.raises(DeadlineExceeded):
                    c.run(slow_dataset, columns=["Muon_Px"], deadline=DEADLINE, use_cache=False)
                took = time.monotonic() - t0
    finally:
        running.stop(close_session=True)
    assert took <= DEADLINE + 1, took


_ABANDON = """
import json, sys
from skyhook_py.errors import DeadlineExceeded
from skyhook_py.session import Session
conf, pool, keyring, dataset, deadline, how = sys.argv[1:7]
session = Session.open(conf, pool, "skyhook", keyring=keyring)
if len(sys.argv) > 7:   # connected: say so (a file), then wait for the go on stdin
    open(sys.argv[7], "w").close()
    sys.stdin.readline()
try:
    session.run(dataset, columns=["Muon_Px"], deadline=float(deadline), pushdown="on")
    print(json.dumps({"outcome": "answered"}))
except DeadlineExceeded:
    print(json.dumps({"outcome": "deadline",
                      "in_flight": getattr(session.store, "in_flight", lambda: -1)()}), flush=True)
if how == "close":
    session.close()
"""


def _abandon(ceph_cluster, pool, dataset, deadline, how, ready_file=None):
    """A child that queries with ``deadline`` and exits or closes (``how``); with
    ``ready_file`` it first connects, creates that file and waits for a line on stdin, so
    that the query starts only when the caller has set the scene."""
    return subprocess.Popen(
        [sys.executable, "-c", _ABANDON, str(ceph_cluster.conf_path), pool,
         str(ceph_cluster.admin_keyring), dataset, str(deadline), how,
         *([str(ready_file)] if ready_file else [])],
        stdin=subprocess.PIPE if ready_file else None,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _check_clean_exit(p, out_err, label):
    stdout, stderr = out_err
    assert p.returncode == 0, (label, p.returncode, stderr[-2000:])
    assert "terminate called" not in stderr, (label, stderr[-2000:])
    return json.loads(stdout.strip().splitlines()[-1])


def test_exit_and_close_right_after_a_deadline_are_safe(session, ceph_cluster, pool, shared_data):
    """A deadline passing while calls are in flight, then exit (aborted: "terminate called
    without an active exception", the completions ran into a finalising interpreter) or
    close.  Many tiny partitions, so that calls are in flight when the deadline passes."""
    session.ingest([shared_data / "uproot-HZZ.root"], "many", tree="events", partition_events=5)
    outcomes = []
    for deadline in (0.2, 0.3, 0.4):
        for how in ("exit", "close"):
            p = _abandon(ceph_cluster, pool, "many", deadline, how)
            outcomes.append(_check_clean_exit(p, p.communicate(timeout=120), (deadline, how))["outcome"])
    assert "deadline" in outcomes


def test_close_and_exit_with_calls_stuck_on_a_stopped_osd_are_safe(session, store, slow_dataset,
                                                                    ceph_cluster, pool, tmp_path):
    ceph_cluster.wait_settled(pool)   # an earlier test's stopped OSD may still be peering
    osd = _partition_only_osd(store, session, slow_dataset)
    # the children connect first (interpreter start-up under load can outlast the 5 s
    # heartbeat grace, and an OSD already marked down would leave nothing in flight)
    ready = {how: tmp_path / f"ready-{how}" for how in ("exit", "close")}
    # a deadline long enough to reach the stopped OSD's partitions under any load (nodown
    # keeps the OSD up however long it takes): calls are in flight when it passes
    procs = {how: _abandon(ceph_cluster, pool, slow_dataset, 8, how, ready[how]) for how in ready}
    t0 = time.monotonic()
    while not all(f.exists() for f in ready.values()) and time.monotonic() - t0 < 120:
        time.sleep(0.1)
    with _stopped_osd(ceph_cluster, osd):
        for p in procs.values():   # both start now, on the same stopped OSD
            p.stdin.write("go\n")
            p.stdin.flush()
        outs = {how: p.communicate(timeout=120) for how, p in procs.items()}
    for how, p in procs.items():
        out = _check_clean_exit(p, outs[how], how)
        # the scenario happened: the deadline passed with calls still in flight
        assert out["outcome"] == "deadline" and out["in_flight"] != 0, (how, out)


# -- item 5: partial answers say so ------------------------------------------------------

def _hzz_events(shared_data):
    import uproot

    return uproot.open(shared_data / "uproot-HZZ.root")["events"].num_entries


def test_partial_answer_says_so_in_its_type_or_raises(session, corrupt_dataset, shared_data):
    from skyhook_py.errors import PartialResultError
    from skyhook_py.query.results import PartialQueryResult

    dataset, victim = corrupt_dataset
    m = session.manifest(dataset)
    bad = next(p for p in m.partitions if p.object == victim)
    want_rows = _hzz_events(shared_data) - (bad.event_stop - bad.event_start)
    r = session.run(dataset, columns=["Muon_Px"], pushdown="on", fail_fast=False)
    assert isinstance(r, PartialQueryResult) and not r.complete
    assert [f.object for f in r.failures] == [victim] and r.table.num_rows == want_rows
    with pytest.raises(PartialResultError) as e:
        session.query(dataset, columns=["Muon_Px"], pushdown="on", fail_fast=False)
    assert e.value.result.table.num_rows == want_rows and victim in str(e.value)
    # a complete answer is a plain QueryResult
    ok = session.run(dataset, columns=["Muon_Px"], event_range=(0, 100), pushdown="on")
    assert ok.complete and not isinstance(ok, PartialQueryResult)


def test_client_allow_partial_says_so(corrupt_dataset, ceph_cluster, pool, shared_data):
    from skyhook_py.errors import PartialResultError
    from skyhook_py.query.results import PartialQueryResult
    from skyhook_py.service.client import Client
    from skyhook_py.service.coordinator import Coordinator
    from skyhook_py.service.server import open_session, start_server

    dataset, victim = corrupt_dataset
    s = open_session(ceph_cluster.conf_path, pool, user="client.admin",
                     keyring=str(ceph_cluster.admin_keyring))
    running = start_server(Coordinator(s), "127.0.0.1:0")
    try:
        with Client(running.address, timeout=120) as c:
            r = c.run(dataset, columns=["Muon_Px"], pushdown="on", allow_partial=True)
            assert isinstance(r, PartialQueryResult) and [f.object for f in r.failures] == [victim]
            with pytest.raises(PartialResultError):
                c.query(dataset, columns=["Muon_Px"], pushdown="on", allow_partial=True)
    finally:
        running.stop(close_session=True)


def test_collect_refuses_a_stream_without_summary():
    from skyhook_py.errors import ProtocolError
    from skyhook_py.query import results

    events = [results.Progress(0, 2, 0, 10), results.ResultBatch(0, pa.table({"x": [1, 2]}))]
    with pytest.raises(ProtocolError, match="without its summary"):
        results.collect(iter(events), aggregated=False)


@pytest.mark.parametrize("pushdown", ["on", "off"])
def test_partition_shorter_than_its_manifest_entry_is_an_error(session, store, shared_data, pushdown):
    """A valid partition object holding fewer rows than the manifest says (a bad writer):
    the answer was silently short; rows_scanned is now checked against the manifest."""
    dataset = f"short_{pushdown}"
    session.ingest([shared_data / "uproot-Zmumu.root"], dataset, tree="events", partition_events=500)
    victim = session.manifest(dataset).partitions[1].object
    t = pa.ipc.open_file(pa.py_buffer(store.read(victim))).read_all()
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, t.schema) as w:
        w.write_table(t.slice(0, 100))
    data = sink.getvalue().to_pybytes()
    # the bad writer also writes the object's block checksums (it holds the ingest key), so
    # the class's checksum check passes and the row count is what catches it; the manifest's
    # checksums cannot be rewritten, so a plain read is caught by them first (same errno)
    from skyhook_py.storage import checksum

    store.write_full(victim, data, {checksum.XATTR: checksum.xattr_value(data, checksum.block_crcs(data))})
    want = "holds 500" if pushdown == "on" else "holds 500|recorded at ingest"
    with pytest.raises(CorruptObjectError, match=want) as e:
        session.run(dataset, columns=["M"], pushdown=pushdown)
    assert victim in str(e.value) and e.value.errno == 74


# -- item 2: integer literals follow NumPy 2, never wrap in int64 --------------------------

# cut strings NumPy 2 evaluates (Python folds the literal arithmetic, then NEP 50)
NUMPY_CUTS = [
    "NMuon > 2**64", "NMuon < 2**64", "2**64 <= NMuon", "NMuon == 2**63", "NMuon != 2**63",
    "NMuon > -2**70", "NMuon > 18446744073709551616", "MET_px > 2**64", "MET_px < 2**64 * 2**10",
    "MET_px > -(2**80)", "NMuon + (2**64 - 2**64 + 1) > 1", "NMuon * 2**3 >= 2**4",
]
# NumPy 2 raises OverflowError for these; the query must be refused, never wrapped
NUMPY_OVERFLOWS = ["NMuon + 2**64 > 0", "NMuon * 2**63 > 0", "MET_px > 2**2000 * 2**2000"]


def _hzz_numpy(shared_data):
    import uproot

    return uproot.open(shared_data / "uproot-HZZ.root")["events"].arrays(
        ["NMuon", "MET_px"], library="np")


@pytest.mark.parametrize("pushdown", ["on", "off"])
def test_integer_literals_match_numpy(session, slow_dataset, shared_data, pushdown):
    import numpy as np

    from skyhook_py.errors import QueryError

    arrays = _hzz_numpy(shared_data)
    for cut in NUMPY_CUTS:
        want = int(np.count_nonzero(eval(cut, {}, dict(arrays))))
        got = session.run(slow_dataset, columns=["NMuon"], where=cut, pushdown=pushdown).table.num_rows
        assert got == want, (cut, got, want)
    for cut in NUMPY_OVERFLOWS:
        with pytest.raises(OverflowError):
            eval(cut, {}, dict(arrays))
        with pytest.raises(QueryError):
            session.run(slow_dataset, columns=["NMuon"], where=cut, pushdown=pushdown)
    # 10**10**10 is refused at once (Python would need GBs to compute it, NumPy then overflows)
    with pytest.raises(QueryError, match="bits"):
        session.run(slow_dataset, columns=["NMuon"], where="MET_px > 10**10**10", pushdown=pushdown)


# -- item 12 and the CLI: size bounds, deep cuts, user errors are messages -------------------

def test_request_size_is_bounded_early():
    from skyhook_py.errors import QueryError
    from skyhook_py.query import compile as comp

    with pytest.raises(QueryError, match="output columns"):
        comp.check_sizes(columns=["x"] * 40_000)
    with pytest.raises(QueryError, match="output columns"):
        comp.check_sizes(expressions={f"e{i}": f"x + {i}" for i in range(40_000)})
    with pytest.raises(QueryError, match="characters"):
        comp.check_sizes(where="x > 0 and " * 200_000 + "x > 0")


def test_duplicate_names_rejected_in_linear_time():
    from skyhook_py.errors import QueryError
    from skyhook_py.query import ir

    # 40,000 outputs of one name (the bound is applied earlier, this is the IR's own check)
    with pytest.raises(QueryError, match="repeated"):
        ir.Query(outputs=[("x", ir.col("x"))] * 40_000)


def test_grpc_request_sizes_are_invalid_argument():
    from skyhook_py.errors import QueryError, status_code_name
    from skyhook_py.service import wire

    for kwargs in ({"columns": ["MET_pt"] * 40_000},
                   {"expressions": {f"e{i}": f"MET_pt + {i}" for i in range(40_000)}}):
        p = wire.request_to_proto("ds", **kwargs)
        with pytest.raises(QueryError) as e:
            wire.spec_from_proto(p)
        assert status_code_name(e.value) == "INVALID_ARGUMENT"


def test_deep_cut_is_a_query_error():
    from skyhook_py.errors import QueryError
    from skyhook_py.query import lang

    for sep in (" and ", " + ", " | "):
        text = sep.join(["(x > 0)"] * 5_001) if sep != " + " else " + ".join(["x"] * 5_001) + " > 0"
        with pytest.raises(QueryError, match="nested|deep"):
            lang.compile_cut(text)


CLI_USER_ERRORS = [
    ["--limit", "99999999999999999999"],
    ["--limit", "-1"],
    ["--events", "abc"],
    ["--events", "1:x"],
    ["--expr", "noequals"],
    ["--where", " and ".join(["(NMuon > 0)"] * 5_001)],
]


def _cli(ceph_cluster, pool, args):
    base = ["-m", "skyhook_py.cli", "--conf", str(ceph_cluster.conf_path), "--pool", pool,
            "--keyring", str(ceph_cluster.admin_keyring)]
    if isinstance(args[0], bytes):
        return subprocess.run([sys.executable.encode()] + [a.encode() for a in base] + args,
                              capture_output=True, timeout=120)
    return subprocess.run([sys.executable] + base + args, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("extra", CLI_USER_ERRORS, ids=lambda a: " ".join(a)[:40])
def test_cli_user_errors_are_messages(extra, ceph_cluster, pool, slow_dataset):
    r = _cli(ceph_cluster, pool, ["query", slow_dataset, "--columns", "NMuon"] + extra)
    assert r.returncode == 2, (extra[:2], r.returncode, r.stderr[-1500:])
    assert "Traceback" not in r.stderr and "error" in r.stderr


def test_cli_non_utf8_argument_is_a_message(ceph_cluster, pool, slow_dataset):
    r = _cli(ceph_cluster, pool, [b"query", slow_dataset.encode(), b"--where", b"NMuon > \xff"])
    assert r.returncode == 2, (r.returncode, r.stderr[-1500:])
    assert b"Traceback" not in r.stderr and b"UTF-8" in r.stderr


def test_librados_timeout_is_a_cluster_error_not_a_class_error():
    import errno

    from skyhook_py.errors import ClusterError, ObjectClassError, partition_error, status_code_name

    for code in (errno.ETIMEDOUT, errno.ENOTCONN):
        e = partition_error(code, "part.x", "partition 'part.x': timed out")
        assert isinstance(e, ClusterError) and not isinstance(e, ObjectClassError)
        assert e.errno == code and status_code_name(e) == "UNAVAILABLE"
    assert isinstance(partition_error(errno.EBADMSG, "part.x", "bad"), ObjectClassError)


def test_gc_keeps_a_concurrent_writers_partitions(session, store, shared_data, monkeypatch):
    """gc while a reshard is writing (slowed by the fault hook): the writer's partitions,
    not named by any manifest yet, were deleted and the committed version was broken."""
    import threading

    from skyhook_py.transcode import operations

    session.ingest([shared_data / "uproot-Zmumu.root"], "g_grace", tree="events", partition_events=500)
    old = {p.object for p in session.manifest("g_grace").partitions}
    monkeypatch.setenv("SKYHOOK_FAULT", "sleep-per-partition=0.3")
    outcome = []
    t = threading.Thread(target=lambda: outcome.append(session.reshard("g_grace", partition_events=250)))
    t.start()
    deadline = time.monotonic() + 60
    while not set(operations._dataset_partitions(store, "g_grace")) - old:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    removed = operations.gc(store, "g_grace")
    t.join(120)
    monkeypatch.delenv("SKYHOOK_FAULT")
    assert outcome and outcome[0].version == 2
    assert not set(removed) & {p.object for p in outcome[0].partitions}
    _check_zmumu(session, "g_grace", shared_data)
    # the superseded version goes once the grace period is over (here: none)
    assert set(operations.gc(store, "g_grace", grace=0)) == old
