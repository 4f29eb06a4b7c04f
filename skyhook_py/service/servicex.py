"""A ServiceX-compatible REST front end: the unmodified ``servicex`` 3.x client's
``deliver()`` pointed at Skyhook.

The client speaks HTTP/JSON to a ServiceX web API and downloads result files from an
S3 bucket named after the request.  This module answers the endpoints ``deliver()``
uses, runs each transformation as one Skyhook query (the cut and the columns pushed
down into the OSDs), and writes the answer as a Parquet file into an S3 bucket (Ceph's
own radosgw in tests and benchmarks; any S3 service works):

- ``POST /token/refresh``                              an access token (JWT) for a refresh token
  (only with authentication on: ``refresh_tokens``; then every other call needs
  ``Authorization: Bearer <access token>`` and is refused with 401 without it)
- ``GET  /servicex``                                   info: version, code generators, capabilities
- ``POST /servicex/transformation``                    submit (codegen ``uproot`` = FuncADL_Uproot's
  qastle, ``uproot-raw`` = UprootRaw's JSON); answers ``{"request_id": ...}``
- ``GET  /servicex/transformation``                    every request's status
- ``GET  /servicex/transformation/<id>``               status and progress (files, files-completed, S3 keys)
- ``GET  /servicex/transformation/<id>/results``       the result files written so far (``later_than``)
- ``GET  /servicex/transformation/<id>/cancel``        cancel (files not yet written are not written)
- ``GET  /servicex/transformation/<id>/logs``          the request's log, as text (the status's ``log-url``)
- ``GET  /servicex/datasets``, ``/servicex/datasets/<id>``  the Skyhook datasets, as ServiceX's
  dataset cache lists them (one "file" per partition)

The dataset is named by the request's ``did`` or ``file-list``: ``skyhook://NAME`` or
``NAME``.  A request is cut into *files*: one per group of ``partitions_per_file``
partitions that the planner keeps (the cut's statistics prune the others), each one
Skyhook query written to the bucket as soon as it finishes, so that ``deliver()``
downloads them while the others run and its progress bars count them.  Result format:
Parquet, or ROOT (``root-file``, the client's default ``root-ttree``: a TTree
``servicex`` written by uproot; see servicex_output.py).

What this deliberately ignores: users and quotas (any valid token may do anything),
deleting datasets or transformations (``DELETE`` answers 405), ``root-rntuple`` output,
volume destinations, and the Kibana dashboards the client builds from ``log-url`` (the
link it prints on a failure points at our plain-text log instead).  It imports no
grpc: it is a second front end beside the gRPC coordinator, over the same in-process
Session.
"""

from __future__ import annotations

import datetime
import json
import logging
import re
import threading
import urllib.parse
import uuid
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pyarrow as pa

from ..errors import SkyhookError
from . import servicex_output
from .servicex_auth import TokenAuthority, Unauthorized

log = logging.getLogger("skyhook.servicex")

APP_VERSION = "skyhook-servicex-1"
CODEGENS = {"uproot": "qastle", "uproot-raw": "uproot-raw"}


class UnknownTransformation(LookupError):
    """No transformation with this request id (HTTP 404)."""


class UnknownDataset(LookupError):
    """No dataset with this id (HTTP 404)."""


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat()


def dataset_id(name: str) -> int:
    """A stable integer id for a dataset name (ServiceX's ``did_id``)."""
    return zlib.crc32(name.encode()) & 0x7FFFFFFF


class Transformation:
    def __init__(self, request: dict, dataset: str, language: str, result_format: str):
        self.id = str(uuid.uuid4())
        self.request, self.dataset, self.language = request, dataset, language
        self.result_format = result_format
        self.status = "Submitted"
        self.files, self.files_completed, self.files_failed = 0, 0, 0
        self.submit_time, self.finish_time = _now(), None
        self.results: list[dict] = []
        self.error: str | None = None
        self.cancelled = threading.Event()
        self.log: list[str] = [f"{self.submit_time} submitted: dataset {dataset!r}, codegen "
                               f"{request.get('codegen')!r}, result-format {result_format!r}"]

    def note(self, message: str):
        self.log.append(f"{_now()} {message}")

    def as_status(self, s3, base_url: str | None = None) -> dict:
        r = self.request
        log_url = None if base_url is None else \
            f"{base_url}/servicex/transformation/{self.id}/logs?view=text&_g=()"
        return {
            "request_id": self.id, "did": f"skyhook://{self.dataset}", "did_id": dataset_id(self.dataset),
            "title": r.get("title"), "selection": r.get("selection", ""), "tree-name": None,
            "image": "skyhook", "result-destination": r.get("result-destination", "object-store"),
            "result-format": self.result_format, "generated-code-cm": "skyhook",
            "status": self.status, "app-version": APP_VERSION, "files": self.files,
            "files-completed": self.files_completed, "files-failed": self.files_failed,
            "files-remaining": self.files - self.files_completed - self.files_failed,
            "submit-time": self.submit_time, "finish-time": self.finish_time or "None",
            "minio-endpoint": s3["host"], "minio-secured": s3["secure"],
            "minio-access-key": s3["access_key"], "minio-secret-key": s3["secret_key"],
            "log-url": log_url, "error": self.error,
        }


class ServiceXFrontend:
    """The transformations and their work; ``serve()`` puts the HTTP face on it.

    session: a skyhook_py Session; s3_endpoint: ``http://host:port`` of the S3 service
    where results go (one bucket per request, as ServiceX's MinIO does).
    refresh_tokens: turn authentication on (see servicex_auth.py); None: off.
    partitions_per_file: how many kept Skyhook partitions go into one result file."""

    def __init__(self, session, s3_endpoint: str, access_key: str, secret_key: str, *,
                 refresh_tokens=None, token_lifetime: int = 3600, partitions_per_file: int = 1):
        import boto3

        if int(partitions_per_file) < 1:
            raise ValueError(f"partitions_per_file must be at least 1, got {partitions_per_file!r}")
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
        self.auth = None if refresh_tokens is None else TokenAuthority(refresh_tokens, token_lifetime)
        self.partitions_per_file = int(partitions_per_file)

    # -- the API --------------------------------------------------------------------
    def info(self) -> dict:
        return {"app-version": APP_VERSION, "code-gen-image": {k: "skyhook" for k in CODEGENS},
                "capabilities": ["poll_local_transformation_results"]}

    def submit(self, request: dict) -> str:
        from ..query import planner

        codegen = request.get("codegen")
        if codegen not in CODEGENS:
            raise ValueError(f"codegen must be one of {sorted(CODEGENS)}, got {codegen!r}")
        result_format = servicex_output.check_format(request.get("result-format", "parquet"))
        dataset = _dataset_of(request)
        if "selection" not in request:
            raise ValueError("the request has no selection")
        t = Transformation(request, dataset, CODEGENS[codegen], result_format)
        # the query is compiled and checked now, so that a bad one is a 400, not a failed file;
        # the planner's kept partitions (after statistics pruning) make the files
        with self._session_lock:
            m, query = self.session.build_query(dataset, where=request["selection"], language=t.language)
            tasks = planner.plan(m, query, "auto").tasks
        k = self.partitions_per_file
        t.manifest, t.query = m, query   # the version the files were planned on
        t.group_tasks = [tasks[i:i + k] for i in range(0, len(tasks), k)]
        t.groups = [(g[0].event_start, g[-1].event_stop) for g in t.group_tasks]
        t.files = len(t.groups)
        t.note(f"{len(tasks)} partitions kept of {m.num_partitions}; {t.files} result files")
        self.transformations[t.id] = t
        threading.Thread(target=self._run, args=(t,), daemon=True, name=f"servicex-{t.id[:8]}").start()
        return t.id

    def status(self, request_id: str, base_url: str | None = None) -> dict:
        return self._get(request_id).as_status(self.s3, base_url)

    def results(self, request_id: str, later_than: str | None = None) -> dict:
        rows = list(self._get(request_id).results)
        if later_than:
            since = _parse_time(later_than)
            rows = [r for r in rows if _parse_time(r["created_at"]) >= since]
        return {"results": rows}

    def request_status(self, request_id: str) -> dict:
        """The tracked status of the transformation's query (query.tracker): partitions
        and events processed of the total, failures, bytes delivered, and at the end
        whether every event of every partition was processed."""
        from ..errors import UnknownRequestError

        self._get(request_id)   # an unknown transformation: 404 as for the other endpoints
        try:
            return self.tracker.get(request_id).as_dict()
        except UnknownRequestError:   # submitted, its query not started yet
            return {"request_id": request_id, "state": "queued"}

    def logs(self, request_id: str) -> str:
        return "\n".join(self._get(request_id).log) + "\n"

    def cancel(self, request_id: str) -> dict:
        t = self._get(request_id)
        t.cancelled.set()
        t.note("cancel requested")
        return {"message": f"canceled transform {request_id}"}

    def datasets(self) -> dict:
        return {"datasets": [self._dataset(name, files=False) for name in sorted(self.session.datasets())]}

    def dataset(self, did: str) -> dict:
        try:
            wanted = int(did)
        except ValueError:
            raise UnknownDataset(did) from None
        for name in self.session.datasets():
            if dataset_id(name) == wanted:
                return self._dataset(name, files=True)
        raise UnknownDataset(did)

    def _dataset(self, name: str, files: bool) -> dict:
        with self._session_lock:
            m = self.session.manifest(name)
            table = m.partition_table()
        objects, starts, stops, sizes = (table["object"], table["event_start"], table["event_stop"],
                                         table["bytes"])
        created = m.created or _now()
        out = {"id": dataset_id(name), "name": f"skyhook://{name}", "did_finder": "skyhook",
               "n_files": len(objects), "size": int(sum(int(b) for b in sizes)),
               "events": int(stops[-1]) if len(stops) else 0, "last_used": created, "last_updated": created,
               "lookup_status": "complete", "is_stale": False}
        if files:
            out["files"] = [{"id": i, "adler32": None, "file_size": int(sizes[i]),
                             "file_events": int(stops[i]) - int(starts[i]), "paths": str(objects[i])}
                            for i in range(len(objects))]
        return out

    def _get(self, request_id: str) -> Transformation:
        t = self.transformations.get(request_id)
        if t is None:
            raise UnknownTransformation(request_id)
        return t

    # -- the work ---------------------------------------------------------------------
    def _run(self, t: Transformation):
        """One query over the kept partitions (tracked under the transformation's id); its
        rows are cut into one file per group of partitions, each uploaded when its last
        partition has answered, so that deliver() can download while the rest runs."""
        from .. import session as session_mod
        from ..query.results import PartitionFailure, ResultBatch

        t.status = "Running"
        group_of = {task.partition: i for i, part in enumerate(t.group_tasks) for task in part}
        batches, failed, current = [], set(), 0
        bucket = []   # made on the first upload

        def flush(upto: int):
            # groups before ``upto`` are complete: write each (an empty group, an empty file)
            nonlocal current, batches
            while current < upto:
                if current in failed:
                    t.files_failed += 1
                else:
                    table = (pa.concat_tables(batches) if batches
                             else session_mod.empty_result(t.manifest, t.query))
                    try:
                        self._upload(t, current, table, bucket)
                    except Exception as e:  # noqa: BLE001 - a failed file, as ServiceX reports it
                        log.warning("transformation %s, file %d failed: %s", t.id, current, e)
                        t.error = str(e)
                        t.files_failed += 1
                        t.note(f"file {current} failed: {e}")
                batches, current = [], current + 1

        try:
            with self._session_lock:
                stream = self.session.stream_query(
                    t.manifest, t.query, pushdown="auto", fail_fast=False,
                    cancelled=t.cancelled.is_set, status=self.tracker.new(t.id, "query", t.dataset))
                try:
                    for ev in stream:
                        if isinstance(ev, ResultBatch | PartitionFailure):
                            g = group_of[ev.partition]
                            flush(g)
                            if isinstance(ev, PartitionFailure):
                                failed.add(g)
                                t.error = ev.message
                                t.note(f"partition {ev.partition} failed: {ev.message}")
                            elif ev.table is not None:
                                batches.append(ev.table)
                    flush(len(t.group_tasks))
                finally:
                    stream.close()
        except Exception as e:  # the rest of the files fail, as ServiceX reports it
            if not t.cancelled.is_set():
                log.warning("transformation %s failed: %s", t.id, e)
                t.error = str(e)
                t.note(f"failed: {e}")
                t.files_failed = t.files - t.files_completed
        t.status = "Canceled" if t.cancelled.is_set() else "Complete"
        t.finish_time = _now()
        t.note(f"{t.status.lower()}: {t.files_completed} files written, {t.files_failed} failed")
        status = self.tracker.get(t.id).as_dict() if t.id in self.tracker.ids() else None
        if status is not None:
            t.note(status["statement"])   # every event processed, or exactly what was not

    def _upload(self, t: Transformation, i: int, table, bucket: list):
        start, stop = t.groups[i]
        ext = servicex_output.EXTENSIONS[t.result_format]
        data = servicex_output.to_bytes(table, t.result_format)
        key = f"{t.dataset}.{i:05d}.events-{start}-{stop}.skyhook.{ext}"
        if not bucket:
            self._s3.create_bucket(Bucket=t.id)
            bucket.append(t.id)
        self._s3.put_object(Bucket=t.id, Key=key, Body=data)
        t.results.append({"transform_status": "success", "s3-object-name": key,
                          "created_at": datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
                          .isoformat(), "total-bytes": len(data)})
        t.files_completed += 1
        t.note(f"file {key}: {table.num_rows} rows, {len(data)} bytes")


def _parse_time(text: str) -> datetime.datetime:
    d = datetime.datetime.fromisoformat(text)
    return d.replace(tzinfo=None) if d.tzinfo is None else d.astimezone(datetime.timezone.utc).replace(tzinfo=None)


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

        def _send(self, code: int, data: bytes, content_type: str):
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            if code == 401:
                self.send_header("WWW-Authenticate", 'Bearer realm="skyhook-servicex"')
            self.end_headers()
            self.wfile.write(data)

        def _reply(self, code: int, body):
            self._send(code, json.dumps(body, default=str).encode(), "application/json")

        def _base_url(self) -> str:
            host = self.headers.get("Host") or "%s:%s" % self.server.server_address[:2]
            return f"http://{host}"

        def _route(self, method: str):
            url = urllib.parse.urlsplit(self.path)
            path, params = url.path.rstrip("/"), dict(urllib.parse.parse_qsl(url.query))
            n = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(n) if n else b""
            try:
                if front.auth is not None:
                    if method == "POST" and path == "/token/refresh":
                        return self._reply(200, front.auth.refresh(self.headers.get("Authorization")))
                    front.auth.check(self.headers.get("Authorization"))
                if method == "GET" and path == "/servicex":
                    return self._reply(200, front.info())
                if method == "POST" and path == "/servicex/transformation":
                    body = json.loads(raw or b"{}")
                    return self._reply(200, {"request_id": front.submit(body)})
                if method == "GET" and path == "/servicex/transformation":
                    return self._reply(200, {"requests": [front.status(i, self._base_url())
                                                          for i in list(front.transformations)]})
                if method == "GET" and path == "/servicex/datasets":
                    return self._reply(200, front.datasets())
                m = re.fullmatch(r"/servicex/datasets/([^/]+)", path)
                if m and method == "GET":
                    return self._reply(200, front.dataset(m.group(1)))
                m = re.fullmatch(r"/servicex/transformation/([^/]+)(/results|/cancel|/logs|/skyhook-status)?", path)
                if method == "GET" and m:
                    rid, tail = m.group(1), m.group(2)
                    if tail == "/results":
                        return self._reply(200, front.results(rid, params.get("later_than")))
                    if tail == "/cancel":
                        return self._reply(200, front.cancel(rid))
                    if tail == "/skyhook-status":
                        return self._reply(200, front.request_status(rid))
                    if tail == "/logs":
                        return self._send(200, front.logs(rid).encode(), "text/plain; charset=utf-8")
                    return self._reply(200, front.status(rid, self._base_url()))
                if method == "DELETE" and (m or re.fullmatch(r"/servicex/datasets/[^/]+", path)):
                    return self._reply(405, {"message": "Skyhook's ServiceX front end does not delete datasets "
                                                        "or transformations (use skyhook delete for datasets)"})
                return self._reply(404, {"message": f"no such endpoint: {method} {path}"})
            except Unauthorized as e:
                return self._reply(401, {"message": f"not authorized: {e}"})
            except UnknownTransformation as e:
                return self._reply(404, {"message": f"transformation {e.args[0]!r} not found"})
            except UnknownDataset as e:
                return self._reply(404, {"message": f"dataset {e.args[0]!r} not found"})
            except (ValueError, SkyhookError) as e:  # a bad request or query: the client shows the message
                return self._reply(400, {"message": str(e)})
            except Exception as e:  # noqa: BLE001  (the client shows the message)
                log.error("internal error", exc_info=e)
                return self._reply(500, {"message": f"internal error: {type(e).__name__}: {e}"})

        def do_GET(self):
            self._route("GET")

        def do_POST(self):
            self._route("POST")

        def do_DELETE(self):
            self._route("DELETE")

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
