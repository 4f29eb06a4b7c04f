"""Unit tests of the transcoder without a cluster: readers against uproot/h5py,
partitioner, encoder, statistics against NumPy, the manifest's JSON, demo data."""

from __future__ import annotations

import math
import shutil
import warnings

import awkward as ak
import h5py
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import uproot
from hypothesis import given, settings
from hypothesis import strategies as st

from skyhook_py import demo_data
from skyhook_py.query import ir
from skyhook_py.errors import InputFileError, SkyhookError
from skyhook_py.storage.manifest import Manifest, Partition, Source
from skyhook_py.transcode import encoder, partitioner, readers, stats

ROOT_FILES = [
    "nanoAOD_2015_CMS_Open_Data_ttbar.root", "nano_dy.root", "uproot-HZZ.root",
    "uproot-Zmumu.root", "uproot-small-dy-withoffsets.root", "uproot-small-flat-tree.root",
    "uproot-empty.root",
]


def read_all(reader, step):
    batches = list(reader.batches(0, reader.entries, step))
    return pa.Table.from_batches(batches, schema=reader.schema)


def assert_column_equals(col: pa.ChunkedArray, expected, name=""):
    """``col`` (Arrow) holds what ``expected`` (uproot/awkward or NumPy) holds, same dtypes."""
    col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    expected = ak.Array(expected) if not isinstance(expected, ak.Array) else expected
    if expected.ndim == 1:
        want = ak.to_numpy(expected)
        assert not pa.types.is_nested(col.type), name
        got = col.to_numpy(zero_copy_only=False)
    else:
        assert pa.types.is_list(col.type) or pa.types.is_fixed_size_list(col.type), (name, col.type)
        if pa.types.is_fixed_size_list(col.type):
            assert col.type.list_size == ak.num(expected, axis=1)[0] if len(expected) else True
        np.testing.assert_array_equal(pc.list_value_length(col).to_numpy(zero_copy_only=False),
                                      ak.to_numpy(ak.num(expected, axis=1)), err_msg=name)
        want = ak.to_numpy(ak.flatten(expected))
        got = pc.list_flatten(col).to_numpy(zero_copy_only=False)
    assert got.dtype == want.dtype, (name, got.dtype, want.dtype)
    np.testing.assert_array_equal(got, want, err_msg=name)


# -- ROOT ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ROOT_FILES)
def test_root_reader_matches_uproot(shared_data, name):
    path = shared_data / name
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", readers.IngestWarning)
        r = readers.open_reader(str(path))
    tree = uproot.open(path)[r.tree]
    assert r.entries == tree.num_entries
    table = read_all(r, step=37)   # a step that cuts baskets and events at odd places
    assert table.num_rows == tree.num_entries
    # every branch is a column, except those that are not numbers (strings here)
    left_out = set(tree.keys()) - set(table.column_names)
    assert all(tree[b].typename in ("char*", "TString") for b in left_out), left_out
    assert {n for n, _ in r.skipped} == left_out
    arrays = tree.arrays(table.column_names, library="ak") if table.column_names else None
    for c in table.column_names:
        assert_column_equals(table.column(c), arrays[c], c)
    r.close()


def test_root_types_nanoaod(shared_data):
    r = readers.open_reader(str(shared_data / "nanoAOD_2015_CMS_Open_Data_ttbar.root"))
    s = r.schema
    assert s.field("nMuon").type == pa.uint32()
    assert s.field("Muon_pt").type == pa.list_(pa.float32())
    assert s.field("Muon_charge").type == pa.list_(pa.int32())
    assert s.field("event").type == pa.uint64()
    assert s.field("HLT_AK8PFJet360_TrimMass30").type == pa.bool_()
    assert s.field("Electron_convVeto").type == pa.list_(pa.bool_())
    with pytest.warns(readers.IngestWarning):
        flat = readers.open_reader(str(shared_data / "uproot-small-flat-tree.root"))
    assert flat.schema.field("ArrayInt64").type == pa.list_(pa.int64(), 10)
    assert flat.schema.field("SliceUInt64").type == pa.list_(pa.uint64())


def test_strict_refuses_unstorable_branches(shared_data):
    with pytest.raises(InputFileError, match=r"Str \(char\*"):
        readers.open_reader(str(shared_data / "uproot-small-flat-tree.root"), strict=True)
    with pytest.warns(readers.IngestWarning, match="Str"):
        readers.open_reader(str(shared_data / "uproot-small-flat-tree.root"))


def test_missing_tree_lists_trees(shared_data):
    with pytest.raises(InputFileError, match=r"no tree 'Event'.*Events, Runs.*did you mean 'Events'"):
        readers.open_reader(str(shared_data / "nano_dy.root"), tree="Event")


def test_truncated_and_foreign_files(shared_data, tmp_path):
    src = (shared_data / "uproot-HZZ.root").read_bytes()
    cut = tmp_path / "cut.root"
    cut.write_bytes(src[: len(src) // 2])
    with pytest.raises(InputFileError, match="cut.root"):
        r = readers.open_reader(str(cut))
        read_all(r, 1000)
    other = tmp_path / "notes.txt"
    other.write_text("hello")
    with pytest.raises(InputFileError, match="neither a ROOT file nor an HDF5 file"):
        readers.open_reader(str(other))
    with pytest.raises(InputFileError, match="no such file"):
        readers.open_reader(str(tmp_path / "absent.root"))


def test_corrupt_baskets_fail_when_read(shared_data, tmp_path):
    """Bytes flipped in the middle of the file (baskets): reading fails and names the file."""
    data = bytearray((shared_data / "uproot-Zmumu.root").read_bytes())
    mid = len(data) // 2
    data[mid: mid + 2000] = bytes(2000)
    bad = tmp_path / "zeroed.root"
    bad.write_bytes(bytes(data))
    with pytest.raises(InputFileError, match="zeroed.root"):
        r = readers.open_reader(str(bad))
        read_all(r, 500)


def test_rntuple(tmp_path):
    path = tmp_path / "rntuple.root"
    muons = ak.Array([[{"pt": 1.5, "eta": 0.1}], [], [{"pt": 2.5, "eta": 0.3}, {"pt": 3.5, "eta": -1.0}]])
    with uproot.recreate(path) as f:
        f["Events"] = {"MET_pt": np.array([1, 2, 3], np.float32), "Muon": muons,
                       "fix": np.arange(12, dtype=np.int16).reshape(3, 4),
                       "flag": np.array([True, False, True])}
    r = readers.open_reader(str(path))
    t = read_all(r, 2)
    assert t.schema.field("Muon_pt").type == pa.list_(pa.float64())
    assert t.column("nMuon").to_pylist() == [1, 0, 2]
    assert t.column("Muon_eta").to_pylist() == [[0.1], [], [0.3, -1.0]]
    assert t.column("fix").to_pylist()[2] == [8, 9, 10, 11]
    assert t.column("flag").to_pylist() == [True, False, True]


# -- HDF5 ------------------------------------------------------------------------------
def test_lheh5_collections(shared_data):
    path = shared_data / "pylhe-testfile-hpcgen.hdf5"
    with pytest.warns(readers.IngestWarning, match="init"):
        r = readers.open_reader(str(path))
    t = read_all(r, 7)
    with h5py.File(path) as f:
        ev, parts = f["events"][:], f["particles"][:]
        eprops = [p.decode() if isinstance(p, bytes) else p for p in f["events"].attrs["properties"]]
        pprops = [p.decode() if isinstance(p, bytes) else p for p in f["particles"].attrs["properties"]]
    start, n = ev[:, eprops.index("start")].astype(int), ev[:, eprops.index("nparticles")].astype(int)
    assert t.num_rows == len(ev)
    for i, p in enumerate(eprops):
        np.testing.assert_array_equal(t.column(p).to_numpy(), ev[:, i])
    for j, p in enumerate(pprops):
        col = t.column(f"particles_{p}").combine_chunks()
        assert col.type == pa.list_(pa.float64())
        want = ak.Array([parts[s: s + k, j] for s, k in zip(start, n)])
        assert_column_equals(col, want, p)


def test_hdf5_flat_compound_and_errors(tmp_path):
    path = tmp_path / "flat.h5"
    rec = np.zeros(5, dtype=[("x", "<f4"), ("k", "<u2")])
    rec["x"], rec["k"] = np.arange(5) * 1.5, np.arange(5)
    with h5py.File(path, "w") as f:
        f["a"] = np.arange(5, dtype=np.int8)
        f["rec"] = rec
        f["vec"] = np.arange(15, dtype=np.float64).reshape(5, 3)
        f["flag"] = np.array([1, 0, 1, 1, 0], bool)
    t = read_all(readers.open_reader(str(path)), 2)
    assert t.schema.field("a").type == pa.int8()
    assert t.schema.field("k").type == pa.uint16()
    assert t.schema.field("vec").type == pa.list_(pa.float64(), 3)
    assert t.column("x").to_pylist() == [0.0, 1.5, 3.0, 4.5, 6.0]
    assert t.column("flag").to_pylist() == [True, False, True, True, False]

    bad = tmp_path / "unequal.h5"
    with h5py.File(bad, "w") as f:
        f["a"] = np.arange(5)
        f["b"] = np.arange(4)
    with pytest.raises(InputFileError, match=r"unequal length.*a \(5 rows\), b \(4 rows\)"):
        readers.open_reader(str(bad))


def test_hdf5_jagged_by_mapping_and_gather(tmp_path):
    """Odd names need the mapping; starts out of order need a gather, not a slice."""
    path = tmp_path / "jagged.h5"
    hits = np.arange(10, dtype=np.float32) * 10
    with h5py.File(path, "w") as f:
        f["ev/first"] = np.array([6, 0, 3, 9], np.int64)
        f["ev/howmany"] = np.array([3, 2, 0, 1], np.int32)
        f["ev/w"] = np.array([1.0, 2.0, 3.0, 4.0])
        f["hit"] = hits
    with pytest.raises(InputFileError, match="unequal length"):
        readers.open_reader(str(path))
    mapping = {"events": "ev", "collections": {"hit": {"count": "ev_howmany", "start": "ev_first"}}}
    t = read_all(readers.open_reader(str(path), hdf5_mapping=mapping), 3)
    assert t.column("hit_hit").to_pylist() == [[60, 70, 80], [0, 10], [], [90]]
    assert t.column("ev_w").to_pylist() == [1.0, 2.0, 3.0, 4.0]
    bad = {"events": "ev", "collections": {"hit": {"count": "ev_howmany"}}}   # no starts
    with pytest.raises(InputFileError, match=r"add up to 6, but 'hit' has 10 rows"):
        readers.open_reader(str(path), hdf5_mapping=bad)


# -- partitioner -------------------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(st.integers(0, 40), min_size=1, max_size=8),
       target_events=st.one_of(st.none(), st.integers(1, 50)),
       target_bytes=st.one_of(st.none(), st.integers(1, 2000)))
def test_partitions_are_whole_events_in_order(sizes, target_events, target_bytes):
    if target_events is None and target_bytes is None:
        target_events = 7
    batches, start = [], 0
    for n in sizes:
        lists = [[float(start + i)] * ((start + i) % 4) for i in range(n)]
        batches.append(pa.record_batch({"event": pa.array(np.arange(start, start + n), pa.int64()),
                                        "x": pa.array(lists, pa.list_(pa.float64()))}))
        start += n
    schema = batches[0].schema
    parts = list(partitioner.partitions(batches, schema, target_bytes, target_events))
    assert all(p.num_rows > 0 for p in parts)
    if target_events:
        assert all(p.num_rows <= target_events for p in parts)
    if target_bytes:   # over the target only by the one event that made a partition start
        assert all(p.num_rows == 1 or p.nbytes <= target_bytes + 64 for p in parts)
    whole = pa.concat_tables(parts) if parts else pa.table({"event": pa.array([], pa.int64())})
    assert whole.column("event").to_pylist() == list(range(start))
    if parts:
        assert whole.column("x").to_pylist() == [[float(i)] * (i % 4) for i in range(start)]


def test_partition_targets_checked():
    with pytest.raises(ValueError, match="MiB"):
        partitioner.check_targets(2 << 30, None)
    with pytest.raises(ValueError, match="at least 1"):
        partitioner.check_targets(None, 0)


# -- encoder and statistics ----------------------------------------------------------------
@pytest.mark.parametrize("fmt,comp", [("arrow", None), ("arrow", "lz4"), ("arrow", "zstd"),
                                      ("parquet", None), ("parquet", "zstd")])
def test_encode_roundtrip(fmt, comp):
    t = pa.table({"a": pa.array([1, 2, 3], pa.uint16()),
                  "b": pa.array([[1.0], [], [2.0, float("nan")]], pa.list_(pa.float32())),
                  "c": pa.array([[1, 2], [3, 4], [5, 6]], pa.list_(pa.int8(), 2))})
    data = encoder.encode(t, fmt, comp)
    if fmt == "arrow":
        reader = pa.ipc.open_file(pa.py_buffer(data))
        assert reader.num_record_batches == 1
    back = encoder.decode(data)
    assert back.schema == t.schema
    assert back.column("b").to_pylist()[2][0] == 2.0 and math.isnan(back.column("b").to_pylist()[2][1])
    assert back.column("c").to_pylist() == t.column("c").to_pylist()
    with pytest.raises(ValueError, match="compression"):
        encoder.check_encoding("arrow", "gzip")


def test_stats_against_numpy():
    rng = np.random.default_rng(1)
    counts = rng.poisson(2, 500)
    values = rng.normal(size=counts.sum()).astype(np.float32)
    values[::17] = np.nan
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    scalar = rng.integers(-50, 50, 500).astype(np.int16)
    t = pa.table({"x": pa.ListArray.from_arrays(pa.array(offsets), pa.array(values)),
                  "s": scalar, "allnan": np.full(500, np.nan)})
    s = stats.table_stats(t)
    assert s["rows"] == 500 and s["version"] == 1
    x = s["columns"]["x"]
    assert x["min"] == float(np.nanmin(values)) and x["max"] == float(np.nanmax(values))
    assert x["nan_count"] == int(np.isnan(values).sum())
    assert (x["min_length"], x["max_length"]) == (counts.min(), counts.max())
    assert s["columns"]["s"] == {"min": int(scalar.min()), "max": int(scalar.max()),
                                 "null_count": 0, "nan_count": 0, "bytes": scalar.nbytes}
    # list bytes: offsets (4 per row + 1) and values, as Arrow counts them (to a few bytes)
    assert abs(x["bytes"] - (offsets.nbytes + values.nbytes)) <= 8
    assert "min" not in s["columns"]["allnan"] and s["columns"]["allnan"]["nan_count"] == 500
    inf = stats.table_stats(pa.table({"f": [1.0, float("inf")]}))
    assert b"Infinity" in stats.to_json(inf)


# -- manifest --------------------------------------------------------------------------
def test_manifest_json_roundtrip():
    schema = pa.schema([("nMuon", pa.uint32()), ("Muon_pt", pa.list_(pa.float32())),
                        ("flag", pa.bool_()), ("v", pa.list_(pa.int64(), 3))])
    m = Manifest("ds", 3, schema,
                 [Partition("part.ds.0123456789ab.000000", 0, 10, 100, 0, 0, 10, {"rows": 10})],
                 [Source("/x.root", "x.root", 5, "ab" * 32, "Events", 10, 0)],
                 {"format": "arrow", "compression": "zstd"}, previous_version=2)
    back = Manifest.from_json(m.to_json())
    assert back.schema == schema and back.partitions == m.partitions and back.sources == m.sources
    assert back.version == 3 and back.num_events == 10
    assert m.column_types() == {"nMuon": ir.ColumnType("uint", False),
                                "Muon_pt": ir.ColumnType("float", True),
                                "flag": ir.ColumnType("bool", False),
                                "v": ir.ColumnType("int", True)}
    with pytest.raises(SkyhookError, match="corrupt"):
        Manifest.from_json(b'{"format": "other"}')


# -- demo data -----------------------------------------------------------------------------
def test_demo_data(tmp_path):
    a = demo_data.write_nanoaod(str(tmp_path / "a.root"), events=3000, seed=5, photons=True,
                                extra_branches=3, chunk_events=1000)
    b = demo_data.write_nanoaod(str(tmp_path / "b.root"), events=3000, seed=5, photons=True,
                                extra_branches=3, chunk_events=1000)
    ta, tb = uproot.open(a)["Events"], uproot.open(b)["Events"]
    assert ta.num_entries == 3000
    for k in ["run", "luminosityBlock", "event", "MET_pt", "MET_phi", "nMuon", "Muon_pt",
              "Muon_tightId", "Muon_pfRelIso04_all", "Electron_charge", "Jet_btagDeepB",
              "Jet_jetId", "nPhoton", "Photon_pt", "Extra_002"]:
        assert k in ta.keys(), k
    x, y = ta.arrays(library="ak"), tb.arrays(library="ak")
    assert ak.array_equal(x, y)   # seeded: the same file twice
    assert ak.all(ak.num(x.Muon_pt) == x.nMuon)
    assert ak.all(x.Muon_pt[:, :-1] >= x.Muon_pt[:, 1:])      # ordered by falling pt
    assert 0.4 < ak.mean(x.nMuon) < 0.8 and 2.5 < ak.mean(x.nJet) < 3.5
    assert 30 < ak.mean(x.MET_pt) < 45 and ak.min(ak.flatten(x.Jet_pt)) >= 15
    assert x.event.to_numpy().tolist() == list(range(1, 3001))


def test_source_reads_are_bounded(tmp_path, monkeypatch):
    """The writer reads a source about READ_STEP_BYTES at a time, whatever its size."""
    from skyhook_py.transcode import operations

    path = demo_data.write_nanoaod(str(tmp_path / "big.root"), events=20_000, seed=3)
    monkeypatch.setattr(operations, "READ_STEP_BYTES", 50_000)
    src, _ = operations._probe(path, None, False, None, operations._OpenReaders())
    sizes = [(b.num_rows, b.nbytes) for b in operations._source_batches(
        src, False, None, None, operations._OpenReaders())()]
    assert sum(n for n, _ in sizes) == 20_000 and len(sizes) > 20
    assert max(nb for _, nb in sizes[1:]) < 2 * 50_000


def test_demo_data_any_size(tmp_path):
    p = demo_data.write_nanoaod(str(tmp_path / "zero.root"), events=0)
    assert uproot.open(p)["Events"].num_entries == 0
    shutil.rmtree(tmp_path)
