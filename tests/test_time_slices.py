"""Time slices (issue 12, poison pills; formats/README.md "Time slices").

The class stops a scan when its slice of CPU time is used up and says where to
resume; the caller sends the rest with the aggregates so far.  A sliced scan must
answer exactly what an unsliced one answers (rows, figures, aggregates bit for
bit, errors), the executor must resume transparently, and on a real OSD a client
that uses more than its share while others wait gets short slices.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from skyhook_py.errors import ObjectClassError
from skyhook_py.query import codec, slices
from skyhook_py.query.ir import AggKind, Aggregation, Axis, Op, call, col, lit

from benchmarks import malformed
from test_cls_kernel import RUNNER, ScanFailed, run_raw, write_ipc
from test_differential import queries, tables

IN_CI = os.environ.get("CI") is not None

needs_runner = pytest.mark.skipif(not RUNNER.exists(), reason=f"{RUNNER} not built yet (make build)")

# every call scans one chunk of 16 rows and stops: as many slices as possible
TINY_SLICES = ("--slice-us", "1", "--first-chunk-node-rows", "1")


def local_call(obj: Path, *options):
    """call(request) -> reply bytes, through the local runner of the class's kernel."""
    return lambda request: run_raw(request, obj, obj.parent, *options)


def answer(call, request: bytes):
    try:
        return slices.scan_to_end(call, request), 0
    except (ScanFailed, ObjectClassError) as e:
        return None, abs(e.errno)


def assert_same_answer(sliced, whole, what=""):
    (a, a_err), (b, b_err) = sliced, whole
    assert a_err == b_err, f"errno sliced {a_err}, whole {b_err}{what}"
    if a is None:
        return
    for k in ("rows_scanned", "rows_matched", "rows_returned"):
        assert a.figures[k] == b.figures[k], f"{k}: sliced {a.figures[k]}, whole {b.figures[k]}{what}"
    assert a.table.schema.equals(b.table.schema), f"{a.table.schema} != {b.table.schema}{what}"
    # repr: exact floats, NaN equal to NaN, -0.0 unlike 0.0
    assert repr(a.table.to_pylist()) == repr(b.table.to_pylist()), f"rows differ{what}"
    assert repr(a.aggregates) == repr(b.aggregates), f"aggregates differ:\n{a.aggregates}\n{b.aggregates}{what}"


def float_events(n=3000, seed=7) -> pa.Table:
    """Float sums whose value depends on the order of additions (widely spread magnitudes)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n) * 10.0 ** rng.integers(-8, 9, n)
    lens = rng.integers(0, 5, n)
    offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int32)
    pt = rng.exponential(30, int(offsets[-1]))
    return pa.table({"x": x, "w": rng.uniform(0.5, 1.5, n),
                     "pt": pa.ListArray.from_arrays(pa.array(offsets), pa.array(pt))})


ORDER_SENSITIVE = dict(
    outputs=[("x", col("x")), ("n", call(Op.Count, col("pt")))],
    where=col("x") > -1e6,
    aggregations=[Aggregation(AggKind.Sum, "sx", col("x")), Aggregation(AggKind.Mean, "mx", col("x")),
                  Aggregation(AggKind.Sum, "spt", col("pt")), Aggregation(AggKind.Min, "lo", col("x")),
                  Aggregation(AggKind.Max, "hi", col("pt")), Aggregation(AggKind.Count, "c"),
                  Aggregation(AggKind.Hist1D, "h", col("pt"), weight=col("x"), x_axis=Axis(20, 0, 100)),
                  Aggregation(AggKind.Hist2D, "h2", col("pt"), col("pt") * 2, weight=col("w"),
                              x_axis=Axis(5, 0, 100), y_axis=Axis(4, 0, 200))])


@needs_runner
def test_sliced_scan_is_bit_identical_to_a_whole_one(tmp_path):
    table = float_events()
    obj = write_ipc(table, tmp_path / "p.arrow", batch_rows=1000)
    req = codec.encode_scan_request(**ORDER_SENSITIVE)
    whole = answer(local_call(obj), req)
    sliced = answer(local_call(obj, *TINY_SLICES), req)
    assert sliced[0].figures["slices"] >= 3000 // 16, sliced[0].figures
    assert "slices" not in whole[0].figures
    assert_same_answer(sliced, whole)
    # the order matters for these sums: adding the slices' partial sums would differ
    per_slice = sum(float(np.sum(table["x"].to_numpy()[i:i + 16])) for i in range(0, 3000, 16))
    assert whole[0].aggregates[0].float_value != per_slice


@needs_runner
def test_limits_and_row_ranges_survive_slicing(tmp_path):
    obj = write_ipc(float_events(), tmp_path / "p.arrow", batch_rows=700)
    for kw in (dict(limit=50), dict(limit=0), dict(row_start=333, row_stop=2222, limit=400),
               dict(row_start=1500), dict(limit=1000, where=None)):
        q = dict(ORDER_SENSITIVE) | kw
        req = codec.encode_scan_request(**q)
        assert_same_answer(answer(local_call(obj, *TINY_SLICES), req), answer(local_call(obj), req), f" {kw}")


@needs_runner
def test_errors_are_the_same_sliced_or_not(tmp_path):
    obj = write_ipc(float_events(), tmp_path / "p.arrow", batch_rows=1000)
    bad = [codec.encode_scan_request(outputs=[("y", col("nope"))]),                  # ESRCH
           codec.encode_scan_request(outputs=[("p", call(Op.Pow, lit(2), lit(-1)))]),   # EDOM
           # EDOM at the first event with a muon, rows into the scan
           codec.encode_scan_request(outputs=[("e", call(Op.Pow, lit(2), -call(Op.Count, col("pt"))))])]
    for req in bad:
        assert_same_answer(answer(local_call(obj, *TINY_SLICES), req), answer(local_call(obj), req))


@needs_runner
@given(table=tables(), q=queries(), copies=st.integers(3, 40), batch=st.sampled_from([16, 37, 100]))
@settings(max_examples=int(os.environ.get("SKYHOOK_SLICE_EXAMPLES", 60)), deadline=None, derandomize=IN_CI,
          suppress_health_check=[HealthCheck.too_slow])
def test_random_queries_sliced_equal_whole(table, q, copies, batch):
    table = pa.concat_tables([table] * copies)
    with tempfile.TemporaryDirectory() as d:
        obj = write_ipc(table, Path(d, "p.arrow"), batch)
        req = codec.encode_scan_request(outputs=q["outputs"], where=q["where"], row_start=q["row_start"],
                                        row_stop=q["row_stop"], limit=q["limit"], aggregations=q["aggregations"])
        assert_same_answer(answer(local_call(obj, *TINY_SLICES), req), answer(local_call(obj), req), f"\n{q}")


# -- the request's resume state is checked --------------------------------------------

@needs_runner
def test_resume_state_that_does_not_match_is_einval(tmp_path):
    obj = write_ipc(float_events(300), tmp_path / "p.arrow", batch_rows=100)
    first = codec.decode_scan_reply(local_call(obj, *TINY_SLICES)(codec.encode_scan_request(**ORDER_SENSITIVE)))
    assert first.resume_row == 16
    good = first.aggregates
    renamed = [dataclasses.replace(good[0], name="other")] + good[1:]
    fewer_bins = good[:6] + [dataclasses.replace(good[6], sumw=good[6].sumw[:-1])] + good[7:]
    for bad in (good[:-1], renamed, fewer_bins):
        req = codec.encode_scan_request(**ORDER_SENSITIVE, row_start=16, resume=bad)
        with pytest.raises(ScanFailed) as e:
            local_call(obj)(req)
        assert e.value.errno == errno.EINVAL, e.value


# -- through a real OSD -------------------------------------------------------------------

@pytest.mark.cluster
def test_executor_resumes_sliced_partitions(session, shared_data, monkeypatch):
    """The whole query path, through the OSDs, with partitions cut into many slices: the
    same answer as without slices.  A cut of some 7,200 nodes makes the class's first
    chunk about 145 rows (2**20 / nodes), and a 1 µs slice ends every call after it."""
    session.ingest([shared_data / "uproot-HZZ.root"], "hzz_slices", tree="events", partition_events=1000)
    terms = [f"MET_px * {k}" for k in range(1, 2401)]   # ~7,200 distinct nodes, balanced
    while len(terms) > 1:
        terms = [f"({terms[i]} + {terms[i + 1]})" if i + 1 < len(terms) else terms[i]
                 for i in range(0, len(terms), 2)]
    long_cut = f"({terms[0]} > 2881200 * 5) & (NJet >= 1)"
    q = dict(columns=["MET_px", "Jet_Px"], where=long_cut, pushdown="on")
    whole = session.run("hzz_slices", **q)
    joined = []
    real_joined = slices.Slices.joined
    monkeypatch.setattr(slices.Slices, "joined", lambda self, last: joined.append(len(self.results) + 1)
                        or real_joined(self, last))
    monkeypatch.setattr(session.executor, "slice_us", 1)
    sliced = session.run("hzz_slices", **q)
    assert len(joined) == 3 and min(joined) >= 3, joined   # 1000, 1000, 421 rows in chunks of ~145
    assert sliced.table.num_rows > 0 and repr(sliced.table.to_pylist()) == repr(whole.table.to_pylist())
    assert sliced.summary.events_scanned == whole.summary.events_scanned == 2421


@pytest.mark.cluster
def test_a_hog_gets_short_slices_while_another_client_waits(ceph_cluster, store, pool, tmp_path):
    """One client sends long scans back to back; alone it gets the full slice (50 ms of
    CPU per call); while a second client calls the same OSD, its calls are cut to the hog
    slice (2 ms) or refused (EBUSY) when the slice cannot scan a chunk, and once it is
    alone again the resumed scan answers in full."""
    from skyhook_py.storage.rados_io import Store

    obj = "part.slices-hog.0123456789ab.000000"
    table = float_events(20000)
    store.write_full(obj, write_ipc(table, tmp_path / "p.arrow", 5000).read_bytes())
    # another client instance (the OSD tells clients apart by instance, not by key)
    hog = Store(str(ceph_cluster.conf_path), pool, namespace=store.namespace,
                keyring=str(ceph_cluster.admin_keyring))
    try:
        req = malformed.heavy_request("x", terms=512)

        def slice_cpu(n):
            """CPU ms of each call answered in part; EBUSY answers as 0."""
            out = []
            for _ in range(n):
                try:
                    r = codec.decode_scan_reply(hog.execute(obj, "skyhook", "scan", req, 8 << 20))
                except ObjectClassError as e:
                    assert e.errno == errno.EBUSY, e
                    out.append(0.0)
                    continue
                if r.resume_row >= 0:
                    out.append(r.figures["cpu_ns"] / 1e6)
            return out

        time.sleep(1.5)   # earlier tests' class calls are more than a second old: alone
        alone = slice_cpu(8)
        stop = threading.Event()

        def other_client():
            small = codec.encode_scan_request(aggregations=[Aggregation(AggKind.Count, "c")], where=col("x") > 0)
            while not stop.is_set():
                store.execute(obj, "skyhook", "scan", small, 1 << 20)
                time.sleep(0.002)

        t = threading.Thread(target=other_client, daemon=True)
        t.start()
        try:
            time.sleep(0.5)
            contended = slice_cpu(30)
        finally:
            stop.set()
            t.join(timeout=30)
        assert len(alone) == 8 and len(contended) == 30, (alone, contended)
        # CPU time of the calls (not wall time): the slice the OSD gave each call
        assert statistics.median(alone) >= 40 and 0.0 not in alone, alone
        assert statistics.median(contended) <= 15, contended
        time.sleep(1.5)   # the other client's calls are more than a second old: alone again
        whole = slices.scan_to_end(lambda r: hog.execute(obj, "skyhook", "scan", r, 8 << 20), req)
        assert whole.figures["slices"] > 1 and whole.figures["rows_scanned"] == 20000
    finally:
        hog.close()
