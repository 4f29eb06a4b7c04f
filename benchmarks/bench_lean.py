"""The lean client (issue 11): a small query's fixed cost in-process and through gRPC,
before and after, on one cluster in one run.

One throwaway one-OSD cluster (started and purged here) holds the small sweep's shape of
benchmarks/run.py: 50,000 NanoAOD-like events with 120 extra branches (148 columns) in
8 partitions of 6,250 events; 10 columns returned where ``MET_pt > t``, t chosen so that
1 % of the events pass.  Each code version (``--before REF``: a ``git archive`` of that
commit; after: this checkout) is measured in its own worker process, alternately
(before, after, before, after, ... for ``--rounds``), on the same cluster and dataset:

- in_process: ``Session.query`` (warm: manifest cached, class loaded);
- grpc_no_cache / grpc_cache_hit: a ``Client`` in the worker, the server in the worker;
- server_hit: the servicer's ``Query`` for a cache hit called directly (no transport);
- 32 client processes on cache hits (20 queries each): queries/s and the server
  process's CPU per query.

Every latency is reported as the p50 of the wall time and of the worker's CPU time
(``time.process_time``: all its threads, server, client and librados); on a shared
2-core machine the CPU figure is the steadier one.  The answers are checked before
timing: gRPC (uncached and cached) equals in-process.  The OSD's class is this
checkout's build for both versions (no C++ changes between them).

    .venv/bin/python benchmarks/bench_lean.py [--before REF] [--rounds N] [--repeats N]
        [--out benchmarks/results/2026-12-04-lean]

Writes <out>/results.json, <out>/README.md (table, medians over rounds) and <out>/lean.png.
"""

from __future__ import annotations

import argparse
import atexit
import importlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable


def _coordinator_bench():
    """benchmarks/bench_coordinator.py of this checkout (its timing helpers and client
    processes), as a top-level module that spawned client processes can import too: the
    worker's sys.path starts with the code being measured, this folder comes last."""
    sys.path.append(str(ROOT / "benchmarks"))
    return importlib.import_module("bench_coordinator")


# -- the worker: one code version, measured -------------------------------------------

def worker(args):
    code = Path(args.code).resolve()
    sys.path.insert(0, str(code))
    os.environ["BENCH_CODE_ROOT"] = str(code)
    bc = _coordinator_bench()
    from skyhook_py.service import wire
    from skyhook_py.service.client import Client
    from skyhook_py.service.coordinator import Coordinator
    from skyhook_py.service.server import SkyhookServicer, open_session, start_server

    query = json.loads(args.query)
    session = open_session(args.conf, args.pool, user="client.admin", keyring=args.keyring)
    server_session = open_session(args.conf, args.pool, user="client.admin", keyring=args.keyring)
    coordinator = Coordinator(server_session)
    running = start_server(coordinator, "127.0.0.1:0")
    client = Client(running.address, timeout=120)
    try:
        want = session.query("bench", **query)
        assert client.query("bench", use_cache=False, **query).equals(want), "gRPC and in-process answers differ"
        assert client.query("bench", **query).equals(want), "the cached answer differs"
        for _ in range(args.warmup):
            session.query("bench", **query)
            client.query("bench", use_cache=False, **query)
            client.query("bench", **query)
        servicer = SkyhookServicer(coordinator)
        servicer.pass_bytes = True   # as start_server registers it
        request = wire.request_to_proto("bench", **query)
        ctx = bc._Context()

        def server_hit():
            request.query_id = os.urandom(16).hex()
            for msg in servicer.Query(request, ctx):
                bc._serialize(msg)

        from skyhook_py.storage.manifest import current_version

        request.query_id = "size"
        hit_bytes = sum(len(bc._serialize(m)) for m in servicer.Query(request, ctx))
        lat = {
            # the parts of a hit that are not ours: a bare gRPC call carrying the hit's
            # bytes, and the manifest version check (one omap read) every query makes
            "grpc_floor": grpc_floor(bc, hit_bytes, args.repeats),
            "version_check": bc.percentiles(*bc.timed(
                lambda: current_version(server_session.store, "bench"), args.repeats)),
            "in_process": bc.percentiles(*bc.timed(lambda: session.query("bench", **query), args.repeats)),
            "grpc_no_cache": bc.percentiles(*bc.timed(
                lambda: client.query("bench", use_cache=False, **query), args.repeats)),
            "grpc_cache_hit": bc.percentiles(*bc.timed(lambda: client.query("bench", **query), args.repeats)),
            "server_hit": bc.percentiles(*bc.timed(server_hit, args.repeats)),
        }
        tput = bc.throughput_processes(running.address, query, args.clients, args.per_client)
        out = {"latency": lat, "throughput": tput, "rows": want.num_rows, "code": str(code),
               "loadavg": os.getloadavg()}
    finally:
        client.close()
        running.stop(close_session=True)
        session.close()
    print("RESULT " + json.dumps(out), flush=True)


def grpc_floor(bc, payload_bytes: int, repeats: int) -> dict:
    """A bare gRPC unary-stream call in this process (the handler yields one message
    of ``payload_bytes``, no work), on a channel set up as skyhook's Client sets its
    own: what gRPC Python alone costs per call, client and server together."""
    server, port = floor_server(b"x" * payload_bytes)
    try:
        return time_floor_calls(bc, port, repeats)
    finally:
        server.stop(0)


def floor_server(body: bytes, workers: int = 8):
    """A started ``grpc.server`` whose /floor.Floor/Call yields ``body`` (a stream of one
    message, as Query) and /floor.Floor/Whole returns it (one reply, as QueryWhole), and
    that does nothing else: (server, port)."""
    from concurrent import futures

    import grpc

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("floor.Floor", {
        "Call": grpc.unary_stream_rpc_method_handler(lambda request, context: iter((body,))),
        "Whole": grpc.unary_unary_rpc_method_handler(lambda request, context: body)}),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port


def floor_call(channel, method: str = "Call"):
    """A function making one /floor.Floor/``method`` call on ``channel`` to its end."""
    if method == "Whole":
        return lambda: channel.unary_unary("/floor.Floor/Whole")(b"", timeout=60)
    call = channel.unary_stream("/floor.Floor/Call")
    return lambda: list(call(b"", timeout=60))


def time_floor_calls(bc, port: int, repeats: int, warmup: int = 50, method: str = "Call") -> dict:
    """Percentiles of /floor.Floor/``method`` on 127.0.0.1:``port``, called in sequence."""
    import grpc
    import grpc.experimental

    with grpc.insecure_channel(f"127.0.0.1:{port}", options=[
            (grpc.experimental.ChannelOptions.SingleThreadedUnaryStream, 1)]) as channel:
        call = floor_call(channel, method)
        for _ in range(warmup):
            call()
        return bc.percentiles(*bc.timed(call, repeats))


# -- the driver: cluster, dataset, alternating rounds, report --------------------------

FIGURES = [  # (key, label, target, direction)
    ("in_process", "small query in-process, p50 wall ms", 3.0, "<="),
    ("in_process_cpu", "small query in-process, p50 CPU ms", None, None),
    ("overhead", "gRPC overhead (grpc_no_cache − in_process), p50 wall ms", 1.0, "<="),
    ("overhead_cpu", "gRPC overhead, p50 CPU ms", None, None),
    ("grpc_no_cache", "query through gRPC, no cache, p50 wall ms", None, None),
    ("grpc_no_cache_cpu", "query through gRPC, no cache, p50 CPU ms", None, None),
    ("grpc_cache_hit", "cache hit through gRPC, client round trip, p50 wall ms", 1.0, "<="),
    ("grpc_cache_hit_cpu", "cache hit through gRPC, p50 CPU ms (client + server)", None, None),
    ("server_hit", "server's work for a cache hit, p50 wall ms", 1.0, "<="),
    ("server_hit_cpu", "server's work for a cache hit, p50 CPU ms", None, None),
    ("tput", "client processes on cache hits (32 unless --clients), queries/s", 1000.0, ">="),
    ("tput_per_cpu", "the same, queries per server CPU-second", None, None),
    ("tput_clients_cpu", "the same, the client processes' CPU ms per query", None, None),
    ("tput_busy", "the same, fraction of the machine's CPUs busy", None, None),
    ("grpc_floor", "a bare gRPC call carrying a hit's bytes, no work (gRPC Python alone), p50 wall ms", None, None),
    ("version_check", "the manifest version check (one omap read), p50 wall ms", None, None),
]


def figures(r: dict) -> dict:
    lat = r["latency"]
    f = {}
    for p in ("in_process", "grpc_no_cache", "grpc_cache_hit", "server_hit"):
        f[p] = lat[p]["p50_ms"]
        f[p + "_cpu"] = lat[p]["cpu_p50_ms"]
    f["overhead"] = f["grpc_no_cache"] - f["in_process"]
    f["overhead_cpu"] = f["grpc_no_cache_cpu"] - f["in_process_cpu"]
    f["tput"] = r["throughput"]["queries_per_s"]
    f["tput_per_cpu"] = r["throughput"]["queries_per_server_cpu_s"]
    # not in runs before 2026-12-05 (the second session)
    f["tput_clients_cpu"] = r["throughput"].get("clients_cpu_ms_per_query", float("nan"))
    f["tput_busy"] = r["throughput"].get("machine_busy_fraction", float("nan"))
    for p in ("grpc_floor", "version_check"):   # not in runs before 2026-12-05
        f[p] = lat[p]["p50_ms"] if p in lat else float("nan")
    return f


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", default="7079ec9", help="git commit measured as 'before'")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--per-client", type=int, default=20)
    ap.add_argument("--events", type=int, default=50_000)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "2026-12-04-lean"))
    # worker mode (internal)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--code", help=argparse.SUPPRESS)
    ap.add_argument("--conf", help=argparse.SUPPRESS)
    ap.add_argument("--pool", help=argparse.SUPPRESS)
    ap.add_argument("--keyring", help=argparse.SUPPRESS)
    ap.add_argument("--query", help=argparse.SUPPRESS)
    ap.add_argument("--render", action="store_true", help="only rewrite table.md and lean.png from <out>/results.json")
    args = ap.parse_args(argv)
    if args.worker:
        return worker(args)
    if args.render:
        saved = json.loads((Path(args.out) / "results.json").read_text())
        return write(Path(args.out), saved["setup"], saved["runs"])

    sys.path.insert(0, str(ROOT))
    from skyhook_py.cluster import Cluster

    work = Path(tempfile.mkdtemp(prefix="skyhook-bench-lean-"))
    atexit.register(shutil.rmtree, work, True)
    before = work / "before"
    before.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.before, "skyhook_py", "proto"],
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(before)], input=archive, check=True)
    # generated code is not in git: the build's flatbuffers module (the same format in
    # both), and gRPC stubs made from the before's own proto (its services may differ)
    shutil.copytree(ROOT / "skyhook_py" / "_generated", before / "skyhook_py" / "_generated",
                    ignore=shutil.ignore_patterns("skyhook"))
    subprocess.run([PY, "-m", "grpc_tools.protoc", "-Iskyhook_py/_generated=proto", "--python_out=.",
                    "--grpc_python_out=.", *sorted(str(p.relative_to(before)) for p in (before / "proto").rglob("*.proto"))],
                   cwd=before, check=True)
    before_commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", args.before],
                                   check=True, capture_output=True, text=True).stdout.strip()
    after_commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                                  check=True, capture_output=True, text=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "skyhook_py"],
                                capture_output=True, text=True, check=False).stdout.strip())

    cluster = Cluster(work / "cluster")
    runs = []
    try:
        pool = "bench-lean"
        query, names, summary = small_dataset(cluster, pool, work, args.events)
        for rnd in range(args.rounds):
            for label, code in (("before", before), ("after", ROOT)):
                print(f"[bench_lean] round {rnd + 1}/{args.rounds}: {label}", file=sys.stderr, flush=True)
                cmd = [PY, str(Path(__file__).resolve()), "--worker", "--code", str(code),
                       "--conf", str(cluster.conf_path), "--pool", pool, "--keyring", str(cluster.admin_keyring),
                       "--query", json.dumps(query), "--repeats", str(args.repeats), "--warmup", str(args.warmup),
                       "--clients", str(args.clients), "--per-client", str(args.per_client)]
                p = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, check=False)
                line = next((x for x in p.stdout.splitlines() if x.startswith("RESULT ")), None)
                if p.returncode != 0 or line is None:
                    raise RuntimeError(f"worker {label} failed ({p.returncode}):\n{p.stderr[-3000:]}")
                r = json.loads(line[len("RESULT "):])
                r.update(label=label, round=rnd + 1)
                runs.append(r)
        setup = {"events": args.events, "partitions": summary.partitions_total, "columns_in_dataset": len(names),
                 "query": query, "rows_returned": runs[-1]["rows"], "pushed_down": summary.partitions_pushed_down,
                 "before": f"{before_commit} ({args.before})", "after": after_commit + (" + uncommitted" if dirty else ""),
                 "rounds": args.rounds, "repeats": args.repeats, "clients": args.clients,
                 "per_client": args.per_client, "cpus": os.cpu_count(), "host": platform.node(),
                 "python": platform.python_version(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                 "loadavg_end": os.getloadavg()}
    finally:
        cluster.purge()
    write(Path(args.out), setup, runs)


def small_dataset(cluster, pool: str, work: Path, events: int = 50_000):
    """Start ``cluster`` (one OSD) with ``pool`` holding dataset "bench": ``events``
    NanoAOD-like events, 148 columns, partitions of 6,250 events.  Returns the query of
    10 columns at 1 % selectivity (its kwargs), the dataset's column names, and that
    query's Summary."""
    import numpy as np

    from skyhook_py import demo_data, transcode
    from skyhook_py.service.server import open_session

    cluster.up(osds=1)
    cluster.create_pool(pool, size=1)
    src = demo_data.write_nanoaod(str(work / "bench.root"), events=events, seed=7, extra_branches=120)
    with open_session(cluster.conf_path, pool, user="client.admin", keyring=str(cluster.admin_keyring)) as s:
        transcode.ingest(s.store, [src], "bench", tree="Events", partition_events=6_250)
        m = s.manifest("bench")
        met = np.sort(s.query("bench", columns=["MET_pt"])["MET_pt"].to_numpy().astype(np.float32))
        threshold = float(met[len(met) - int(round(0.01 * len(met))) - 1])
        names = m.schema.names
        summary = s.run("bench", columns=["event"], where=f"MET_pt > {threshold!r}").summary
    cols = ["event", "MET_pt"] + [c for c in names if c not in ("event", "MET_pt")]
    return {"columns": cols[:10], "where": f"MET_pt > {threshold!r}"}, names, summary


def write(out: Path, setup: dict, runs: list):
    out.mkdir(parents=True, exist_ok=True)
    med = {}
    for label in ("before", "after"):
        figs = [figures(r) for r in runs if r["label"] == label]
        med[label] = {k: statistics.median(f[k] for f in figs) for k in figs[0]}
    (out / "results.json").write_text(json.dumps({"setup": setup, "runs": runs, "medians": med}, indent=1))
    s = setup
    lines = [
        "# The lean client: a small query's fixed cost, before and after (issue 11)",
        "",
        f"Measured {s['date']} by `benchmarks/bench_lean.py` on one throwaway one-OSD cluster: "
        f"{s['events']:,} NanoAOD-like events, {s['columns_in_dataset']} columns, {s['partitions']} partitions "
        f"(all pushed down: {s['pushed_down']}); 10 columns where `{s['query']['where']}` "
        f"({s['rows_returned']} rows, 1 %). Before = {s['before']}, after = {s['after']}; each measured in its own "
        f"worker process, alternately, {s['rounds']} rounds of {s['repeats']} queries per path after warm-up; "
        f"the table gives the medians over rounds of each round's p50. {s['cpus']} CPUs shared with other "
        f"engineers' work (load average {s['loadavg_end'][0]:.1f} at the end): **the CPU figures "
        "(`time.process_time` of the worker: client, server and librados threads) are the steadier ones**.",
        "",
        "| figure | before | after | after/before | target | met (after) |",
        "|---|---|---|---|---|---|",
    ]
    for key, label, target, direction in FIGURES:
        b, a = med["before"][key], med["after"][key]
        ratio = a / b if b else float("nan")
        met = ""
        if target is not None:
            ok = a <= target if direction == "<=" else a >= target
            met = "yes" if ok else "**no**"
        tgt = f"{direction} {target:g}" if target is not None else ""
        lines.append(f"| {label} | {b:.2f} | {a:.2f} | {ratio:.2f} | {tgt} | {met} |")
    lines += ["", "Every round (p50 wall / p50 CPU, ms; throughput in queries/s):", "",
              "| round | version | in-process | gRPC no cache | gRPC hit | server hit | 32 clients q/s | load |",
              "|---|---|---|---|---|---|---|---|"]
    for r in runs:
        f = figures(r)
        lines.append(f"| {r['round']} | {r['label']} | {f['in_process']:.2f} / {f['in_process_cpu']:.2f} | "
                     f"{f['grpc_no_cache']:.2f} / {f['grpc_no_cache_cpu']:.2f} | "
                     f"{f['grpc_cache_hit']:.2f} / {f['grpc_cache_hit_cpu']:.2f} | "
                     f"{f['server_hit']:.2f} / {f['server_hit_cpu']:.2f} | {f['tput']:.0f} | {r['loadavg'][0]:.1f} |")
    (out / "table.md").write_text("\n".join(lines) + "\n")
    plot(out / "lean.png", med)
    print("\n".join(lines))


def plot(path: Path, med: dict):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [("in_process", "in-process"), ("grpc_no_cache", "gRPC, no cache"), ("overhead", "gRPC overhead"),
            ("grpc_cache_hit", "gRPC cache hit")]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [3, 1]})
    x = range(len(keys))
    w = 0.2
    for i, (suffix, what) in enumerate((("", "wall"), ("_cpu", "CPU"))):
        for j, label in enumerate(("before", "after")):
            vals = [med[label][k + suffix] for k, _ in keys]
            ax1.bar([v + (2 * i + j - 1.5) * w for v in x], vals, w,
                    label=f"{label}, p50 {what}", color=["#bbbbbb", "#4477aa", "#dddddd", "#88ccee"][2 * i + j],
                    hatch="" if i == 0 else "//")
    ax1.axhline(3.0, color="#aa3377", lw=1, ls="--")
    ax1.text(-0.45, 3.05, "in-process target 3 ms", ha="left", va="bottom", color="#aa3377", fontsize=8)
    ax1.axhline(1.0, color="#228833", lw=1, ls=":")
    ax1.text(-0.45, 1.05, "gRPC overhead / hit target 1 ms", ha="left", va="bottom",
             color="#228833", fontsize=8)
    ax1.set_xticks(list(x), [w_ for _, w_ in keys])
    ax1.set_ylabel("ms per query (p50)")
    ax1.set_title("small query (8 partitions, 148 columns, 1 %)")
    ax1.legend(fontsize=8)
    ax2.bar([0, 1], [med["before"]["tput"], med["after"]["tput"]], color=["#bbbbbb", "#4477aa"])
    ax2.axhline(1000, color="#aa3377", lw=1, ls="--")
    ax2.set_xticks([0, 1], ["before", "after"])
    ax2.set_title("32 client processes, cache hits")
    ax2.set_ylabel("queries/s")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
