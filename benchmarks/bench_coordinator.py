"""The coordinator's fast path: a small query in-process, through gRPC, and from the cache.

On a throwaway one-OSD cluster (started and purged here), the small-sweep shape of
benchmarks/run.py: 50,000 NanoAOD-like events with 120 extra branches (148 columns) in
8 partitions of 6,250 events; 10 columns returned, ``MET_pt > t`` with t chosen so that
1 % of the events pass.  Measured (wall time and this process's CPU time per query):

- in_process: ``Session.query`` (warm: manifest cached, class loaded);
- server_hit: the server's own work for a cache hit, without the transport: the gRPC
  servicer's ``Query`` called directly and its messages serialized (what a hit costs the
  server);
- grpc_no_cache / grpc_cache_hit: through a gRPC client in this process;
- throughput on cache hits with 1, 8 and 32 concurrent clients, as threads of this
  process (one GIL shared with the server) and as separate client processes.

``--code DIR`` imports skyhook_py from another checkout (the before/after comparison).
Writes <out>/coordinator.{json,md}.

    .venv/bin/python benchmarks/bench_coordinator.py [--events N] [--repeats N] [--out DIR] [--code DIR]
"""

from __future__ import annotations

import argparse
import atexit
import json
import multiprocessing as mp
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _import_root(argv):
    """The checkout to import skyhook_py from (--code), before anything imports it."""
    code = ROOT
    for i, a in enumerate(argv):
        if a == "--code" and i + 1 < len(argv):
            code = Path(argv[i + 1]).resolve()
        elif a.startswith("--code="):
            code = Path(a.split("=", 1)[1]).resolve()
    sys.path.insert(0, str(code))
    return code


def percentiles(walls, cpus=None):
    a = np.array(walls) * 1000
    out = {"p50_ms": float(np.percentile(a, 50)), "p90_ms": float(np.percentile(a, 90)),
           "p99_ms": float(np.percentile(a, 99)), "mean_ms": float(a.mean()), "n": len(walls)}
    if cpus is not None:
        c = np.array(cpus) * 1000
        out["cpu_p50_ms"] = float(np.percentile(c, 50))
        out["cpu_mean_ms"] = float(c.mean())
    return out


def timed(fn, repeats):
    walls, cpus = [], []
    for _ in range(repeats):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return walls, cpus


class _Context:
    """The little of grpc.ServicerContext that SkyhookServicer.Query uses."""

    def invocation_metadata(self):
        return ()

    def peer(self):   # admission control's unit (service/admission.py)
        return "ipv4:127.0.0.1:1"

    def time_remaining(self):
        return None

    def add_callback(self, fn):
        return True

    def set_trailing_metadata(self, md):
        pass

    def abort(self, code, message):
        raise RuntimeError(f"{code}: {message}")


def _serialize(msg):
    return msg if isinstance(msg, (bytes, bytearray)) else msg.SerializeToString()


def _client_process(address, query, per_client, barrier, results_q, use_cache):
    sys.path.insert(0, os.environ["BENCH_CODE_ROOT"])
    from skyhook_py.service.client import Client

    errors = 0
    with Client(address, timeout=120) as c:
        c.query("bench", use_cache=use_cache, **query)   # connect outside the timing
        barrier.wait()
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(per_client):
            try:
                c.query("bench", use_cache=use_cache, **query)
            except Exception:  # noqa: BLE001
                errors += 1
        results_q.put((t0, time.perf_counter(), errors, time.process_time() - c0))


def throughput_processes(address, query, clients, per_client, use_cache=True):
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(clients + 1)
    q = ctx.Queue()
    procs = [ctx.Process(target=_client_process, args=(address, query, per_client, barrier, q, use_cache))
             for _ in range(clients)]
    for p in procs:
        p.start()
    barrier.wait(timeout=300)
    busy0 = _machine_busy_seconds()
    c0, t0 = time.process_time(), time.perf_counter()
    got = [q.get(timeout=600) for _ in procs]
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    busy, total = (b - a for a, b in zip(busy0, _machine_busy_seconds()))
    for p in procs:
        p.join()
    n = clients * per_client
    return {"clients": clients, "kind": "processes", "queries": n, "seconds": seconds,
            "queries_per_s": n / seconds, "errors": sum(g[2] for g in got),
            "server_cpu_ms_per_query": cpu * 1000 / n, "queries_per_server_cpu_s": n / cpu if cpu else None,
            # where the machine's CPU went: the clients' own share, and how busy every CPU was
            "clients_cpu_ms_per_query": sum(g[3] for g in got) * 1000 / n,
            "machine_busy_fraction": busy / total if total else None}


def _machine_busy_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far (/proc/stat, all CPUs)."""
    with open("/proc/stat") as f:
        ticks = [int(x) for x in f.readline().split()[1:]]
    idle = ticks[3] + ticks[4]   # idle + iowait
    hz = os.sysconf("SC_CLK_TCK")
    return (sum(ticks) - idle) / hz, sum(ticks) / hz


def throughput_threads(address, query, clients, per_client, use_cache=True):
    from skyhook_py.service.client import Client

    errors = []
    barrier = threading.Barrier(clients + 1)

    def worker():
        with Client(address, timeout=120) as c:
            c.query("bench", use_cache=use_cache, **query)
            barrier.wait()
            for _ in range(per_client):
                try:
                    c.query("bench", use_cache=use_cache, **query)
                except Exception as e:  # noqa: BLE001
                    errors.append(repr(e))

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    c0, t0 = time.process_time(), time.perf_counter()
    for t in threads:
        t.join()
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    n = clients * per_client
    return {"clients": clients, "kind": "threads", "queries": n, "seconds": seconds,
            "queries_per_s": n / seconds, "errors": len(errors),
            # server and clients share this process: the CPU of both
            "server_cpu_ms_per_query": cpu * 1000 / n, "queries_per_server_cpu_s": n / cpu if cpu else None}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    code = _import_root(argv)
    os.environ["BENCH_CODE_ROOT"] = str(code)
    from skyhook_py import demo_data, transcode
    from skyhook_py.cluster import Cluster
    from skyhook_py.service import wire
    from skyhook_py.service.client import Client
    from skyhook_py.service.coordinator import Coordinator
    from skyhook_py.service.server import SkyhookServicer, open_session, start_server

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=50_000)
    ap.add_argument("--partition-events", type=int, default=6_250)
    ap.add_argument("--extra-branches", type=int, default=120)
    ap.add_argument("--ncols", type=int, default=10)
    ap.add_argument("--selectivity", type=float, default=0.01)
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--per-client", type=int, default=30)
    ap.add_argument("--clients", default="1,8,32")
    ap.add_argument("--label", default="")
    ap.add_argument("--code", default=str(ROOT))
    ap.add_argument("--profile", help="write a cProfile of the --profile-path to this file")
    ap.add_argument("--profile-path", default="server_hit", choices=["server_hit", "in_process"])
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="skyhook-bench-"))
    atexit.register(shutil.rmtree, work, True)   # the work folder goes with the process
    cluster = Cluster(work / "cluster")
    running = None
    try:
        cluster.up(osds=1)
        pool = "bench-coordinator"
        cluster.create_pool(pool, size=1)
        src = demo_data.write_nanoaod(str(work / "bench.root"), events=args.events, seed=7,
                                      extra_branches=args.extra_branches)
        session = open_session(cluster.conf_path, pool, user="client.admin", keyring=str(cluster.admin_keyring))
        transcode.ingest(session.store, [src], "bench", tree="Events", partition_events=args.partition_events)
        m = session.manifest("bench")
        met = session.query("bench", columns=["MET_pt"])["MET_pt"].to_numpy()
        v = np.sort(met.astype(np.float32))
        threshold = float(v[len(v) - int(round(args.selectivity * len(v))) - 1])
        names = m.schema.names
        cols = ["event", "MET_pt"] + [c for c in names if c not in ("event", "MET_pt")]
        query = dict(columns=cols[:args.ncols], where=f"MET_pt > {threshold!r}")

        server_session = open_session(cluster.conf_path, pool, user="client.admin",
                                      keyring=str(cluster.admin_keyring))
        coordinator = Coordinator(server_session)
        running = start_server(coordinator, "127.0.0.1:0")
        client = Client(running.address, timeout=120)

        want = session.query("bench", **query)
        got = client.query("bench", use_cache=False, **query)
        assert got.equals(want), "gRPC and in-process answers differ"
        assert client.query("bench", **query).equals(want), "the cached answer differs"
        summary = session.run("bench", **query).summary
        for _ in range(20):  # warm up every path
            session.query("bench", **query)
            client.query("bench", use_cache=False, **query)
            client.query("bench", **query)

        servicer = SkyhookServicer(coordinator)
        servicer.pass_bytes = True   # as start_server registers it (no effect on older code)
        request = wire.request_to_proto("bench", **query)
        ctx = _Context()

        def server_hit():
            request.query_id = os.urandom(16).hex()   # every request has its own id
            for msg in servicer.Query(request, ctx):
                _serialize(msg)

        if args.profile:
            import cProfile

            prof = cProfile.Profile()
            prof.enable()
            fn = server_hit if args.profile_path == "server_hit" else (lambda: session.query("bench", **query))
            for _ in range(args.repeats):
                fn()
            prof.disable()
            prof.dump_stats(args.profile)

        lat = {}
        lat["in_process"] = percentiles(*timed(lambda: session.query("bench", **query), args.repeats))
        lat["server_hit"] = percentiles(*timed(server_hit, args.repeats))
        lat["grpc_no_cache"] = percentiles(*timed(lambda: client.query("bench", use_cache=False, **query),
                                                  args.repeats))
        lat["grpc_cache_hit"] = percentiles(*timed(lambda: client.query("bench", **query), args.repeats))
        clients = [int(x) for x in args.clients.split(",")]
        tput = [throughput_threads(running.address, query, n, args.per_client) for n in clients]
        tput += [throughput_processes(running.address, query, n, args.per_client) for n in clients]
        results = {
            "setup": {"events": args.events, "partitions": summary.partitions_total,
                      "columns_in_dataset": len(names), "columns_returned": len(query["columns"]),
                      "rows_returned": want.num_rows, "selectivity": want.num_rows / args.events,
                      "query": query, "pushed_down": summary.partitions_pushed_down,
                      "fallen_back": summary.partitions_fallen_back,
                      "class": cluster.class_state(pool) if hasattr(cluster, "class_state") else "?",
                      "code": str(code), "label": args.label, "cpus": os.cpu_count(),
                      "loadavg": os.getloadavg(), "host": platform.node(),
                      "python": platform.python_version()},
            "latency": lat,
            "throughput": tput,
        }
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
        "# Coordinator: gRPC vs in-process" + (f" ({s['label']})" if s.get("label") else ""),
        "",
        f"One OSD, dataset of {s['events']:,} NanoAOD-like events ({s['columns_in_dataset']} columns) in "
        f"{s['partitions']} partitions; {s['columns_returned']} columns where `{s['query']['where']}` "
        f"({s['rows_returned']:,} rows, {s['selectivity']:.2%}; pushed down: {s['pushed_down']}, fallen "
        f"back: {s['fallen_back']}; class {s['class']}). Server and thread clients in one process; "
        f"{s['cpus']} CPUs, load average {s['loadavg'][0]:.1f} at the end.",
        "",
        "| path | p50 ms | p90 ms | p99 ms | mean ms | CPU p50 ms | n |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in lat.items():
        lines.append(f"| {name} | {r['p50_ms']:.2f} | {r['p90_ms']:.2f} | {r['p99_ms']:.2f} | "
                     f"{r['mean_ms']:.2f} | {r.get('cpu_p50_ms', float('nan')):.2f} | {r['n']} |")
    lines += ["", f"gRPC overhead at p50 (grpc_no_cache - in_process): **{results['grpc_overhead_p50_ms']:.2f} ms**",
              "", "Throughput on cache hits. CPU ms/query: this process's CPU time over the run per query "
              "(threads: server and clients; processes: the server alone); queries per CPU-second: its inverse, "
              "what one idle core would serve.", "",
              "| concurrent clients | as | queries | seconds | queries/s | errors | CPU ms/query | queries per CPU-s |",
              "|---|---|---|---|---|---|---|---|"]
    for t in results["throughput"]:
        lines.append(f"| {t['clients']} | {t['kind']} | {t['queries']} | {t['seconds']:.2f} | "
                     f"{t['queries_per_s']:.1f} | {t['errors']} | {t.get('server_cpu_ms_per_query', float('nan')):.2f} | "
                     f"{t.get('queries_per_server_cpu_s') or float('nan'):.0f} |")
    (out / "coordinator.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
