"""The systems the benchmark compares: Skyhook and what a user would pick instead.

Each system answers the same ``BenchQuery`` (these columns of the events with
``MET_pt > threshold``) over the same events: ``prepare(dataset)`` puts the data
where the system reads it (nothing to do for the RADOS-based ones, an S3 upload
for Parquet, the ROOT files as generated for uproot) and ``run(query)`` returns a
``Measurement`` with the answer and what the system itself knows about its cost.
Wall time, client CPU and the OSD processes' CPU are measured by the harness
around ``run`` (benchmarks/run.py), the same way for every system.

``compare_answers`` is the gate in front of every timing: sorted by event
number, every column of every system must equal the reference answer.

Deliberately ignored: caching between queries (every run re-reads its data; the
OSDs' and the kernel's caches are warm for every system alike after the first run).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
from pathlib import Path

import awkward as ak
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

READ_THREADS = 4  # what the plain readers use; Skyhook's executor keeps up to 16 calls in flight


@dataclasses.dataclass
class BenchDataset:
    name: str               # the Skyhook dataset name (manifest in RADOS)
    files: list[str]        # the ROOT files it was ingested from (what uproot reads)
    events: int
    tree: str = "Events"


@dataclasses.dataclass(frozen=True)
class BenchQuery:
    dataset: str
    columns: tuple[str, ...]
    cut_column: str
    threshold: float        # a float32 value, so float32 and float64 comparisons agree
    selectivity: float      # the target fraction of events selected

    @property
    def cut(self) -> str:
        """The cut in the cut-string syntax Skyhook and uproot share."""
        return f"{self.cut_column} > {self.threshold!r}"

    @property
    def arrow_filter(self) -> pc.Expression:
        return pc.field(self.cut_column) > pa.scalar(self.threshold, pa.float64())


@dataclasses.dataclass
class Measurement:
    table: object                        # the answer: pyarrow Table or awkward Array
    bytes_delivered: int | None = None   # bytes that reached the client process
    bytes_read_store: int | None = None  # bytes the system read from its storage
    osd_cpu_reported: float | None = None  # OSD CPU seconds the system itself reports
    details: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Context:
    """Where the systems find the cluster and the other services."""
    conf: str
    pool: str
    namespace: str
    s3_endpoint: str | None = None
    s3_key: str | None = None
    s3_secret: str | None = None
    s3_admin_socket: str | None = None   # radosgw's, for its byte counters
    s3_pid: int | None = None
    seaweedfs_endpoint: str | None = None   # SeaweedFS's S3 (MinIO's stand-in), same keys as s3_*
    seaweedfs_key: str | None = None
    seaweedfs_secret: str | None = None
    seaweedfs_pid: int | None = None


class System:
    name = "?"
    label = "?"
    kind = "alternative"     # "skyhook" or "alternative"
    description = ""

    def prepare(self, dataset: BenchDataset) -> None:
        pass

    def run(self, query: BenchQuery) -> Measurement:
        raise NotImplementedError

    def counters(self) -> dict:
        """Cumulative counters read by the harness outside the timed region;
        deltas fill the Measurement fields the system left empty."""
        return {}

    def server_pids(self) -> dict[str, int]:
        """Processes besides the OSDs that work for this system (gateway, coordinator)."""
        return {}

    def close(self) -> None:
        pass


# -- Skyhook in-process ------------------------------------------------------------

def open_session(ctx: Context, reply_compression: str | None = None):
    """A Session on the bench pool as client.admin (the harness owns the pool);
    ``reply_compression``: the Session's default unless given."""
    from skyhook_py import defaults
    from skyhook_py.storage.rados_io import Store
    from skyhook_py.session import Session

    # Session(store, conf) rather than Session.open: open() hands librados a Path
    return Session(Store(str(ctx.conf), ctx.pool, ctx.namespace), str(ctx.conf),
                   reply_compression or defaults.REPLY_COMPRESSION)


class SkyhookSession(System):
    kind = "skyhook"

    def __init__(self, ctx: Context, pushdown: str, reply_compression: str | None = None):
        self.pushdown = pushdown
        self.name = {"auto": "skyhook", "on": "skyhook-on", "off": "rados-plain"}[pushdown]
        self.label = {"auto": "Skyhook (auto)", "on": "Skyhook (pushdown on)",
                      "off": "RADOS plain read (Skyhook pushdown=off)"}[pushdown]
        if reply_compression is not None:   # a variant of Skyhook's own, not an alternative
            self.name += "-" + {"none": "plain-replies"}.get(reply_compression, reply_compression + "-replies")
            self.label = self.label[:-1] + f", replies {reply_compression})"
        if pushdown == "off":
            self.kind = "alternative"
        self.description = (f"skyhook_py.Session.run(pushdown={pushdown!r}) in the client process"
                            + (f", Session(reply_compression={reply_compression!r})" if reply_compression else "")
                            + ("; whole partition objects read, cut evaluated on the client by the "
                               "reference evaluator" if pushdown == "off" else ""))
        self.session = open_session(ctx, reply_compression)

    def run(self, query: BenchQuery) -> Measurement:
        r = self.session.run(query.dataset, columns=list(query.columns), where=query.cut,
                             pushdown=self.pushdown)
        return _skyhook_measurement(r.table, r.summary)

    def close(self):
        self.session.close()


def _skyhook_measurement(table, s) -> Measurement:
    pushed = s.partitions_pushed_down
    plain = s.partitions_read + s.partitions_fallen_back
    return Measurement(
        table=table,
        bytes_delivered=s.bytes_returned,
        # pushed-down partitions: what the class read; plain reads: whole objects
        bytes_read_store=s.bytes_read_osd if not plain else
        (s.bytes_read_osd + s.bytes_returned if not pushed else None),
        osd_cpu_reported=s.osd_cpu_seconds if pushed else None,
        details={"partitions_pushed_down": pushed, "partitions_read": s.partitions_read,
                 "partitions_fallen_back": s.partitions_fallen_back,
                 "partitions_pruned": s.partitions_pruned, "events_matched": s.events_matched})


# The coordinator as a user runs it, minus its result cache (a benchmark that repeats
# a query would otherwise time the cache) and as client.admin (the bench pool is ours).
_SERVER_SCRIPT = """
import sys
from pathlib import Path
from skyhook_py.service import server
conf, pool, namespace, port_file = sys.argv[1:5]
running = server.serve("127.0.0.1:0", conf=conf, pool=pool, namespace=namespace,
                       user="client.admin", cache_bytes=0, block=False)
Path(port_file).write_text(str(running.port))
running.serve_until_signalled()
"""


class SkyhookGrpc(System):
    """Skyhook through the gRPC coordinator: a server in its own process (so the
    client's CPU is the client's only), queried with skyhook_py.service.client.Client."""
    name = "skyhook-grpc"
    label = "Skyhook via gRPC coordinator"
    kind = "skyhook"

    def __init__(self, ctx: Context, workdir: str):
        import subprocess
        import sys
        import time

        from skyhook_py.service import client as skyclient  # noqa: F401 - fail early if missing

        self.description = ("skyhook_py.service.server (result cache off) in a separate process; "
                            "skyhook_py.service.client.Client.run; bytes delivered: the answer's Arrow size "
                            "(what the gRPC stream carries), CPU of the server as coordinator CPU")
        port_file = Path(workdir) / "grpc.port"
        port_file.unlink(missing_ok=True)
        log = open(Path(workdir) / "grpc-server.log", "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _SERVER_SCRIPT, ctx.conf, ctx.pool, ctx.namespace, str(port_file)],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL,
            cwd=str(Path(__file__).resolve().parents[1]))
        deadline = time.monotonic() + 60
        while not port_file.exists() or not port_file.read_text().strip():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"the gRPC coordinator did not start; see {log.name}")
            time.sleep(0.2)
        self.address = f"127.0.0.1:{int(port_file.read_text())}"
        self.client = skyclient.Client(self.address)

    def run(self, query: BenchQuery) -> Measurement:
        r = self.client.run(query.dataset, columns=list(query.columns), where=query.cut)
        table = getattr(r, "table", r)
        summary = getattr(r, "summary", None)
        if summary is None:
            return Measurement(table=table, bytes_delivered=table.nbytes)
        m = _skyhook_measurement(table, summary)
        # what crossed to this client is the gRPC stream, about the Arrow data's size
        m.bytes_delivered = table.nbytes if isinstance(table, pa.Table) else m.bytes_delivered
        return m

    def server_pids(self):
        return {"coordinator": self.proc.pid} if self.proc.poll() is None else {}

    def close(self):
        close = getattr(getattr(self, "client", None), "close", None)
        if close:
            close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except Exception:  # noqa: BLE001
                self.proc.kill()


# -- plain reads of the same objects, as a user would write them ---------------------

class PyarrowRados(System):
    name = "rados-pyarrow"
    label = "RADOS read + pyarrow filter"
    description = (f"the partition objects read whole with librados ({READ_THREADS} threads), "
                   "opened with pyarrow.ipc, filtered with pyarrow.compute, then projected")

    def __init__(self, ctx: Context):
        from skyhook_py.storage.rados_io import Store

        self.store = Store(ctx.conf, ctx.pool, ctx.namespace)
        self.pool = concurrent.futures.ThreadPoolExecutor(READ_THREADS)
        self.objects: dict[str, list[str]] = {}

    def prepare(self, dataset):
        from skyhook_py.storage.manifest import load_manifest

        m = load_manifest(self.store, dataset.name)
        self.objects[dataset.name] = [p.object for p in m.partitions]

    def run(self, query: BenchQuery) -> Measurement:
        def one(obj):
            data = self.store.read(obj)
            table = _decode(data)
            return table.filter(query.arrow_filter).select(list(query.columns)), len(data)

        parts = list(self.pool.map(one, self.objects[query.dataset]))
        n = sum(b for _, b in parts)
        return Measurement(table=pa.concat_tables([t for t, _ in parts]), bytes_delivered=n, bytes_read_store=n)

    def close(self):
        self.pool.shutdown()
        self.store.close()


def _decode(data: bytes) -> pa.Table:
    buf = pa.py_buffer(data)
    if bytes(data[:4]) == b"PAR1":
        import pyarrow.parquet as pq

        return pq.read_table(pa.BufferReader(buf))
    return pa.ipc.open_file(buf).read_all()


class S3Parquet(System):
    name = "s3-parquet"
    label = "Parquet on S3 (radosgw) + pyarrow.dataset"
    description = ("one Parquet file per partition in an S3 bucket; pyarrow.dataset over "
                   "S3FileSystem with the filter expression and the column projection")

    def __init__(self, ctx: Context, bucket: str):
        from . import s3

        self.ctx = ctx
        self.bucket = bucket
        self.fs = s3.filesystem(*self._endpoint(ctx))
        self.uploaded: dict[str, list[dict]] = {}

    def _endpoint(self, ctx):
        from . import s3

        return ctx.s3_endpoint, ctx.s3_key or s3.ACCESS_KEY, ctx.s3_secret or s3.SECRET_KEY

    def prepare(self, dataset):
        """Upload the same events: each Skyhook partition becomes one Parquet file."""
        from skyhook_py.storage.manifest import load_manifest
        from skyhook_py.storage.rados_io import Store

        from . import s3

        with Store(self.ctx.conf, self.ctx.pool, self.ctx.namespace) as store:
            m = load_manifest(store, dataset.name)
            tables = (_decode(store.read(p.object)) for p in m.partitions)
            self.uploaded[dataset.name] = s3.upload_partitions(self.fs, self.bucket, dataset.name, tables)

    def run(self, query: BenchQuery) -> Measurement:
        import pyarrow.dataset as pads

        d = pads.dataset(f"{self.bucket}/{query.dataset}", format="parquet", filesystem=self.fs)
        return Measurement(table=d.to_table(columns=list(query.columns), filter=query.arrow_filter))

    def counters(self):
        if not self.ctx.s3_admin_socket:
            return {}
        from . import s3

        rgw = s3.perf_counters(self.ctx.s3_admin_socket).get("rgw", {})
        return {"bytes_delivered": rgw.get("get_b", 0)}

    def server_pids(self):
        return {"radosgw": self.ctx.s3_pid} if self.ctx.s3_pid else {}


class SeaweedParquet(S3Parquet):
    """The same Parquet files and reads on SeaweedFS's S3 server, MinIO's stand-in."""
    name = "s3-seaweedfs"
    label = "Parquet on S3 (SeaweedFS) + pyarrow.dataset"
    description = ("one Parquet file per partition in a SeaweedFS S3 bucket (MinIO's stand-in; "
                   "data on the local disk, not in Ceph); pyarrow.dataset over S3FileSystem")

    def _endpoint(self, ctx):
        from . import s3

        return (ctx.seaweedfs_endpoint, ctx.seaweedfs_key or s3.ACCESS_KEY,
                ctx.seaweedfs_secret or s3.SECRET_KEY)

    def counters(self):
        return {}

    def server_pids(self):
        return {"weed": self.ctx.seaweedfs_pid} if self.ctx.seaweedfs_pid else {}


class Uproot(System):
    name = "uproot"
    label = "uproot on the ROOT files"
    description = "uproot.open(file)[tree].arrays(columns, cut=...) over the source ROOT files (local disk)"

    def __init__(self):
        self.files: dict[str, BenchDataset] = {}

    def prepare(self, dataset):
        self.files[dataset.name] = dataset

    def run(self, query: BenchQuery) -> Measurement:
        import uproot

        ds = self.files[query.dataset]
        parts, nbytes = [], 0
        for path in ds.files:
            with uproot.open(path) as f:
                parts.append(f[ds.tree].arrays(list(query.columns), cut=query.cut, library="ak"))
                nbytes += f.file.source.num_requested_bytes
        arr = parts[0] if len(parts) == 1 else ak.concatenate(parts)
        return Measurement(table=arr, bytes_delivered=nbytes, bytes_read_store=nbytes)


class UprootS3(System):
    """What a physicist does with remote files: uproot reading the original ROOT files
    from the same Ceph (an S3 bucket on radosgw) over HTTP, with uproot's usual remote
    file handling (range requests, its default HTTP source)."""
    name = "uproot-s3"
    label = "uproot over S3/HTTP (radosgw)"
    description = ("the source ROOT files in a radosgw bucket (public-read objects), "
                   "uproot.open(http URL)[tree].arrays(columns, cut=...); bytes delivered: "
                   "radosgw's get_b counter")

    def __init__(self, ctx: Context, bucket: str = "skyhook-bench-root"):
        self.ctx = ctx
        self.bucket = bucket
        self.urls: dict[str, tuple[list[str], str]] = {}

    def prepare(self, dataset):
        from . import s3

        up = s3.upload_files(self.ctx.s3_endpoint, self.bucket, dataset.files,
                             self.ctx.s3_key or s3.ACCESS_KEY, self.ctx.s3_secret or s3.SECRET_KEY)
        self.urls[dataset.name] = ([u["url"] for u in up], dataset.tree)

    def run(self, query: BenchQuery) -> Measurement:
        import uproot

        urls, tree = self.urls[query.dataset]
        parts, nbytes = [], 0
        for url in urls:
            with uproot.open(url, timeout=60) as f:
                parts.append(f[tree].arrays(list(query.columns), cut=query.cut, library="ak"))
                nbytes += f.file.source.num_requested_bytes
        arr = parts[0] if len(parts) == 1 else ak.concatenate(parts)
        return Measurement(table=arr, bytes_read_store=nbytes, details={"requested_bytes": nbytes})

    def counters(self):
        if not self.ctx.s3_admin_socket:
            return {}
        from . import s3

        rgw = s3.perf_counters(self.ctx.s3_admin_socket).get("rgw", {})
        return {"bytes_delivered": rgw.get("get_b", 0)}

    def server_pids(self):
        return {"radosgw": self.ctx.s3_pid} if self.ctx.s3_pid else {}


# -- the gate: every system must give the same answer --------------------------------

def as_awkward(answer) -> ak.Array:
    if isinstance(answer, ak.Array):
        return answer
    if isinstance(answer, (pa.Table, pa.RecordBatch)):
        return ak.from_arrow(answer)
    raise TypeError(f"cannot compare an answer of type {type(answer).__name__}")


def num_rows(answer) -> int:
    return answer.num_rows if isinstance(answer, pa.Table) else len(answer)


def compare_answers(reference, other, key: str, columns) -> str | None:
    """None if ``other`` holds the same rows as ``reference`` (sorted by ``key``, every
    column equal, NaN equal to NaN, integer widths free); else what differs."""
    a, b = as_awkward(reference), as_awkward(other)
    if len(a) != len(b):
        return f"{len(b)} rows, the reference has {len(a)}"
    for c in columns:
        for arr, who in ((a, "reference"), (b, "answer")):
            if c not in arr.fields:
                return f"column {c!r} missing from the {who} (has {arr.fields[:8]}...)"
    a = a[np.asarray(ak.argsort(a[key], stable=True))]
    b = b[np.asarray(ak.argsort(b[key], stable=True))]
    for c in columns:
        bad = _difference(a[c], b[c])
        if bad:
            return f"column {c!r} differs: {bad}"
    return None


def _difference(x, y) -> str | None:
    """Where two columns differ, or None.  Compares list lengths level by level, then
    missing values, then the values (NaN equal to NaN; option types and integer
    widths are representation, not content)."""
    level = 0
    while x.ndim > 1:
        nx = np.asarray(ak.fill_none(ak.num(x, axis=1), -1))
        ny = np.asarray(ak.fill_none(ak.num(y, axis=1), -1))
        if not np.array_equal(nx, ny):
            i = int(np.flatnonzero(nx != ny)[0])
            return f"list lengths at depth {level}, first at sorted row {i}: {nx[i]} vs {ny[i]}"
        x, y, level = ak.flatten(x, axis=1), ak.flatten(y, axis=1), level + 1
    mx, my = np.asarray(ak.is_none(x)), np.asarray(ak.is_none(y))
    if not np.array_equal(mx, my):
        return f"missing values at {int(np.flatnonzero(mx != my)[0])}"
    vx, vy = _values(x, mx), _values(y, my)
    if vx.dtype.kind != vy.dtype.kind and {vx.dtype.kind, vy.dtype.kind} != {"i", "u"}:
        return f"value kinds {vx.dtype} vs {vy.dtype}"
    float_kind = vx.dtype.kind == "f"
    if np.array_equal(vx, vy, equal_nan=float_kind):
        return None
    same = (vx == vy) | (np.isnan(vx) & np.isnan(vy)) if float_kind else (vx == vy)
    i = int(np.flatnonzero(~same)[0])
    return f"values at flat position {i} (depth {level}): {vx[i]!r} vs {vy[i]!r}"


def _values(x, missing) -> np.ndarray:
    v = np.array(np.ma.getdata(ak.to_numpy(x, allow_missing=True)))
    v[missing] = 0  # missing on both sides (checked above): any equal filler
    return v


def proc_cpu_seconds(pid: int) -> float | None:
    """CPU time of a process, all its threads: the sum of /proc/<pid>/task/*/schedstat
    (nanoseconds; /proc/<pid>/stat counts 10 ms ticks, too coarse for a 5 ms query).
    Threads that ended between two readings are missed; Ceph's are long-lived."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    total = 0
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            continue  # the thread ended meanwhile
    return total / 1e9


def float32_threshold(values: np.ndarray, selectivity: float) -> float:
    """A float32 value t with about ``selectivity`` of ``values`` strictly above it."""
    v = np.sort(np.asarray(values, dtype=np.float32))
    v = v[~np.isnan(v)]
    want = int(round(selectivity * len(v)))
    if want >= len(v):
        return float(np.nextafter(v[0], np.float32(-np.inf)))
    return float(v[len(v) - want - 1])
