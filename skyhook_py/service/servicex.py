"""A ServiceX-compatible REST front end: the unmodified ``servicex`` 3.x client's
``deliver()`` pointed at Skyhook.

The client speaks HTTP/JSON to a ServiceX web API and downloads result files from an
S3 bucket named after the request.  This module answers the endpoints ``deliver()``
uses, runs each transformation as one Skyhook query (the cut and the columns pushed
down into the OSDs), and writes the answer as a Parquet file into an S3 bucket (Ceph's
own radosgw in tests and benchmarks; any S3 service works):

- ``GET  /servicex``                                   info: version, code generators, capabilities
- ``POST /servicex/transformation``                    submit (codegen ``uproot`` = FuncADL_Uproot's
  qastle, ``uproot-raw`` = UprootRaw's JSON); answers ``{"request_id": ...}``
- ``GET  /servicex/transformation``                    every request's status
- ``GET  /servicex/transformation/<id>``               status and progress (files, files-completed, S3 keys)
- ``GET  /servicex/transformation/<id>/results``       the result files written so far
- ``GET  /servicex/transformation/<id>/cancel``        cancel (the running query finishes, its file is not written)

The dataset is named by the request's ``did`` or ``file-list``: ``skyhook://NAME`` or
``NAME``.  Result format: Parquet only (``root-file`` is refused with 400).

What this deliberately ignores: authentication (no token endpoint; run it on a
trusted network), ServiceX's dataset cache endpoints (``/servicex/datasets``), log
URLs, and volume destinations.  It imports no grpc: it is a second front end beside
the gRPC coordinator, over the same in-process Session.
"""

from __future__ import annotations

import datetime
import io
import json
import logging
import re
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from ..errors import SkyhookError

log = logging.getLogger("skyhook.servicex")

APP_VERSION = "skyhook-servicex-1"
CODEGENS = {"uproot": "qastle", "uproot-raw": "uproot-raw"}


class UnknownTransformation(LookupError):
    """No transformation with this request id (HTTP 404)."""


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat()


class Transformation:
    def __init__(self, request: dict, dataset: str, language: str):
        self.id = str(uuid.uuid4())
        self.request, self.dataset, self.language = request, dataset, language
        self.status = "Submitted"
        self.files, self.files_completed, self.files_failed = 1, 0, 0
        self.submit_time, self.finish_time = _now(), None
        self.results: list[dict] = []
        self.error: str | None = None
        self.cancelled = threading.Event()

    def as_status(self, s3) -> dict:
        r = self.request
        return {
            "request_id": self.id, "did": f"skyhook://{self.dataset}", "did_id": 0,
            "title": r.get("title"), "selection": r.get("selection", ""), "tree-name": None,
            "image": "skyhook", "result-destination": r.get("result-destination", "object-store"),
            "result-format": r.get("result-format", "parquet"), "generated-code-cm": "skyhook",
            "status": self.status, "app-version": APP_VERSION, "files": self.files,
            "files-completed": self.files_completed, "files-failed": self.files_failed,
            "files-remaining": self.files - self.files_completed - self.files_failed,
            "submit-time": self.submit_time, "finish-time": self.finish_time or "None",
            "minio-endpoint": s3["host"], "minio-secured": s3["secure"],
            "minio-access-key": s3["access_key"], "minio-secret-key": s3["secret_key"],
            "log-url": None, "error": self.error,
        }


class ServiceXFrontend:
    """The transformations and their work; ``serve()`` puts the HTTP face on it.

    session: a skyhook_py Session; s3_endpoint: ``http://host:port`` of the S3 service
    where results go (one bucket per request, as ServiceX's MinIO does)."""

    def __init__(self, session, s3_endpoint: str, access_key: str, secret_key: str):
        import boto3

        self.session = session
        self._session_lock = threading.Lock()
        secure = s3_endpoint.startswith("https://")
        self.s3 = {"host": re.sub(r"^https?://", "", s3_endpoint), "secure": secure,
                   "access_key": access_key, "secret_key": secret_key}
        self._s3 = boto3.client("s3", endpoint_url=s3_endpoint, aws_access_key_id=access_key,
                                aws_secret_access_key=secret_key, region_name="us-east-1")
        self.transformations: dict[str, Transformation] = {}
        from ..query.tracker import RequestTracker

        # every transformation's query, tracked by its request id (tracker.get(id).as_dict())
        self.tracker = RequestTracker()

    # -- the API --------------------------------------------------------------------
    def info(self) -> dict:
        return {"app-version": APP_VERSION, "code-gen-image": {k: "skyhook" for k in CODEGENS},
                "capabilities": ["poll_local_transformation_results"]}

    def submit(self, request: dict) -> str:
        codegen = request.get("codegen")
        if codegen not in CODEGENS:
            raise ValueError(f"codegen must be one of {sorted(CODEGENS)}, got {codegen!r}")
        if request.get("result-format", "parquet") != "parquet":
            raise ValueError(f"Skyhook writes Parquet results only (set General.OutputFormat: parquet in the "
                             f"servicex spec), got result-format {request.get('result-format')!r}")
        dataset = _dataset_of(request)
        if "selection" not in request:
            raise ValueError("the request has no selection")
        t = Transformation(request, dataset, CODEGENS[codegen])
        # the query is compiled and checked now, so that a bad one is a 400, not a failed file
        with self._session_lock:
            self.session.build_query(dataset, where=request["selection"], language=t.language)
        self.transformations[t.id] = t
        threading.Thread(target=self._run, args=(t,), daemon=True, name=f"servicex-{t.id[:8]}").start()
        return t.id

    def status(self, request_id: str) -> dict:
        return self._get(request_id).as_status(self.s3)

    def results(self, request_id: str) -> dict:
        return {"results": list(self._get(request_id).results)}

    def cancel(self, request_id: str) -> dict:
        t = self._get(request_id)
        t.cancelled.set()
        return {"message": f"canceled transform {request_id}"}

    def _get(self, request_id: str) -> Transformation:
        t = self.transformations.get(request_id)
        if t is None:
            raise UnknownTransformation(request_id)
        return t

    # -- the work ---------------------------------------------------------------------
    def _run(self, t: Transformation):
        import pyarrow.parquet as pq

        t.status = "Running"
        try:
            with self._session_lock:
                result = self.session.run(t.dataset, where=t.request["selection"], language=t.language,
                                          status=self.tracker.new(t.id, "query", t.dataset))
            if t.cancelled.is_set():
                t.status, t.finish_time = "Canceled", _now()
                return
            buf = io.BytesIO()
            pq.write_table(result.table, buf)
            data = buf.getvalue()
            key = f"{t.dataset}.skyhook.parquet"
            self._s3.create_bucket(Bucket=t.id)
            self._s3.put_object(Bucket=t.id, Key=key, Body=data)
            t.results.append({"transform_status": "success", "s3-object-name": key,
                              "created_at": datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
                              .isoformat(), "total-bytes": len(data)})
            t.files_completed = 1
            t.status = "Complete"
        except Exception as e:  # a failed file, as ServiceX reports it; the message is kept
            log.warning("transformation %s failed: %s", t.id, e)
            t.error = str(e)
            t.files_failed = 1
            t.status = "Complete"
        t.finish_time = _now()


def _dataset_of(request: dict) -> str:
    names = []
    if request.get("did"):
        names.append(request["did"])
    names += list(request.get("file-list") or [])
    if len(names) != 1:
        raise ValueError(f"name exactly one Skyhook dataset (did 'skyhook://NAME' or a one-entry file-list), "
                         f"got {names!r}")
    name = names[0]
    for prefix in ("skyhook://", "skyhook:"):
        if name.startswith(prefix):
            name = name[len(prefix):]
    return name.strip("/")


def _handler(front: ServiceXFrontend):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *args):
            log.info("%s " + fmt, self.address_string(), *args)

        def _reply(self, code: int, body):
            data = json.dumps(body, default=str).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _route(self, method: str):
            path = self.path.split("?", 1)[0].rstrip("/")
            try:
                if method == "GET" and path == "/servicex":
                    return self._reply(200, front.info())
                if method == "POST" and path == "/servicex/transformation":
                    n = int(self.headers.get("Content-Length") or 0)
                    body = json.loads(self.rfile.read(n) or b"{}")
                    return self._reply(200, {"request_id": front.submit(body)})
                if method == "GET" and path == "/servicex/transformation":
                    return self._reply(200, {"requests": [front.status(i) for i in front.transformations]})
                m = re.fullmatch(r"/servicex/transformation/([^/]+)(/results|/cancel)?", path)
                if method == "GET" and m:
                    rid, tail = m.group(1), m.group(2)
                    if tail == "/results":
                        return self._reply(200, front.results(rid))
                    if tail == "/cancel":
                        return self._reply(200, front.cancel(rid))
                    return self._reply(200, front.status(rid))
                return self._reply(404, {"message": f"no such endpoint: {method} {path}"})
            except UnknownTransformation as e:
                return self._reply(404, {"message": f"transformation {e.args[0]!r} not found"})
            except (ValueError, SkyhookError) as e:  # a bad request or query: the client shows the message
                return self._reply(400, {"message": str(e)})
            except Exception as e:  # noqa: BLE001  (the client shows the message)
                log.error("internal error", exc_info=e)
                return self._reply(500, {"message": f"internal error: {type(e).__name__}: {e}"})

        def do_GET(self):
            self._route("GET")

        def do_POST(self):
            self._route("POST")

    return Handler


class RunningFrontend:
    def __init__(self, httpd: ThreadingHTTPServer, thread: threading.Thread):
        self.httpd, self.thread = httpd, thread
        host, port = httpd.server_address[:2]
        self.url = f"http://{host}:{port}"

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)


def serve(front: ServiceXFrontend, listen: str = "127.0.0.1:0") -> RunningFrontend:
    """Start the HTTP server in a thread (port 0: a free port); ``.url`` is its address."""
    host, _, port = listen.rpartition(":")
    httpd = ThreadingHTTPServer((host or "127.0.0.1", int(port)), _handler(front))
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True, name="servicex-http")
    thread.start()
    return RunningFrontend(httpd, thread)
