"""The manifest in pieces (storage/pieces.py) on a real cluster: round trips, appends
that share segments, merges, gc, the version-keyed cache, the query key's reads.

Partitions here are manifest entries only (no partition objects): what is checked is
the metadata, against the in-memory manifest that was committed.
"""

from __future__ import annotations

import time
import uuid

import numpy as np
import pyarrow as pa
import pytest

from skyhook_py.defaults import NAMESPACE, POOL, QUERY_USER
from skyhook_py import defaults
from skyhook_py.errors import SkyhookError, UnknownDatasetError
from skyhook_py.query import ir, planner
from skyhook_py.query.ir import col
from skyhook_py.storage import manifest as mf
from skyhook_py.storage import pieces
from skyhook_py.storage.manifest import Manifest, Partition, Source
from skyhook_py.transcode import operations

pytestmark = pytest.mark.cluster

SCHEMA = pa.schema([("MET_pt", pa.float32()), ("nMuon", pa.uint32()),
                    ("Muon_pt", pa.list_(pa.float32())), ("event", pa.int64())])


def part(ds, i, rng):
    lo = float(rng.uniform(0, 100))
    nan = int(rng.integers(0, 2))
    cols = {"MET_pt": {"min": lo, "max": lo + float(rng.uniform(0, 50)), "null_count": 0,
                       "nan_count": nan, "bytes": 400},
            "nMuon": {"min": 0, "max": int(rng.integers(0, 5)), "null_count": 0, "nan_count": 0, "bytes": 400},
            "Muon_pt": {"min": 3.0, "max": lo, "null_count": 0, "nan_count": 0, "bytes": 1200,
                        "min_length": 0, "max_length": int(rng.integers(0, 5))},
            # past 2^53: stored rounded outwards (a min never above the true min)
            "event": {"min": 2 ** 60 + 1 + i, "max": 2 ** 60 + 101 + i, "null_count": 0,
                      "nan_count": 0, "bytes": 800}}
    if i % 7 == 3:   # a partition of NaN only: no min/max
        cols["MET_pt"] = {"null_count": 0, "nan_count": 100, "bytes": 400}
    return Partition(object=f"part.{ds}.{i:012x}.000000", event_start=100 * i, event_stop=100 * (i + 1),
                     bytes=2800, source=i, entry_start=0, entry_stop=100,
                     stats={"version": 1, "rows": 100, "columns": cols})


def source(i):
    return Source(path=f"/d/f{i}.root", name=f"f{i}.root", size=1, sha256=f"{i:064x}", tree="Events",
                  entries=100, event_start=100 * i)


def same_stats(a: dict, b: dict):
    """Loaded statistics equal the committed ones (int64 past 2^53 rounded outwards)."""
    assert a.keys() == b.keys()
    for name, s in a["columns"].items():
        t = b["columns"][name]
        assert s.keys() == t.keys(), name
        for k, v in s.items():
            if k == "min":
                assert t[k] <= v and t[k] == pytest.approx(v), (name, k)
            elif k == "max":
                assert t[k] >= v and t[k] == pytest.approx(v), (name, k)
            else:
                assert t[k] == v, (name, k)


def check_loaded(store, ds, expected: list[Partition]):
    got = mf.load_manifest(store, ds)
    assert got.num_partitions == len(expected)
    t = got.partition_table()
    assert t["object"].tolist() == [p.object for p in expected]
    assert t["event_start"].tolist() == [p.event_start for p in expected]
    for p, q in zip(expected, got.partitions):
        assert (p.object, p.event_start, p.event_stop, p.bytes, p.source) == \
            (q.object, q.event_start, q.event_stop, q.bytes, q.source)
        same_stats(p.stats, q.stats)
    # the same plan from the pieces as from the in-memory manifest
    mem = Manifest(ds, got.version, SCHEMA, expected, got.sources, got.encoding)
    for where in [col("MET_pt") > 60, (col("MET_pt") < 20) | ~(col("nMuon") >= 1),
                  ir.call(ir.Op.Gt, ir.call(ir.Op.Count, col("Muon_pt")), ir.Literal(2)),
                  ir.call(ir.Op.Any, col("Muon_pt") > 90), col("event") < 2 ** 60 + 50]:
        q = ir.Query(where=where)
        a, b = planner.plan(got, q, "on"), planner.plan(mem, q, "on")
        assert [x.object for x in a.tasks] == [x.object for x in b.tasks], where
        assert a.pruned == b.pruned and a.events_total == b.events_total
    assert planner.needed_fraction(got, ir.Query(where=col("MET_pt") > 1)) == \
        pytest.approx(planner.needed_fraction(mem, ir.Query(where=col("MET_pt") > 1)))
    return got


def test_pieces_round_trip_append_share_merge_gc(store, monkeypatch):
    monkeypatch.setattr(pieces, "SEGMENT_ROWS", 8)
    rng = np.random.default_rng(1)
    ds = "pieces"
    parts = [part(ds, i, rng) for i in range(19)]
    m = Manifest(ds, 1, SCHEMA, parts, [source(i) for i in range(19)],
                 {"format": "arrow", "compression": None})
    mf.commit(store, m, None)
    got = check_loaded(store, ds, parts)
    assert [s["rows"] for s in got.pieces.segments] == [8, 8, 3]
    history = [got.pieces.objects()]
    # appends of 1, 1, 2, 5, 9 partitions: each shares the full segments of the version before
    for k, n in enumerate([1, 1, 2, 5, 9]):
        old = mf.load_manifest(store, ds)
        new = [part(ds, len(parts) + j, rng) for j in range(n)]
        m = mf.appended(old, new, [source(len(parts) + j) for j in range(n)], old.encoding)
        mf.commit(store, m, old.version)
        parts += new
        got = check_loaded(store, ds, parts)
        assert got.version == k + 2
        full_before = {s["table"] for s in old.pieces.segments if s["rows"] == pieces.SEGMENT_ROWS}
        assert full_before <= {s["table"] for s in got.pieces.segments}
        assert all(s["rows"] <= pieces.SEGMENT_ROWS for s in got.pieces.segments)
        history.append(got.pieces.objects())
    # 37 partitions: [8,8,3] +1 [8,8,3,1] +1 [8,8,3,2] +2 [8,8,7] +5 [8,8,7,5] +9 -> 4 full and 5
    assert [s["rows"] for s in got.pieces.segments] == [8, 8, 8, 8, 5]
    # pieces of old versions are intact until gc: every version's objects still exist
    listed = set(operations._dataset_pieces(store, ds))
    assert set().union(*history) <= listed
    operations.gc(store, ds)
    assert set(operations._dataset_pieces(store, ds)) == got.pieces.objects()
    check_loaded(store, ds, parts)
    # every object under the 16 MB bound, and the header small
    assert store.size(mf.manifest_object(ds)) < 64 << 10
    operations.delete(store, ds)
    assert operations._dataset_pieces(store, ds) == []


def test_stats_objects_respect_the_size_bound(store, monkeypatch):
    monkeypatch.setattr(pieces, "MAX_PIECE_BYTES", 4096)   # 9 columns of 8 rows = 4032 + head
    ds = "bound"
    cols = [f"c{j}" for j in range(30)]
    schema = pa.schema([(c, pa.float64()) for c in cols])
    ps = [Partition(f"part.{ds}.{i:012x}.000000", i, i + 1, 10, 0, i, i + 1,
                    {"version": 1, "rows": 1, "columns": {c: {"min": float(i + j), "max": float(i + j),
                                                               "null_count": 0, "nan_count": 0,
                                                               "bytes": 1} for j, c in enumerate(cols)}})
          for i in range(8)]
    mf.commit(store, Manifest(ds, 1, schema, ps, [Source("/x", "x", 1, "0" * 64, "t", 8, 0)],
                              {"format": "arrow", "compression": None}), None)
    got = mf.load_manifest(store, ds)
    groups = got.pieces.segments[0]["stats"]
    assert len(groups) == 4 and max(store.size(g[0]) for g in groups) <= 4096
    for j in (0, 9, 17, 29):
        assert got.column_stats(f"c{j}")[0].tolist() == [float(i + j) for i in range(8)]
    # a column's statistics are read alone: one range of its object
    before = got.pieces.bytes_read
    got.column_stats("c20")
    assert got.pieces.bytes_read - before == pieces.NF * 8 * 8
    # a damaged piece is an error naming it, never a different plan
    store.truncate(groups[1][0], 100)
    again = mf.load_manifest(store, ds)
    with pytest.raises(SkyhookError, match="corrupt manifest of dataset 'bound'.*@"):
        again.column_stats("c10")


def test_cache_serves_one_version_and_never_a_stale_one(store):
    ds = "cached"
    rng = np.random.default_rng(2)
    mf.commit(store, Manifest(ds, 1, SCHEMA, [part(ds, 0, rng)], [source(0)],
                              {"format": "arrow", "compression": None}), None)
    cache = mf.ManifestCache()
    a = cache.get(store, ds)
    a.column_stats("MET_pt")
    assert cache.get(store, ds) is a          # same version: the same loaded object
    old = mf.load_manifest(store, ds)
    mf.commit(store, mf.appended(old, [part(ds, 1, rng)], [source(1)], old.encoding), 1)
    b = cache.get(store, ds)
    assert b is not a and b.version == 2 and b.num_partitions == 2
    assert cache.get(store, ds) is b


def test_a_checked_version_is_trusted_for_a_window_that_every_change_waits_out(store, monkeypatch):
    """A ManifestCache serves a version it checked without another read for
    defaults.MANIFEST_TRUST seconds; commit, gc and delete wait that long before they
    return, so a lookup made after any of them has returned sees it."""
    trust = 1.5   # long enough that no pause of a busy machine runs a window out by itself
    monkeypatch.setattr(defaults, "MANIFEST_TRUST", trust)
    ds = "trusted"
    rng = np.random.default_rng(5)

    def append(expected):
        old = mf.load_manifest(store, ds)
        mf.commit(store, mf.appended(old, [part(ds, expected, rng)], [source(expected)], old.encoding),
                  expected)

    mf.commit(store, Manifest(ds, 1, SCHEMA, [part(ds, 0, rng)], [source(0)],
                              {"format": "arrow", "compression": None}), None)
    cache = mf.ManifestCache()
    a = cache.get(store, ds)
    assert cache.get(store, ds) is a and cache.checks == 1      # trusted: no second read

    # a writer that does not wait is not seen within the window: the wait is what keeps
    # readers right, so a reader checks again after each of the changes below
    waits = mf.wait_out_trust
    monkeypatch.setattr(mf, "wait_out_trust", lambda: None)
    append(1)
    assert cache.get(store, ds) is a and cache.checks == 1
    time.sleep(trust)
    assert cache.get(store, ds).version == 2 and cache.checks == 2
    monkeypatch.setattr(mf, "wait_out_trust", waits)

    append(2)                                   # commit: waits, then returns
    assert cache.get(store, ds).version == 3 and cache.checks == 3

    monkeypatch.setattr(mf, "wait_out_trust", lambda: None)
    append(3)                                   # by a writer that does not wait ...
    monkeypatch.setattr(mf, "wait_out_trust", waits)
    operations.gc(store, ds, grace=0)           # ... then gc, which removes what v3 named
    assert cache.get(store, ds).version == 4 and cache.checks == 4

    operations.delete(store, ds)
    with pytest.raises(UnknownDatasetError):
        cache.get(store, ds)


def test_lookups_that_arrive_together_share_one_version_check(store, monkeypatch):
    """Under load a window's end must not send every waiting query to the OSD: the
    lookups queued behind a check are served by it (it was sent after they arrived)."""
    import threading

    ds = "herd"
    mf.commit(store, Manifest(ds, 1, SCHEMA, [part(ds, 0, np.random.default_rng(6))], [source(0)],
                              {"format": "arrow", "compression": None}), None)
    monkeypatch.setattr(defaults, "MANIFEST_TRUST", 1.0)   # no window ends within the test by itself
    cache = mf.ManifestCache()
    first = cache.get(store, ds)
    time.sleep(1.0)                                         # this one has ended
    start, got = threading.Barrier(16), []

    def lookup():
        start.wait()
        got.append(cache.get(store, ds))

    threads = [threading.Thread(target=lookup) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 16 and all(m is first for m in got)
    assert cache.checks == 2
    operations.delete(store, ds)


def test_query_key_reads_the_pieces(ceph_cluster):
    from skyhook_py.storage.rados_io import Store

    ds = f"qk-{uuid.uuid4().hex[:8]}"
    rng = np.random.default_rng(3)
    with Store(str(ceph_cluster.conf_path), POOL, NAMESPACE,
               keyring=str(ceph_cluster.admin_keyring)) as admin:
        parts = [part(ds, i, rng) for i in range(3)]
        mf.commit(admin, Manifest(ds, 1, SCHEMA, parts, [source(i) for i in range(3)],
                                  {"format": "arrow", "compression": None}), None)
        try:
            with Store(str(ceph_cluster.conf_path), POOL, NAMESPACE, name=QUERY_USER,
                       keyring=str(ceph_cluster.keyring(QUERY_USER))) as query:
                got = mf.load_manifest(query, ds)
                assert got.partition_table()["object"].tolist() == [p.object for p in parts]
                assert len(planner.plan(got, ir.Query(where=col("MET_pt") > -1), "on").tasks) >= 2
        finally:
            operations.delete(admin, ds)


def test_format_1_is_read_and_migrated_by_the_next_commit(store):
    ds = "old-format"
    rng = np.random.default_rng(4)
    parts = [part(ds, i, rng) for i in range(3)]
    old = Manifest(ds, 1, SCHEMA, parts, [source(i) for i in range(3)],
                   {"format": "arrow", "compression": None}, created="2026-11-22T10:00:00Z")
    store.replace_guarded(mf.manifest_object(ds), old.to_json(), mf.VERSION_KEY, None, "1")
    v1 = mf.load_manifest(store, ds)
    assert v1.pieces is None and v1.partitions == parts
    new = [part(ds, 3, rng)]
    mf.commit(store, mf.appended(v1, new, [source(3)], v1.encoding), 1)
    v2 = check_loaded(store, ds, parts + new)
    assert v2.version == 2 and v2.pieces is not None
    assert [s.name for s in v2.sources] == ["f0.root", "f1.root", "f2.root", "f3.root"]
