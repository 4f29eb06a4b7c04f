"""The unmodified ``servicex`` 3.x client's ``deliver()`` against Skyhook's ServiceX front
end (skyhook_py/service/servicex.py), with results on Ceph's own radosgw.

A servicex.yaml points the client at the front end; the client submits FuncADL_Uproot
(qastle) and UprootRaw queries over HTTP, polls status and results, and downloads the
Parquet or ROOT files (one per kept Skyhook partition) from the S3 bucket named after the
request.  Authentication: the client's own token refresh flow.  Oracle: uproot on the
original file.
"""

import io
import os

import awkward as ak
import pytest
import uproot


servicex = pytest.importorskip("servicex")
pytestmark = pytest.mark.cluster

TTBAR = "nanoAOD_2015_CMS_Open_Data_ttbar.root"
ACCESS, SECRET = "skyhook-sx", "skyhook-sx-secret"


@pytest.fixture(scope="module")
def gateway(ceph_cluster):
    from benchmarks.s3 import RadosGateway

    with RadosGateway(ceph_cluster) as gw:
        gw.create_user(ACCESS, SECRET, uid="skyhook-sx")
        yield gw


@pytest.fixture(scope="module")
def frontend(gateway, session, ttbar):
    from skyhook_py.service.servicex import ServiceXFrontend, serve

    running = serve(ServiceXFrontend(session, gateway.endpoint, ACCESS, SECRET), "127.0.0.1:0")
    try:
        yield running
    finally:
        running.stop()


REFRESH = "skyhook-refresh-token-for-tests"


@pytest.fixture(scope="module")
def secured(gateway, session, ttbar):
    """The same front end with authentication on (one refresh token)."""
    from skyhook_py.service.servicex import ServiceXFrontend, serve

    running = serve(ServiceXFrontend(session, gateway.endpoint, ACCESS, SECRET, refresh_tokens=[REFRESH]),
                    "127.0.0.1:0")
    try:
        yield running
    finally:
        running.stop()


def _config(url, tmp_path, token=""):
    cfg = tmp_path / f"servicex-{abs(hash((url, token)))}.yaml"
    cfg.write_text(f"api_endpoints:\n  - name: skyhook\n    endpoint: {url}\n    token: '{token}'\n"
                   f"default_endpoint: skyhook\ncache_path: {tmp_path / 'cache'}\n")
    return str(cfg)


@pytest.fixture()
def config(frontend, tmp_path, monkeypatch):
    monkeypatch.delenv("BEARER_TOKEN_FILE", raising=False)
    return _config(frontend.url, tmp_path)


def _paths(config, name, query, output_format="parquet", progress_bar="none"):
    from servicex import dataset, deliver

    spec = {"Sample": [{"Name": name, "Dataset": dataset.FileList(["skyhook://ttbar"]), "Query": query}]}
    if output_format:
        spec["General"] = {"OutputFormat": output_format}
    files = deliver(spec, config_path=config, progress_bar=progress_bar)
    assert list(files) == [name]
    paths = sorted(files[name])   # named <dataset>.<file index>.events-<start>-<stop>...
    assert paths and all(os.path.exists(p) for p in paths)
    return paths


def _deliver(config, name, query):
    paths = _paths(config, name, query)
    assert all(p.endswith(".parquet") for p in paths)
    return ak.concatenate([ak.from_parquet(p) for p in paths])


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


def test_deliver_default_output_is_root_files(config, ttbar):
    """The client's default OutputFormat (root-ttree): ROOT files with a jagged branch, one
    per kept partition, whose concatenation equals uproot on the original file."""
    from servicex import query

    q = query.UprootRaw([{"treename": "Events", "filter_name": ["Muon_pt", "MET_pt", "nMuon"],
                          "cut": "nMuon >= 1"}])
    paths = _paths(config, "rootdefault", q, output_format=None)
    assert all(p.endswith(".root") for p in paths)
    exp = uproot.open(ttbar)["Events"].arrays(["Muon_pt", "MET_pt", "nMuon"], cut="nMuon >= 1")
    assert len(paths) > 1   # 64-event partitions: several files
    got = ak.concatenate([uproot.open(p)["servicex"].arrays(["Muon_pt", "MET_pt", "nMuon"]) for p in paths])
    assert len(got) == len(exp) > 0
    for name in ("Muon_pt", "MET_pt", "nMuon"):
        assert ak.to_list(got[name]) == ak.to_list(exp[name])
    # the jagged branch really is jagged in the file (with uproot's counter)
    assert uproot.open(paths[0])["servicex"]["Muon_pt"].interpretation.__class__.__name__ == "AsJagged"


def test_one_file_per_kept_partition_written_progressively(frontend, config, ttbar):
    """Several files per request, each in the bucket before the request finished; the
    status counts them as the client's progress bars read them."""
    from servicex import query

    q = query.UprootRaw([{"treename": "Events", "filter_name": ["nJet"]}])
    paths = _paths(config, "progress", q, progress_bar="expanded")   # the client's rich progress bars
    entries = uproot.open(ttbar)["Events"].num_entries
    assert len(paths) == -(-entries // 64)   # every partition kept: no cut
    st = [_get(frontend, f"/servicex/transformation/{rid}") for rid in _request_ids(frontend)]
    st = [s for s in st if s["title"] == "progress"][-1]
    assert st["files"] == st["files-completed"] == len(paths) and st["files-failed"] == 0
    res = _get(frontend, f"/servicex/transformation/{st['request_id']}/results")["results"]
    created = sorted(r["created_at"] for r in res)
    assert len(created) == len(paths) and created[0] < st["finish-time"].replace("+00:00", "")
    # later_than: only the files written since
    later = _get(frontend, f"/servicex/transformation/{st['request_id']}/results?later_than={created[-1]}")
    assert [r["created_at"] for r in later["results"]] == [created[-1]]
    # the log URL the client would print: our plain-text log of the request
    from servicex.app.transforms import LogLevel, TimeFrame, create_kibana_link_parameters

    link = create_kibana_link_parameters(st["log-url"], st["request_id"], LogLevel.error, TimeFrame.month)
    log = _get_text(link)   # the link the client prints on a failure, Kibana parameters and all
    assert log.count("file ") == len(paths) and "complete" in log


def _get(frontend, path, headers=None):
    import json
    import urllib.request

    req = urllib.request.Request(f"{frontend.url}{path}", headers=headers or {})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def _get_text(url):
    import urllib.request

    with urllib.request.urlopen(url, timeout=30) as r:
        return r.read().decode()


def _request_ids(frontend):
    return [s["request_id"] for s in _get(frontend, "/servicex/transformation")["requests"]]


def test_datasets_listed_as_the_client_reads_them(frontend, config, ttbar):
    import asyncio

    from servicex.servicex_adapter import ServiceXAdapter

    sx = ServiceXAdapter(frontend.url)
    found = {d.name: d for d in asyncio.run(sx.get_datasets())}
    entries = uproot.open(ttbar)["Events"].num_entries
    d = found["skyhook://ttbar"]
    assert d.events == entries and d.n_files == -(-entries // 64) and d.lookup_status == "complete"
    one = asyncio.run(sx.get_dataset(d.id))
    assert one.name == "skyhook://ttbar" and len(one.files) == d.n_files
    assert sum(f.file_events for f in one.files) == entries
    with pytest.raises(ValueError, match="not found"):
        asyncio.run(sx.get_dataset(12345))


def test_root_rntuple_is_refused_with_a_clear_message(frontend):
    import json
    import urllib.error
    import urllib.request

    body = json.dumps({"did": "skyhook://ttbar", "selection": '[{"treename": "Events", "filter_name": ["nJet"]}]',
                       "codegen": "uproot-raw", "result-destination": "object-store",
                       "result-format": "root-rntuple"}).encode()
    req = urllib.request.Request(f"{frontend.url}/servicex/transformation", data=body,
                                 headers={"Content-Type": "application/json"}, method="POST")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=30)
    assert e.value.code == 400 and "root-rntuple" in json.loads(e.value.read())["message"]


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


def test_deliver_with_the_clients_token_refresh(secured, tmp_path, monkeypatch, ttbar):
    """servicex.yaml's token is a refresh token: the client POSTs it to /token/refresh,
    then sends the access token it gets as Authorization: Bearer."""
    from servicex import query

    monkeypatch.delenv("BEARER_TOKEN_FILE", raising=False)
    q = query.UprootRaw([{"treename": "Events", "filter_name": ["MET_pt"]}])
    paths = _paths(_config(secured.url, tmp_path, REFRESH), "authed", q)
    got = ak.concatenate([ak.from_parquet(p) for p in paths])
    exp = uproot.open(ttbar)["Events"].arrays(["MET_pt"])
    assert ak.to_list(got["MET_pt"]) == ak.to_list(exp.MET_pt)


def test_wrong_or_missing_token_is_401(secured, tmp_path, monkeypatch):
    import json
    import urllib.error
    import urllib.request

    from servicex import dataset, deliver, query
    from servicex.servicex_adapter import AuthorizationError

    monkeypatch.delenv("BEARER_TOKEN_FILE", raising=False)

    def status_of(path, headers=None, method="GET"):
        req = urllib.request.Request(f"{secured.url}{path}", headers=headers or {}, method=method)
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    assert status_of("/servicex")[0] == 401                      # no token
    assert status_of("/servicex/transformation")[0] == 401
    code, body = status_of("/servicex", {"Authorization": f"Bearer {REFRESH}"})  # a refresh token is no access token
    assert code == 401 and "access token" in body["message"]
    assert status_of("/token/refresh", {"Authorization": "Bearer wrong"}, "POST")[0] == 401
    code, body = status_of("/token/refresh", {"Authorization": f"Bearer {REFRESH}"}, "POST")
    assert code == 200
    token = body["access_token"]
    assert status_of("/servicex", {"Authorization": f"Bearer {token}"})[0] == 200
    head, claims, sig = token.split(".")
    forged = f"{head}.{claims}.{'A' * len(sig)}"
    assert status_of("/servicex", {"Authorization": f"Bearer {forged}"})[0] == 401
    # the unmodified client with a wrong refresh token is refused with its own error
    q = query.UprootRaw([{"treename": "Events", "filter_name": ["nJet"]}])
    spec = {"General": {"OutputFormat": "parquet"},
            "Sample": [{"Name": "denied", "Dataset": dataset.FileList(["skyhook://ttbar"]), "Query": q}]}
    with pytest.raises(AuthorizationError):
        files = deliver(spec, config_path=_config(secured.url, tmp_path, "not-the-token"), progress_bar="none")
        list(files["denied"])


def test_cli_servicex_with_a_token_file(ceph_cluster, pool, gateway, ttbar, tmp_path):
    """`skyhook servicex --token-file F`: the command a user starts; 401 without a token,
    the datasets with one (the token refresh flow by hand)."""
    import json
    import subprocess
    import sys
    import urllib.error
    import urllib.request
    from pathlib import Path

    tokens = tmp_path / "tokens"
    tokens.write_text("# refresh tokens\n" + REFRESH + "\n")
    cmd = [sys.executable, "-c", "import sys; from skyhook_py.cli import main; sys.exit(main())",
           "--conf", str(ceph_cluster.conf_path), "--keyring", str(ceph_cluster.admin_keyring), "--pool", pool,
           "servicex", "--listen", "127.0.0.1:0", "--s3-endpoint", gateway.endpoint, "--s3-access-key", ACCESS,
           "--s3-secret-key", SECRET, "--token-file", str(tokens)]
    p = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, cwd=str(Path(__file__).resolve().parents[1]))
    try:
        line = p.stderr.readline()
        assert "tokens required" in line, line
        url = line.split(" on ", 1)[1].split(";", 1)[0]
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(f"{url}/servicex/datasets", timeout=30)
        assert e.value.code == 401
        req = urllib.request.Request(f"{url}/token/refresh", method="POST",
                                     headers={"Authorization": f"Bearer {REFRESH}"})
        token = json.loads(urllib.request.urlopen(req, timeout=30).read())["access_token"]
        req = urllib.request.Request(f"{url}/servicex/datasets", headers={"Authorization": f"Bearer {token}"})
        names = [d["name"] for d in json.loads(urllib.request.urlopen(req, timeout=30).read())["datasets"]]
        assert "skyhook://ttbar" in names
    finally:
        p.terminate()
        p.wait(timeout=30)
    empty = tmp_path / "empty"
    empty.write_text("# nothing\n")
    r = subprocess.run(cmd[:-1] + [str(empty)], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "holds no token" in r.stderr


def test_status_counts_files_while_the_request_runs(frontend, session, tmp_path):
    """Files are written one by one: polled while the request runs, the status shows some
    files completed and others not, and the results list holds exactly the completed ones
    (what the client's transform and download bars read)."""
    import json
    import urllib.request

    from skyhook_py import demo_data

    src = demo_data.write_nanoaod(str(tmp_path / "many.root"), events=12_000, seed=5)
    session.ingest([src], "many", tree="Events", partition_events=500)
    body = json.dumps({"did": "skyhook://many", "codegen": "uproot-raw", "result-destination": "object-store",
                       "result-format": "parquet", "title": "many",
                       "selection": '[{"treename": "Events", "filter_name": ["Jet_pt", "Muon_pt", "MET_pt"]}]'})
    req = urllib.request.Request(f"{frontend.url}/servicex/transformation", data=body.encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    rid = json.loads(urllib.request.urlopen(req, timeout=30).read())["request_id"]
    seen = []
    while True:
        st = _get(frontend, f"/servicex/transformation/{rid}")
        n = len(_get(frontend, f"/servicex/transformation/{rid}/results")["results"])
        seen.append((st["status"], st["files-completed"], st["files"], n))
        if st["status"] == "Complete":
            break
    assert seen[-1][1] == seen[-1][2] == seen[-1][3] == 24
    done = [c for _, c, _, _ in seen]
    assert done == sorted(done)                       # progress only goes forward
    assert any(s == "Running" and 0 < c < f for s, c, f, _ in seen), seen[:: max(1, len(seen) // 20)]
    assert all(n >= c for _, c, _, n in seen)         # a completed file is listed
    import pyarrow.parquet as pq

    got = ak.concatenate([ak.from_arrow(pq.read_table(io.BytesIO(_s3_object(frontend, rid, r["s3-object-name"]))))
                          for r in sorted(_get(frontend, f"/servicex/transformation/{rid}/results")["results"],
                                          key=lambda r: r["s3-object-name"])])
    exp = uproot.open(src)["Events"].arrays(["MET_pt"])
    assert ak.to_list(got["MET_pt"]) == ak.to_list(exp.MET_pt)


def _s3_object(frontend, bucket, key):
    st = _get(frontend, f"/servicex/transformation/{bucket}")
    import boto3

    s3 = boto3.client("s3", endpoint_url=f"http://{st['minio-endpoint']}", aws_access_key_id=st["minio-access-key"],
                      aws_secret_access_key=st["minio-secret-key"], region_name="us-east-1")
    return s3.get_object(Bucket=bucket, Key=key)["Body"].read()


def test_access_tokens_expire_and_carry_exp_for_the_client():
    """The client reads ``exp`` from the JWT (google.auth.jwt, unverified) to refresh a
    minute early; an expired token is refused."""
    from google.auth import jwt

    from skyhook_py.service.servicex_auth import TokenAuthority, Unauthorized

    now = [1_000_000.0]
    auth = TokenAuthority(["r1", "r2"], lifetime=300, clock=lambda: now[0])
    token = auth.refresh("Bearer r2")["access_token"]
    assert jwt.decode(token, verify=False)["exp"] == 1_000_300
    auth.check(f"Bearer {token}")
    now[0] += 301
    with pytest.raises(Unauthorized, match="expired"):
        auth.check(f"Bearer {token}")
    with pytest.raises(Unauthorized, match="Bearer"):
        auth.check("Basic abc")
    with pytest.raises(ValueError):
        TokenAuthority([])
