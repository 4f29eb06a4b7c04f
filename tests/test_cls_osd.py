"""The `skyhook` object class inside a real OSD (fixtures of tests/conftest.py).

What the OSD answers must equal what the local runner (the same kernel on a local
file) answers; every bad request gets its exact errno, and the OSD that got it still
answers the next valid query (a class runs in the OSD with no isolation, so a crash
would take the OSD, and the PG, down).
"""

from __future__ import annotations

import errno
import json
import os

import awkward as ak
import pytest
import uproot

from skyhook_py.query import codec
from skyhook_py.errors import ObjectClassError
from skyhook_py.query.ir import AggKind, Aggregation, Axis, Op, call, col

from test_cls_kernel import DATA, RUNNER, _raw_request, assert_same_table, run_raw, write_ipc

pytestmark = pytest.mark.skipif(not RUNNER.exists(), reason="the class is not built")

OBJ = "part.dy.0123456789ab.000000"
BAD_OBJ = "part.dy.0123456789ab.000001"
STATS = {"version": 1, "rows": 501, "columns": {"MET_pt": {"min": 0.0, "max": 1.0}}}
MAX_REPLY = 8 << 20


@pytest.fixture(scope="module")
def partition(store, tmp_path_factory):
    arrays = uproot.open(DATA / "uproot-small-dy-withoffsets.root")["tree"].arrays(library="ak")
    path = write_ipc(ak.to_arrow_table(arrays, extensionarray=False),
                     tmp_path_factory.mktemp("osd") / "dy.arrow", batch_rows=128, compression="lz4")
    store.write_full(OBJ, path.read_bytes(), xattrs={"skyhook.stats": json.dumps(STATS).encode()})
    store.write_full(BAD_OBJ, b"ARROW1\0\0" + os.urandom(4000))
    return path


def call_scan(store, request: bytes, obj: str = OBJ, max_reply: int = MAX_REPLY) -> bytes:
    return store.execute(obj, "skyhook", "scan", request, max_reply)


def scan_errno(store, request: bytes, obj: str = OBJ, max_reply: int = MAX_REPLY) -> int:
    with pytest.raises(ObjectClassError) as e:
        call_scan(store, request, obj, max_reply)
    return e.value.errno


VALID = dict(outputs=[("mu", col("Muon_pt")[col("Muon_pt") > 20]), ("met", col("MET_pt")),
                      ("lead", call(Op.First, col("Jet_pt")))],
             where=call(Op.Count, col("Muon_pt")) >= 2,
             aggregations=[Aggregation(AggKind.Hist1D, "h", col("Jet_pt"), x_axis=Axis(10, 0, 100)),
                           Aggregation(AggKind.Sum, "n", col("nJet"))])


def assert_still_answers(store, partition, tmp_path):
    got = codec.decode_scan_reply(call_scan(store, codec.encode_scan_request(**VALID)))
    assert got.table.num_rows > 0


def test_osd_equals_local_runner(store, partition, tmp_path):
    for compression in ("none", "zstd"):
        request = codec.encode_scan_request(**VALID, compression=compression)
        osd = codec.decode_scan_reply(call_scan(store, request))
        local = codec.decode_scan_reply(run_raw(request, partition, tmp_path))
        assert_same_table(osd.table, local.table)
        assert osd.aggregates == local.aggregates
        for k in ("rows_scanned", "rows_matched", "rows_returned", "bytes_read", "object_bytes"):
            assert osd.figures[k] == local.figures[k], k
        assert osd.figures["object_bytes"] == partition.stat().st_size
        assert 0 < osd.figures["bytes_read"] < osd.figures["object_bytes"]


def test_stats(store, partition):
    assert json.loads(store.execute(OBJ, "skyhook", "stats", b"", 1 << 16)) == STATS
    with pytest.raises(ObjectClassError) as e:
        store.execute(BAD_OBJ, "skyhook", "stats", b"", 1 << 16)
    assert e.value.errno == errno.ENODATA


def test_bad_requests_get_exact_errno_and_the_osd_survives(store, partition, tmp_path, monkeypatch):
    good = codec.encode_scan_request(**VALID)
    primary = store.osd_for(OBJ)
    cases = {
        "garbage": (os.urandom(300), errno.EINVAL),
        "empty": (b"", errno.EINVAL),
        "truncated": (good[: len(good) // 2], errno.EINVAL),
        "wrong identifier": (good[:4] + b"SKH9" + good[8:], errno.EINVAL),
        "unknown column": (codec.encode_scan_request(outputs=[("x", col("Muon_ptt"))]), errno.ESRCH),
        "integer power": (codec.encode_scan_request(
            outputs=[("x", col("Muon_charge") ** col("Muon_charge"))]), errno.EDOM),
    }
    monkeypatch.setattr(codec, "VERSION", 2)
    cases["version 2"] = (codec.encode_scan_request(**VALID), errno.EPROTONOSUPPORT)
    monkeypatch.undo()
    for what, (request, want) in cases.items():
        assert scan_errno(store, request) == want, what
        assert_still_answers(store, partition, tmp_path)
    assert scan_errno(store, good, obj=BAD_OBJ) == errno.EBADMSG
    assert_still_answers(store, partition, tmp_path)
    assert store.osd_for(OBJ) == primary


def test_hostile_requests_do_not_take_the_osd_down(store, partition, tmp_path):
    # a chain of 9,000 negations: depth far beyond 256 (built by hand, the IR itself recurses)
    chain = [(Op.Column, [], "MET_pt")] + [(Op.Neg, [i], None) for i in range(9000)]
    huge = Aggregation(AggKind.Hist2D, "h", col("MET_pt"), col("MET_pt"),
                       x_axis=Axis(1_000_000, 0, 1), y_axis=Axis(1_000_000, 0, 1))
    wide = [(f"o{i}", col("Jet_pt") * i) for i in range(200)]
    # the client passes length = max_reply_bytes (formats/README.md); the class keeps to it
    cases = {
        "deep": (_raw_request(chain, [("d", 9000)]), errno.E2BIG, MAX_REPLY),
        "huge bins": (codec.encode_scan_request(aggregations=[huge]), errno.E2BIG, MAX_REPLY),
        "reply too large": (codec.encode_scan_request(outputs=wide, max_reply_bytes=64 * 1024),
                            errno.EMSGSIZE, 64 * 1024),
        "oversized request": (codec.encode_scan_request(outputs=[("x" * (2 << 20), col("MET_pt"))]),
                              errno.E2BIG, MAX_REPLY),
    }
    for what, (request, want, max_reply) in cases.items():
        assert scan_errno(store, request, max_reply=max_reply) == want, what
        assert_still_answers(store, partition, tmp_path)
    # the same wide query fits a large enough buffer
    request = codec.encode_scan_request(outputs=wide, max_reply_bytes=64 << 20)
    reply = codec.decode_scan_reply(call_scan(store, request, max_reply=64 << 20))
    assert reply.table.num_columns == 200


def test_columns_passed_through_go_out_by_reference_with_the_local_answer(store, ceph_cluster, tmp_path):
    """At 100 % the reply's large column buffers are the object store's own memory,
    sent by reference (scan.cc EncodeReply, cls_skyhook.cc): the OSD's answer equals
    the local runner's (which copies every byte), and the OSD logs the bytes it sent
    by reference (debug objclass 20)."""
    import glob
    import re

    import numpy as np
    import pyarrow as pa

    from skyhook_py.storage import checksum

    rng = np.random.default_rng(9)
    n = 120_000
    counts = rng.integers(0, 4, n)
    table = pa.table({
        "event": pa.array(np.arange(n, dtype=np.uint64)),
        "x": pa.array(rng.normal(size=n).astype(np.float32)),
        "pt": pa.ListArray.from_arrays(pa.array(np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)),
                                       pa.array(rng.exponential(30, int(counts.sum())).astype(np.float32))),
    })
    path = write_ipc(table, tmp_path / "lend.arrow", batch_rows=40_000)
    data = path.read_bytes()
    obj = "part.lend.0123456789ab.000000"
    store.write_full(obj, data, xattrs={checksum.XATTR: checksum.xattr_value(data)})
    request = codec.encode_scan_request(outputs=[("e", col("event")), ("x", col("x")), ("pt", col("pt"))])
    want = codec.decode_scan_reply(run_raw(request, path, tmp_path))

    def lent_lines():
        out = []
        for log in glob.glob(str(ceph_cluster.dir / "log" / "osd.*.log")):
            with open(log, errors="replace") as f:
                out += [int(m.group(1)) for m in re.finditer(r"reply \d+ bytes \((\d+) by reference\)", f.read())]
        return out

    ceph_cluster.ceph("tell", "osd.*", "config", "set", "debug_objclass", "20")
    try:
        before = len(lent_lines())
        for _ in range(2):   # the second call finds the object in BlueStore's cache
            got = codec.decode_scan_reply(call_scan(store, request, obj=obj, max_reply=64 << 20))
            assert_same_table(got.table, want.table)
            assert got.table.num_rows == n
    finally:
        ceph_cluster.ceph("tell", "osd.*", "config", "set", "debug_objclass", "0")
    lent = lent_lines()[before:]
    assert len(lent) == 2 and max(lent) > n * 8, lent


def test_rewritten_object_is_read_with_its_new_schema(store, tmp_path):
    """The OSD keeps parsed IPC footers between calls (ipc_partition.cc FooterCache):
    an object rewritten with another schema, or with the same schema and other values,
    must be answered from its new bytes."""
    import pyarrow as pa

    obj = "part.footer-cache.000000"
    first = write_ipc(pa.table({"a": pa.array([1.0, 2.0, 3.0]), "b": pa.array([1, 2, 3])}), tmp_path / "1.arrow")
    second = write_ipc(pa.table({"b": pa.array([7, 8, 9]), "c": pa.array([4.0, 5.0, 6.0])}), tmp_path / "2.arrow")
    third = write_ipc(pa.table({"b": pa.array([0, 1, 2]), "c": pa.array([1.5, 2.5, 3.5])}), tmp_path / "3.arrow")
    read_b = codec.encode_scan_request(outputs=[("b", col("b"))], where=col("b") > 1)
    read_a = codec.encode_scan_request(outputs=[("a", col("a"))])
    store.write_full(obj, first.read_bytes())
    assert codec.decode_scan_reply(call_scan(store, read_b, obj)).table.column("b").to_pylist() == [2, 3]
    store.write_full(obj, second.read_bytes())
    assert codec.decode_scan_reply(call_scan(store, read_b, obj)).table.column("b").to_pylist() == [7, 8, 9]
    assert scan_errno(store, read_a, obj) == errno.ESRCH  # `a` is gone with the old schema
    store.write_full(obj, third.read_bytes())   # the same footer bytes as `second`, other values
    assert codec.decode_scan_reply(call_scan(store, read_b, obj)).table.column("b").to_pylist() == [2]
