"""Hardening (issue 12) on a real cluster: no crash and no silent wrong answer on the
plain-read path, commits that never delete committed data, deadlines that hold.

Crashes are provoked in a child process (a segfault there fails the test instead of
killing the test run)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pyarrow as pa
import pytest

from skyhook_py.errors import CorruptObjectError
from skyhook_py.session import Session

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def session(store):
    return Session(store, store.conf)


def _child(ceph_cluster, pool, body: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``body`` in a fresh interpreter with ``session`` open on the test pool."""
    prelude = textwrap.dedent(f"""
        import json, sys, time
        from skyhook_py.session import Session
        session = Session.open({str(ceph_cluster.conf_path)!r}, {pool!r}, "skyhook",
                               keyring={str(ceph_cluster.admin_keyring)!r})
    """)
    return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(body)],
                          capture_output=True, text=True, timeout=timeout)


# -- item 1: the plain-read path validates what it reads -----------------------------

def _corrupt_list_offset(data: bytes, column: str) -> bytes:
    """The partition with one offset of ``column`` (a list column) made huge, in place."""
    buf = pa.py_buffer(data)
    batch = pa.ipc.open_file(buf).get_batch(0)
    offsets = batch.column(column).buffers()[1]
    width = 8 if pa.types.is_large_list(batch.column(column).type) else 4
    pos = offsets.address - buf.address + width * (len(batch) // 2)
    assert 0 < pos < len(data)
    out = bytearray(data)
    out[pos:pos + width] = (2 ** (8 * width - 2)).to_bytes(width, "little")
    return bytes(out)


@pytest.fixture(scope="module")
def corrupt_dataset(session, store, shared_data):
    session.ingest([shared_data / "uproot-HZZ.root"], "hzz_badoffset", tree="events",
                   partition_events=600)
    m = session.manifest("hzz_badoffset")
    victim = m.partitions[1].object
    bad = _corrupt_list_offset(store.read(victim), "Muon_Px")
    # the oracle: Arrow's own full validation refuses these bytes
    with pytest.raises(pa.ArrowInvalid):
        pa.ipc.open_file(pa.py_buffer(bad)).read_all().validate(full=True)
    store.write_full(victim, bad)
    return "hzz_badoffset", victim


def test_corrupt_list_offset_same_errno_on_both_paths(session, corrupt_dataset, ceph_cluster, pool):
    dataset, victim = corrupt_dataset
    # the OSD path: EBADMSG
    with pytest.raises(CorruptObjectError) as pushed:
        session.run(dataset, columns=["Muon_Px"], where="sum(Muon_Px > 10) > 0", pushdown="on")
    assert pushed.value.errno == 74
    # the plain-read path, with and without a cut, in a child (it crashed libarrow)
    for where in ("sum(Muon_Px > 10) > 0", None):
        r = _child(ceph_cluster, pool, f"""
            from skyhook_py.errors import SkyhookError
            try:
                t = session.query({dataset!r}, columns=["Muon_Px"], where={where!r}, pushdown="off")
                print(json.dumps({{"rows": t.num_rows}}))
            except SkyhookError as e:
                print(json.dumps({{"error": type(e).__name__, "errno": getattr(e, "errno", None),
                                  "message": str(e)}}))
            session.close()
        """)
        assert r.returncode == 0, (where, r.returncode, r.stderr[-2000:])
        out = json.loads(r.stdout.strip().splitlines()[-1])
        assert out.get("error") == "CorruptObjectError" and out["errno"] == 74, (where, out)
        assert victim in out["message"]
