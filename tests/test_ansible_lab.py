"""The Ansible integration on a real ceph-ansible cluster (deploy/lab: upstream ceph-ansible
stable-6.0, Debian's Ceph 16.2.15, 1 mon + 1 mgr + 3 OSDs on 3 container hosts).

deploy/lab/lab-up.sh builds the lab from nothing (about 10-15 min cold on 2 busy cores);
deploy/ceph-ansible/skyhook.yml is run twice (the second run must change and restart
nothing); a real NanoAOD file is ingested on the coordinator's host and a pushed-down query
through the coordinator (TLS + token) is checked against uproot; then the class is
upgraded (a rebuilt .so) by the playbook while a client queries continuously: no query may
fail. lab-down.sh always runs (SKYHOOK_LAB_KEEP=1 leaves the lab up for debugging;
SKYHOOK_LAB_REUSE=1 uses a lab that is up already instead of building one)."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import threading
import time
from pathlib import Path

import awkward as ak
import pytest
import uproot

pytestmark = pytest.mark.ansible

REPO = Path(__file__).resolve().parents[1]
LAB_SRC = REPO / "deploy" / "lab"
LAB = Path(os.environ.get("LAB", "/var/tmp/skyhook-lab/work"))
DOCKER = "/usr/bin/docker"
COORDINATOR = "192.168.213.11:50051"
NODES = ["cl-node1", "cl-node2", "cl-node3"]
CUT = "(nMuon >= 1) & (MET_pt > 20)"
COLUMNS = ["event", "MET_pt", "Muon_pt", "Muon_eta"]
CLASS_PATH = "/usr/lib/x86_64-linux-gnu/rados-classes/libcls_skyhook.so"


def _exec(node, *cmd, timeout=120, check=True):
    r = subprocess.run([DOCKER, "exec", node, *cmd], capture_output=True, text=True, timeout=timeout)
    if check:
        assert r.returncode == 0, f"{cmd}: {r.stderr[-2000:]}"
    return r.stdout


def _osd_up_from() -> dict[int, int]:
    import json

    dump = json.loads(_exec("cl-node1", "ceph", "osd", "dump", "--format", "json"))
    return {o["osd"]: o["up_from"] for o in dump["osds"]}


def playbook(*extra, timeout=1800) -> dict:
    """Run skyhook.yml against the lab; returns {host: {"ok", "changed", "failed", ...}}."""
    import pyarrow

    env = dict(os.environ)
    env.update({
        "PATH": f"{LAB}/venv/bin:{env['PATH']}",
        "ANSIBLE_CONFIG": f"{LAB}/ca6/ansible.cfg",
        "ANSIBLE_COLLECTIONS_PATHS": f"{LAB}/collections",
        "ANSIBLE_PRIVATE_KEY_FILE": f"{LAB}/ssh/id_ed25519",
        "ANSIBLE_SSH_ARGS": "-o ControlMaster=auto -o ControlPersist=600s -o UserKnownHostsFile=/dev/null "
                            "-o StrictHostKeyChecking=no",
        "ANSIBLE_SSH_CONTROL_PATH_DIR": f"{LAB}/run/cp",
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
        "ANSIBLE_CACHE_PLUGIN_CONNECTION": f"{LAB}/run/facts",
    })
    cmd = ["ansible-playbook", "-i", f"{LAB}/inventory/hosts.ini", str(REPO / "deploy/ceph-ansible/skyhook.yml"),
           "-e", f"skyhook_repo={REPO}", "-e", f"skyhook_arrow_lib_dir={pyarrow.get_library_dirs()[0]}",
           "-e", '{"skyhook_pip_environment": {"PIP_CERT": "/etc/ssl/host-ca-bundle.crt"}}', *extra]
    t0 = time.monotonic()
    r = subprocess.run(cmd, cwd=f"{LAB}/ca6", env=env, capture_output=True, text=True, timeout=timeout)
    log = LAB / "run" / f"skyhook-playbook-{int(time.time())}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(r.stdout + r.stderr)
    assert r.returncode == 0, f"ansible-playbook failed (log {log}):\n{r.stdout[-6000:]}{r.stderr[-2000:]}"
    recap = {}
    for m in re.finditer(r"^(\S+)\s+:\s+(.*)$", r.stdout.split("PLAY RECAP")[-1], re.M):
        recap[m.group(1)] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m.group(2))}
    recap["_seconds"] = time.monotonic() - t0
    print(f"playbook {' '.join(extra)}: {recap['_seconds']:.0f} s, {recap}")
    return recap


@pytest.fixture(scope="module")
def lab():
    if os.geteuid() != 0:
        pytest.skip("the ceph-ansible lab needs root (docker, loop devices)")
    t0 = time.monotonic()
    reuse = os.environ.get("SKYHOOK_LAB_REUSE") == "1" and subprocess.run(
        [DOCKER, "exec", "cl-node1", "ceph", "health"], capture_output=True, timeout=60).returncode == 0
    try:
        if reuse:   # a lab left up by SKYHOOK_LAB_KEEP=1 or lab-up.sh: debugging the playbook
            yield {"up_seconds": 0.0}
            return
        up = subprocess.run([str(LAB_SRC / "lab-up.sh")], capture_output=True, text=True, timeout=3600)
        print(f"\nlab-up.sh: {time.monotonic() - t0:.0f} s\n" + "\n".join(
            line for line in up.stdout.splitlines() if line.startswith("==")))
        assert up.returncode == 0, up.stdout[-5000:] + up.stderr[-3000:]
        yield {"up_seconds": time.monotonic() - t0}
    finally:
        if os.environ.get("SKYHOOK_LAB_KEEP") != "1":
            # the images too, unless SKYHOOK_LAB_KEEP_IMAGES=1 (a warm next run)
            env = dict(os.environ, RMI="0" if os.environ.get("SKYHOOK_LAB_KEEP_IMAGES") == "1" else "1")
            down = subprocess.run([str(LAB_SRC / "lab-down.sh")], capture_output=True, text=True,
                                  timeout=600, env=env)
            print("lab-down.sh:", down.stdout[-800:], down.stderr[-800:])


@pytest.fixture(scope="module")
def deployed(lab):
    first = playbook()
    assert all(v.get("failed", 0) == 0 and v.get("unreachable", 0) == 0
               for k, v in first.items() if not k.startswith("_"))
    return first


def _client():
    from skyhook_py.service.client import Client

    token = _exec("cl-node1", "cat", "/etc/skyhook/tokens").strip()
    cert = LAB / "run" / "coordinator-tls.crt"
    cert.write_text(_exec("cl-node1", "cat", "/etc/skyhook/tls.crt"))
    return Client(COORDINATOR, token=token, tls_ca=str(cert), timeout=120)


def test_second_run_changes_and_restarts_nothing(deployed):
    before = _osd_up_from()
    pid = _exec("cl-node1", "systemctl", "show", "-p", "MainPID", "--value", "skyhook-serve").strip()
    second = playbook()
    for host, counts in second.items():
        if not host.startswith("_"):
            assert counts.get("changed", 0) == 0 and counts.get("failed", 0) == 0, (host, counts)
    assert _osd_up_from() == before, "an OSD restarted on a run that changed nothing"
    assert _exec("cl-node1", "systemctl", "show", "-p", "MainPID", "--value", "skyhook-serve").strip() == pid


def test_pool_failure_domain_and_keys(deployed):
    import json

    rule = json.loads(_exec("cl-node1", "ceph", "osd", "crush", "rule", "dump", "skyhook-replicated-host",
                            "--format", "json"))
    assert any(s.get("type") == "host" for s in rule["steps"] if s["op"].startswith("choose")), rule
    caps = _exec("cl-node1", "ceph", "auth", "get", "client.skyhook-query")
    assert "class skyhook scan" in caps and "allow rw" not in caps
    conf = _exec("cl-node1", "ceph", "config", "show", "osd.0", "osd_class_default_list")
    assert "skyhook" not in conf


def test_ingest_on_coordinator_host_and_query_equals_uproot(deployed, shared_data):
    path = shared_data / "nanoAOD_2015_CMS_Open_Data_ttbar.root"
    subprocess.run([DOCKER, "cp", str(path), "cl-node1:/root/ttbar.root"], check=True, timeout=60)
    _exec("cl-node1", "/opt/skyhook/venv/bin/skyhook", "--conf", "/etc/ceph/ceph.conf",
          "--user", "client.skyhook-ingest", "--keyring", "/etc/ceph/ceph.client.skyhook-ingest.keyring",
          "ingest", "--dataset", "ttbar", "--partition-events", "50", "/root/ttbar.root", timeout=300)
    with uproot.open(path) as f:
        expected = f["Events"].arrays(COLUMNS, cut=CUT)
    with _client() as client:
        result = client.run("ttbar", COLUMNS, CUT, use_cache=False)
    assert result.summary.partitions_pushed_down >= 1 and result.summary.partitions_fallen_back == 0
    got = ak.from_arrow(result.table)
    assert len(got) == len(expected) > 0
    for c in COLUMNS:
        assert ak.to_list(got[c]) == ak.to_list(expected[c]), c


def test_class_upgrade_while_querying(deployed, tmp_path):
    """A rebuilt .so (same code, a new build note) rolled out host by host: every OSD
    restarts, and a client querying all the while sees no failure and the same answer."""
    src = REPO / "build" / "lib" / "libcls_skyhook.so"
    new = tmp_path / "libcls_skyhook.so"
    note = tmp_path / "note"
    note.write_text(f"skyhook upgrade test build {time.time()}\n")
    subprocess.run(["objcopy", "--add-section", f".note.skyhook-build={note}", str(src), str(new)], check=True)
    new_md5 = hashlib.md5(new.read_bytes()).hexdigest()
    before = _osd_up_from()
    with _client() as client:
        want = client.run("ttbar", COLUMNS, CUT, use_cache=False).table
    stats = {"ok": 0, "failed": 0, "wrong": 0, "errors": []}
    stop = threading.Event()

    def query_loop():
        with _client() as c:
            while not stop.is_set():
                try:
                    got = c.run("ttbar", COLUMNS, CUT, use_cache=False).table
                    stats["ok" if got.equals(want) else "wrong"] += 1
                except Exception as e:  # noqa: BLE001 - counted and reported
                    stats["failed"] += 1
                    stats["errors"].append(repr(e)[:300])

    t = threading.Thread(target=query_loop, daemon=True)
    t.start()
    try:
        recap = playbook("-e", f"skyhook_class_lib={new}")
    finally:
        stop.set()
        t.join(120)
    print(f"upgrade: {recap['_seconds']:.0f} s; queries ok {stats['ok']}, failed {stats['failed']}, "
          f"wrong {stats['wrong']}; {stats['errors'][:3]}")
    after = _osd_up_from()
    assert all(after[o] > before[o] for o in before), (before, after)
    for node in NODES:
        assert _exec(node, "md5sum", CLASS_PATH).split()[0] == new_md5
    assert stats["failed"] == 0 and stats["wrong"] == 0, stats
    assert stats["ok"] >= 10
