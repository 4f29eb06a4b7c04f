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


def _snapshot_attempts(cluster: Cluster, user: str, keyring: Path, pool: str) -> dict[str, int | None]:
    """What ``user`` gets when it writes one object and tries a self-managed and a pool
    snapshot in ``pool``: 0 for success, else the errno."""
    from skyhook_py.storage.rados_io import _import_rados

    rados = _import_rados()
    out: dict[str, int | None] = {}
    r = rados.Rados(conffile=str(cluster.conf_path), name=user,
                    conf={"keyring": str(keyring), "rados_mon_op_timeout": "10", "rados_osd_op_timeout": "10"})
    r.connect()
    try:
        io = r.open_ioctx(pool)
        io.set_namespace(NAMESPACE)
        for what, call in (("write", lambda: io.write_full("part.snap-probe.000000000000.000000", b"x")),
                           ("self-managed snapshot", io.create_self_managed_snap),
                           ("pool snapshot", lambda: io.create_snap("by-ingest-key"))):
            try:
                call()
                out[what] = 0
            except rados.Error as e:
                out[what] = getattr(e, "errno", None) or -1
        io.close()
    finally:
        r.shutdown()
    return out


@pytest.mark.cluster
def test_ingest_key_cannot_create_snapshots(ceph_cluster, tmp_path):
    """Issue 12: a self-managed snapshot made with the ingest key switched the whole pool
    to unmanaged-snaps mode, after which an admin's `ceph osd pool mksnap` failed.  The
    ingest grant matches the pool by its tag (storage/caps.py): it still writes, its
    snapshot attempts get EPERM, and the admin's pool snapshots keep working."""
    from skyhook_py.storage.caps import ingest_caps

    tag = uuid.uuid4().hex[:6]
    mine, other, old = (f"t-snap-{k}-{tag}" for k in ("mine", "other", "old"))
    users = []
    for p in (mine, other, old):
        ceph_cluster.create_pool(p, pg_num=8)
    try:
        def user(name: str, caps: dict[str, str]) -> tuple[str, Path]:
            u, kr = f"client.t-{name}-{tag}", tmp_path / f"{name}.keyring"
            ceph_cluster.ceph("auth", "get-or-create", u, *[a for kv in caps.items() for a in kv], "-o", str(kr))
            users.append(u)
            return u, kr

        ingest = user("ingest", ingest_caps(pool=mine))
        got = _snapshot_attempts(ceph_cluster, *ingest, mine)
        assert got == {"write": 0, "self-managed snapshot": errno.EPERM, "pool snapshot": errno.EPERM}, got
        # the tag scopes the key to its own pool: another skyhook pool is out of reach
        assert _snapshot_attempts(ceph_cluster, *ingest, other)["write"] == errno.EPERM
        # the admin's pool snapshots still work on the ingest key's pool
        ceph_cluster.ceph("osd", "pool", "mksnap", mine, "admin-snap")
        ceph_cluster.ceph("osd", "pool", "rmsnap", mine, "admin-snap")
        # the check can fail: the former grant (`allow rw pool=P namespace=NS`) creates the
        # snapshot, and the admin's mksnap on that pool is refused from then on
        former = user("former", {"mon": "allow r", "osd": f"allow rw pool={old} namespace={NAMESPACE}"})
        assert _snapshot_attempts(ceph_cluster, *former, old)["self-managed snapshot"] == 0
        with pytest.raises(ClusterError, match="mksnap"):
            ceph_cluster.ceph("osd", "pool", "mksnap", old, "admin-snap")
    finally:
        for u in users:
            ceph_cluster.ceph("auth", "del", u)
        for p in (mine, other, old):
            ceph_cluster.delete_pool(p)


@pytest.mark.cluster
def test_ingest_key_runs_every_writing_operation(ceph_cluster, tmp_path):
    """The tag-matched ingest grant (storage/caps.py) is enough for everything the ingest
    path does: ingest, append, reshard, gc (lists the namespace), describe, delete."""
    from skyhook_py import demo_data
    from skyhook_py import transcode as T

    a = demo_data.write_nanoaod(str(tmp_path / "a.root"), events=600, seed=1)
    b = demo_data.write_nanoaod(str(tmp_path / "b.root"), events=400, seed=2)
    ds = f"caps-ops-{uuid.uuid4().hex[:6]}"
    with _store(ceph_cluster, INGEST_USER) as ingest:
        m1 = T.ingest(ingest, [a], ds, partition_events=250)
        assert T.append(ingest, [b], ds).version == 2
        m3 = T.reshard(ingest, ds, partition_events=500)
        assert m3.version == 3
        assert {p.object for p in m1.partitions} <= set(T.gc(ingest, ds, grace=0))
        assert T.describe(ingest, ds)["num_events"] == 1000
        assert sorted(T.delete(ingest, ds)) == sorted(p.object for p in m3.partitions)
        assert ds not in T.list_datasets(ingest)


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
