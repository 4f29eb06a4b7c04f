"""Corruption of stored partitions is detected end to end (issue 12 item 3).

Partitions carry crc32c block checksums from ingest (formats/layout.md
"Checksums"): the object class verifies the blocks it reads, the plain-read
path the whole object against the manifest.  Here objects are corrupted in place
(bit flips, zeroed ranges, flipped footer bytes, all written with write_full, so
the size and xattrs stay) and every scan, through pushdown and through a plain
read, must either fail with EBADMSG or return exactly the uncorrupted answer.
"""

from __future__ import annotations

import dataclasses
import errno
import random

import numpy as np

import pytest

from skyhook_py.errors import ObjectClassError
from skyhook_py.query.ir import AggKind, Aggregation, Axis, col
from skyhook_py.storage import checksum

pytestmark = pytest.mark.cluster

ENCODINGS = [("arrow", None), ("arrow", "lz4"), ("arrow", "zstd"), ("parquet", None)]
TRIALS = 15   # per source x encoding: 2 x 4 x 15 = 120 corrupted objects, each scanned by both paths
# NanoAOD (1,499 columns: mostly metadata, every read touches most blocks) and Zmumu
# (a few columns of 2,304 events in one partition: pushdown reads some blocks only)
SOURCES = {
    "nano": ("nano_dy.root", "Events", 20,
             dict(columns=["MET_pt", "Muon_pt"], where="MET_pt > 10"),
             dict(where="MET_pt > 10", aggregations=[
                 Aggregation(AggKind.Hist1D, "h", col("Jet_pt"), x_axis=Axis(20, 0, 200)),
                 Aggregation(AggKind.Sum, "n", col("nJet"))])),
    "zmumu": ("uproot-Zmumu.root", "events", 5000,
              dict(columns=["M", "pt1"], where="M > 80"),
              dict(where="M > 80", aggregations=[
                  Aggregation(AggKind.Hist1D, "h", col("pt1"), x_axis=Axis(20, 0, 100)),
                  Aggregation(AggKind.Sum, "q", col("Q1"))])),
}
ROWS, AGGS = SOURCES["nano"][3], SOURCES["nano"][4]


def _corrupt(data: bytes, rng: random.Random, kind: str) -> bytes:
    b = bytearray(data)
    if kind == "flip":
        for _ in range(rng.randint(1, 4)):
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
    elif kind == "zero":
        start = rng.randrange(len(b))
        stop = min(len(b), start + rng.randint(1, 512))
        if any(b[start:stop]):
            b[start:stop] = bytes(stop - start)
        else:  # already zero: flip one byte instead
            b[start] ^= 0xFF
    else:  # footer: the last 10% of the object (IPC footer / Parquet footer + magic)
        lo = max(0, len(b) - max(16, len(b) // 10))
        for _ in range(rng.randint(1, 3)):
            b[rng.randrange(lo, len(b))] ^= rng.randint(1, 255)
    assert bytes(b) != data
    return bytes(b)


def _answer(session, dataset, pushdown, rows_query=ROWS, aggs_query=AGGS):
    try:
        rows = session.run(dataset, pushdown=pushdown, **rows_query)
        aggs = session.run(dataset, pushdown=pushdown, **aggs_query)
    except ObjectClassError as e:
        return ("error", e.errno)
    return ("ok", rows.table, aggs.aggregates)


def _same(a, b) -> bool:
    """Bit-identical rows and aggregates (histograms compared bin by bin)."""
    if a[0] != "ok" or b[0] != "ok" or not a[1].equals(b[1]) or a[2].keys() != b[2].keys():
        return False
    return all(repr(a[2][k]) == repr(b[2][k]) and
               all(np.array_equal(x, y, equal_nan=True) for x, y in _arrays(a[2][k], b[2][k]))
               for k in a[2])


def _arrays(x, y):
    if dataclasses.is_dataclass(x):
        for f in dataclasses.fields(x):
            u, v = getattr(x, f.name), getattr(y, f.name)
            if isinstance(u, tuple):
                yield from zip(u, v)
            else:
                yield u, v
    else:
        yield x, y


def test_partitions_carry_checksums(session, store, shared_data):
    session.ingest([shared_data / "uproot-small-dy-withoffsets.root"], "crc_probe", tree="tree",
                   partition_events=200)
    m = session.manifest("crc_probe")
    for p in m.partitions:
        data = store.read(p.object)
        assert p.checksum["algorithm"] == "crc32c" and p.checksum["size"] == len(data)
        checksum.verify(data, p.checksum)
        assert store.get_xattr(p.object, checksum.XATTR) == checksum.xattr_value(data)


@pytest.mark.parametrize("source", sorted(SOURCES))
@pytest.mark.parametrize("format,compression", ENCODINGS)
def test_corruption_never_gives_a_silent_wrong_answer(session, store, shared_data, source, format,
                                                      compression):
    path, tree, partition_events, rows_query, aggs_query = SOURCES[source]
    dataset = f"crc_{source}_{format}_{compression or 'none'}"
    session.ingest([shared_data / path], dataset, tree=tree, partition_events=partition_events,
                   format=format, compression=compression)
    m = session.manifest(dataset)
    answer = lambda pushdown: _answer(session, dataset, pushdown, rows_query, aggs_query)  # noqa: E731
    expected = {p: answer(p) for p in ("on", "off")}
    for v in expected.values():
        assert v[0] == "ok" and v[1].num_rows > 0
    rng = random.Random(dataset)
    counts = {"EBADMSG": 0, "same answer": 0, "silent wrong": 0, "other": []}
    for trial in range(TRIALS):
        victim = m.partitions[trial % len(m.partitions)].object
        good = store.read(victim)
        kind = ("flip", "zero", "footer")[trial % 3]
        store.write_full(victim, _corrupt(good, rng, kind))
        try:
            for pushdown in ("on", "off"):
                got = answer(pushdown)
                if got[0] == "error":
                    if got[1] == errno.EBADMSG:
                        counts["EBADMSG"] += 1
                    else:
                        counts["other"].append((kind, pushdown, got[1]))
                elif _same(got, expected[pushdown]):
                    counts["same answer"] += 1
                else:
                    counts["silent wrong"] += 1
        finally:
            store.write_full(victim, good)
    print(f"{dataset}: {2 * TRIALS} scans of {TRIALS} corrupted objects: {counts}")
    assert counts["silent wrong"] == 0 and counts["other"] == []
    # the OSDs still answer the uncorrupted dataset exactly
    assert _same(answer("on"), expected["on"])


def test_partition_without_checksums_is_still_read(session, store, shared_data):
    """A partition from before checksums (no xattr, no manifest record) is read unverified."""
    session.ingest([shared_data / "uproot-small-dy-withoffsets.root"], "crc_old", tree="tree",
                   partition_events=200)
    m = session.manifest("crc_old")
    expected = {p: _answer(session, "crc_old", p) for p in ("on", "off")}
    for p in m.partitions:
        store.ioctx.rm_xattr(p.object, checksum.XATTR)
    m2 = session.manifest("crc_old")
    for p in m2.partitions:
        p.checksum = None
    for pushdown in ("on", "off"):
        assert _same(_answer(session, m2, pushdown), expected[pushdown])
