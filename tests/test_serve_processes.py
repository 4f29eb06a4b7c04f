"""Several coordinator processes on one port (skyhook_py/service/processes.py) on the
test cluster: every process answers queries (equal to uproot's), a Cancel or a status
request reaching another process than the query's is forwarded to it, a dead worker
stops the rest, and stopping leaves no process and no socket behind."""

import json
import os
import signal
import time

import awkward as ak
import pytest
import uproot

from skyhook_py.errors import QueryCancelled, SkyhookError, UnknownRequestError
from skyhook_py.query.results import Summary
from skyhook_py.service.client import Client
from skyhook_py.service.processes import serve_processes

pytestmark = pytest.mark.cluster

CUT, COLUMNS = "(nJet >= 2) & (MET_pt > 20)", ["event", "MET_pt", "Jet_pt"]
LABELS = {"serving (process 1 of 2)", "serving (process 2 of 2)"}


def start(ceph_cluster, pool, **kw):
    return serve_processes(2, "127.0.0.1:0", conf=str(ceph_cluster.conf_path), pool=pool, user="client.admin",
                           keyring=str(ceph_cluster.admin_keyring), **kw)


@pytest.fixture(scope="module")
def processes(ceph_cluster, pool, ttbar):
    with start(ceph_cluster, pool) as ps:
        yield ps
    assert ps.alive() == [] and not os.path.exists(ps.sockets)


@pytest.fixture(scope="module")
def long_dataset(session, tmp_path_factory):
    """20,000 NanoAOD-like events in 40 partitions: a query of every column runs long
    enough to be cancelled."""
    from skyhook_py import demo_data

    path = demo_data.write_nanoaod(str(tmp_path_factory.mktemp("long") / "long.root"), events=20_000, seed=4)
    session.ingest([path], "long", tree="Events", partition_events=500)
    return "long"


def clients_of_each_process(address, want=LABELS, tries=40):
    """Clients on connections of their own, by the process their connection reached."""
    by_label = {}
    for _ in range(tries):
        c = Client(address, timeout=120, own_connection=True)
        label = c.health()["message"]
        if label in by_label:
            c.close()
        else:
            by_label[label] = c
        if set(by_label) >= want:
            return by_label
    pytest.fail(f"{tries} connections reached only {sorted(by_label)}")


def test_every_process_answers_and_the_answers_equal_uproots(processes, ttbar):
    with uproot.open(ttbar) as f:
        expected = ak.to_list(f["Events"].arrays(COLUMNS, cut=CUT))
    by_label = clients_of_each_process(processes.address)
    assert set(by_label) == LABELS
    before = next(iter(by_label.values())).health()
    for c in by_label.values():
        for hit in (False, True):   # each process has a cache of its own: a miss, then a hit
            r = c.run("ttbar", columns=COLUMNS, where=CUT)
            assert ak.to_list(ak.from_arrow(r.table)) == expected
            assert r.summary.cache_hit is hit
    # Health, wherever it lands, counts the hits and misses of both processes
    for c in by_label.values():
        h = c.health()
        assert h["status"] == "SERVING" and h["processes"] == h["processes_answered"] == 2
        assert h["cache_hits"] - before["cache_hits"] == 2 and h["cache_misses"] - before["cache_misses"] == 2
        assert h["cache_entries"] >= 2   # one answer cached in each process
        c.close()


def test_cancel_and_status_reach_the_process_running_the_query(processes, long_dataset):
    by_label = clients_of_each_process(processes.address)
    runner, other = by_label.values()
    qid = "processes-cancel-1"
    stream = runner.stream(long_dataset, None, None, query_id=qid, use_cache=False)   # every column: long
    next(stream)
    assert other.status(qid)["state"] == "running"     # GetRequest, forwarded
    assert other.cancel(qid) is True                  # Cancel, forwarded
    with pytest.raises(QueryCancelled):
        for ev in stream:
            assert not isinstance(ev, Summary), "a cancelled query must not complete"
    assert other.status(qid)["state"] == "cancelled"
    assert other.cancel(qid) is False and runner.cancel(qid) is False
    with pytest.raises(UnknownRequestError, match="no request with id 'no-such-query'"):
        other.status("no-such-query")
    for c in (runner, other):
        c.close()


def test_a_dead_worker_stops_the_others(ceph_cluster, pool, ttbar):
    ps = start(ceph_cluster, pool)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        assert len(ps.alive()) == 2
        with Client(ps.address, timeout=60) as c:
            assert c.query("ttbar", columns=["event"], where=CUT).num_rows > 0
        os.kill(ps.procs[0].pid, signal.SIGKILL)
        t0 = time.monotonic()
        assert ps.serve_until_signalled() == 1   # a worker died: the rest are stopped, non-zero
        assert time.monotonic() - t0 < 30
        assert ps.alive() == [] and not os.path.exists(ps.sockets)
        with Client(ps.address, timeout=5) as c, pytest.raises(SkyhookError, match="unreachable"):
            c.health(timeout=2)
    finally:
        for s, h in handlers.items():
            signal.signal(s, h)
        ps.stop()


def test_a_worker_that_cannot_start_is_reported_and_nothing_is_left(ceph_cluster, pool):
    with pytest.raises(SkyhookError, match=r"process 1 of 2 could not start: .*no-such\.conf"):
        serve_processes(2, "127.0.0.1:0", conf="/nonexistent/no-such.conf", pool=pool)


def test_skyhook_serve_processes_with_a_token(ceph_cluster, pool, ttbar, tmp_path):
    """`skyhook serve --processes 2 --token-file`: both processes answer with the token
    (and refuse without it), a status asked of the other process is forwarded with the
    caller's token, and SIGTERM stops the supervisor with exit code 0 and no worker left."""
    import re

    from skyhook_py.errors import AuthenticationError

    tokens = tmp_path / "tokens"
    tokens.write_text("tok-procs\n")
    proc = skyhook_serve(ceph_cluster, pool, "--token-file", str(tokens))
    try:
        line = proc.stderr.readline()
        m = re.search(r"skyhook coordinator on 2 processes on (127\.0\.0\.1:\d+) .*bearer tokens required", line)
        assert m, line
        with uproot.open(ttbar) as f:
            expected = ak.to_list(f["Events"].arrays(COLUMNS, cut=CUT))
        seen = {}
        for _ in range(40):
            c = Client(m.group(1), token="tok-procs", timeout=60, own_connection=True)
            seen.setdefault(c.health()["message"], c)
            if set(seen) >= LABELS:
                break
        assert set(seen) == LABELS
        first, second = seen.values()
        first.query("ttbar", columns=COLUMNS, where=CUT, query_id="procs-token-1")
        assert second.status("procs-token-1")["state"] == "done"
        t = second.query("ttbar", columns=COLUMNS, where=CUT)
        assert ak.to_list(ak.from_arrow(t)) == expected
        with Client(m.group(1), timeout=60) as anonymous, pytest.raises(AuthenticationError):
            anonymous.query("ttbar", columns=COLUMNS, where=CUT)
        # `skyhook health` needs no token and counts both processes' misses (one each)
        health = skyhook_health(m.group(1), "--json")
        assert health.returncode == 0, health.stderr
        h = json.loads(health.stdout)
        assert h["status"] == "SERVING" and h["processes"] == h["processes_answered"] == 2
        assert h["cache_misses"] == 2 and h["cache_entries"] == 2
        assert "SERVING: serving (process" in skyhook_health(m.group(1)).stdout
        workers = children(proc.pid)
        assert len(workers) >= 2, workers
        for c in seen.values():
            c.close()
        proc.terminate()
        assert proc.wait(60) == 0
        assert_ended(workers)
        gone = skyhook_health(m.group(1), "--timeout", "2")
        assert gone.returncode not in (0, 3) and m.group(1) in gone.stderr, (gone.returncode, gone.stderr)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_workers_end_with_a_supervisor_killed_by_sigkill(ceph_cluster, pool):
    """A supervisor that cannot stop its workers (SIGKILL) leaves none serving: the kernel
    ends each with it (PR_SET_PDEATHSIG), and the last removes the private sockets."""
    import glob
    import tempfile

    socket_dirs = set(glob.glob(os.path.join(tempfile.gettempdir(), "skyhook-serve-*")))
    proc = skyhook_serve(ceph_cluster, pool)
    try:
        assert "skyhook coordinator on 2 processes on" in proc.stderr.readline()
        workers = children(proc.pid)
        assert len(workers) >= 2 and all(_running(w) for w in workers), workers
    finally:
        proc.kill()
        proc.wait()
    assert_ended(workers)
    assert set(glob.glob(os.path.join(tempfile.gettempdir(), "skyhook-serve-*"))) == socket_dirs


def skyhook_serve(ceph_cluster, pool, *args):
    """`skyhook serve --processes 2` on the module's pool as client.admin, started."""
    import subprocess
    import sys

    admin = str(ceph_cluster.admin_keyring)
    return subprocess.Popen([sys.executable, "-m", "skyhook_py.cli", "--conf", str(ceph_cluster.conf_path),
                             "--pool", pool, "serve", "--listen", "127.0.0.1:0", "--processes", "2",
                             "--as-user", "client.admin", "--as-keyring", admin, *args],
                            stderr=subprocess.PIPE, text=True)


def skyhook_health(address, *args):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "skyhook_py.cli", "health", "--server", address, *args],
                          capture_output=True, text=True, timeout=60)


def children(pid) -> list[str]:
    import subprocess

    return subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()


def assert_ended(pids, timeout=15):
    # (multiprocessing's resource tracker ends a moment after its parent)
    deadline = time.monotonic() + timeout
    while [p for p in pids if _running(p)] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [p for p in pids if _running(p)]


def _running(pid) -> bool:
    """Whether process ``pid`` exists and is not a zombie (this container's init may not
    reap the orphans it inherits)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
