"""The `ceph` service of the Docker stack: a one-node Ceph cluster with the skyhook class
loaded (skyhook_py.cluster, bluestore on files in $SKYHOOK_CLUSTER_DIR) and radosgw on
127.0.0.1:$SKYHOOK_RGW_PORT with one S3 user.  Writes `<cluster dir>/ready` when both
answer (the healthcheck and the coordinator wait for it); SIGTERM stops radosgw, then the
cluster, cleanly.  No TLS, one gateway: a stack for trying Skyhook, not for production."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, "/opt/skyhook")

from benchmarks import s3  # noqa: E402
from skyhook_py.cluster import Cluster  # noqa: E402


def main() -> int:
    cdir = Path(os.environ.get("SKYHOOK_CLUSTER_DIR", "/var/lib/skyhook/cluster"))
    ready = cdir / "ready"
    ready.unlink(missing_ok=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    t0 = time.monotonic()
    cluster = Cluster(cdir).up(osds=int(os.environ.get("SKYHOOK_OSDS", "1")))
    print(f"[ceph] cluster up in {time.monotonic() - t0:.1f} s; class {cluster.class_state('skyhook')}", flush=True)
    gw = s3.RadosGateway(cluster, port=int(os.environ.get("SKYHOOK_RGW_PORT", "18080")))
    try:
        gw.start()
        gw.create_user(os.environ.get("SKYHOOK_S3_KEY", s3.ACCESS_KEY),
                       os.environ.get("SKYHOOK_S3_SECRET", s3.SECRET_KEY))
        print(f"[ceph] radosgw on {gw.endpoint}; ready in {time.monotonic() - t0:.1f} s", flush=True)
        ready.write_text(f"{gw.endpoint}\n")
        while not stop.wait(5):
            if gw.pid is None:
                print("[ceph] radosgw exited", flush=True)
                return 1
        return 0
    finally:
        ready.unlink(missing_ok=True)
        gw.stop()
        cluster.down()
        print("[ceph] stopped", flush=True)


if __name__ == "__main__":
    sys.exit(main())
