"""Large answers and large datasets on a real cluster (issue 16): the gRPC description is
a bounded summary with partitions by page, ``skyhook query -o`` and the gRPC Query
stream write / send batches as they arrive (memory bounded well below the answer),
and a reader whose version lost pieces to gc replans once on the current version.

Oracles: uproot (and NumPy on uproot's arrays) on the original files.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import tracemalloc
from pathlib import Path

import awkward as ak
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import uproot

from skyhook_py import demo_data
from skyhook_py.errors import ConcurrentUpdateError, SkyhookError, UnknownColumnError
from skyhook_py.query import sinks
from skyhook_py.query.results import ResultBatch, Summary
from skyhook_py.service.client import Client
from skyhook_py.storage import manifest as mf
from skyhook_py.storage import pieces
from skyhook_py.transcode import operations as ops
from conftest import serve_coordinator

pytestmark = pytest.mark.cluster
REPO = str(Path(__file__).resolve().parents[1])
BIG_EVENTS = 40_000
BIG_PARTITION = 250          # 160 partitions
COLUMNS = ["event", "MET_pt", "Muon_pt", "Muon_eta", "Jet_pt", "Jet_eta"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("scale-data")
    return {"big": demo_data.write_nanoaod(str(d / "big.root"), events=BIG_EVENTS, seed=11),
            "a": demo_data.write_nanoaod(str(d / "a.root"), events=500, seed=12),
            "b": demo_data.write_nanoaod(str(d / "b.root"), events=500, seed=13),
            "c": demo_data.write_nanoaod(str(d / "c.root"), events=120, seed=14)}


@pytest.fixture(scope="module")
def big(session, files):
    session.ingest([files["big"]], "big", tree="Events", partition_events=BIG_PARTITION)
    with uproot.open(files["big"]) as f:
        return f["Events"].arrays(COLUMNS)


@pytest.fixture(scope="module")
def server(ceph_cluster, pool, big):
    """A coordinator whose result cache is small (1 MB: answers over 256 kB are not
    recorded) and whose executor keeps at most 2 partitions in flight."""
    yield from serve_coordinator(ceph_cluster, pool, max_in_flight=2, cache_bytes=1 << 20)


@pytest.fixture(scope="module")
def client(server):
    with Client(server.address, timeout=300) as c:
        yield c


def assert_equals_uproot(table: pa.Table, want):
    assert table.num_rows == len(want)
    for c in COLUMNS:
        assert table.column(c).to_pylist() == ak.to_list(want[c]), c


class PeakArrow:
    """The highest Arrow allocation (default pool) seen by a sampling thread."""

    def __init__(self):
        self.base = pa.total_allocated_bytes()
        self.peak = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, pa.total_allocated_bytes() - self.base)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()


# -- describe: a bounded summary, partitions by page ------------------------------------

def test_describe_is_a_summary_with_partitions_by_page(client, session, files, big):
    m = session.manifest("big")
    d = client.describe("big")
    assert d.partitions == [] and d.sources == []      # nothing per partition unless asked
    assert d.num_partitions == m.num_partitions == BIG_EVENTS // BIG_PARTITION
    assert d.num_events == BIG_EVENTS and d.num_sources == 1
    assert d.schema.equals(m.schema) and d.columns == m.column_types()
    assert d.stored_bytes == sum(store_size(session, o) for o in m.partition_table()["object"])
    assert d.manifest["num_partitions"] == d.num_partitions and "partitions" not in d.manifest

    # pages of 7 with MET_pt's statistics: every partition once, in order, and the
    # statistics bound the partition's values as uproot reads them
    got, token, pages = [], "", 0
    while True:
        page = client.describe("big", max_partitions=7, page_token=token, stats_columns=["MET_pt"])
        assert page.first_partition == len(got) and len(page.partitions) <= 7
        got += page.partitions
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert pages == -(-d.num_partitions // 7)
    assert [p["object"] for p in got] == m.partition_table()["object"].tolist()
    met = ak.to_numpy(big["MET_pt"])
    for p in got:
        s = p["stats"]["columns"]
        assert set(s) == {"MET_pt"}
        vals = met[p["event_start"]:p["event_stop"]]
        assert s["MET_pt"]["min"] <= vals.min() and vals.max() <= s["MET_pt"]["max"]
    assert [p["event_start"] for p in client.partitions("big", page_size=50)] == \
        m.partition_table()["event_start"].tolist()
    assert [s["name"] for s in client.sources("big", page_size=1)] == ["big.root"]
    with pytest.raises(UnknownColumnError, match="MET_ptt"):
        client.describe("big", max_partitions=1, stats_columns=["MET_ptt"])


def store_size(session, obj):
    return session.store.size(obj)


def test_a_page_token_of_an_older_version_is_refused(client, session, files):
    session.ingest([files["a"]], "paged", tree="Events", partition_events=100)
    first = client.describe("paged", max_partitions=2)
    assert first.next_page_token
    session.append([files["c"]], "paged", tree="Events", partition_events=100)
    with pytest.raises(ConcurrentUpdateError, match="version 1"):
        client.describe("paged", max_partitions=2, page_token=first.next_page_token)
    with pytest.raises(SkyhookError, match="invalid page_token"):
        client.describe("paged", max_partitions=2, page_token="nonsense")


def test_cli_describe_prints_a_bounded_summary(ceph_cluster, pool, big):
    cmd = [sys.executable, "-m", "skyhook_py.transcode", "--conf", str(ceph_cluster.conf_path),
           "--keyring", str(ceph_cluster.admin_keyring), "--pool", pool, "describe", "big"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=180, cwd=REPO)
    assert p.returncode == 0, p.stderr
    assert f"{BIG_EVENTS:,} events in {BIG_EVENTS // BIG_PARTITION} partitions" in p.stdout
    assert len(p.stdout.splitlines()) <= 15      # no line per partition or column
    p = subprocess.run(cmd + ["--json"], capture_output=True, text=True, timeout=180, cwd=REPO)
    d = json.loads(p.stdout)
    assert d["num_partitions"] == BIG_EVENTS // BIG_PARTITION and "partitions" not in d


# -- answers written and sent as they arrive ---------------------------------------------

def test_query_output_streams_batches_to_the_file(session, big, tmp_path):
    """sinks.write_events holds one batch at a time: the peak Arrow allocation while the
    whole answer is written stays far below the answer's size."""
    session.executor.max_in_flight = 2
    m, q = session.build_query("big", columns=COLUMNS)
    answer = 0

    def counted(events):
        nonlocal answer
        for ev in events:
            if isinstance(ev, ResultBatch):
                answer += ev.table.nbytes
            yield ev

    for name in ("rows.parquet", "rows.arrow", "rows.jsonl"):
        out = tmp_path / name
        answer = 0
        with PeakArrow() as peak:
            summary, failures, rows, _ = sinks.write_events(counted(session.stream_query(m, q)), out)
        assert isinstance(summary, Summary) and not failures and rows == BIG_EVENTS
        assert answer > 2 << 20
        assert peak.peak < answer / 4, (name, peak.peak, answer)
        if name.endswith(".parquet"):
            t = pq.read_table(out)
        elif name.endswith(".arrow"):
            t = pa.ipc.open_file(pa.memory_map(str(out))).read_all()
        else:
            t = pa.Table.from_pylist([json.loads(line) for line in out.read_text().splitlines()])
        assert_equals_uproot(t, big)
        assert not (tmp_path / f"{name}.part").exists()


def test_cli_query_output_equals_uproot(ceph_cluster, pool, big, files, tmp_path):
    for name in ("out.parquet", "out.jsonl"):
        out = tmp_path / name
        cmd = [sys.executable, "-c", "import sys; from skyhook_py.cli import main; sys.exit(main())",
               "--conf", str(ceph_cluster.conf_path), "--keyring", str(ceph_cluster.admin_keyring),
               "--pool", pool, "query", "big", "--columns", ",".join(COLUMNS), "--where", "nMuon >= 1",
               "-o", str(out)]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO)
        assert p.returncode == 0, p.stderr
        with uproot.open(files["big"]) as f:
            want = f["Events"].arrays(COLUMNS, cut="nMuon >= 1")
        t = pq.read_table(out) if name.endswith(".parquet") else \
            pa.Table.from_pylist([json.loads(line) for line in out.read_text().splitlines()])
        assert_equals_uproot(t, want)
        assert f"wrote {len(want):,} rows" in p.stdout
    # CSV cannot hold the collections: a clear error and no file
    out = tmp_path / "out.csv"
    cmd[-1] = str(out)
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert p.returncode != 0 and "CSV cannot hold collection columns" in p.stderr
    assert not out.exists() and not (tmp_path / "out.csv.part").exists()


def _streamed_peaks(client, columns):
    """(Python heap peak, Arrow pool peak, answer bytes, rows) while streaming a query."""
    answer, rows = 0, 0
    tracemalloc.start()
    try:
        with PeakArrow() as peak:
            for ev in client.stream("big", columns=columns):
                if isinstance(ev, ResultBatch):
                    answer += ev.table.nbytes
                    rows += ev.table.num_rows
        _, heap_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return heap_peak, peak.peak, answer, rows


def test_grpc_stream_never_holds_the_whole_answer(client, server, big):
    """The server (same process) pulls batches as the client reads them; with a result
    cache too small for this answer, the memory a large answer needs on top of a small
    one over the same partitions (one column: the same calls, the same fixed per-call
    reply buffers of the executor) is a fraction of the difference, in the Python heap
    and in Arrow's pool, and the large answer is not recorded in the cache.  Batches are
    sent one message per partition here: merging close batches into one message holds
    up to wire.CHUNK_BYTES (1 MB, test_fastpath's test_coalesced_never_holds_more_than_a_chunk),
    which this 2 MB answer cannot tell from holding all of it."""
    window = server.coordinator.coalesce_seconds
    server.coordinator.coalesce_seconds = 0.0
    try:
        heap0, arrow0, answer0, rows0 = _streamed_peaks(client, ["event"])
        heap, arrow, answer, rows = _streamed_peaks(client, COLUMNS)
    finally:
        server.coordinator.coalesce_seconds = window
    assert rows == rows0 == BIG_EVENTS and answer - answer0 > 1 << 20
    assert heap - heap0 < (answer - answer0) / 3, (heap, heap0, answer, answer0)
    assert arrow - arrow0 < (answer - answer0) / 3, (arrow, arrow0, answer, answer0)
    assert len(server.coordinator.cache) <= 1      # the small answer (320 kB) at most
    # and what arrives is uproot's answer (collected separately)
    assert_equals_uproot(client.query("big", columns=COLUMNS, use_cache=False), big)


# -- gc during a read --------------------------------------------------------------------

def test_a_reader_whose_pieces_gc_collected_replans_on_the_current_version(session, store, files):
    session.ingest([files["a"]], "gcread", tree="Events", partition_events=50)      # 10 partitions
    old = mf.load_manifest(store, "gcread")     # the header only: no piece read yet
    old_pieces = old.pieces.objects()
    # 10 more partitions: the 10-partition tail segment is merged with them and superseded
    session.append([files["b"]], "gcread", tree="Events", partition_events=50)
    ops.gc(store, "gcread", grace=0)
    gone = [o for o in old_pieces if not _exists(store, o)]
    assert gone, "the append should have superseded the old segment"
    with pytest.raises(pieces.PieceMissingError):
        old.partition_table()          # the old header alone cannot be read any more
    old = _fresh_old_header(store, "gcread", old)
    _, q = session.build_query(old, columns=["event", "MET_pt"], where="MET_pt > 20")
    events = list(session.stream_query(old, q))
    summary = events[-1]
    assert isinstance(summary, Summary) and summary.manifest_version == 2
    got = pa.concat_tables([e.table for e in events if isinstance(e, ResultBatch)])
    want = [uproot.open(files[k])["Events"].arrays(["event", "MET_pt"], cut="MET_pt > 20")
            for k in ("a", "b")]
    assert got.column("event").to_pylist() == ak.to_list(want[0].event) + ak.to_list(want[1].event)
    assert got.column("MET_pt").to_pylist() == ak.to_list(want[0].MET_pt) + ak.to_list(want[1].MET_pt)


def test_a_missing_piece_of_the_current_version_is_a_clear_error(session, store, files):
    session.ingest([files["c"]], "gcbroken", tree="Events", partition_events=40)
    m = mf.load_manifest(store, "gcbroken")
    store.remove(m.pieces.segments[0]["table"])
    m = mf.load_manifest(store, "gcbroken")
    _, q = session.build_query(m, columns=["event"])
    with pytest.raises(SkyhookError, match="still the current one: the dataset's metadata is damaged"):
        list(session.stream_query(m, q))


def _exists(store, obj):
    try:
        store.size(obj)
        return True
    except FileNotFoundError:
        return False


def _fresh_old_header(store, dataset, old):
    """Another copy of the old (version 1) header, with no piece read yet."""
    return pieces.from_header(store, json.loads(json.dumps(old.pieces.header)), old.pieces.where)


def test_cli_query_output_through_the_coordinator_equals_uproot(ceph_cluster, pool, server, files, tmp_path):
    out = tmp_path / "remote.parquet"
    cmd = [sys.executable, "-c", "import sys; from skyhook_py.cli import main; sys.exit(main())",
           "--conf", str(ceph_cluster.conf_path), "--keyring", str(ceph_cluster.admin_keyring),
           "--pool", pool, "query", "big", "--columns", ",".join(COLUMNS), "--where", "MET_pt > 30",
           "--server", server.address, "-o", str(out), "--show", "3"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert p.returncode == 0, p.stderr
    with uproot.open(files["big"]) as f:
        want = f["Events"].arrays(COLUMNS, cut="MET_pt > 30")
    assert_equals_uproot(pq.read_table(out), want)
    assert f"wrote {len(want):,} rows" in p.stdout
    assert f"(3 of {len(want):,} rows)" in p.stdout       # --show: the first rows, out of all written
