"""The wire codec: node table layout, scan parameters, reply decoding and bad bytes."""

import pyarrow as pa
import pytest

from skyhook_py.errors import QueryError
from skyhook_py.query import codec, ir
from skyhook_py._generated import skyhook_scan_generated as fb
from skyhook_py.query.ir import Op, call, col


def test_nodes_are_deduplicated_and_topologically_sorted():
    pt = col("Muon_pt")
    mask = pt > 20
    outputs = [("a", call(Op.Sum, pt[mask])), ("b", call(Op.Count, pt[mask])), ("c", pt)]
    data = codec.encode_scan_request(outputs=outputs, where=call(Op.Any, mask))
    assert data[4:8] == b"SKH1"
    r = fb.ScanRequest.GetRootAs(data, 0)
    assert r.Version() == 1
    keys = []
    for i in range(r.NodesLength()):
        n = r.Nodes(i)
        args = list(n.ArgsAsNumpy()) if n.ArgsLength() else []
        assert all(a < i for a in args), f"node {i} uses a later node {args}"
        keys.append((n.Op(), n.Name(), tuple(args), n.IntValue(), n.FloatValue()))
    assert len(keys) == len(set(keys))
    # Muon_pt, 20, >, mask, sum, count, any: seven distinct nodes
    assert r.NodesLength() == 7
    assert r.NodesLength() == len({k for k in keys})


def test_scan_parameters_round_trip():
    agg = ir.Aggregation(ir.AggKind.Count, "n")
    data = codec.encode_scan_request(outputs=[("pt", col("MET_pt"))], row_start=10, row_stop=20,
                                     limit=3, aggregations=[agg], compression="zstd",
                                     max_reply_bytes=1 << 20)
    req = codec.decode_scan_request(data)
    assert (req.row_start, req.row_stop, req.limit, req.compression, req.max_reply_bytes) == (
        10, 20, 3, "zstd", 1 << 20)
    assert req.where is None and req.version == 1
    defaults = codec.decode_scan_request(codec.encode_scan_request())
    assert (defaults.row_stop, defaults.limit, defaults.max_reply_bytes) == (-1, -1, codec.DEFAULT_MAX_REPLY)


@pytest.mark.parametrize("slice_us", [0, 5000])
def test_a_cached_request_with_a_new_deadline_is_the_request_encoded_with_it(slice_us):
    """The executor keeps encoded requests and writes each query's deadline into a copy
    (codec.with_deadline): the bytes must be those encode_scan_request gives."""
    kw = dict(outputs=[("pt", col("Muon_pt")), ("n", call(Op.Count, col("Muon_pt")))], where=col("MET_pt") > 40,
              row_start=100, row_stop=6_250, compression="zstd", max_reply_bytes=1 << 20, slice_us=slice_us)
    cached = codec.encode_scan_request(**kw, deadline_ms=1_700_000_000_000)
    for deadline in (1, 1_764_912_345_678, 2**63 - 1):
        patched = codec.with_deadline(cached, deadline)
        assert patched == codec.encode_scan_request(**kw, deadline_ms=deadline)
        assert codec.decode_scan_request(patched).deadline_ms == deadline
    with pytest.raises(ValueError, match="without a deadline"):
        codec.with_deadline(codec.encode_scan_request(**kw), 1_764_912_345_678)
    with pytest.raises(QueryError, match="deadline_ms must be"):
        codec.with_deadline(cached, 0)


def test_expression_as_deep_as_the_limit_round_trips():
    e = col("x") > 0
    for i in range(255):  # formats/README.md: at most 256 levels
        e = e & (col("x") > i)
    req = codec.decode_scan_request(codec.encode_scan_request(where=e))
    assert ir.same(req.where, e)


@pytest.mark.parametrize("kwargs, msg", [
    (dict(row_start=-1), "row range"), (dict(row_start=5, row_stop=2), "row range"),
    (dict(limit=-2), "limit"), (dict(compression="gzip"), "compression"),
    (dict(max_reply_bytes=0), "max_reply_bytes"),
])
def test_bad_parameters(kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        codec.encode_scan_request(**kwargs)


def test_reply_round_trip_with_table_figures_and_aggregates():
    table = pa.table({"x": pa.array([1.5, None], pa.float32()),
                      "l": pa.array([[1, 2], []], pa.list_(pa.int64()))})
    parts = [codec.PartialAggregate("n", ir.AggKind.Count, count=2),
             codec.PartialAggregate("h", ir.AggKind.Hist1D, count=3, sumw=[1.0, 2.0, 0.0], sumw2=[1.0, 4.0, 0.0]),
             codec.PartialAggregate("s", ir.AggKind.Sum, count=2, is_integer=True, int_value=-(2**62))]
    result = codec.ScanResult(table, {"rows_scanned": 7, "rows_matched": 2, "rows_returned": 2,
                                      "bytes_read": 100, "object_bytes": 1000, "cpu_ns": 5}, parts)
    for compression in ("none", "lz4", "zstd"):
        back = codec.decode_scan_reply(codec.encode_scan_reply(result, compression))
        assert back.table.equals(table)
        assert back.figures == result.figures
        assert back.aggregates == parts


def test_reply_with_wrong_identifier_or_garbage_is_a_protocol_error():
    good = codec.encode_scan_reply(codec.ScanResult(pa.table({"x": [1]}), {}, []))
    bad = good[:4] + b"XXXX" + good[8:]
    with pytest.raises(codec.ProtocolError, match="identifier"):
        codec.decode_scan_reply(bad)
    with pytest.raises(codec.ProtocolError):
        codec.decode_scan_reply(b"")
    with pytest.raises(codec.ProtocolError):
        codec.decode_scan_reply(good[:8] + b"\xff" * 40)


def test_truncated_or_corrupted_replies_are_protocol_errors_or_decode():
    """The reply reader checks every offset itself (decode_scan_reply reads the vtables
    directly): a truncated or corrupted reply decodes or raises ProtocolError, nothing else."""
    import random

    table = pa.table({"x": pa.array([1.5, None], pa.float32())})
    good = codec.encode_scan_reply(codec.ScanResult(
        table, {"rows_scanned": 7, "rows_matched": 2, "cpu_ns": 5},
        [codec.PartialAggregate("n", ir.AggKind.Count, count=2)]))
    back = codec.decode_scan_reply(good)
    assert back.table.equals(table) and back.figures["rows_scanned"] == 7 and back.figures["bytes_read"] == 0
    cases = [good[:n] for n in range(len(good))]
    rng = random.Random(11)
    for _ in range(400):
        b = bytearray(good)
        for _ in range(rng.randint(1, 4)):
            b[rng.randrange(8, len(b))] = rng.randrange(256)
        cases.append(bytes(b))
    for data in cases:
        try:
            codec.decode_scan_reply(data)
        except codec.ProtocolError:
            pass
