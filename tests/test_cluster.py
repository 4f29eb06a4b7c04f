"""The local cluster: lifecycle, status, cephx least privilege, the class, OSD control.

Path resolution is tested without a cluster; everything else runs against the
session's throwaway cluster (conftest.ceph_cluster) or a second small one.
"""

from __future__ import annotations

import errno
import uuid
from pathlib import Path

import pytest

from skyhook_py import paths
from skyhook_py.cluster import (
    INGEST_USER, NAMESPACE, POOL, QUERY_USER, Cluster, format_status, missing_tools,
)
from skyhook_py.errors import ClusterError, ObjectClassError


# -- paths (no cluster) ---------------------------------------------------------------

def test_conf_resolution_order(monkeypatch, tmp_path):
    monkeypatch.delenv("SKYHOOK_CLUSTER_DIR", raising=False)
    monkeypatch.delenv("SKYHOOK_CEPH_CONF", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert paths.default_cluster_dir() == tmp_path / "xdg" / "skyhook" / "cluster"
    assert paths.resolve_conf() == tmp_path / "xdg" / "skyhook" / "cluster" / "ceph.conf"
    monkeypatch.setenv("SKYHOOK_CEPH_CONF", str(tmp_path / "env.conf"))
    assert paths.resolve_conf() == tmp_path / "env.conf"
    assert paths.resolve_conf(tmp_path / "explicit.conf") == tmp_path / "explicit.conf"
    monkeypatch.setenv("SKYHOOK_CLUSTER_DIR", str(tmp_path / "mine"))
    assert paths.default_conf() == tmp_path / "mine" / "ceph.conf"


def test_status_of_a_folder_without_cluster(tmp_path):
    st = Cluster(tmp_path / "nothing").status()
    assert st["created"] is False and st["mon"] == "down"
    assert "not created" in format_status(st)


def test_up_refuses_a_foreign_non_empty_folder(tmp_path):
    if missing_tools():
        pytest.skip("Ceph is not installed")
    (tmp_path / "precious.txt").write_text("not a cluster")
    with pytest.raises(ClusterError, match="holds no skyhook cluster"):
        Cluster(tmp_path).up(osds=1)
    assert (tmp_path / "precious.txt").read_text() == "not a cluster"


# -- the session cluster --------------------------------------------------------------

def _store(cluster: Cluster, user: str, keyring=None, pool: str = POOL, namespace: str = NAMESPACE):
    from skyhook_py.storage.rados_io import Store

    return Store(str(cluster.conf_path), pool, namespace, name=user,
                 keyring=str(keyring or cluster.keyring(user)), op_timeout=10)


def _rados_errno(exc: BaseException) -> int | None:
    """The errno librados gave, behind our ClusterError."""
    cause = exc.__cause__
    return getattr(cause, "errno", None)


@pytest.mark.cluster
def test_up_is_idempotent(ceph_cluster):
    before = ceph_cluster._daemon_pids()
    assert len(before) == 1 + len(ceph_cluster.osd_ids)
    ceph_cluster.up(osds=len(ceph_cluster.osd_ids))
    assert ceph_cluster._daemon_pids() == before


@pytest.mark.cluster
def test_status_reports_mon_osds_pool_and_conf(ceph_cluster):
    st = ceph_cluster.status()
    n = len(ceph_cluster.osd_ids)
    assert st["mon"] == "up"
    assert st["osds_up"] == st["osds_total"] == n
    assert st["pool"] == {"name": POOL, "size": min(3, n), "min_size": 1, "pg_num": 32}
    assert Path(st["conf"]) == ceph_cluster.conf_path and ceph_cluster.conf_path.is_file()
    assert st["class"] in ("loaded", "not built", "not loaded")
    text = format_status(st)
    assert str(ceph_cluster.conf_path) in text and f"{n} up of {n}" in text


@pytest.mark.cluster
def test_ports_are_pinned_in_the_conf(ceph_cluster):
    conf = ceph_cluster.conf_path.read_text()
    assert f"mon host = {ceph_cluster.mon_addr}" in conf
    assert "ms bind port min" in conf and "ms bind port max" in conf
    assert "auth client required = cephx" in conf


@pytest.mark.cluster
def test_cephx_rejects_a_client_without_the_key(ceph_cluster, tmp_path):
    from skyhook_py.storage.rados_io import _import_rados

    _import_rados()
    wrong = tmp_path / "wrong.keyring"
    # a well-formed key that the mon never issued
    wrong.write_text("[client.admin]\n\tkey = AQBzJ0Fm0DtLExAAmK1NUzMN2tIQXo7Aq5xxLw==\n")
    with pytest.raises(ClusterError, match="cannot connect"):
        _store(ceph_cluster, "client.admin", keyring=wrong)
    empty = tmp_path / "empty.keyring"
    empty.write_text("")
    with pytest.raises(ClusterError, match="cannot connect"):
        _store(ceph_cluster, "client.nobody", keyring=empty)


@pytest.mark.cluster
def test_query_key_reads_but_cannot_write(ceph_cluster):
    obj = f"part.test-{uuid.uuid4().hex[:8]}.000000000000.000000"
    with _store(ceph_cluster, INGEST_USER) as ingest, _store(ceph_cluster, QUERY_USER) as query:
        ingest.write_full(obj, b"partition bytes", {"skyhook.stats": b"{}"})
        try:
            assert query.read(obj) == b"partition bytes"
            assert query.get_xattr(obj, "skyhook.stats") == b"{}"
            with pytest.raises(ClusterError) as e:
                query.write_full(obj, b"overwritten")
            assert _rados_errno(e.value) == errno.EPERM
            with pytest.raises(ClusterError) as e:
                query.remove(obj)
            assert _rados_errno(e.value) == errno.EPERM
            assert ingest.read(obj) == b"partition bytes"
        finally:
            ingest.remove(obj)


@pytest.mark.cluster
def test_query_key_is_limited_to_partitions_and_manifests(ceph_cluster):
    other = f"notes.{uuid.uuid4().hex[:8]}"
    with _store(ceph_cluster, INGEST_USER) as ingest:
        ingest.write_full(other, b"x")
        try:
            with _store(ceph_cluster, QUERY_USER) as query:
                with pytest.raises(ClusterError) as e:
                    query.read(other)
                assert _rados_errno(e.value) == errno.EPERM
                # the `hello` class is in Ceph's default list: only an `x` cap reaches it
                with pytest.raises(ObjectClassError) as e:
                    query.execute(other, "hello", "say_hello", b"", max_reply=4096)
                assert e.value.errno == errno.EPERM
        finally:
            ingest.remove(other)
    # another namespace of the same pool is out of reach, even for a partition name
    with _store(ceph_cluster, QUERY_USER, namespace="elsewhere") as query:
        with pytest.raises((ClusterError, FileNotFoundError)) as e:
            query.read("part.x.000000000000.000000", length=1)
        assert isinstance(e.value, ClusterError) and _rados_errno(e.value) == errno.EPERM


@pytest.mark.cluster
def test_query_key_reads_the_catalogue_and_kept_versions_but_cannot_write_them(ceph_cluster):
    """The listing index (catalogue metadata) and the kept header copies share the
    ``manifest`` prefix: the query key reads them, and cannot change either."""
    from skyhook_py.storage.manifest import INDEX_OBJECT

    ds = f"capscat-{uuid.uuid4().hex[:8]}"
    copy, entry = f"manifest.{ds}@v1", b'{"version":2,"metadata":{"year":2018}}'
    with _store(ceph_cluster, INGEST_USER) as ingest:
        ingest.write_full(copy, b'{"version":1}')
        ingest.set_omap(INDEX_OBJECT, {ds: entry})
        try:
            with _store(ceph_cluster, QUERY_USER) as query:
                assert query.read(copy) == b'{"version":1}'
                assert query.get_omap(INDEX_OBJECT)[ds] == entry
                assert query.get_omap_keys(INDEX_OBJECT, [ds]) == {ds: entry}
                for write in (lambda: query.set_omap(INDEX_OBJECT, {ds: b"{}"}),
                              lambda: query.set_omap_guarded(INDEX_OBJECT, ds, entry, b"{}"),
                              lambda: query.write_full(copy, b"x"),
                              lambda: query.remove(copy)):
                    with pytest.raises(ClusterError) as e:
                        write()
                    assert _rados_errno(e.value) == errno.EPERM or "permission" in str(e.value)
            assert ingest.get_omap(INDEX_OBJECT)[ds] == entry and ingest.read(copy) == b'{"version":1}'
        finally:
            ingest.set_omap(INDEX_OBJECT, {}, remove_keys=(ds,))
            ingest.remove(copy)


@pytest.mark.cluster
def test_ingest_key_writes_but_calls_no_class(ceph_cluster):
    obj = f"part.test-{uuid.uuid4().hex[:8]}.000000000000.000000"
    with _store(ceph_cluster, INGEST_USER) as ingest:
        ingest.write_full(obj, b"abc")
        try:
            assert ingest.read(obj) == b"abc"
            ingest.set_omap(obj, {"version": b"1"})
            assert ingest.get_omap(obj) == {"version": b"1"}
            # no `x` cap: not even Ceph's default classes
            with pytest.raises(ObjectClassError) as e:
                ingest.execute(obj, "hello", "say_hello", b"", max_reply=4096)
            assert e.value.errno == errno.EPERM
            if ceph_cluster.class_state() == "loaded":
                with pytest.raises(ObjectClassError) as e:
                    ingest.execute(obj, "skyhook", "stats", b"", max_reply=4096)
                assert e.value.errno == errno.EPERM
        finally:
            ingest.remove(obj)
        assert not ingest.exists(obj)


@pytest.mark.cluster
def test_the_class_is_loaded(ceph_cluster):
    from skyhook_py.paths import class_library

    if not class_library().is_file():
        pytest.skip(f"the class is not built ({class_library()} missing; run `make build`)")
    assert ceph_cluster.class_state() == "loaded"
    missing = f"part.test-{uuid.uuid4().hex[:8]}.000000000000.000000"
    with _store(ceph_cluster, QUERY_USER) as query:
        # the query key may call `stats`: the class runs and finds no object
        with pytest.raises((FileNotFoundError, ObjectClassError)) as e:
            query.execute(missing, "skyhook", "stats", b"", max_reply=4096)
        assert getattr(e.value, "errno", None) == errno.ENOENT


@pytest.mark.cluster
def test_pool_survives_a_killed_osd(ceph_cluster, store):
    if len(ceph_cluster.osd_ids) < 2:
        pytest.skip("needs a replicated pool (SKYHOOK_TEST_OSDS >= 2)")
    store.write_full("part.kill-test.000000000000.000000", b"replicated")
    victim = ceph_cluster.osd_ids[-1]
    ceph_cluster.kill_osd(victim, wait_down=True)
    try:
        assert ceph_cluster.status()["osds"][victim] == "down"
        assert store.read("part.kill-test.000000000000.000000") == b"replicated"
    finally:
        ceph_cluster.start_osd(victim)
    assert ceph_cluster.status()["osds"][victim] == "up"


@pytest.mark.cluster
def test_a_second_cluster_is_independent(ceph_cluster, tmp_path_factory):
    """Own ports; `down` stops only its own daemons; `up` again keeps the data."""
    import tempfile

    other = Cluster(tempfile.mkdtemp(prefix="skyhook-test2-"))
    try:
        other.up(osds=1)
        assert other.mon_addr != ceph_cluster.mon_addr
        with _store(other, INGEST_USER) as s:
            s.write_full("part.persist.000000000000.000000", b"kept")
        first_pids = ceph_cluster._daemon_pids()
        other.down()
        assert other._daemon_pids() == {}
        assert other.status()["mon"] == "down"
        assert ceph_cluster._daemon_pids() == first_pids
        other.up(osds=1)  # restarts the stopped daemons on the same data
        # a lone OSD has no peers to report it: kill_osd tells the mon itself
        other.kill_osd(0, wait_down=True)
        assert other.status()["osds"] == {0: "down"}
        other.start_osd(0)
        other.wait_pool_active(POOL)
        with _store(other, INGEST_USER) as s:
            assert s.read("part.persist.000000000000.000000") == b"kept"
    finally:
        other.purge()
    assert not other.dir.exists()


@pytest.mark.cluster
def test_restart_osds_keeps_the_data(ceph_cluster, store):
    store.write_full("part.restart-test.000000000000.000000", b"survives")
    before = ceph_cluster._daemon_pids()
    ceph_cluster.restart_osds()
    after = ceph_cluster._daemon_pids()
    assert after["mon.a"] == before["mon.a"]
    assert all(after[f"osd.{i}"] != before[f"osd.{i}"] for i in ceph_cluster.osd_ids)
    assert store.read("part.restart-test.000000000000.000000") == b"survives"
