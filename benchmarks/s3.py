"""Parquet in an S3 bucket, the way most users would store the same events today.

Starts Ceph's own S3 gateway (radosgw, Debian package) on loopback against the
benchmark cluster, creates a user and a bucket, uploads one Parquet file per
Skyhook partition (the same events, so every system answers the same question),
and hands out a ``pyarrow.fs.S3FileSystem`` for reading.  Any other S3 service
(MinIO, AWS) works too: pass its endpoint and keys and skip the gateway.

It ignores everything a production gateway needs (TLS, realms/zones, quotas,
several gateways behind a load balancer): one process, one user, plain HTTP.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

# Ceph 16's radosgw rejects the streaming (aws-chunked) uploads that the AWS SDK in
# pyarrow sends by default for checksums ("411 MissingContentLength"); ask it to send
# checksums only where the operation requires them.  Read when S3 is first used.
os.environ.setdefault("AWS_REQUEST_CHECKSUM_CALCULATION", "WHEN_REQUIRED")
os.environ.setdefault("AWS_RESPONSE_CHECKSUM_VALIDATION", "WHEN_REQUIRED")

import pyarrow as pa  # noqa: E402
import pyarrow.fs as pafs  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

ACCESS_KEY = "skyhook-bench"
SECRET_KEY = "skyhook-bench-secret"
BUCKET = "skyhook-bench"
START_TIMEOUT = 90  # seconds; the first start creates the gateway's pools
# radosgw creates ~7 pools; with Ceph's default of 32 PGs each, one OSD would exceed
# mon_max_pg_per_osd (250) and pool creation would fail with the gateway hanging
RGW_PG_NUM = "8"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """A server process this harness started (``self.proc``): ``stop()`` sends SIGTERM,
    then SIGKILL after ``timeout``; as a context manager it is started and stopped."""

    proc: subprocess.Popen | None = None

    def stop(self, timeout: float = 20):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


class RadosGateway(ServerProcess):
    """One radosgw process serving S3 for the cluster ``cluster`` (a
    skyhook_py.cluster.Cluster): on 127.0.0.1, or, for a multi-host cluster, inside
    storage host ``host`` (its network namespace) on that host's address, so that the
    client reads it over the host's shaped link.  Use as a context manager, or
    start()/stop()."""

    def __init__(self, cluster, port: int | None = None, user: str = "client.admin", host: int | None = None):
        self.cluster = cluster
        self.port = port or _free_port()
        self.user = user
        self.dir = Path(cluster.dir) / "rgw"
        self.proc: subprocess.Popen | None = None
        net = getattr(cluster, "network", None)
        if host is not None and net is not None:
            self.address, self.exec_prefix = net.host_addr(host), net.exec_prefix(host)
        else:
            self.address, self.exec_prefix = "127.0.0.1", []

    @property
    def endpoint(self) -> str:
        return f"http://{self.address}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc and self.proc.poll() is None else None

    @property
    def admin_socket(self) -> Path:
        return self.dir / "rgw.asok"

    def _common(self) -> list[str]:
        return ["-c", str(self.cluster.conf_path), "-n", self.user,
                "--osd-pool-default-pg-num", RGW_PG_NUM, "--osd-pool-default-pgp-num", RGW_PG_NUM]

    def start(self) -> "RadosGateway":
        if shutil.which("radosgw") is None:
            raise RuntimeError("radosgw is not installed: apt-get install -y radosgw")
        self.dir.mkdir(parents=True, exist_ok=True)
        log = self.dir / "radosgw.log"
        cmd = [*self.exec_prefix, "radosgw", "-f", *self._common(),
               "--rgw-frontends", f"beast endpoint={self.address}:{self.port}",
               "--rgw-data", str(self.dir), "--log-file", str(log),
               "--admin-socket", str(self.admin_socket), "--pid-file", str(self.dir / "rgw.pid"),
               # one process, no background work competing with the measurements
               "--rgw-enable-gc-threads", "false", "--rgw-enable-lc-threads", "false",
               "--rgw-enable-quota-threads", "false", "--rgw-thread-pool-size", "16"]
        with open(self.dir / "radosgw.stdout", "ab") as out:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                         start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
                raise RuntimeError(f"radosgw exited with {self.proc.returncode}; end of {log}:\n{tail}")
            try:
                urllib.request.urlopen(self.endpoint, timeout=2).read()
                break
            except urllib.error.HTTPError:
                break  # it answers HTTP: up
            except OSError:
                time.sleep(0.5)
        else:
            self.stop()
            raise RuntimeError(f"radosgw did not answer on {self.endpoint} within {START_TIMEOUT} s; see {log}")
        self.create_user(ACCESS_KEY, SECRET_KEY)
        return self

    def create_user(self, access: str, secret: str, uid: str = "skyhook-bench"):
        """Create (or reuse) the S3 user ``uid`` with the given keys."""
        base = ["radosgw-admin", *self._common()]
        info = subprocess.run([*base, "user", "info", "--uid", uid], capture_output=True, timeout=60)
        if info.returncode == 0:
            keys = json.loads(info.stdout).get("keys", [])
            if any(k.get("access_key") == access for k in keys):
                return
        proc = subprocess.run([*base, "user", "create", "--uid", uid, "--display-name", uid,
                               "--access-key", access, "--secret", secret],
                              capture_output=True, timeout=60)
        if proc.returncode != 0:
            raise RuntimeError(f"radosgw-admin user create failed: {proc.stderr.decode(errors='replace')[-1000:]}")



def filesystem(endpoint: str, access: str = ACCESS_KEY, secret: str = SECRET_KEY) -> pafs.S3FileSystem:
    """An S3 filesystem for ``endpoint`` (``http://host:port`` or ``https://...``)."""
    scheme, _, hostport = endpoint.partition("://")
    if not hostport:
        scheme, hostport = "http", endpoint
    return pafs.S3FileSystem(access_key=access, secret_key=secret, endpoint_override=hostport,
                             scheme=scheme, region="us-east-1", allow_bucket_creation=True,
                             allow_bucket_deletion=True)


def upload_partitions(fs: pafs.S3FileSystem, bucket: str, prefix: str, tables) -> list[dict]:
    """Write each table of ``tables`` as one Parquet file ``bucket/prefix/part-NNNNNN.parquet``
    (pyarrow's defaults: Snappy, statistics, one row group per partition of up to 1 M rows).
    Replaces what the prefix held.  Returns [{"key", "bytes", "rows"}]."""
    try:
        fs.create_dir(bucket)
    except OSError:
        pass  # exists already
    base = f"{bucket}/{prefix}"
    try:
        fs.delete_dir_contents(base, missing_dir_ok=True)
    except OSError:
        pass
    out = []
    for i, table in enumerate(tables):
        key = f"{base}/part-{i:06d}.parquet"
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        data = sink.getvalue()
        with fs.open_output_stream(key) as f:
            f.write(data)
        out.append({"key": key, "bytes": data.size, "rows": table.num_rows})
    return out


def upload_files(endpoint: str, bucket: str, paths, access: str = ACCESS_KEY,
                 secret: str = SECRET_KEY) -> list[dict]:
    """Upload files whole (boto3, multipart for big ones) as publicly readable objects
    ``bucket/<file name>``, so that any HTTP client (uproot) can range-read them by URL.
    Skips a file already there with the same size.  Returns [{"key", "bytes", "url"}]."""
    import boto3
    from botocore.config import Config

    s3c = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=access,
                       aws_secret_access_key=secret, region_name="us-east-1",
                       config=Config(s3={"addressing_style": "path"}))
    try:
        s3c.create_bucket(Bucket=bucket)
    except s3c.exceptions.ClientError:
        pass
    except Exception as e:  # BucketAlreadyOwnedByYou and friends
        if "BucketAlready" not in type(e).__name__:
            raise
    out = []
    for path in paths:
        key = os.path.basename(path)
        size = os.path.getsize(path)
        try:
            have = s3c.head_object(Bucket=bucket, Key=key)["ContentLength"]
        except Exception:  # noqa: BLE001 - not there
            have = None
        if have != size:
            s3c.upload_file(str(path), bucket, key, ExtraArgs={"ACL": "public-read"})
        out.append({"key": key, "bytes": size, "url": f"{endpoint}/{bucket}/{key}"})
    return out


def perf_counters(admin_socket: str | os.PathLike) -> dict:
    """``perf dump`` of a Ceph daemon, straight from its admin socket (no subprocess,
    so it can run around every measurement)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(os.fspath(admin_socket))
        s.sendall(json.dumps({"prefix": "perf dump"}).encode() + b"\0")
        header = b""
        while len(header) < 4:
            chunk = s.recv(4 - len(header))
            if not chunk:
                raise OSError(f"admin socket {admin_socket} closed early")
            header += chunk
        n = int.from_bytes(header, "big")
        body = bytearray()
        while len(body) < n:
            chunk = s.recv(min(1 << 20, n - len(body)))
            if not chunk:
                raise OSError(f"admin socket {admin_socket} closed early")
            body += chunk
    return json.loads(body)


if __name__ == "__main__":  # manual check: python -m benchmarks.s3 CLUSTER_DIR
    from skyhook_py.cluster import Cluster

    with RadosGateway(Cluster(sys.argv[1])) as gw:
        fs = filesystem(gw.endpoint)
        print(upload_partitions(fs, BUCKET, "check", [pa.table({"x": [1, 2, 3]})]))
        print(fs.get_file_info(pafs.FileSelector(BUCKET, recursive=True)))
        print(perf_counters(gw.admin_socket).get("rgw", {}))
