"""The executor's error policy on a real cluster: a class error is reported with its
cause and never resent (FACTS.md: a resent crashing request takes down the next
replica too), and a query on a healthy dataset is unaffected by a corrupt one.
"""

import glob

import pytest

from skyhook_py.errors import CorruptObjectError

pytestmark = pytest.mark.cluster


def _scan_error_lines(cluster, errno_):
    """OSD log lines of failed scans with that errno (the class cannot know the object's
    name, so it logs the object's size and mtime instead)."""
    n = 0
    for log in glob.glob(str(cluster.dir / "log" / "osd.*.log")):
        with open(log, errors="replace") as f:
            n += sum(1 for line in f if "skyhook scan" in line and f"(-{errno_})" in line)
    return n


@pytest.fixture(scope="module")
def victim(session, store, shared_data):
    """Datasets zmumu_bad (partition 2 corrupt) and zmumu_ok, made once for the module so
    that each test also runs alone (they were made by the first test)."""
    session.ingest([shared_data / "uproot-Zmumu.root"], "zmumu_bad", tree="events", partition_events=500)
    session.ingest([shared_data / "uproot-Zmumu.root"], "zmumu_ok", tree="events", partition_events=500)
    m = session.manifest("zmumu_bad")
    victim = m.partitions[2].object
    store.write_full(victim, b"ARROW1\x00\x00" + b"\xde\xad\xbe\xef" * 1000)
    return victim


def test_corrupt_partition_is_reported_once_and_not_resent(session, victim, ceph_cluster):
    before = _scan_error_lines(ceph_cluster, 74)

    with pytest.raises(CorruptObjectError) as e:
        session.run("zmumu_bad", columns=["M"], where="M > 80", pushdown="on")
    assert victim in str(e.value) and "corrupt" in str(e.value)
    assert e.value.errno == 74  # EBADMSG, formats/README.md

    # exactly one call reached an OSD for that object: the error was not resent
    assert _scan_error_lines(ceph_cluster, 74) - before == 1

    # the OSD that answered is still serving, and other datasets are unaffected
    r = session.run("zmumu_ok", columns=["M"], where="M > 80", pushdown="on")
    assert r.summary.partitions_failed == 0 and r.summary.events_matched > 0


def test_allow_partial_reports_failed_partition(session, victim):
    r = session.run("zmumu_bad", columns=["M"], where="M > 80", pushdown="on", fail_fast=False)
    assert r.summary.partitions_failed == 1
    assert len(r.failures) == 1 and r.failures[0].errno == 74
    # every other partition answered
    ok = session.run("zmumu_ok", columns=["M"], where="M > 80", pushdown="on")
    assert r.table.num_rows < ok.table.num_rows


def test_reply_caps_follow_the_columns_and_an_overflow_is_sent_again(session, victim, ceph_cluster, monkeypatch):
    """Each call's reply buffer is sized from the dataset's bytes per event of the output
    columns (executor._reply_cap_estimator); a call whose answer overflows its cap
    (EMSGSIZE) is sent once more with the full cap, not reported and not counted as a
    retry: the answer is the one a full cap gives."""
    from skyhook_py.query import executor, planner

    m = session.manifest("zmumu_ok")
    _, q = session.build_query(m, columns=["M", "E1", "px1"], where="M > 80")
    p = planner.plan(m, q, "on")
    cap = executor._reply_cap_estimator(m, q, session.executor.max_reply)
    sizes = m.column_bytes()
    for t in p.tasks:
        c = cap(t)
        want = 2 * sum(sizes[k] for k in ("M", "E1", "px1")) / m.num_events * (t.row_stop - t.row_start)
        assert c >= want and c & (c - 1) == 0 and executor.MIN_REPLY_CAP <= c <= session.executor.max_reply

    full = session.run("zmumu_ok", columns=["M", "E1", "px1"], where="M > 80", pushdown="on")
    overflows = _scan_error_lines(ceph_cluster, 90)   # EMSGSIZE
    monkeypatch.setattr(executor, "_reply_cap_estimator", lambda m, q, full_cap: lambda task: 512)
    small = session.run("zmumu_ok", columns=["M", "E1", "px1"], where="M > 80", pushdown="on")
    assert small.table.equals(full.table)
    assert small.summary.retries == 0 and small.summary.partitions_failed == 0
    assert _scan_error_lines(ceph_cluster, 90) - overflows == small.summary.partitions_pushed_down



@pytest.fixture(scope="module")
def wide(session, tmp_path_factory):
    """60,000 NanoAOD-like events in 3 partitions: replies of several hundred kB."""
    from skyhook_py import demo_data

    path = demo_data.write_nanoaod(str(tmp_path_factory.mktemp("wide") / "wide.root"), events=60_000, seed=11)
    session.ingest([path], "wide", tree="Events", partition_events=20_000)
    return "wide"


@pytest.mark.parametrize("compression", ["lz4", "zstd"])
def test_compressed_replies_give_the_same_answer_in_fewer_bytes_and_are_not_passed_on(
        session, store, wide, compression):
    """A Session asking the class for LZ4/ZSTD replies gets the uncompressed answer, bit
    for bit, from fewer reply bytes; its result batches carry no IPC stream, so the
    coordinator encodes plain Arrow IPC for its clients (it forwards a batch's stream as
    it came) instead of passing a compressed one on."""
    from skyhook_py.query.results import ResultBatch
    from skyhook_py.session import Session

    def batches_and_summary(s):
        m = s.manifest(wide)
        _, q = s.build_query(m, columns=["event", "MET_pt", "Muon_pt", "Muon_eta", "Jet_pt", "Jet_eta"])
        events = list(s.stream_query(m, q, pushdown="on"))
        return [ev for ev in events if isinstance(ev, ResultBatch)], events[-1]

    plain, plain_summary = batches_and_summary(Session(store, store.conf, "none"))
    packed_session = Session(store, store.conf, compression)   # (shares the module's store: not closed)
    packed, packed_summary = batches_and_summary(packed_session)
    assert [b.partition for b in packed] == [b.partition for b in plain] == [0, 1, 2]
    for a, b in zip(plain, packed):
        assert b.table.equals(a.table)
    assert all(b.ipc is not None for b in plain) and all(b.ipc is None for b in packed)
    assert packed_summary.bytes_returned < 0.95 * plain_summary.bytes_returned
    packed_session.executor.close()


def test_completion_callbacks_of_a_librados_thread_share_one_python_thread_state(store):
    """rados_io keeps the thread state python-rados makes for a librados thread's first
    callback (_keep_thread_state): without it each callback gets a fresh one, and a
    ``threading.local`` (which lives in the thread state) starts empty every time."""
    import threading
    import time

    probe = threading.local()
    seen = []

    def on_done(err, reply):
        probe.count = getattr(probe, "count", 0) + 1
        seen.append((threading.get_ident(), probe.count, err))

    for i in range(40):   # one after another: the callbacks cannot overlap
        store.aio_execute(f"no-such-object-{i}", "skyhook", "stats", b"", 4096, on_done)
        deadline = time.monotonic() + 30
        while len(seen) == i and time.monotonic() < deadline:
            time.sleep(0.001)
    assert len(seen) == 40
    assert all(err == 2 for _, _, err in seen)   # ENOENT, each reported to its callback
    by_thread = {}
    for ident, count, _ in seen:
        by_thread.setdefault(ident, []).append(count)
    assert all(counts == list(range(1, len(counts) + 1)) for counts in by_thread.values()), by_thread
    assert max(len(c) for c in by_thread.values()) > 1
