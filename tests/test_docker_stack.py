"""The Docker stack (deploy/docker) built and run for real: up.sh installs the engine if
missing, builds the images on a debootstrap base and starts ceph (+ radosgw), SeaweedFS and
the coordinator; a query through the coordinator from the host is checked against uproot;
the benchmark runner's reduced small sweep runs against both S3 servers of the stack;
down.sh always runs and must leave no container, volume or running dockerd behind and the
host's FORWARD policy as it was.  Needs root (apt-get, dockerd); about 4 min cold.
SKYHOOK_DOCKER_KEEP_IMAGES=1 keeps the images for a warm second run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import awkward as ak
import pytest
import uproot

pytestmark = pytest.mark.docker

REPO = Path(__file__).resolve().parents[1]
DOCKER_DIR = REPO / "deploy" / "docker"
DOCKER = "/usr/bin/docker"
PORT = 18051
CUT = "(nMuon >= 1) & (MET_pt > 20)"
COLUMNS = ["event", "MET_pt", "Muon_pt", "Muon_eta"]


def _forward_policy() -> str:
    if not shutil.which("iptables"):
        return "ACCEPT"   # no iptables at all: nothing filters forwarding
    out = subprocess.run(["iptables", "-S", "FORWARD"], capture_output=True, text=True).stdout
    return out.split()[2] if out.startswith("-P FORWARD") else "?"


def _compose(*args, timeout=600, env=None):
    return subprocess.run(["docker-compose", "-f", str(DOCKER_DIR / "docker-compose.yml"), *args],
                          env=dict(os.environ, COMPOSE_PROJECT_NAME="skyhook", **(env or {})),
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def stack(request):
    if os.geteuid() != 0:
        pytest.skip("the Docker stack needs root (apt-get install docker.io, dockerd)")
    policy_before = _forward_policy()
    engine_was_running = subprocess.run([DOCKER, "info"], capture_output=True).returncode == 0 \
        if Path(DOCKER).exists() else False
    env = dict(os.environ, KEEP_IMAGES=os.environ.get("SKYHOOK_DOCKER_KEEP_IMAGES", "0"))
    t0 = time.monotonic()
    try:
        up = subprocess.run([str(DOCKER_DIR / "up.sh")], capture_output=True, text=True, timeout=1800)
        print(f"\nup.sh: {time.monotonic() - t0:.0f} s\n" + "\n".join(
            line for line in up.stdout.splitlines() if line.startswith(("[up]", "[engine]"))))
        assert up.returncode == 0, up.stdout[-4000:] + up.stderr[-4000:]
        yield {"up_seconds": time.monotonic() - t0}
    finally:
        down = subprocess.run([str(DOCKER_DIR / "down.sh")], capture_output=True, text=True,
                              timeout=600, env=env)
        print("down.sh:", down.stdout[-600:], down.stderr[-600:])
        left = subprocess.run([DOCKER, "ps", "-aq", "--filter", "label=com.docker.compose.project=skyhook"],
                              capture_output=True, text=True).stdout.strip() if engine_was_running else ""
        assert not left, f"containers left behind: {left}"
        if not engine_was_running:
            assert subprocess.run(["pgrep", "-x", "dockerd"], capture_output=True).returncode != 0, \
                "dockerd still running after down.sh"
        assert _forward_policy() == policy_before, "iptables FORWARD policy not restored"


def test_query_through_the_coordinator_equals_uproot(stack, shared_data):
    from skyhook_py.service.client import Client

    path = shared_data / "nanoAOD_2015_CMS_Open_Data_ttbar.root"
    subprocess.run([DOCKER, "cp", str(path), "skyhook_ceph_1:/tmp/ttbar.root"], check=True, timeout=60)
    ingest = subprocess.run([DOCKER, "exec", "skyhook_ceph_1", "skyhook", "--user", "client.skyhook-ingest",
                             "ingest", "--dataset", "ttbar", "/tmp/ttbar.root"],
                            capture_output=True, text=True, timeout=300)
    assert ingest.returncode == 0, ingest.stderr[-2000:]
    with uproot.open(path) as f:
        expected = f["Events"].arrays(COLUMNS, cut=CUT)
    with Client(f"127.0.0.1:{PORT}", timeout=120) as client:
        result = client.run("ttbar", COLUMNS, CUT)
    assert result.summary.partitions_pushed_down >= 1 and result.summary.partitions_fallen_back == 0
    got = ak.from_arrow(result.table)
    assert len(got) == len(expected) > 0
    for c in COLUMNS:
        assert ak.to_list(got[c]) == ak.to_list(expected[c]), c


def test_benchmark_against_both_s3_servers(stack, tmp_path):
    out = tmp_path / "results"
    out.mkdir()
    run = _compose("run", "--rm", "bench", "--sweep", "small", "--osds", "1", "--sizes", "10000",
                   "--selectivities", "0.01,1", "--columns", "1,10", "--repeats", "1",
                   "--systems", "skyhook,s3-parquet,s3-seaweedfs,uproot",
                   env={"SKYHOOK_BENCH_RESULTS": str(out)}, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["notes"] == []
    assert len(results["points"]) == 4
    for point in results["points"]:
        assert point.get("error") is None, point
        for system in ("skyhook", "s3-parquet", "s3-seaweedfs", "uproot"):
            assert point["check"][system] == "ok", (system, point["check"])
            assert point["results"][system]["seconds"]["median"] > 0
    assert "radosgw" in results["systems"]["s3-parquet"]["label"]
    assert "SeaweedFS" in results["systems"]["s3-seaweedfs"]["label"]
