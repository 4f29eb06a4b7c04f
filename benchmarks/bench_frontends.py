"""What bounds the coordinator on cache hits: gRPC Python's own cost, against the front
ends one could build instead, on one machine in one run (issue 11).

1. floor: a bare gRPC call carrying a hit's bytes (the handler does nothing): a stream
   of one message (as Query) served by ``grpc.server`` (threads, as skyhook serves) and
   by ``grpc.aio.server`` (one event loop), and one reply (as QueryWhole, which
   Client.query asks) served by ``grpc.server``: p50 of one client calling in sequence,
   and queries/s of 32 client processes.
2. coordinator: skyhook's coordinator answering cache hits to 32 client processes,
   served three ways (service/processes.py, as ``skyhook serve --processes N --workers
   W`` runs it): one process with 64 worker threads (the default); one with 4 (less
   contention for the GIL, but only 4 queries at once: not a setting to ship); two
   processes sharing one port, 64 threads each.

For each: queries/s, the servers' CPU per query, the clients' CPU per query and the
fraction of the machine's CPUs busy.  The cluster and dataset are bench_lean's (one
throwaway OSD, 50,000 events of 148 columns in 8 partitions, 10 columns at 1 %).

    .venv/bin/python benchmarks/bench_frontends.py [--out DIR] [--per-client N]

Writes <out>/results.json and <out>/table.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.append(str(ROOT / "benchmarks"))
os.environ.setdefault("BENCH_CODE_ROOT", str(ROOT))

import bench_coordinator as bc  # noqa: E402
import bench_lean  # noqa: E402
from systems import proc_cpu_seconds  # noqa: E402 - all threads, in ns (not 10 ms ticks)


# -- servers, each in a process of its own -------------------------------------------

def _floor_server(kind: str, body_bytes: int, port_q):
    import grpc

    body = b"x" * body_bytes
    if kind == "threads":
        server, port = bench_lean.floor_server(body, workers=64)
        port_q.put(port)
        server.wait_for_termination()
        return

    async def call(request, context):
        yield body

    async def main():
        server = grpc.aio.server()
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("floor.Floor", {
            "Call": grpc.unary_stream_rpc_method_handler(call)}),))
        port_q.put(server.add_insecure_port("127.0.0.1:0"))
        await server.start()
        await server.wait_for_termination()

    asyncio.run(main())



def _start(target, *args):
    """(the process running ``target(*args, port_queue)``, the port it put there)."""
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=target, args=(*args, q), daemon=True)
    p.start()
    return p, q.get(timeout=120)


# -- clients -----------------------------------------------------------------------------

def _floor_client(port: int, method: str, n: int, barrier, out_q):
    import grpc
    import grpc.experimental

    with grpc.insecure_channel(f"127.0.0.1:{port}", options=[
            (grpc.experimental.ChannelOptions.SingleThreadedUnaryStream, 1)]) as channel:
        call = bench_lean.floor_call(channel, method)
        call()
        barrier.wait()
        c0 = time.process_time()
        for _ in range(n):
            call()
        out_q.put(time.process_time() - c0)


def _floor_figures(kind: str, method: str, body_bytes: int, clients: int, per_client: int) -> dict:
    server, port = _start(_floor_server, kind, body_bytes)
    try:
        alone = bench_lean.time_floor_calls(bc, port, 2000, warmup=200, method=method)
        ctx = mp.get_context("spawn")
        barrier, out_q = ctx.Barrier(clients + 1), ctx.Queue()
        procs = [ctx.Process(target=_floor_client, args=(port, method, per_client, barrier, out_q))
                 for _ in range(clients)]
        for p in procs:
            p.start()
        barrier.wait(timeout=300)
        busy0, s0, t0 = bc._machine_busy_seconds(), proc_cpu_seconds(server.pid), time.perf_counter()
        client_cpu = sum(out_q.get(timeout=600) for _ in procs)
        seconds = time.perf_counter() - t0
        n = clients * per_client
        busy, total = (b - a for a, b in zip(busy0, bc._machine_busy_seconds()))
        for p in procs:
            p.join()
        return {"p50_ms": alone["p50_ms"], "queries_per_s": n / seconds,
                "server_cpu_ms_per_query": (proc_cpu_seconds(server.pid) - s0) * 1e3 / n,
                "clients_cpu_ms_per_query": client_cpu * 1e3 / n, "machine_busy_fraction": busy / total}
    finally:
        server.kill()


def _coordinator_figures(conf, pool, keyring, query, processes: int, workers: int,
                         clients: int, per_client: int) -> dict:
    from skyhook_py.service.client import Client
    from skyhook_py.service.processes import serve_processes

    # as `skyhook serve --processes N --workers W` runs them (the result cache on)
    running = serve_processes(processes, "127.0.0.1:0", conf=conf, pool=pool, user="client.admin",
                              keyring=keyring, max_workers=workers)
    servers, address = running.procs, running.address
    try:

        with Client(address, timeout=60) as c:   # every process's cache holds the answer
            for _ in range(20 * processes):
                c.query("bench", **query)
        s0 = sum(proc_cpu_seconds(p.pid) for p in servers)
        t = bc.throughput_processes(address, query, clients, per_client)
        cpu = sum(proc_cpu_seconds(p.pid) for p in servers) - s0
        t["server_cpu_ms_per_query"] = cpu * 1e3 / t["queries"]   # (the driver's own CPU was measured)
        t["queries_per_server_cpu_s"] = t["queries"] / cpu if cpu else None
        return t
    finally:
        running.stop()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "2026-12-05-frontends"))
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--per-client", type=int, default=60)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args(argv)

    from skyhook_py.cluster import Cluster

    work = Path(tempfile.mkdtemp(prefix="skyhook-bench-frontends-"))
    cluster = Cluster(work / "cluster")
    rows = []
    try:
        pool = "bench-frontends"
        query, _, _ = bench_lean.small_dataset(cluster, pool, work)
        conf, keyring = str(cluster.conf_path), str(cluster.admin_keyring)
        from skyhook_py.service import wire
        from skyhook_py.service.coordinator import Coordinator
        from skyhook_py.service.server import SkyhookServicer, open_session

        with open_session(conf, pool, user="client.admin", keyring=keyring) as s:   # a hit's bytes
            servicer = SkyhookServicer(Coordinator(s))
            servicer.pass_bytes = True
            request = wire.request_to_proto("bench", **query)
            list(servicer.Query(request, bc._Context()))
            request.query_id = "size"
            hit_bytes = sum(len(bc._serialize(m)) for m in servicer.Query(request, bc._Context()))
        setups = [("floor", "threads", ("threads", "Call")), ("floor", "aio", ("aio", "Call")),
                  ("floor", "threads, one reply", ("threads", "Whole")),
                  ("coordinator", "1 process x 64 threads", (1, 64)),
                  ("coordinator", "1 process x 4 threads", (1, 4)),
                  ("coordinator", "2 processes x 64 threads, one port", (2, 64))]
        for rnd in range(args.rounds):
            for what, label, shape in setups:
                print(f"[bench_frontends] round {rnd + 1}: {what}, {label}", file=sys.stderr, flush=True)
                if what == "floor":
                    f = _floor_figures(*shape, hit_bytes, args.clients, args.per_client)
                else:
                    f = _coordinator_figures(conf, pool, keyring, query, *shape, args.clients, args.per_client)
                rows.append({"round": rnd + 1, "what": what, "setup": label, **f})
    finally:
        cluster.purge()
        shutil.rmtree(work, ignore_errors=True)
    write(Path(args.out), rows, {"hit_bytes": hit_bytes, "clients": args.clients, "per_client": args.per_client,
                                 "cpus": os.cpu_count(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                                 "loadavg_end": os.getloadavg()})


def write(out: Path, rows: list, setup: dict):
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"setup": setup, "rows": rows}, indent=1))
    lines = [f"# Front ends on cache hits ({setup['date']}, {setup['cpus']} CPUs, {setup['clients']} client "
             f"processes x {setup['per_client']} queries, a hit of {setup['hit_bytes']} bytes)", "",
             "| round | server | setup | 1 client p50 ms | queries/s | server CPU ms/query | clients' CPU ms/query "
             "| machine busy |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        p50 = f"{r['p50_ms']:.3f}" if "p50_ms" in r else ""
        lines.append(f"| {r['round']} | {r['what']} | {r['setup']} | {p50} | {r['queries_per_s']:.0f} | "
                     f"{r['server_cpu_ms_per_query']:.3f} | {r['clients_cpu_ms_per_query']:.3f} | "
                     f"{r['machine_busy_fraction']:.2f} |")
    (out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    plot(out / "frontends.png", rows, setup)


def plot(path: Path, rows: list, setup: dict):
    """Queries/s of each server setup, a bar per round, against the 1,000 q/s target."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    setups = list(dict.fromkeys(f"{r['what']}: {r['setup']}" for r in rows))
    rounds = sorted({r["round"] for r in rows})
    fig, ax = plt.subplots(figsize=(9, 4))
    width = 0.8 / len(rounds)
    for k, rnd in enumerate(rounds):
        got = {f"{r['what']}: {r['setup']}": r["queries_per_s"] for r in rows if r["round"] == rnd}
        ax.barh([i + k * width for i in range(len(setups))], [got.get(s, 0) for s in setups], height=width,
                label=f"round {rnd}")
    ax.axvline(1000, color="k", linestyle="--", linewidth=1, label="target, 1,000 q/s")
    ax.set_yticks([i + width * (len(rounds) - 1) / 2 for i in range(len(setups))], setups)
    ax.invert_yaxis()
    ax.set_xlabel(f"cache hits per second, {setup['clients']} client processes ({setup['cpus']} CPUs shared)")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
