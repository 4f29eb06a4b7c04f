"""Fixtures of the whole suite: a throwaway Ceph cluster, a pool per module, a Store.

The cluster (``ceph_cluster``) is started once per session in a temporary folder
with its own ports and always stopped and deleted at the end, on failures and
Ctrl-C too (atexit is the backstop).  It is skipped only when Ceph's tools are not
installed.  Set SKYHOOK_TEST_OSDS to change the number of OSDs (default 3, so
that tests can kill one OSD of a replicated pool) and SKYHOOK_KEEP_TEST_CLUSTER=1
to keep the folder (logs) after the run.
"""

from __future__ import annotations

import atexit
import os
import signal
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from skyhook_py.cluster import Cluster, missing_tools
from skyhook_py.paths import shared_data_dir

TEST_OSDS = int(os.environ.get("SKYHOOK_TEST_OSDS", "3"))
NAMESPACE = "skyhook"


def _stop(cluster: Cluster, keep: bool):
    try:
        if keep:
            cluster.down()
        else:
            cluster.purge()
    except Exception as e:  # never hide the test outcome behind a teardown error
        print(f"\nskyhook tests: could not stop the test cluster in {cluster.dir}: {e}")


def _report(config, line: str):
    """One line on the terminal even while pytest captures output."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None:
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line("")
        reporter.write_line(line)


@pytest.fixture(scope="session")
def ceph_cluster(request) -> Cluster:
    """A running cluster (1 mon, SKYHOOK_TEST_OSDS OSDs, pool ``skyhook``, cephx users)."""
    missing = missing_tools()
    if missing:
        pytest.skip(f"Ceph is not installed (missing {', '.join(missing)}); run `make setup`")
    # a short path: admin sockets live inside and Unix socket paths are limited to 107 bytes
    cluster = Cluster(tempfile.mkdtemp(prefix="skyhook-test-"))
    keep = os.environ.get("SKYHOOK_KEEP_TEST_CLUSTER") == "1"
    stopped = []

    def stop_once():
        if not stopped:
            stopped.append(True)
            _stop(cluster, keep)

    atexit.register(stop_once)
    # pytest tears fixtures down on KeyboardInterrupt, not on SIGTERM: make one the other
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        def on_sigterm(signum, frame):
            raise KeyboardInterrupt("SIGTERM")

        signal.signal(signal.SIGTERM, on_sigterm)
    old_conf = os.environ.get("SKYHOOK_CEPH_CONF")
    try:
        t0 = time.monotonic()
        cluster.up(osds=TEST_OSDS)
        took = time.monotonic() - t0
        _report(request.config, f"test cluster: {TEST_OSDS} OSD(s) up in {took:.1f} s "
                                f"({cluster.conf_path}; class {cluster.class_state()})")
        # nothing in the tests may reach the user's own cluster by accident
        os.environ["SKYHOOK_CEPH_CONF"] = str(cluster.conf_path)
        yield cluster
    finally:
        if old_conf is None:
            os.environ.pop("SKYHOOK_CEPH_CONF", None)
        else:
            os.environ["SKYHOOK_CEPH_CONF"] = old_conf
        stop_once()


@pytest.fixture(scope="module")
def pool(ceph_cluster, request) -> str:
    """A fresh pool for this test module (replicated min(3, OSDs) times), deleted after."""
    module = request.module.__name__.rsplit(".", 1)[-1].replace("_", "-")[:40]
    name = f"t-{module}-{uuid.uuid4().hex[:6]}"
    ceph_cluster.create_pool(name)
    yield name
    try:
        ceph_cluster.delete_pool(name)
    except Exception as e:
        print(f"\nskyhook tests: could not delete pool {name}: {e}")


@pytest.fixture(scope="module")
def store(ceph_cluster, pool):
    """A rados_io.Store on the module's pool, namespace ``skyhook``, as client.admin."""
    from skyhook_py.storage.rados_io import Store

    s = Store(str(ceph_cluster.conf_path), pool, namespace=NAMESPACE,
              keyring=str(ceph_cluster.admin_keyring))
    yield s
    s.close()


@pytest.fixture(scope="module")
def session(store):
    """A Session (the in-process API) on the module's pool: the oracle of service tests
    and the way most cluster tests query."""
    from skyhook_py.session import Session

    return Session(store, store.conf)


def serve_coordinator(ceph_cluster, pool, max_in_flight=None, **coordinator_kw):
    """Yields a running gRPC coordinator (its own admin session on ``pool``, a free port)
    and stops it after: the body of the service tests' module-scoped ``server`` fixtures."""
    from skyhook_py.service.coordinator import Coordinator
    from skyhook_py.service.server import open_session, start_server

    s = open_session(ceph_cluster.conf_path, pool, user="client.admin", keyring=str(ceph_cluster.admin_keyring))
    if max_in_flight is not None:
        s.executor.max_in_flight = max_in_flight
    running = start_server(Coordinator(s, **coordinator_kw), "127.0.0.1:0")
    yield running
    running.stop(close_session=True)


TTBAR = "nanoAOD_2015_CMS_Open_Data_ttbar.root"


@pytest.fixture(scope="module")
def ttbar(session, shared_data) -> str:
    """The 2015 CMS NanoAOD ttbar file ingested as dataset ``ttbar`` (64-event partitions)
    into the module's pool; returns the original file's path, the oracle's input."""
    session.ingest([shared_data / TTBAR], "ttbar", tree="Events", partition_events=64)
    return str(shared_data / TTBAR)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data: the real test files (never copied into the repository)."""
    path = shared_data_dir()
    if not path.is_dir():
        pytest.skip(f"the shared test data is not at {path}")
    return path
