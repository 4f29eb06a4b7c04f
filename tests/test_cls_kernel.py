"""The object class's scan kernel, run on local files through build/bin/skyhook_scan_local.

No cluster: the runner executes exactly the C++ code the OSD executes (every file of
cls_plugins/skyhook/ but cls_skyhook.cc), reading the file with pread instead of cls_cxx_read.  Oracles are awkward/NumPy
computations on uproot reads of ../shared/data, and the Python reference evaluator
(skyhook_py.query.reference) for the type-promotion matrix.  Errors are asserted as the exact
errno of formats/README.md.
"""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import awkward as ak
import flatbuffers
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import uproot

from skyhook_py.query import codec, reference
from skyhook_py.query.ir import AggKind, Aggregation, Axis, Op, call, col

ROOT = Path(__file__).resolve().parents[1]
RUNNER = ROOT / "build" / "bin" / "skyhook_scan_local"
DATA = ROOT.parent / "shared" / "data"

pytestmark = pytest.mark.skipif(
    not RUNNER.exists(), reason=f"{RUNNER} is not built (cmake --build build)"
)


class ScanFailed(Exception):
    def __init__(self, code, message):
        self.errno = code
        super().__init__(f"errno {code}: {message}")


def run_raw(request: bytes, obj: Path, tmp_path: Path, *options) -> bytes:
    req, out = tmp_path / "request.bin", tmp_path / "reply.bin"
    req.write_bytes(request)
    if out.exists():
        out.unlink()
    r = subprocess.run([str(RUNNER), str(req), str(obj), str(out), *map(str, options)],
                       capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        assert r.returncode > 0, f"runner crashed with signal {-r.returncode}: {r.stderr}"
        raise ScanFailed(r.returncode, r.stderr.strip())
    return out.read_bytes()


def scan(obj: Path, tmp_path: Path, *options, **kw) -> codec.ScanResult:
    return codec.decode_scan_reply(run_raw(codec.encode_scan_request(**kw), obj, tmp_path, *options))


def scan_errno(obj: Path, tmp_path: Path, request: bytes, *options) -> int:
    with pytest.raises(ScanFailed) as e:
        run_raw(request, obj, tmp_path, *options)
    return e.value.errno


def write_ipc(table: pa.Table, path: Path, batch_rows: int | None = None, compression=None) -> Path:
    opts = pa.ipc.IpcWriteOptions(compression=compression)
    with pa.OSFile(str(path), "wb") as f, pa.ipc.new_file(f, table.schema, options=opts) as w:
        w.write_table(table, max_chunksize=batch_rows)
    return path


def root_table(name: str, tree: str) -> tuple[pa.Table, ak.Array]:
    arrays = uproot.open(DATA / name)[tree].arrays(library="ak")
    keep = [f for f in arrays.fields if not str(arrays[f].type).endswith("string")]
    arrays = arrays[keep]
    return ak.to_arrow_table(arrays, extensionarray=False), arrays


@pytest.fixture(scope="module")
def dy(tmp_path_factory):
    """uproot-small-dy-withoffsets.root (501 events) as an Arrow IPC file of 4 batches."""
    table, arrays = root_table("uproot-small-dy-withoffsets.root", "tree")
    path = write_ipc(table, tmp_path_factory.mktemp("dy") / "dy.arrow", batch_rows=128)
    return path, table, arrays


@pytest.fixture(scope="module")
def hzz(tmp_path_factory):
    table, arrays = root_table("uproot-HZZ.root", "events")
    path = write_ipc(table, tmp_path_factory.mktemp("hzz") / "hzz.arrow", batch_rows=1000,
                     compression="zstd")
    return path, table, arrays


@pytest.fixture(scope="module")
def flat(tmp_path_factory):
    """Every basic dtype (scalars, fixed [10] arrays, jagged arrays), 100 events."""
    table, arrays = root_table("uproot-small-flat-tree.root", "tree")
    return write_ipc(table, tmp_path_factory.mktemp("flat") / "flat.arrow"), table, arrays


# -- requests that are rejected before the object is read ----------------------------

def test_garbage_requests_are_einval(dy, tmp_path):
    path = dy[0]
    good = codec.encode_scan_request(outputs=[("m", col("MET_pt"))])
    assert scan_errno(path, tmp_path, b"") == errno.EINVAL
    assert scan_errno(path, tmp_path, os.urandom(200)) == errno.EINVAL
    assert scan_errno(path, tmp_path, good[: len(good) // 2]) == errno.EINVAL
    wrong_id = good[:4] + b"XXXX" + good[8:]
    assert scan_errno(path, tmp_path, wrong_id) == errno.EINVAL
    # the right identifier in front of garbage: the Verifier catches it
    assert scan_errno(path, tmp_path, good[:8] + b"\xff" * 64) == errno.EINVAL


def test_wrong_version_is_eprotonosupport(dy, tmp_path, monkeypatch):
    monkeypatch.setattr(codec, "VERSION", 2)
    req = codec.encode_scan_request(outputs=[("m", col("MET_pt"))])
    assert scan_errno(dy[0], tmp_path, req) == errno.EPROTONOSUPPORT


def test_unknown_column_is_esrch(dy, tmp_path):
    req = codec.encode_scan_request(outputs=[("m", col("MET_ptt"))])
    with pytest.raises(ScanFailed) as e:
        run_raw(req, dy[0], tmp_path)
    assert e.value.errno == errno.ESRCH
    assert "MET_ptt" in str(e.value)


def test_oversized_requests_are_e2big(dy, tmp_path):
    path = dy[0]
    big = codec.encode_scan_request(outputs=[("x" * (1 << 20), col("MET_pt"))])
    assert scan_errno(path, tmp_path, big) == errno.E2BIG
    many = codec.encode_scan_request(outputs=[(f"o{i}", col("MET_pt") + i) for i in range(10001)])
    assert scan_errno(path, tmp_path, many) == errno.E2BIG
    deep = col("MET_pt")
    for i in range(300):
        deep = -deep
    assert scan_errno(path, tmp_path, codec.encode_scan_request(outputs=[("d", deep)])) == errno.E2BIG
    aggs = [Aggregation(AggKind.Count, f"c{i}") for i in range(65)]
    assert scan_errno(path, tmp_path, codec.encode_scan_request(aggregations=aggs)) == errno.E2BIG
    h = Aggregation(AggKind.Hist2D, "h", col("MET_pt"), col("MET_pt"),
                    x_axis=Axis(1001, 0, 1), y_axis=Axis(1000, 0, 1))
    assert scan_errno(path, tmp_path, codec.encode_scan_request(aggregations=[h])) == errno.E2BIG


def _raw_request(nodes, outputs, version=1):
    """A ScanRequest built by hand, for inconsistencies the codec refuses to produce."""
    from skyhook_py._generated import skyhook_scan_generated as fb

    b = flatbuffers.Builder(256)
    offs = []
    for op, args, name in nodes:
        n = b.CreateString(name) if name else None
        fb.NodeStartArgsVector(b, len(args))
        for a in reversed(args):
            b.PrependUint32(a)
        av = b.EndVector()
        fb.NodeStart(b)
        fb.NodeAddOp(b, op)
        fb.NodeAddArgs(b, av)
        if n:
            fb.NodeAddName(b, n)
        offs.append(fb.NodeEnd(b))
    fb.ScanRequestStartNodesVector(b, len(offs))
    for o in reversed(offs):
        b.PrependUOffsetTRelative(o)
    nv = b.EndVector()
    oo = []
    for name, node in outputs:
        s = b.CreateString(name)
        fb.OutputStart(b)
        fb.OutputAddName(b, s)
        fb.OutputAddNode(b, node)
        oo.append(fb.OutputEnd(b))
    fb.ScanRequestStartOutputsVector(b, len(oo))
    for o in reversed(oo):
        b.PrependUOffsetTRelative(o)
    ov = b.EndVector()
    fb.ScanRequestStart(b)
    fb.ScanRequestAddVersion(b, version)
    fb.ScanRequestAddNodes(b, nv)
    fb.ScanRequestAddOutputs(b, ov)
    fb.ScanRequestAddMaxReplyBytes(b, 1 << 20)
    b.Finish(fb.ScanRequestEnd(b), file_identifier=b"SKH1")
    return bytes(b.Output())


def test_inconsistent_dags_are_einval(dy, tmp_path):
    path = dy[0]
    ok = _raw_request([(Op.Column, [], "MET_pt"), (Op.Neg, [0], None)], [("x", 1)])
    assert codec.decode_scan_reply(run_raw(ok, path, tmp_path)).table.num_rows == 501
    cases = [
        [(Op.Neg, [1], None), (Op.Column, [], "MET_pt")],          # argument not earlier
        [(Op.Column, [], "MET_pt"), (Op.Neg, [1], None)],          # argument is itself
        [(Op.Column, [], "MET_pt"), (Op.Add, [0], None)],          # wrong arity
        [(Op.Column, [], "MET_pt"), (99, [0], None)],              # unknown op
        [(Op.Column, [], None)],                                   # column without a name
    ]
    for nodes in cases:
        assert scan_errno(path, tmp_path, _raw_request(nodes, [("x", len(nodes) - 1)])) == errno.EINVAL
    assert scan_errno(path, tmp_path, _raw_request([(Op.Column, [], "MET_pt")], [("x", 5)])) \
        == errno.EINVAL


@pytest.mark.parametrize("expr", [
    call(Op.Sum, col("MET_pt")),                   # reduction of an event-level value
    col("Muon_pt") + col("Jet_pt"),                # type-checks, but list lengths differ
    col("MET_pt") & col("MET_pt"),                 # logic on numbers
    (col("MET_pt") > 1) + 1,                       # arithmetic on bools
    col("MET_pt")[col("MET_pt") > 1],              # mask of an event-level value
])
def test_invalid_expressions_are_einval(dy, tmp_path, expr):
    assert scan_errno(dy[0], tmp_path, codec.encode_scan_request(outputs=[("x", expr)])) == errno.EINVAL


def test_integer_to_negative_power_is_edom(dy, tmp_path):
    # uint32 ** -1: the literal does not fit uint32 (NumPy 2 raises OverflowError)
    req = codec.encode_scan_request(outputs=[("x", col("nMuon") ** -1)])
    assert scan_errno(dy[0], tmp_path, req) == errno.EINVAL
    req = codec.encode_scan_request(outputs=[("x", col("Muon_charge") ** col("Muon_charge"))])
    assert scan_errno(dy[0], tmp_path, req) == errno.EDOM


# -- the object ----------------------------------------------------------------------------

def test_corrupt_objects_are_ebadmsg(dy, tmp_path):
    path = dy[0]
    req = codec.encode_scan_request(outputs=[("m", col("MET_pt"))])
    data = path.read_bytes()
    bad = {
        "garbage": os.urandom(5000),
        "truncated": data[: len(data) // 2],
        "magic only": b"ARROW1\x00\x00" + os.urandom(3000),
        "parquet magic": b"PAR1" + os.urandom(3000) + b"PAR1",
        "tiny": b"AR",
    }
    for what, content in bad.items():
        p = tmp_path / "bad.arrow"
        p.write_bytes(content)
        assert scan_errno(p, tmp_path, req) == errno.EBADMSG, what


def test_corrupt_offsets_fail_validation(tmp_path):
    # a list column whose offsets point past its values: only ValidateFull can tell
    table = pa.table({"x": pa.array([[1.0, 2.0], [3.0]], pa.list_(pa.float64()))})
    path = write_ipc(table, tmp_path / "ok.arrow")
    data = bytearray(path.read_bytes())
    marker = np.array([0, 2, 3], np.int32).tobytes()
    at = bytes(data).find(marker)
    assert at > 0
    data[at + 8: at + 12] = np.array([1000], np.int32).tobytes()
    (tmp_path / "bad.arrow").write_bytes(bytes(data))
    req = codec.encode_scan_request(outputs=[("x", call(Op.Sum, col("x")))])
    assert scan_errno(tmp_path / "bad.arrow", tmp_path, req) == errno.EBADMSG


def test_limits_of_the_call(dy, tmp_path):
    path = dy[0]
    req = codec.encode_scan_request(outputs=[("m", col("Muon_pt") * 2)])
    assert scan_errno(path, tmp_path, req, "--max-object-bytes", 1000) == errno.EFBIG
    assert scan_errno(path, tmp_path, req, "--max-memory-bytes", 1000) == errno.ENOMEM
    assert scan_errno(path, tmp_path, req, "--max-cpu-ms", 0) == errno.ETIME
    small = codec.encode_scan_request(outputs=[("m", col("Muon_pt") * 2)], max_reply_bytes=2000)
    assert scan_errno(path, tmp_path, small) == errno.EMSGSIZE
    hist = Aggregation(AggKind.Hist1D, "h", col("MET_pt"), x_axis=Axis(1_000_000, 0, 1))
    req = codec.encode_scan_request(aggregations=[hist], max_reply_bytes=1 << 20)
    assert scan_errno(path, tmp_path, req) == errno.EMSGSIZE


def test_column_selective_read(tmp_path):
    rng = np.random.default_rng(1)
    n = 20000
    table = pa.table({f"c{i:02d}": rng.normal(size=n) for i in range(50)})
    path = write_ipc(table, tmp_path / "wide.arrow", batch_rows=5000)
    r = scan(path, tmp_path, outputs=[("a", col("c07"))], where=col("c33") > 1.0)
    ratio = r.figures["bytes_read"] / r.figures["object_bytes"]
    print(f"\nbytes read for 2 of 50 columns: {r.figures['bytes_read']} of "
          f"{r.figures['object_bytes']} ({ratio:.3f})")
    assert r.figures["object_bytes"] == path.stat().st_size
    assert 2 / 50 <= ratio < 2 / 50 * 1.25
    expected = table.column("c07").to_numpy()[table.column("c33").to_numpy() > 1.0]
    np.testing.assert_array_equal(r.table.column("a").to_numpy(), expected)


# -- results against awkward ------------------------------------------------------------------

def test_dimuon_cut_matches_awkward(dy, tmp_path):
    path, _, a = dy
    good = col("Muon_pt")[col("Muon_pt") > 20]
    r = scan(path, tmp_path, outputs=[("MET_pt", col("MET_pt")), ("mu", good),
                                       ("lead", call(Op.First, good)), ("event", col("event"))],
             where=(call(Op.Count, good) >= 2) & (col("MET_pt") < 80))
    mu = a.Muon_pt[a.Muon_pt > 20]
    sel = (ak.num(mu) >= 2) & (a.MET_pt < 80)
    assert r.table.num_rows == int(ak.sum(sel)) > 0
    assert r.figures["rows_scanned"] == 501 and r.figures["rows_matched"] == r.table.num_rows
    assert ak.to_list(r.table.column("mu").to_pylist()) == ak.to_list(mu[sel])
    assert r.table.column("MET_pt").to_pylist() == ak.to_list(a.MET_pt[sel])
    assert r.table.column("lead").to_pylist() == ak.to_list(ak.firsts(mu[sel]))
    assert r.table.column("event").to_pylist() == ak.to_list(a.event[sel])


def test_reductions_and_nulls_match_awkward(dy, tmp_path):
    path, _, a = dy
    jets = col("Jet_pt")
    r = scan(path, tmp_path, outputs=[
        ("sum", call(Op.Sum, jets)), ("max", call(Op.Max, jets)), ("min", call(Op.Min, jets)),
        ("mean", call(Op.Mean, jets)), ("n", call(Op.Count, jets)),
        ("n30", call(Op.CountNonzero, jets > 30)), ("any", call(Op.Any, jets > 100)),
        ("all", call(Op.All, jets > 20)), ("second", call(Op.Index, jets, index=1)),
        ("last", call(Op.Last, jets)),
        ("ht_or_zero", call(Op.Where, call(Op.Count, jets) > 0, call(Op.Max, jets), 0.0)),
    ])
    t = r.table
    j = a.Jet_pt
    np.testing.assert_array_equal(t["sum"].to_numpy(), ak.to_numpy(ak.sum(j, axis=1)))
    assert t["sum"].type == pa.float32()
    assert t["max"].to_pylist() == ak.to_list(ak.max(j, axis=1))
    assert t["min"].to_pylist() == ak.to_list(ak.min(j, axis=1))
    # awkward divides its own (not sequential) float64 sum: equal to the last bits only
    want_mean = ak.to_list(ak.mean(ak.values_astype(j, np.float64), axis=1, mask_identity=True))
    assert [m is None for m in t["mean"].to_pylist()] == [m is None for m in want_mean]
    np.testing.assert_allclose([m for m in t["mean"].to_pylist() if m is not None],
                               [m for m in want_mean if m is not None], rtol=1e-15)
    assert t["n"].to_pylist() == ak.to_list(ak.num(j))
    assert t["n30"].to_pylist() == ak.to_list(ak.count_nonzero(j > 30, axis=1))
    assert t["any"].to_pylist() == ak.to_list(ak.any(j > 100, axis=1))
    assert t["all"].to_pylist() == ak.to_list(ak.all(j > 20, axis=1))
    assert t["second"].to_pylist() == ak.to_list(ak.pad_none(j, 2)[:, 1])
    assert t["last"].to_pylist() == [x[-1] if len(x) else None for x in ak.to_list(j)]
    assert t["ht_or_zero"].to_pylist() == ak.to_list(ak.fill_none(ak.max(j, axis=1), 0.0))
    assert t["max"].null_count == int(ak.sum(ak.num(j) == 0)) > 0


def test_broadcast_arithmetic_matches_numpy(hzz, tmp_path):
    path, _, a = hzz
    px, py = col("Muon_Px"), col("Muon_Py")
    pt = call(Op.Hypot, px, py)
    r = scan(path, tmp_path, compression="lz4", outputs=[
        ("pt", pt), ("frac", pt / call(Op.Hypot, col("MET_px"), col("MET_py"))),
        ("phi", call(Op.Arctan2, py, px)), ("w", col("EventWeight") * pt),
        ("fd", col("Muon_Px") // 7.0), ("md", col("Muon_Px") % -3.0), ("nsq", col("NMuon") ** 2),
    ], where=col("NMuon") >= 1)
    sel = a.NMuon >= 1
    m = a[sel]
    flat = lambda arr: ak.to_numpy(ak.flatten(arr))  # noqa: E731
    t = r.table
    col_flat = lambda name: np.asarray(pa.concat_arrays([c.flatten() for c in t[name].chunks]))  # noqa: E731
    np.testing.assert_array_equal(col_flat("pt"), np.hypot(flat(m.Muon_Px), flat(m.Muon_Py)))
    metpt = np.hypot(ak.to_numpy(m.MET_px), ak.to_numpy(m.MET_py))
    np.testing.assert_array_equal(col_flat("frac"),
                                  flat(np.hypot(m.Muon_Px, m.Muon_Py) / metpt))
    # NumPy's float32 arctan2 is a SIMD kernel chosen by CPU: 1 ulp from libm on AVX-512
    np.testing.assert_array_max_ulp(col_flat("phi"), np.arctan2(flat(m.Muon_Py), flat(m.Muon_Px)), maxulp=2)
    np.testing.assert_array_equal(col_flat("w"), flat(m.EventWeight * np.hypot(m.Muon_Px, m.Muon_Py)))
    np.testing.assert_array_equal(col_flat("fd"), np.floor_divide(flat(m.Muon_Px), np.float32(7)))
    np.testing.assert_array_equal(col_flat("md"), np.remainder(flat(m.Muon_Px), np.float32(-3)))
    assert t["nsq"].to_pylist() == ak.to_list(m.NMuon ** 2)
    assert t["pt"].type.value_type == pa.float32()


def test_row_range_and_limit(dy, tmp_path):
    path, _, a = dy
    r = scan(path, tmp_path, outputs=[("event", col("event"))], where=col("nMuon") >= 1,
             row_start=100, row_stop=400, limit=25)
    sel = np.flatnonzero(ak.to_numpy(a.nMuon[100:400]) >= 1)[:25] + 100
    assert r.table["event"].to_pylist() == ak.to_list(a.event[sel])
    assert r.figures["rows_returned"] == 25


def test_aggregations_match_numpy(dy, tmp_path):
    path, _, a = dy
    axis = Axis(20, 0.0, 100.0)
    r = scan(path, tmp_path, where=col("nJet") >= 1, aggregations=[
        Aggregation(AggKind.Count, "events"),
        Aggregation(AggKind.Count, "jets", col("Jet_pt")),
        Aggregation(AggKind.Sum, "sum_pt", col("Jet_pt")),
        Aggregation(AggKind.Sum, "sum_n", col("nJet")),
        Aggregation(AggKind.Max, "max_met", col("MET_pt")),
        Aggregation(AggKind.Min, "min_id", col("Jet_jetId")),
        Aggregation(AggKind.Mean, "mean_met", col("MET_pt")),
        Aggregation(AggKind.Hist1D, "h", col("Jet_pt"), weight=col("MET_pt"), x_axis=axis),
        Aggregation(AggKind.Hist2D, "h2", col("Jet_pt"), call(Op.Max, col("Jet_pt")),
                    x_axis=Axis(5, 0, 50), y_axis=Axis(4, 0, 200)),
    ])
    sel = a[a.nJet >= 1]
    g = {p.name: p for p in r.aggregates}
    jets = ak.to_numpy(ak.flatten(sel.Jet_pt)).astype(np.float64)
    assert g["events"].count == len(sel)
    assert g["jets"].count == len(jets)
    assert g["sum_pt"].float_value == float(np.cumsum(jets)[-1]) and not g["sum_pt"].is_integer
    assert g["sum_n"].is_integer and g["sum_n"].int_value == int(ak.sum(sel.nJet))
    assert g["max_met"].float_value == float(ak.max(sel.MET_pt))
    assert g["min_id"].is_integer and g["min_id"].int_value == int(ak.min(sel.Jet_jetId))
    assert g["mean_met"].count == len(sel)
    w = np.repeat(ak.to_numpy(sel.MET_pt).astype(np.float64), ak.to_numpy(ak.num(sel.Jet_pt)))
    idx = reference.bin_index(jets, axis)
    np.testing.assert_array_equal(g["h"].sumw, np.bincount(idx, weights=w, minlength=22))
    np.testing.assert_allclose(g["h"].sumw2, np.bincount(idx, weights=w * w, minlength=22), rtol=1e-15)
    mx = np.repeat(ak.to_numpy(ak.max(sel.Jet_pt, axis=1)).astype(np.float64),
                   ak.to_numpy(ak.num(sel.Jet_pt)))
    ix = reference.bin_index(jets, Axis(5, 0, 50)) * 6 + reference.bin_index(mx, Axis(4, 0, 200))
    np.testing.assert_array_equal(g["h2"].sumw, np.bincount(ix, minlength=7 * 6))


def test_parquet_partition(tmp_path):
    path = DATA / "nano_dy.parquet"
    table = pq.read_table(path, columns=["Muon_pt", "nMuon", "MET_pt"])
    a = ak.from_arrow(table)
    r = scan(path, tmp_path, outputs=[("mu", col("Muon_pt")), ("n", col("nMuon"))],
             where=col("MET_pt") > 20)
    sel = a.MET_pt > 20
    assert r.table["mu"].to_pylist() == ak.to_list(a.Muon_pt[sel])
    assert r.table["n"].to_pylist() == ak.to_list(a.nMuon[sel])
    # 3 of 1499 columns: the footer (335 kB of metadata, read after a 64 kB speculative
    # read of the file's tail) and three tiny column chunks, not the 139 kB of data pages
    footer = pq.ParquetFile(path).metadata.serialized_size
    data = path.stat().st_size - footer
    assert r.figures["bytes_read"] - footer < 64 * 1024 + data / 10


# -- agreement with the reference evaluator: types, promotion, fixed-size lists ----------------

FLAT_EXPRS = {
    "i32+u32": col("Int32") + col("UInt32"),
    "i64+u64": col("Int64") + col("UInt64"),
    "f32*i32": col("Float32") * col("Int32"),
    "f32*2": col("Float32") * 2,
    "f32*2.5": col("Float32") * 2.5,
    "u32-7": col("UInt32") - 7,
    "i32//3": col("Int32") // 3,
    "i32%-3": col("Int32") % -3,
    "i64//0": col("Int64") // 0,
    "u64%0": col("UInt64") % 0,
    "f64%0": col("Float64") % 0.0,
    "i32/i64": col("Int32") / col("Int64"),
    "i32**2": col("Int32") ** 2,
    "f32**0.5": col("Float32") ** 0.5,
    "sqrt_f32": call(Op.Sqrt, col("Float32")),
    "sqrt_i32": call(Op.Sqrt, col("Int32")),
    "abs_neg": abs(-col("Int64")),
    "u64>i64": col("UInt64") > col("Int64"),
    "u32>-1": col("UInt32") > -1,
    "u32<5e9": col("UInt32") < 5_000_000_000,
    "arr_f32+event": col("ArrayFloat32") + col("Float64"),
    "slice_i64*slice_i64": col("SliceInt64") * col("SliceInt64"),
    "sum_u32": call(Op.Sum, col("SliceUInt32")),
    "sum_f32": call(Op.Sum, col("SliceFloat32")),
    "sum_arr_i32": call(Op.Sum, col("ArrayInt32")),
    "max_u64": call(Op.Max, col("SliceUInt64")),
    "mean_i32": call(Op.Mean, col("SliceInt32")),
    "first_f64": call(Op.First, col("SliceFloat64")),
    "idx-2": call(Op.Index, col("SliceInt32"), index=-2),
    "masked": col("SliceFloat64")[col("SliceFloat64") > 3],
    "where": call(Op.Where, col("SliceInt32") > 2, col("SliceInt32"), col("Float32")),
    "lit_only": col("Float32") + (1 + 2) * 0.5,
    "first+1": call(Op.First, col("SliceInt64")) + 1,
}


@pytest.mark.parametrize("name", sorted(FLAT_EXPRS))
def test_matches_reference_evaluator(flat, tmp_path, name):
    path, table, _ = flat
    expr = FLAT_EXPRS[name]
    got = scan(path, tmp_path, outputs=[("x", expr)], where=col("N") >= 0)
    want = reference.scan_table(table, outputs=[("x", expr)], where=col("N") >= 0)
    assert_same_table(got.table, want.table)


def assert_same_table(got: pa.Table, want: pa.Table):
    """Same schema, same nulls, same list offsets, same values bit for bit (NaN equal to NaN)."""
    assert got.schema == want.schema
    for name in want.column_names:
        g, w = got[name].combine_chunks(), want[name].combine_chunks()
        assert g.is_null().to_pylist() == w.is_null().to_pylist(), name
        if pa.types.is_list(w.type):
            assert g.offsets.to_pylist() == w.offsets.to_pylist(), name
            g, w = g.values, w.values
            assert g.is_null().to_pylist() == w.is_null().to_pylist(), name
        gv = g.fill_null(False if pa.types.is_boolean(g.type) else 0).to_numpy(zero_copy_only=False)
        wv = w.fill_null(False if pa.types.is_boolean(w.type) else 0).to_numpy(zero_copy_only=False)
        assert gv.dtype == wv.dtype
        np.testing.assert_array_equal(gv.view(f"u{gv.itemsize}") if gv.dtype.kind == "f" else gv,
                                      wv.view(f"u{wv.itemsize}") if wv.dtype.kind == "f" else wv,
                                      err_msg=name)


def test_outputs_are_evaluated_on_selected_rows_only(dy, tmp_path):
    path, _, a = dy
    # negative integer powers exist, but only in events that the cut drops
    no_muons = col("nMuon") == 0
    r = scan(path, tmp_path, outputs=[("x", col("Muon_charge") ** col("Muon_charge"))], where=no_muons)
    assert r.table.num_rows == int(ak.sum(a.nMuon == 0)) > 0
    # the cut itself runs on every row of the range, whatever the limit
    r = scan(path, tmp_path, outputs=[("e", col("event"))], where=col("nMuon") >= 1, limit=3)
    assert r.figures["rows_matched"] == int(ak.sum(a.nMuon >= 1)) and r.table.num_rows == 3
    r = scan(path, tmp_path, outputs=[("e", col("event"))], row_start=10, row_stop=450, limit=5)
    assert (r.figures["rows_scanned"], r.figures["rows_matched"], r.figures["rows_returned"]) == (440, 440, 5)
    assert r.table["e"].to_pylist() == ak.to_list(a.event[10:15])


@pytest.mark.parametrize("compression", ["lz4", "zstd"])
def test_a_large_reply_is_compressed_as_asked_and_a_small_one_is_written_plain(tmp_path, compression):
    """The class compresses a reply whose first batch has 64 KiB or more (scan.cc
    kCompressBytes): the stream is smaller and decodes to the plain answer.  A smaller
    reply is written plain although compression was asked (a codec context per buffer
    costs more than the bytes it saves): its stream is the very bytes of the plain one."""
    rng = np.random.default_rng(3)
    n = 100_000
    table = pa.table({"event": pa.array(np.arange(n, dtype=np.uint64)),
                      "x": pa.array(rng.normal(size=n).astype(np.float32))})
    path = write_ipc(table, tmp_path / "c.arrow")
    outputs = [("event", col("event")), ("x", col("x"))]
    cuts = {"large": None, "small": col("x") > 3.0}   # all rows; about 0.1 % of them
    for size, where in cuts.items():
        plain = scan(path, tmp_path, outputs=outputs, where=where)
        packed = scan(path, tmp_path, outputs=outputs, where=where, compression=compression)
        assert packed.table.equals(plain.table)
        if size == "large":
            assert plain.table.num_rows == n and len(packed.ipc) < 0.8 * len(plain.ipc)
        else:
            assert 0 < plain.table.num_rows < 1000 and packed.ipc == plain.ipc
