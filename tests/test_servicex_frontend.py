"""The unmodified ``servicex`` 3.x client's ``deliver()`` against Skyhook's ServiceX front
end (skyhook_py/service/servicex.py), with results on Ceph's own radosgw.

A servicex.yaml points the client at the front end; the client submits FuncADL_Uproot
(qastle) and UprootRaw queries over HTTP, polls status and results, and downloads the
Parquet files from the S3 bucket named after the request.  Oracle: uproot on the
original file.
"""

import os

import awkward as ak
import pytest
import uproot


servicex = pytest.importorskip("servicex")
pytestmark = pytest.mark.cluster

TTBAR = "nanoAOD_2015_CMS_Open_Data_ttbar.root"
ACCESS, SECRET = "skyhook-sx", "skyhook-sx-secret"


@pytest.fixture(scope="module")
def frontend(ceph_cluster, session, ttbar):
    from benchmarks.s3 import RadosGateway
    from skyhook_py.service.servicex import ServiceXFrontend, serve

    with RadosGateway(ceph_cluster) as gw:
        gw.create_user(ACCESS, SECRET, uid="skyhook-sx")
        running = serve(ServiceXFrontend(session, gw.endpoint, ACCESS, SECRET), "127.0.0.1:0")
        try:
            yield running
        finally:
            running.stop()


@pytest.fixture()
def config(frontend, tmp_path, monkeypatch):
    monkeypatch.delenv("BEARER_TOKEN_FILE", raising=False)
    cfg = tmp_path / "servicex.yaml"
    cfg.write_text(f"api_endpoints:\n  - name: skyhook\n    endpoint: {frontend.url}\n    token: ''\n"
                   f"default_endpoint: skyhook\ncache_path: {tmp_path / 'cache'}\n")
    return str(cfg)


def _deliver(config, name, query):
    from servicex import dataset, deliver

    spec = {"General": {"OutputFormat": "parquet"},
            "Sample": [{"Name": name, "Dataset": dataset.FileList(["skyhook://ttbar"]), "Query": query}]}
    files = deliver(spec, config_path=config, progress_bar="none")
    assert list(files) == [name]
    paths = list(files[name])
    assert len(paths) == 1 and os.path.exists(paths[0]) and paths[0].endswith(".parquet")
    return ak.from_parquet(paths[0])


def test_deliver_funcadl_uproot(config, ttbar):
    from servicex import query

    q = query.FuncADL_Uproot().FromTree("Events") \
        .Where(lambda e: e.nMuon >= 1) \
        .Select(lambda e: {"pt": e.Muon_pt, "met": e.MET_pt})
    got = _deliver(config, "funcadl", q)
    exp = uproot.open(ttbar)["Events"].arrays(["Muon_pt", "MET_pt"], cut="nMuon >= 1")
    assert len(got) == len(exp) > 0
    assert ak.to_list(got["pt"]) == ak.to_list(exp.Muon_pt)
    assert ak.to_list(got["met"]) == ak.to_list(exp.MET_pt)


def test_deliver_uproot_raw(config, ttbar):
    from servicex import query

    q = query.UprootRaw([{"treename": "Events", "filter_name": ["Jet_pt", "nJet"], "cut": "nJet >= 4"}])
    got = _deliver(config, "raw", q)
    exp = uproot.open(ttbar)["Events"].arrays(["Jet_pt", "nJet"], cut="nJet >= 4")
    assert len(got) == len(exp) > 0
    assert ak.to_list(got["Jet_pt"]) == ak.to_list(exp.Jet_pt)
    assert ak.to_list(got["nJet"]) == ak.to_list(exp.nJet)


def test_root_output_is_refused_with_a_clear_message(config):
    from servicex import dataset, deliver, query

    q = query.UprootRaw([{"treename": "Events", "filter_name": ["nJet"]}])
    spec = {"Sample": [{"Name": "rootout", "Dataset": dataset.FileList(["skyhook://ttbar"]), "Query": q}]}
    files = deliver(spec, config_path=config, progress_bar="none")
    with pytest.raises(Exception, match="OutputFormat: parquet"):
        list(files["rootout"])


def test_bad_query_is_a_clear_error(frontend):
    import json
    import urllib.error
    import urllib.request

    body = json.dumps({"did": "skyhook://ttbar", "selection": "(call Select (call EventDataset 'x' 'Events') "
                       "(lambda (list e) (dict (list 'pt') (list (attr e 'Muon_ptt')))))", "codegen": "uproot",
                       "result-destination": "object-store", "result-format": "parquet"}).encode()
    req = urllib.request.Request(f"{frontend.url}/servicex/transformation", data=body,
                                 headers={"Content-Type": "application/json"}, method="POST")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=30)
    assert e.value.code == 400
    assert "Muon_pt" in json.loads(e.value.read())["message"]


def test_unknown_transformation_is_404(frontend):
    import urllib.error
    import urllib.request

    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(f"{frontend.url}/servicex/transformation/no-such-id", timeout=30)
    assert e.value.code == 404
