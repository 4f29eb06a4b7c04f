"""The cost of going through the gRPC coordinator instead of an in-process Session.

On a throwaway one-OSD cluster (started and purged here), one NanoAOD-like dataset:
- latency of a small query (p50/p99): in-process Session, through gRPC with the result
  cache bypassed, and through gRPC answered from the cache;
- throughput (queries/s) with 1, 8 and 32 concurrent gRPC clients (threads).
Server and clients run in this one process (as the tests do), so the gRPC figures
include the GIL contention of both ends.  Writes benchmarks/results/coordinator.{json,md}.

    .venv/bin/python benchmarks/bench_coordinator.py [--events N] [--repeats N]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from skyhook_py import demo_data, transcode  # noqa: E402
from skyhook_py.service.client import Client  # noqa: E402
from skyhook_py.cluster import Cluster  # noqa: E402
from skyhook_py.service.coordinator import Coordinator  # noqa: E402
from skyhook_py.service.server import open_session, start_server  # noqa: E402

SMALL = dict(columns=["event", "MET_pt"], where="MET_pt > 150")


def percentiles(xs):
    a = np.array(xs) * 1000
    return {"p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99)),
            "mean_ms": float(a.mean()), "n": len(xs)}


def timed(fn, repeats):
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def throughput(address, clients, per_client):
    errors = []
    barrier = threading.Barrier(clients + 1)

    def worker():
        with Client(address, timeout=120) as c:
            c.query("bench", use_cache=False, **SMALL)  # connect outside the timing
            barrier.wait()
            for _ in range(per_client):
                try:
                    c.query("bench", use_cache=False, **SMALL)
                except Exception as e:  # noqa: BLE001
                    errors.append(repr(e))

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - t0
    n = clients * per_client
    return {"clients": clients, "queries": n, "seconds": seconds, "queries_per_s": n / seconds,
            "errors": len(errors)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--partition-events", type=int, default=5_000)
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--per-client", type=int, default=20)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="skyhook-bench-"))
    cluster = Cluster(work / "cluster")
    running = None
    try:
        cluster.up(osds=1)
        pool = "bench-coordinator"
        cluster.create_pool(pool, size=1)
        src = demo_data.write_nanoaod(str(work / "bench.root"), events=args.events, seed=7)
        session = open_session(cluster.conf_path, pool, user="client.admin", keyring=str(cluster.admin_keyring))
        transcode.ingest(session.store, [src], "bench", tree="Events", partition_events=args.partition_events)
        server_session = open_session(cluster.conf_path, pool, user="client.admin",
                                      keyring=str(cluster.admin_keyring))
        running = start_server(Coordinator(server_session), "127.0.0.1:0")
        client = Client(running.address, timeout=120)

        want = session.query("bench", **SMALL)
        got = client.query("bench", use_cache=False, **SMALL)
        assert got.equals(want), "gRPC and in-process answers differ"
        summary = session.run("bench", **SMALL).summary
        for _ in range(20):  # warm up both paths
            session.query("bench", **SMALL)
            client.query("bench", use_cache=False, **SMALL)

        results = {
            "setup": {"events": args.events, "partitions": summary.partitions_total,
                      "rows_returned": want.num_rows, "query": SMALL,
                      "pushed_down": summary.partitions_pushed_down,
                      "fallen_back": summary.partitions_fallen_back,
                      "class": cluster.class_state(pool) if hasattr(cluster, "class_state") else "?",
                      "host": platform.node(), "python": platform.python_version()},
            "latency": {
                "in_process": percentiles(timed(lambda: session.query("bench", **SMALL), args.repeats)),
                "grpc_no_cache": percentiles(timed(lambda: client.query("bench", use_cache=False, **SMALL),
                                                   args.repeats)),
                "grpc_cache_hit": percentiles(timed(lambda: client.query("bench", **SMALL), args.repeats)),
            },
            "throughput": [throughput(running.address, n, args.per_client) for n in (1, 8, 32)],
        }
        lat = results["latency"]
        results["grpc_overhead_p50_ms"] = lat["grpc_no_cache"]["p50_ms"] - lat["in_process"]["p50_ms"]
        client.close()
        write(results, Path(args.out))
        session.close()
    finally:
        if running is not None:
            running.stop(close_session=True)
        cluster.purge()


def write(results, out: Path):
    out.mkdir(parents=True, exist_ok=True)
    (out / "coordinator.json").write_text(json.dumps(results, indent=1))
    s, lat = results["setup"], results["latency"]
    lines = [
        "# Coordinator: gRPC vs in-process",
        "",
        f"One OSD, dataset of {s['events']:,} NanoAOD-like events in {s['partitions']} partitions; "
        f"query `{s['query']['where']}` returning {s['rows_returned']:,} rows of "
        f"{', '.join(s['query']['columns'])} (pushed down: {s['pushed_down']}, fallen back: "
        f"{s['fallen_back']}; class {s['class']}). Server and clients in one process.",
        "",
        "| path | p50 ms | p99 ms | mean ms | n |",
        "|---|---|---|---|---|",
    ]
    for name, r in lat.items():
        lines.append(f"| {name} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['mean_ms']:.2f} | {r['n']} |")
    lines += ["", f"gRPC overhead at p50: **{results['grpc_overhead_p50_ms']:.2f} ms** (target < 5 ms)", "",
              "| concurrent clients | queries | seconds | queries/s | errors |", "|---|---|---|---|---|"]
    for t in results["throughput"]:
        lines.append(f"| {t['clients']} | {t['queries']} | {t['seconds']:.2f} | {t['queries_per_s']:.1f} | {t['errors']} |")
    (out / "coordinator.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
