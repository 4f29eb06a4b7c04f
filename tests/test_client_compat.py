"""The client-only path (gRPC ``Client`` + records, no rados) from another Python
environment, e.g. an analysis venv with an older pyarrow than the one the object class
links: ``SKYHOOK_CLIENT_PYTHON=/path/to/venv/bin/python`` (that venv needs pyarrow,
numpy, awkward, grpcio, protobuf, flatbuffers; the repository is put on its PYTHONPATH).
Skipped when the variable is unset.

Checked by hand on 2026-12-04 with pyarrow 15.0.2 + numpy 1.26.4 (see the issue 13 note).
Oracle: uproot on the original file, in this (the test's) environment.
"""

import json
import os
import subprocess
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import uproot

from conftest import serve_coordinator

OTHER = os.environ.get("SKYHOOK_CLIENT_PYTHON")
pytestmark = [pytest.mark.cluster,
              pytest.mark.skipif(not OTHER, reason="set SKYHOOK_CLIENT_PYTHON to another venv's python")]
REPO = str(Path(__file__).resolve().parents[1])

SCRIPT = r"""
import json, sys
import pyarrow, numpy
from skyhook_py.service.client import Client
out = {"pyarrow": pyarrow.__version__, "numpy": numpy.__version__}
with Client(sys.argv[1], timeout=120) as c:
    t = c.run("ttbar", ["event", "nMuon", "Muon_pt", "Muon_eta", "MET_pt"], "nMuon >= 1").table
    out["table"] = {n: t.column(n).to_pylist() for n in ("event", "Muon_pt", "MET_pt")}
    h = c.run("ttbar", where="nMuon >= 1",
              aggregations=[{"kind": "hist1d", "name": "met", "x": "MET_pt", "bins": 10, "low": 0, "high": 200}])
    out["hist"] = [int(x) for x in h.summary.aggregates["met"].values]
    try:   # records need awkward's from_arrow, which has its own pyarrow minimum
        ev = c.to_awkward("ttbar", ["event", "nMuon", "Muon_pt", "Muon_eta", "MET_pt"], "nMuon >= 1", records=True)
        out["records"] = {"event": ev.event.to_list(), "Muon_pt": ev.Muon.pt.to_list(), "MET_pt": ev.MET.pt.to_list()}
    except Exception as e:
        out["records_error"] = str(e)
out["rados"] = "rados" in sys.modules
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def server(ceph_cluster, pool, ttbar):
    yield from serve_coordinator(ceph_cluster, pool, cache_bytes=16 << 20)


def test_client_from_another_environment(server, ttbar):
    env = dict(os.environ, PYTHONPATH=REPO)
    p = subprocess.run([OTHER, "-c", SCRIPT, server.address], capture_output=True, text=True, timeout=300,
                       env=env, cwd="/")
    assert p.returncode == 0, p.stderr
    got = json.loads(p.stdout)
    assert not got["rados"]
    exp = uproot.open(ttbar)["Events"].arrays(["event", "Muon_pt", "MET_pt"], cut="nMuon >= 1")
    for name in ("event", "Muon_pt", "MET_pt"):
        assert got["table"][name] == ak.to_list(exp[name])
    want, _ = np.histogram(ak.to_numpy(exp.MET_pt), bins=10, range=(0, 200))
    assert got["hist"] == want.tolist()
    if "records_error" in got:
        # awkward >= 2.8 converts Arrow only with pyarrow >= 17: then records need that
        assert "pyarrow" in got["records_error"]
        assert tuple(int(x) for x in got["pyarrow"].split(".")[:2]) < (17, 0)
    else:
        for name in ("event", "Muon_pt", "MET_pt"):
            assert got["records"][name] == ak.to_list(exp[name])
    print(f"client env: pyarrow {got['pyarrow']}, numpy {got['numpy']}, records "
          f"{'unavailable: ' + got['records_error'] if 'records_error' in got else 'ok'}")
