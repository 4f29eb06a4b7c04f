"""Ingest against a real Ceph cluster: every shared file round-trips through the pool,
append/reshard/gc/delete, bad input leaves nothing visible, a losing committer gets
ConcurrentUpdateError, and an ingest SIGKILLed at many moments leaves the previous
version intact and a re-run completes with identical content.

Oracles: uproot and h5py on the source files; the pool is read with store.read and
pyarrow's own IPC/Parquet readers, never through our decoder.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
import warnings

import awkward as ak
import h5py
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import uproot

from skyhook_py import demo_data
from skyhook_py.storage import manifest as mf
from skyhook_py import transcode as T
from skyhook_py.errors import (
    ClusterError, ConcurrentUpdateError, DatasetExistsError, InputFileError, UnknownDatasetError,
)
from skyhook_py.transcode import operations

from test_transcode import assert_column_equals

pytestmark = pytest.mark.cluster
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def _quiet_ingest_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", operations.readers.IngestWarning)
        yield


def read_dataset(store, dataset) -> tuple[mf.Manifest, pa.Table]:
    """Everything the current manifest names, read straight from the pool."""
    m = mf.load_manifest(store, dataset)
    tables = []
    for p in m.partitions:
        data = store.read(p.object)
        assert len(data) == p.bytes
        if m.encoding["format"] == "parquet":
            t = pq.read_table(pa.BufferReader(data))
        else:
            t = pa.ipc.open_file(pa.py_buffer(data)).read_all()
        assert t.num_rows == p.event_stop - p.event_start
        assert json.loads(store.get_xattr(p.object, "skyhook.stats")) == p.stats
        tables.append(t)
    table = pa.concat_tables(tables) if tables else m.schema.empty_table()
    assert table.schema == m.schema
    return m, table


def check_partition_ranges(m: mf.Manifest):
    pos = 0
    for p in m.partitions:
        src = m.sources[p.source]
        assert p.event_start == pos and p.event_stop > p.event_start
        assert p.event_start - src.event_start == p.entry_start
        assert p.entry_stop <= src.entries
        pos = p.event_stop
    assert pos == m.num_events == sum(s.entries for s in m.sources)


def objects_of(store, dataset):
    return operations._dataset_partitions(store, dataset)


def pieces_of(store, dataset):
    return operations._dataset_pieces(store, dataset)


def compare_with_root(table: pa.Table, path, tree_name, rows=slice(None)):
    tree = uproot.open(path)[tree_name]
    arrays = tree.arrays(table.column_names, library="ak")
    for c in table.column_names:
        assert_column_equals(table.column(c), arrays[c][rows], c)


ROOT_FILES = {
    "nanoAOD_2015_CMS_Open_Data_ttbar.root": "Events", "nano_dy.root": "Events",
    "uproot-HZZ.root": "events", "uproot-Zmumu.root": "events",
    "uproot-small-dy-withoffsets.root": "tree", "uproot-small-flat-tree.root": "tree",
    "uproot-empty.root": "tree",
}


@pytest.mark.parametrize("name", sorted(ROOT_FILES))
def test_every_root_file_round_trips(store, shared_data, name):
    path = shared_data / name
    ds = "rt-" + name.replace(".root", "").replace("_", "-")[:40]
    m = T.ingest(store, [path], ds, partition_events=97)   # several partitions per file
    check_partition_ranges(m)
    src = m.sources[0]
    assert src.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert (src.name, src.size, src.tree) == (name, path.stat().st_size, ROOT_FILES[name])
    tree = uproot.open(path)[ROOT_FILES[name]]
    assert src.entries == tree.num_entries
    m2, table = read_dataset(store, ds)
    assert table.num_rows == tree.num_entries
    if name == "uproot-empty.root":
        assert m2.partitions == [] and m2.schema.names == ["x", "y"]
    else:
        assert set(tree.keys()) - set(table.column_names) <= {"Str", "Type"}
        compare_with_root(table, path, ROOT_FILES[name])
    assert ds in T.list_datasets(store)


def test_lheh5_round_trips(store, shared_data):
    path = shared_data / "pylhe-testfile-hpcgen.hdf5"
    m = T.ingest(store, [path], "lhe", partition_events=30, compression="zstd")
    assert len(m.partitions) == 4 and m.sources[0].tree == "/"
    _, table = read_dataset(store, "lhe")
    with h5py.File(path) as f:
        ev, parts = f["events"][:], f["particles"][:]
        eprops = [str(p) for p in f["events"].attrs["properties"]]
        pprops = [str(p) for p in f["particles"].attrs["properties"]]
    start, n = ev[:, eprops.index("start")].astype(int), ev[:, eprops.index("nparticles")].astype(int)
    for i, p in enumerate(eprops):
        np.testing.assert_array_equal(table.column(p).to_numpy(), ev[:, i])
    for j, p in enumerate(pprops):
        assert_column_equals(table.column(f"particles_{p}"),
                             ak.Array([parts[s: s + k, j] for s, k in zip(start, n)]), p)


@pytest.mark.parametrize("fmt,comp", [("arrow", "lz4"), ("parquet", "zstd")])
def test_encodings(store, shared_data, fmt, comp):
    path = shared_data / "uproot-HZZ.root"
    ds = f"hzz-{fmt}-{comp}"
    m = T.ingest(store, [path], ds, partition_bytes=100_000, format=fmt, compression=comp)
    assert len(m.partitions) > 3 and m.encoding == {"format": fmt, "compression": comp}
    head = store.read(m.partitions[0].object, 4)
    assert head == (b"PAR1" if fmt == "parquet" else b"ARRO")
    _, table = read_dataset(store, ds)
    compare_with_root(table, path, "events")


def test_bad_input_leaves_nothing(store, shared_data, tmp_path):
    good = shared_data / "uproot-HZZ.root"
    data = bytearray(good.read_bytes())
    data[len(data) // 2: len(data) // 2 + 4000] = bytes(4000)
    corrupt = tmp_path / "corrupt.root"
    corrupt.write_bytes(bytes(data))
    before = store.list_objects()
    with pytest.raises(InputFileError, match="corrupt.root"):
        T.ingest(store, [good, corrupt], "bad", partition_events=100, workers=2)
    with pytest.raises(InputFileError, match=r"no tree 'Event'.*did you mean 'Events'"):
        T.ingest(store, [shared_data / "nano_dy.root"], "bad", tree="Event")
    with pytest.raises(InputFileError, match="does not have the columns"):
        T.ingest(store, [good, shared_data / "uproot-Zmumu.root"], "bad")
    with pytest.raises(UnknownDatasetError):
        mf.load_manifest(store, "bad")
    assert "bad" not in T.list_datasets(store)
    assert store.list_objects() == before   # not one object left behind
    T.ingest(store, [good], "exists")
    with pytest.raises(DatasetExistsError, match="use append"):
        T.ingest(store, [good], "exists")
    with pytest.raises(UnknownDatasetError, match="did you mean 'exists'"):
        T.describe(store, "exist")


def test_missing_pool(ceph_cluster):
    from skyhook_py.storage.rados_io import Store

    with pytest.raises(ClusterError, match="pool 'no-such-pool' does not exist"):
        Store(str(ceph_cluster.conf_path), "no-such-pool", keyring=str(ceph_cluster.admin_keyring))


def test_append_reshard_gc_delete(store, shared_data, tmp_path):
    a = demo_data.write_nanoaod(str(tmp_path / "a.root"), events=1500, seed=1)
    b = demo_data.write_nanoaod(str(tmp_path / "b.root"), events=1200, seed=2)
    m1 = T.ingest(store, [a], "ops", partition_events=400)
    m2 = T.append(store, [b, a], "ops")           # a is a duplicate: skipped
    assert m2.version == 2 and [s.name for s in m2.sources] == ["a.root", "b.root"]
    assert m2.partitions[: len(m1.partitions)] == m1.partitions
    check_partition_ranges(m2)
    _, table = read_dataset(store, "ops")
    compare_with_root(table.slice(0, 1500), a, "Events")
    compare_with_root(table.slice(1500), b, "Events")
    with pytest.raises(InputFileError, match="same content"):
        T.append(store, [b], "ops", on_duplicate="error")
    assert T.append(store, [b], "ops").version == 2   # nothing new: same version

    old_objects = [p.object for p in m2.partitions]
    m3 = T.reshard(store, "ops", partition_events=1000, compression="zstd")
    assert m3.version == 3 and m3.previous_version == 2 and len(m3.partitions) == 4
    check_partition_ranges(m3)
    assert all(store.exists(o) for o in old_objects)   # the old version is still readable
    _, table3 = read_dataset(store, "ops")
    assert table3.equals(table)
    assert sorted(T.gc(store, "ops", grace=0)) == sorted(old_objects)
    assert sorted(objects_of(store, "ops")) == sorted(p.object for p in m3.partitions)
    d = T.describe(store, "ops")
    assert d["num_events"] == 2700 and d["num_partitions"] == 4 and d["version"] == 3
    assert "Muon_pt" in T.render_description(d)

    removed = T.delete(store, "ops")
    assert sorted(removed) == sorted(p.object for p in m3.partitions)
    assert "ops" not in T.list_datasets(store) and objects_of(store, "ops") == []
    with pytest.raises(UnknownDatasetError):
        T.delete(store, "ops")


# -- subprocesses: concurrency and kills ------------------------------------------------------
def cli(ceph_cluster, pool, *args, fault=None, wait=True):
    env = dict(os.environ, PYTHONPATH=REPO)
    env.pop("SKYHOOK_FAULT", None)
    if fault:
        env["SKYHOOK_FAULT"] = fault
    cmd = [sys.executable, "-m", "skyhook_py.transcode", "--conf", str(ceph_cluster.conf_path),
           "--keyring", str(ceph_cluster.admin_keyring), "--pool", pool, *map(str, args)]
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if not wait:
        return p
    out, err = p.communicate(timeout=120)
    return p.returncode, out.decode(), err.decode()


def test_losing_committer_gets_concurrent_update_error(store, ceph_cluster, pool, tmp_path):
    a = demo_data.write_nanoaod(str(tmp_path / "a.root"), events=800, seed=3)
    b = demo_data.write_nanoaod(str(tmp_path / "b.root"), events=800, seed=4)
    c = demo_data.write_nanoaod(str(tmp_path / "c.root"), events=300, seed=5)
    T.ingest(store, [a], "race", partition_events=200)
    # a slow appender reads version 1, then writes its partitions for ~2 s ...
    slow = cli(ceph_cluster, pool, "append", b, "--dataset", "race", "--partition-events", 200,
               fault="sleep-per-partition=0.5", wait=False)
    deadline = time.monotonic() + 60
    while not any(o for o in objects_of(store, "race") if o not in
                  {p.object for p in mf.load_manifest(store, "race").partitions}):
        assert time.monotonic() < deadline and slow.poll() is None
        time.sleep(0.05)
    # ... while a fast one commits version 2 first
    assert T.append(store, [c], "race").version == 2
    out, err = slow.communicate(timeout=120)
    assert slow.returncode == 1, err
    assert "changed while this operation ran" in err.decode()
    m = mf.load_manifest(store, "race")
    assert m.version == 2 and [s.name for s in m.sources] == ["a.root", "c.root"]
    assert sorted(objects_of(store, "race")) == sorted(p.object for p in m.partitions)
    with pytest.raises(ConcurrentUpdateError):
        mf.commit(store, m, expected_version=1)


KILL_MOMENTS = [f"kill-after-partitions={k}" for k in range(1, 9)] + [
    "kill-before-commit", "kill-after-pieces", "kill-after-commit"]


def test_killed_append_keeps_previous_version(store, ceph_cluster, pool, tmp_path):
    """SIGKILL an append at 10 moments: every partition write, before and after the commit."""
    a = demo_data.write_nanoaod(str(tmp_path / "a.root"), events=1000, seed=7)
    b = demo_data.write_nanoaod(str(tmp_path / "b.root"), events=2000, seed=8)
    T.ingest(store, [a], "kill-ref", partition_events=250)
    _, ref_a = read_dataset(store, "kill-ref")
    T.append(store, [b], "kill-ref")
    _, ref_ab = read_dataset(store, "kill-ref")
    compare_with_root(ref_ab.slice(1000), b, "Events")
    for i, fault in enumerate(KILL_MOMENTS):
        ds = f"kill-{i}"
        T.ingest(store, [a], ds, partition_events=250)
        code, out, err = cli(ceph_cluster, pool, "append", b, "--dataset", ds,
                             "--partition-events", 250, fault=fault)
        assert code == -9, (fault, code, err)
        m, table = read_dataset(store, ds)     # intact and readable
        if fault == "kill-after-commit":
            assert m.version == 2 and table.equals(ref_ab)
        else:
            assert m.version == 1 and table.equals(ref_a), fault
        m = T.append(store, [b], ds)           # the re-run completes
        _, table = read_dataset(store, ds)
        assert m.version == 2 and table.equals(ref_ab), fault
        assert ds in T.list_datasets(store)
        T.gc(store, ds, grace=0)
        assert sorted(objects_of(store, ds)) == sorted(p.object for p in m.partitions)
        # the manifest pieces left by the killed commit are collected; the current ones stay
        assert set(pieces_of(store, ds)) == mf.load_manifest(store, ds).pieces.objects()


def test_killed_fresh_ingest_and_reshard(store, ceph_cluster, pool, tmp_path):
    a = demo_data.write_nanoaod(str(tmp_path / "a.root"), events=1000, seed=9)
    code, _, err = cli(ceph_cluster, pool, "ingest", a, "--dataset", "fresh",
                       "--partition-events", 250, fault="kill-after-partitions=2")
    assert code == -9, err
    assert "fresh" not in T.list_datasets(store)
    with pytest.raises(UnknownDatasetError):
        mf.load_manifest(store, "fresh")
    assert len(objects_of(store, "fresh")) == 2   # garbage, named by nobody
    code, out, err = cli(ceph_cluster, pool, "ingest", a, "--dataset", "fresh",
                         "--partition-events", 250)
    assert code == 0, err
    assert "version 1: 1,000 events in 4 partitions" in out
    _, table = read_dataset(store, "fresh")
    compare_with_root(table, a, "Events")
    assert len(T.gc(store, "fresh", grace=0)) == 2

    code, _, err = cli(ceph_cluster, pool, "reshard", "fresh", "--partition-events", 100,
                       "--format", "parquet", fault="kill-after-partitions=3")
    assert code == -9, err
    m, t2 = read_dataset(store, "fresh")
    assert m.version == 1 and t2.equals(table)
    code, out, err = cli(ceph_cluster, pool, "reshard", "fresh", "--partition-events", 100,
                         "--format", "parquet")
    assert code == 0, err
    m, t3 = read_dataset(store, "fresh")
    assert m.version == 2 and len(m.partitions) == 10 and t3.equals(table)

    code, out, err = cli(ceph_cluster, pool, "describe", "fresh", "--json")
    assert code == 0 and json.loads(out)["num_partitions"] == 10
    code, out, err = cli(ceph_cluster, pool, "list")
    assert code == 0 and "fresh" in out.split()
    code, out, err = cli(ceph_cluster, pool, "ingest", tmp_path / "nope.root", "--dataset", "x")
    assert code == 2 and "no such file" in err   # a user error: exit 2, as everywhere in the CLI
