"""Skyhook across hosts: a real 3-host cluster of network namespaces on this machine.

Each storage host is a network namespace with its own address and a tbf-shaped link
(skyhook_py.netns); the mon runs on host0, one OSD per host, a 3-copy pool with
failure domain ``host``.  The client (these tests) stays in the root namespace.

- CRUSH put the 3 copies of every partition on 3 hosts, and the bytes of a query
  really crossed the links from the hosts that hold the primaries;
- a host partitioned during a stream of queries: no query fails, every answer equals
  uproot's on the original file, each query ends within its deadline + 1 s, and the
  host's OSDs are marked down;
- a host killed during ingest and during reshard: readers only ever see whole
  versions, and the operation (or its re-run) completes;
- the plumbing works with the root namespace's iptables FORWARD policy at DROP (what a
  running dockerd sets).

The cluster is this module's own (not conftest's loopback one) and is always removed,
namespaces included.  Host 0 holds the mon, so faults are caused on hosts 1 and 2.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import warnings

import awkward as ak
import pytest
import uproot

from skyhook_py import netns
from skyhook_py import transcode as T
from skyhook_py.cluster import Cluster, missing_tools
from skyhook_py.transcode import operations

pytestmark = [pytest.mark.cluster, pytest.mark.multihost]

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TTBAR = "nanoAOD_2015_CMS_Open_Data_ttbar.root"
CUT = "(nJet >= 2) & (MET_pt > 20)"
COLUMNS = ["event", "MET_pt", "Jet_pt", "Muon_pt"]
LINK = "1gbit"


def _can_make_namespaces() -> str | None:
    if os.geteuid() != 0:
        return "needs root (ip netns)"
    for tool in ("ip", "tc", "iptables"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return None


@pytest.fixture(scope="module")
def mh_cluster():
    why = missing_tools() and f"Ceph is not installed ({missing_tools()})" or _can_make_namespaces()
    if why:
        pytest.skip(why)
    c = Cluster(tempfile.mkdtemp(prefix="skyhook-mh-"))
    prefix = netns.prefix_for(str(c.dir))
    try:
        t0 = time.monotonic()
        c.up(hosts=3, link=LINK)
        print(f"\n3-host cluster up in {time.monotonic() - t0:.1f} s ({c.conf_path})")
        yield c
    finally:
        c.purge()
    # down removed every namespace and interface it made
    assert not [n for n in netns.list_namespaces() if n.startswith(prefix)]
    assert prefix not in subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout


@pytest.fixture(scope="module")
def mh_store(mh_cluster):
    from skyhook_py.storage.rados_io import Store

    pool = f"t-mh-{uuid.uuid4().hex[:6]}"
    mh_cluster.create_pool(pool)            # size 3: one copy per host
    s = Store(str(mh_cluster.conf_path), pool, namespace="skyhook",
              keyring=str(mh_cluster.admin_keyring))
    yield s
    s.close()


@pytest.fixture(scope="module")
def ttbar(shared_data):
    path = shared_data / TTBAR
    with uproot.open(path) as f:
        expected = ak.to_list(f["Events"].arrays(COLUMNS, cut=CUT))
    return path, expected


@pytest.fixture(scope="module")
def session(mh_store, ttbar):
    from skyhook_py.session import Session

    s = Session(mh_store, mh_store.conf)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", operations.readers.IngestWarning)
        s.ingest([ttbar[0]], "ttbar", tree="Events", partition_events=25)
    return s


def _acting(cluster: Cluster, pool: str, obj: str) -> list[int]:
    m = cluster.ceph("osd", "map", pool, obj, "skyhook", fmt_json=True)
    return m["acting"]


# -- placement and bytes over the links ---------------------------------------------------

def test_layout_hosts_addresses_and_crush(mh_cluster):
    st = mh_cluster.status()
    assert st["osds_up"] == 3 and list(st["hosts"]) == ["host0", "host1", "host2"]
    tree = mh_cluster.ceph("osd", "tree", fmt_json=True)
    hosts = {n["name"]: n["children"] for n in tree["nodes"] if n["type"] == "host"}
    assert sorted(hosts) == ["host0", "host1", "host2"] and all(len(v) == 1 for v in hosts.values())
    dump = mh_cluster.ceph("osd", "dump", fmt_json=True)
    for o in dump["osds"]:   # every OSD listens on its own host's address, not loopback
        addr = o["public_addrs"]["addrvec"][0]["addr"].split(":")[0]
        assert addr == mh_cluster.host_addr(mh_cluster.host_of_osd(o["osd"]))
    # every daemon runs inside its host's namespace
    pids = mh_cluster._daemon_pids()
    net = mh_cluster.network
    for name, pid in pids.items():
        h = 0 if name.startswith("mon.") else mh_cluster.hosts.index(mh_cluster.host_of_osd(int(name[4:])))
        here = subprocess.run(["ip", "netns", "identify", str(pid)], capture_output=True, text=True).stdout
        assert here.strip() == net.netns(h), name


def test_copies_on_three_hosts_and_bytes_come_over_the_links(mh_cluster, mh_store, session, ttbar):
    m = session.manifest("ttbar")
    assert len(m.partitions) >= 6
    primaries_hosts = set()
    for p in m.partitions:
        acting = _acting(mh_cluster, mh_store.pool, p.object)
        assert len(acting) == 3
        assert len({mh_cluster.host_of_osd(o) for o in acting}) == 3, (p.object, acting)
        primaries_hosts.add(mh_cluster.host_of_osd(acting[0]))
    assert len(primaries_hosts) >= 2   # the data lives on several hosts, not one

    net = mh_cluster.network
    figures = {}
    cut, columns = "(MET_pt > 60) & (nJet >= 4)", ["event", "MET_pt"]   # selective: a few % of events
    with uproot.open(ttbar[0]) as f:
        expected = ak.to_list(f["Events"].arrays(columns, cut=cut))
    before = net.counters()
    session.manifest("ttbar")    # every query reads the manifest first: its bytes, alone
    manifest_bytes = net.counters()["client"] - before["client"]
    for pushdown in ("on", "off"):
        before = net.counters()
        r = session.run("ttbar", columns=columns, where=cut, pushdown=pushdown)
        after = net.counters()
        assert ak.to_list(ak.from_arrow(r.table)) == expected
        sent = {h: after[h] - before[h] for h in mh_cluster.hosts}
        received = after["client"] - before["client"]
        figures[pushdown] = (r.summary, sent, received)
        # what the query says it got crossed the client's link, sent by the primaries' hosts
        assert received >= r.summary.bytes_returned > 0
        for h in primaries_hosts:
            assert sent[h] > 0, (h, sent)
        assert sum(sent.values()) >= r.summary.bytes_returned
    on, off = figures["on"], figures["off"]
    print(f"\nover {LINK} links: manifest read {manifest_bytes:,} B; pushdown {on[0].bytes_returned:,} B "
          f"returned, client link {on[2]:,} B; plain read {off[0].bytes_returned:,} B, client link "
          f"{off[2]:,} B; per host (pushdown) {on[1]}")
    # beyond the manifest, pushdown moved far fewer bytes over the real link
    assert off[2] - manifest_bytes > 10 * (on[2] - manifest_bytes)


def _same_as_uproot(table, arrays, columns):
    """Every column of ``table`` equals uproot's (jagged ones: counts and values)."""
    import numpy as np

    got = ak.from_arrow(table)
    for c in columns:
        a, b = got[c], arrays[c]
        if a.ndim > 1:
            np.testing.assert_array_equal(ak.to_numpy(ak.num(a)), ak.to_numpy(ak.num(b)), err_msg=c)
            a, b = ak.flatten(a), ak.flatten(b)
        np.testing.assert_array_equal(ak.to_numpy(a), ak.to_numpy(b), err_msg=c)


def test_replies_over_slow_links_are_compressed_once_measured(mh_cluster, mh_store, tmp_path_factory):
    """Over the 1 Gbit/s links, a Session with reply_compression "auto" (the default)
    measures each OSD's large replies arriving below 150 MB/s and asks for compressed
    replies (ZSTD) from then on: fewer bytes cross the links, and the answer still equals
    uproot's."""
    from skyhook_py import demo_data
    from skyhook_py.query.reply_compression import SLOW_BYTES_PER_S, SLOW_LINK_CODEC
    from skyhook_py.session import Session

    path = demo_data.write_nanoaod(str(tmp_path_factory.mktemp("replies") / "demo.root"), events=100_000, seed=5)
    columns = ["event", "MET_pt", "Muon_pt", "Muon_eta", "Jet_pt", "Jet_eta"]
    with uproot.open(path) as f:
        expected = f["Events"].arrays(columns)
    plain = Session(mh_store, mh_store.conf, "none")
    plain.ingest([path], "replydemo", tree="Events", partition_events=25_000)
    net = mh_cluster.network
    before = net.counters()["client"]
    r_plain = plain.run("replydemo", columns=columns)
    plain_link = net.counters()["client"] - before
    _same_as_uproot(r_plain.table, expected, columns)

    auto = Session(mh_store, mh_store.conf)   # the default: auto
    first = auto.run("replydemo", columns=columns)   # no evidence yet: plain replies, measured
    rates = auto.executor.reply_compression.rates()
    assert rates and all(r < SLOW_BYTES_PER_S for r in rates.values()), rates
    assert {auto.executor.reply_compression.for_osd(o) for o in rates} == {SLOW_LINK_CODEC}
    before = net.counters()["client"]
    second = auto.run("replydemo", columns=columns)
    auto_link = net.counters()["client"] - before
    _same_as_uproot(second.table, expected, columns)
    assert first.summary.bytes_returned == r_plain.summary.bytes_returned
    # (random floats: this data compresses less than real NanoAOD)
    assert second.summary.bytes_returned < 0.9 * r_plain.summary.bytes_returned
    assert auto_link < 0.9 * plain_link
    print(f"\nover {LINK} links, {len(rates)} OSDs measured at "
          f"{', '.join(f'{r / 1e6:.0f}' for r in rates.values())} MB/s: plain replies {plain_link:,} B on the "
          f"client's link, {SLOW_LINK_CODEC} {auto_link:,} B")
    for s in (plain, auto):
        s.executor.close()   # (the module's store stays open)


# -- a partitioned host during a stream of queries -------------------------------------------

def test_partitioned_host_during_queries(mh_cluster, session, ttbar):
    deadline = 25.0
    victim = "host2"
    osds = mh_cluster.osds_on_host(victim)
    records, stop = [], threading.Event()

    def loop():
        while not stop.is_set():
            t0 = time.monotonic()
            try:
                r = session.run("ttbar", columns=COLUMNS, where=CUT, deadline=deadline)
                records.append((time.monotonic() - t0, ak.to_list(ak.from_arrow(r.table)), None))
            except Exception as e:  # counted: must be none
                records.append((time.monotonic() - t0, None, e))

    threads = [threading.Thread(target=loop) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        _wait(lambda: len(records) >= 4)
        t_cut = time.monotonic()
        n_before = len(records)
        mh_cluster.partition_host(victim)
        assert mh_cluster.status()["hosts"][victim]["partitioned"]
        mh_cluster._wait_osds(set(), set(osds), timeout=60)   # the mon marks them down
        marked_down_after = time.monotonic() - t_cut
        n_cut = len(records)
        _wait(lambda: len(records) >= n_cut + 6)   # queries go to the surviving copies
        mh_cluster.heal_host(victim)
        n_heal = len(records)
        _wait(lambda: len(records) >= n_heal + 4)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=120)
        if mh_cluster.network.partitioned(2):
            mh_cluster.heal_host(victim)
    failures = [e for _, _, e in records if e is not None]
    wrong = [i for i, (_, rows, e) in enumerate(records) if e is None and rows != ttbar[1]]
    slowest = max(s for s, _, _ in records)
    print(f"\npartition of {victim}: {len(records)} queries ({len(records) - n_before} after the cut), "
          f"OSDs {osds} marked down {marked_down_after:.1f} s after it, slowest query {slowest:.1f} s, "
          f"{len(failures)} failed, {len(wrong)} wrong")
    assert not failures, failures[:3]
    assert not wrong
    assert slowest <= deadline + 1


def test_stopped_host_is_marked_down_and_resumes(mh_cluster, session, ttbar):
    """SIGSTOP (a hung machine): with reporter subtree level = host, the two other hosts'
    reports mark its OSD down; queries answer meanwhile; SIGCONT brings it back."""
    victim = "host2"
    osds = mh_cluster.osds_on_host(victim)
    t0 = time.monotonic()
    mh_cluster.stop_host(victim)
    try:
        mh_cluster._wait_osds(set(), set(osds), timeout=60)
        took = time.monotonic() - t0
        r = session.run("ttbar", columns=COLUMNS, where=CUT, deadline=20)
        assert ak.to_list(ak.from_arrow(r.table)) == ttbar[1]
    finally:
        mh_cluster.heal_host(victim)
    print(f"\nstopped {victim}: OSDs {osds} marked down after {took:.1f} s")
    assert took < 30


# -- a host killed during ingest and during reshard ------------------------------------------

def _cli(cluster, pool, *args, fault=None):
    env = dict(os.environ, PYTHONPATH=REPO)
    env.pop("SKYHOOK_FAULT", None)
    if fault:
        env["SKYHOOK_FAULT"] = fault
    cmd = [sys.executable, "-m", "skyhook_py.transcode", "--conf", str(cluster.conf_path),
           "--keyring", str(cluster.admin_keyring), "--pool", pool, *map(str, args)]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _whole_version_reader(store, dataset, refs, seen, errors, stop):
    """Read the dataset again and again; every read must equal a whole version."""
    from test_ingest_cluster import read_dataset

    while not stop.is_set():
        try:
            m, table = read_dataset(store, dataset)
        except Exception as e:  # not committed yet, or an OSD being marked down: retry
            errors.append(e)
            time.sleep(0.05)
            continue
        ok = table.equals(refs[m.version]) if m.version in refs else False
        seen.append((m.version, ok))


@pytest.mark.parametrize("operation", ["ingest", "reshard"])
def test_host_killed_during_ingest_and_reshard(mh_cluster, mh_store, tmp_path, operation):
    """(A generated NanoAOD-like file: the ttbar file holds NaNs, which Table.equals never
    finds equal.)"""
    from skyhook_py import demo_data
    from test_ingest_cluster import compare_with_root, read_dataset

    victim = "host1"
    ds = f"killed-{operation}"
    path = demo_data.write_nanoaod(str(tmp_path / "k.root"), events=1000, seed=11)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", operations.readers.IngestWarning)
        ref_name = f"ref-{operation}"
        T.ingest(mh_store, [path], ref_name, partition_events=20)
        _, ref1 = read_dataset(mh_store, ref_name)
        compare_with_root(ref1, path, "Events")
        if operation == "reshard":
            T.ingest(mh_store, [path], ds, partition_events=20)
    refs = {1: ref1, 2: ref1}   # a reshard changes the layout, never the content
    seen, errors, stop = [], [], threading.Event()
    reader = threading.Thread(target=_whole_version_reader, args=(mh_store, ds, refs, seen, errors, stop))
    reader.start()
    try:
        args = (["ingest", path, "--dataset", ds, "--partition-events", 20]
                if operation == "ingest" else
                ["reshard", ds, "--partition-events", 45, "--compression", "zstd"])
        proc = _cli(mh_cluster, mh_store.pool, *args, fault="sleep-per-partition=0.15")
        time.sleep(1.0)                       # a few partitions are written ...
        assert proc.poll() is None
        mh_cluster.kill_host(victim)          # ... then the host loses power
        out, err = proc.communicate(timeout=180)
        first_ok = proc.returncode == 0
        if not first_ok:                      # the re-run completes
            proc = _cli(mh_cluster, mh_store.pool, *args)
            out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err.decode()[-2000:]
        m, table = read_dataset(mh_store, ds)
        assert table.equals(ref1)
        n = len(seen)
        _wait(lambda: len(seen) >= n + 2)
    finally:
        stop.set()
        reader.join(timeout=60)
        mh_cluster.heal_host(victim)
    bad = [v for v, ok in seen if not ok]
    print(f"\nhost killed during {operation}: first run {'completed' if first_ok else 'failed, re-run completed'}; "
          f"{len(seen)} whole reads, versions {sorted({v for v, _ in seen})}, {len(errors)} reads retried")
    assert seen and not bad, bad
    assert m.version == (1 if operation == "ingest" else 2)


# -- Docker's FORWARD DROP -------------------------------------------------------------------

def test_links_work_with_forward_policy_drop(mh_cluster, session, ttbar):
    """dockerd sets the root namespace's FORWARD policy to DROP; our traffic never takes
    the root namespace's forwarding path (the hosts meet on a bridge in a namespace of
    their own), so queries and replication keep working."""
    out = subprocess.run(["iptables", "-S", "FORWARD"], capture_output=True, text=True, check=True).stdout
    before = "DROP" if "-P FORWARD DROP" in out else "ACCEPT"
    subprocess.run(["iptables", "-P", "FORWARD", "DROP"], check=True)
    try:
        r = session.run("ttbar", columns=COLUMNS, where=CUT, deadline=20)
        assert ak.to_list(ak.from_arrow(r.table)) == ttbar[1]
        # replication between hosts: a write must reach all 3 copies (min_size 1 would hide it)
        mh_cluster.ceph("osd", "pool", "set", session.store.pool, "min_size", "3")
        try:
            session.store.write_full("probe.forward-drop", b"x" * 100_000)
            assert session.store.read("probe.forward-drop") == b"x" * 100_000
        finally:
            mh_cluster.ceph("osd", "pool", "set", session.store.pool, "min_size", "1")
            session.store.remove("probe.forward-drop")
    finally:
        subprocess.run(["iptables", "-P", "FORWARD", before], check=True)


def _wait(condition, timeout=120):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
