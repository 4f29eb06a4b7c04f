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


# -- item 4: an ambiguous commit never deletes committed data ----------------------------

def _zmumu_m(shared_data):
    import uproot

    return uproot.open(shared_data / "uproot-Zmumu.root")["events"]["M"].array(library="np")


def _inject(monkeypatch, store, method, *, after: bool, when=lambda *a: True):
    """``store.method`` raises a librados-like timeout before or after the real call."""
    from skyhook_py.errors import ClusterError

    real = getattr(store, method)

    def wrapped(*args, **kw):
        if not when(*args):
            return real(*args, **kw)
        if after:
            real(*args, **kw)
        raise ClusterError(f"injected: timed out on {args[0]!r} ({'after' if after else 'before'} the call)")

    monkeypatch.setattr(store, method, wrapped)


def _check_zmumu(session, dataset, shared_data):
    import numpy as np

    t = session.query(dataset, columns=["M"], pushdown="on")
    np.testing.assert_array_equal(t.column("M").to_numpy(), _zmumu_m(shared_data))


def _is_index(obj, *rest):
    from skyhook_py.storage.manifest import INDEX_OBJECT

    return obj == INDEX_OBJECT


def test_index_update_failure_keeps_committed_ingest(session, store, shared_data, monkeypatch):
    _inject(monkeypatch, store, "set_omap", after=False, when=_is_index)
    with pytest.warns(UserWarning, match="committed as version"):
        session.ingest([shared_data / "uproot-Zmumu.root"], "c_index", tree="events",
                       partition_events=500)
    monkeypatch.undo()
    _check_zmumu(session, "c_index", shared_data)


def test_manifest_replace_applied_then_timed_out_keeps_ingest(session, store, shared_data, monkeypatch):
    _inject(monkeypatch, store, "replace_guarded", after=True)
    session.ingest([shared_data / "uproot-Zmumu.root"], "c_applied", tree="events",
                   partition_events=500)
    monkeypatch.undo()
    assert "c_applied" in session.datasets()   # the index update was made after the re-read
    _check_zmumu(session, "c_applied", shared_data)


def test_reshard_index_failure_keeps_every_partition(session, store, shared_data, monkeypatch):
    session.ingest([shared_data / "uproot-Zmumu.root"], "c_reshard", tree="events",
                   partition_events=500)
    _inject(monkeypatch, store, "set_omap", after=False, when=_is_index)
    with pytest.warns(UserWarning, match="committed as version 2"):
        session.reshard("c_reshard", partition_events=700)
    monkeypatch.undo()
    m = session.manifest("c_reshard")
    assert m.version == 2 and all(store.exists(p.object) for p in m.partitions)
    _check_zmumu(session, "c_reshard", shared_data)


def test_replace_timed_out_before_apply_keeps_partitions_for_gc(session, store, shared_data, monkeypatch):
    from skyhook_py.errors import ClusterError
    from skyhook_py.transcode import operations

    session.ingest([shared_data / "uproot-Zmumu.root"], "c_before", tree="events",
                   partition_events=500)
    old = session.manifest("c_before")
    _inject(monkeypatch, store, "replace_guarded", after=False)
    with pytest.raises(ClusterError, match="partitions were kept"):
        session.reshard("c_before", partition_events=700)
    monkeypatch.undo()
    assert session.manifest("c_before").version == old.version
    # the new writer's partitions are still there (the replace might yet be applied)...
    extra = set(operations._dataset_partitions(store, "c_before")) - {p.object for p in old.partitions}
    assert extra
    # ...and gc removes them once the operator knows it did not happen
    assert set(operations.gc(store, "c_before")) == extra
    _check_zmumu(session, "c_before", shared_data)


def test_lost_race_still_discards(session, store, shared_data, monkeypatch):
    from skyhook_py.errors import ConcurrentUpdateError
    from skyhook_py.transcode import operations

    session.ingest([shared_data / "uproot-Zmumu.root"], "c_race", tree="events",
                   partition_events=500)
    old = session.manifest("c_race")
    real = store.replace_guarded

    def stale(obj, data, key, expected, new):   # another writer commits first
        real(obj, old.to_json(), key, expected, str(int(expected) + 1))
        return real(obj, data, key, expected, new)

    monkeypatch.setattr(store, "replace_guarded", stale)
    with pytest.raises(ConcurrentUpdateError):
        session.reshard("c_race", partition_events=700)
    monkeypatch.undo()
    left = set(operations._dataset_partitions(store, "c_race")) - {p.object for p in old.partitions}
    assert not left
