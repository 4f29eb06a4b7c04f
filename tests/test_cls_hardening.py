"""Hardening of the object class (issue 12): work nobody waits for stops, CPU and
memory are bounded by what a partition can need, and the smaller class items.

Kernel tests run the local runner (the same kernel as the OSD); the tests marked
`cluster` run the class inside a real OSD.
"""

from __future__ import annotations

import errno
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from skyhook_py.errors import ObjectClassError
from skyhook_py.query import codec
from skyhook_py.query.ir import AggKind, Aggregation, Op, call, col, lit

from test_cls_kernel import RUNNER, run_raw, scan_errno, write_ipc

pytestmark = pytest.mark.skipif(not RUNNER.exists(), reason="the class is not built")

HEAVY_ROWS = 50_000


def _heavy_request(**kw) -> bytes:
    """About 8,000 distinct nodes (2,048 sines summed in a tree of depth 12): ~2 s of CPU
    over HEAVY_ROWS rows, far more than a 400 KB partition legitimately needs."""
    terms = [call(Op.Sin, col("x") + lit(float(i))) for i in range(2048)]
    while len(terms) > 1:
        terms = [terms[i] + terms[i + 1] if i + 1 < len(terms) else terms[i]
                 for i in range(0, len(terms), 2)]
    return codec.encode_scan_request(aggregations=[Aggregation(AggKind.Sum, "s", terms[0])], **kw)


@pytest.fixture(scope="module")
def heavy(tmp_path_factory) -> Path:
    t = pa.table({"x": np.random.default_rng(1).random(HEAVY_ROWS)})
    return write_ipc(t, tmp_path_factory.mktemp("heavy") / "x.arrow", batch_rows=1000)


def _now_ms() -> int:
    return int(time.time() * 1000)


# -- item 10: CPU bounded by the partition, the caller's deadline ---------------------
def test_cpu_budget_scales_with_the_partition(heavy, tmp_path):
    req = _heavy_request()
    # 1 s + 128 ns per object byte for a 400 KB object: the request needs more
    assert scan_errno(heavy, tmp_path, req) == errno.ETIME
    # the same request within a larger budget completes: the budget stopped it, nothing else
    reply = codec.decode_scan_reply(run_raw(req, heavy, tmp_path, "--cpu-base-ms", 60_000))
    assert reply.aggregates[0].count == HEAVY_ROWS


def test_expired_deadline_is_refused_before_any_work(heavy, tmp_path):
    req = codec.encode_scan_request(outputs=[("x", col("x"))], deadline_ms=_now_ms() - 1000)
    assert scan_errno(heavy, tmp_path, req) == errno.ETIME
    ok = codec.encode_scan_request(outputs=[("x", col("x"))], deadline_ms=_now_ms() + 3_600_000)
    assert codec.decode_scan_reply(run_raw(ok, heavy, tmp_path)).table.num_rows == HEAVY_ROWS


def test_deadline_stops_work_between_batches(heavy, tmp_path):
    req = _heavy_request(deadline_ms=_now_ms() + 300)
    assert scan_errno(heavy, tmp_path, req, "--cpu-base-ms", 60_000) == errno.ETIME


def test_codec_refuses_a_bad_deadline():
    with pytest.raises(ValueError, match="deadline_ms"):
        codec.encode_scan_request(outputs=[("x", col("x"))], deadline_ms=-5)


@pytest.mark.cluster
def test_osd_refuses_and_stops_work_past_the_callers_deadline(store, heavy):
    obj = "part.hardening.0123456789ab.000000"
    store.write_full(obj, heavy.read_bytes())
    expired = codec.encode_scan_request(outputs=[("x", col("x"))], deadline_ms=_now_ms() - 1000)
    with pytest.raises(ObjectClassError) as e:
        store.execute(obj, "skyhook", "scan", expired, 8 << 20)
    assert e.value.errno == errno.ETIME
    with pytest.raises(ObjectClassError) as e:
        store.execute(obj, "skyhook", "scan", _heavy_request(deadline_ms=_now_ms() + 300), 8 << 20)
    assert e.value.errno == errno.ETIME
    # the OSD still answers
    ok = codec.encode_scan_request(outputs=[("x", col("x"))], deadline_ms=_now_ms() + 60_000)
    reply = codec.decode_scan_reply(store.execute(obj, "skyhook", "scan", ok, 8 << 20))
    assert reply.table.num_rows == HEAVY_ROWS
