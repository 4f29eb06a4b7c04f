"""Inputs that must never crash the object class: partitions of every encoding, valid
requests of every kind, malformed requests (mutated, truncated, random) and corrupted
partitions (the corruption generator of tests/test_corruption_cluster.py).

Shared by the sanitizer run (benchmarks/sanitize_corpus.py), the fuzzer's seed corpus
(scripts/fuzz.sh) and the reliability suite (benchmarks/reliability.py).  Nothing here
talks to Ceph.
"""

from __future__ import annotations

import random
import struct
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from skyhook_py.query import codec
from skyhook_py.query.ir import AggKind, Aggregation, Axis, Op, call, col, lit

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT / "tests") not in sys.path:
    sys.path.insert(0, str(ROOT / "tests"))

from test_corruption_cluster import _corrupt as corrupt_kind  # noqa: E402  (the tests' generator)

CORRUPTIONS = ("flip", "zero", "footer", "truncate", "append")


def table(rows: int = 3000, seed: int = 0) -> pa.Table:
    """Columns of every kind a partition holds: floats, ints, uint64 >= 2**63, bools,
    collections of floats and ints."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, 6, rows)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    n = int(offsets[-1])
    return pa.table({
        "x": rng.normal(50, 30, rows),
        "f": rng.normal(0, 1, rows).astype(np.float32),
        "n": rng.integers(-100, 100, rows).astype(np.int32),
        "i8": rng.integers(-128, 128, rows).astype(np.int8),
        "u": (rng.integers(0, 2**62, rows).astype(np.uint64) * np.uint64(4)) | np.uint64(1),
        "b": rng.random(rows) < 0.5,
        "jets": pa.ListArray.from_arrays(pa.array(offsets), pa.array(rng.exponential(30, n).astype(np.float32))),
        "ids": pa.ListArray.from_arrays(pa.array(offsets), pa.array(rng.integers(-5, 5, n))),
    })


ENCODINGS = (("arrow", None), ("arrow", "lz4"), ("arrow", "zstd"), ("parquet", None))


def write_partition(t: pa.Table, path: Path, fmt: str, compression: str | None,
                    batch_rows: int = 1000) -> Path:
    if fmt == "parquet":
        pq.write_table(t, path, row_group_size=batch_rows, compression="none")
        return path
    opts = pa.ipc.IpcWriteOptions(compression=compression)
    with pa.OSFile(str(path), "wb") as f, pa.ipc.new_file(f, t.schema, options=opts) as w:
        for b in t.to_batches(max_chunksize=batch_rows):
            w.write_batch(b)
    return path


def partitions(folder: Path, rows: int = 3000) -> list[Path]:
    """One partition per encoding of table(rows) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    t = table(rows)
    return [write_partition(t, folder / f"part_{fmt}_{c or 'none'}.{'parquet' if fmt == 'parquet' else 'arrow'}",
                            fmt, c) for fmt, c in ENCODINGS]


def valid_requests() -> list[bytes]:
    """Requests of every kind over table(): outputs, cuts, list operations, aggregations."""
    x, f, n, u, jets, ids = col("x"), col("f"), col("n"), col("u"), col("jets"), col("ids")
    hist = lambda name, e, bins=20: Aggregation(AggKind.Hist1D, name, e, x_axis=Axis(bins, 0, 100))  # noqa: E731
    reqs = [
        dict(outputs=[("x", x)]),
        dict(outputs=[("x", x), ("jets", jets)], where=x > lit(60.0)),
        dict(outputs=[("s", x * lit(2.0) + f)], where=(n > lit(0)) & (x < lit(80.0)), limit=50),
        dict(outputs=[("c", call(Op.Count, jets)), ("m", call(Op.Max, jets))], where=call(Op.Any, jets > lit(40.0))),
        dict(outputs=[("j", call(Op.Mask, jets, jets > lit(20.0)))]),
        dict(outputs=[("first", call(Op.First, ids)), ("i", call(Op.Index, jets, index=1))]),
        dict(outputs=[("w", call(Op.Where, x > lit(50.0), x, f))]),
        dict(outputs=[("t", call(Op.Sqrt, call(Op.Abs, x))), ("h", call(Op.Hypot, x, f))]),
        dict(outputs=[("u", u)], where=u > lit(2**61), row_start=100, row_stop=900),
        dict(outputs=[("b", col("b")), ("i8", col("i8") + lit(1))], compression="lz4"),
        dict(outputs=[("x", x)], compression="zstd", max_reply_bytes=4096),
        dict(aggregations=[Aggregation(AggKind.Count, "n"), Aggregation(AggKind.Sum, "s", x),
                           Aggregation(AggKind.Min, "lo", u), Aggregation(AggKind.Max, "hi", u),
                           Aggregation(AggKind.Mean, "m", jets)], where=x > lit(10.0)),
        dict(aggregations=[hist("h", jets), hist("hx", x, 5)]),
        dict(aggregations=[Aggregation(AggKind.Hist2D, "h2", x, y=jets, weight=jets,
                                       x_axis=Axis(10, 0, 100), y_axis=Axis(10, 0, 100))]),
        dict(aggregations=[Aggregation(AggKind.Hist1D, "w", jets, weight=call(Op.Exp, f),
                                       x_axis=Axis(3, -1e300, 1e300))]),
        dict(outputs=[("p", call(Op.Pow, n, lit(3))), ("d", n / lit(0))]),
        dict(outputs=[("x", x)], deadline_ms=2**53),
    ]
    return [codec.encode_scan_request(**r) for r in reqs]


def _mutate(req: bytes, rng: random.Random) -> bytes:
    b = bytearray(req)
    how = rng.randrange(9)
    if how == 0:      # bit flips
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
    elif how == 1:    # random bytes overwritten
        for _ in range(rng.randint(1, 16)):
            b[rng.randrange(len(b))] = rng.randrange(256)
    elif how == 2:    # truncated
        b = b[:rng.randrange(len(b))]
    elif how == 3:    # junk appended
        b += bytes(rng.randrange(256) for _ in range(rng.randint(1, 256)))
    elif how == 4:    # a 32-bit field set to an extreme (offsets, lengths, indices)
        i = rng.randrange(0, max(1, len(b) - 4)) & ~3
        b[i:i + 4] = struct.pack("<I", rng.choice([0, 1, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, len(b)]))
    elif how == 5:    # a 64-bit field set to an extreme (literals, row ranges, axes)
        i = rng.randrange(0, max(1, len(b) - 8)) & ~7
        b[i:i + 8] = struct.pack("<Q", rng.choice([0, 2**63 - 1, 2**63, 2**64 - 1, 0x7FF0000000000000,
                                                  0x7FF8000000000001, 0xFFF0000000000000]))
    elif how == 6:    # a range duplicated (shared subtrees, cycles in offsets)
        i = rng.randrange(len(b))
        j = rng.randrange(i, min(len(b), i + 64) + 1)
        k = rng.randrange(len(b))
        b[k:k] = b[i:j]
    elif how == 7:    # random bytes behind the right identifier
        b = b[:8] + bytes(rng.randrange(256) for _ in range(rng.randint(0, 2000)))
    else:             # nothing of a request at all
        b = bytearray(rng.randrange(256) for _ in range(rng.randint(0, 600)))
    return bytes(b)


def heavy_request(column: str = "x", terms: int = 2048, **kw) -> bytes:
    """A valid request far costlier than a partition needs (issue 12's poison pill):
    ``terms`` sines of ``column`` summed in a balanced tree (2,048: about 8,000 distinct
    nodes, depth 12).  ``kw``: more encode_scan_request arguments (e.g. deadline_ms)."""
    ts = [call(Op.Sin, col(column) + lit(float(i))) for i in range(terms)]
    while len(ts) > 1:
        ts = [ts[i] + ts[i + 1] if i + 1 < len(ts) else ts[i] for i in range(0, len(ts), 2)]
    return codec.encode_scan_request(aggregations=[Aggregation(AggKind.Sum, "s", ts[0])], **kw)


def malformed_requests(n: int, seed: int = 0) -> list[bytes]:
    """``n`` malformed requests: mutations of valid_requests() (many still decode, most
    must be refused), plus hostile but well-formed ones (huge histograms, deep trees)."""
    rng = random.Random(seed)
    base = valid_requests()
    hostile = [
        codec.encode_scan_request(aggregations=[Aggregation(AggKind.Hist1D, f"h{i}", col("x"),
                                                            x_axis=Axis(1_000_000, 0, 1)) for i in range(16)]),
        codec.encode_scan_request(outputs=[("x", col("nope"))]),
        codec.encode_scan_request(outputs=[("x", col("x"))], row_start=10**12, row_stop=10**12 + 5),
    ]
    deep = col("x")
    for i in range(200):
        deep = deep + lit(float(i))
    hostile.append(codec.encode_scan_request(outputs=[("d", deep)]))
    out = list(hostile)
    while len(out) < n:
        out.append(_mutate(rng.choice(base), rng))
    return out[:n]


def corrupted(data: bytes, rng: random.Random, kind: str) -> bytes:
    """``data`` corrupted one way: the tests' flip/zero/footer, or truncated, or extended."""
    if kind in ("flip", "zero", "footer"):
        return corrupt_kind(data, rng, kind)
    if kind == "truncate":
        return data[:rng.randrange(len(data))]
    return data + bytes(rng.randrange(256) for _ in range(rng.randint(1, 4096)))
