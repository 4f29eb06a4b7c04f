"""Answers compressed for the client (issue 11): the coordinator on a storage host, its
client across a rate-shaped link, asking for plain, LZ4 and ZSTD answers.

One storage host, a network namespace holding the mon and one OSD (skyhook_py.netns).
The coordinator runs on that host next to the OSD (``skyhook serve`` inside the
namespace). The client runs in the root namespace and reaches the coordinator over the
link, which is shaped with tbf at each rate (both links of the path, client to switch
and switch to host; ``none`` is the unshaped veth).

The codecs: plain, LZ4, ZSTD and "auto" (plain until answers are timed arriving
slower than 150 MB/s). One Client per codec and link rate asks every query in turn, as
an analysis session would.

For each link rate, codec and query it records:
- the p50 wall time of ``--repeats`` queries, without the cache (the coordinator
  compresses each answer) and as cache hits (the compressed form is kept);
- the bytes that crossed the client's link per query (the veth's counter);
- the coordinator's CPU per query.

    .venv/bin/python benchmarks/bench_result_compression.py [--events N] [--repeats N] [--rates 1gbit,100mbit,none]

Writes <out>/results.json, <out>/table.md and <out>/compression.png; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.append(str(ROOT / "benchmarks"))

from systems import proc_cpu_seconds  # noqa: E402 - all threads of a process, seconds

CODECS = (None, "lz4", "zstd", "auto")
PORT = 50161


def say(msg: str):
    print(f"[bench_result_compression {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _serve_on_host(cluster, pool: str, log: Path) -> tuple[subprocess.Popen, str]:
    """``skyhook serve`` inside storage host 0 (beside its OSD): (process, address)."""
    from skyhook_py.service.client import Client

    address = f"{cluster.host_addr(0)}:{PORT}"
    cmd = [*cluster.network.exec_prefix(0), sys.executable, "-m", "skyhook_py.cli",
           "--conf", str(cluster.conf_path), "--pool", pool, "serve", "--listen", address,
           "--as-user", "client.admin", "--as-keyring", str(cluster.admin_keyring)]
    # `ip netns exec` execs the command: proc.pid is the coordinator's own
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log.open("w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the coordinator exited ({proc.returncode}): {log.read_text()[-2000:]}")
        try:
            with Client(address, timeout=2) as c:
                if c.health(timeout=2)["status"] == "SERVING":
                    return proc, address
        except Exception:  # noqa: BLE001 - not up yet
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError(f"the coordinator did not serve within 60 s: {log.read_text()[-2000:]}")


def measure(cluster, c, server_pid: int, query: dict, use_cache: bool, repeats: int) -> dict:
    """p50 time, bytes over the client's link and coordinator CPU of ``query`` asked by
    the Client ``c`` (after one query that warms up and fills the cache)."""
    net = cluster.network
    want_rows = c.query("bench", use_cache=use_cache, **query).num_rows
    walls, rx = [], []
    cpu0 = proc_cpu_seconds(server_pid)
    for _ in range(repeats):
        b0 = net.counters()["client"]
        t0 = time.perf_counter()
        t = c.query("bench", use_cache=use_cache, **query)
        walls.append(time.perf_counter() - t0)
        rx.append(net.counters()["client"] - b0)
        assert t.num_rows == want_rows
    cpu = (proc_cpu_seconds(server_pid) - cpu0) / repeats
    return {"p50_ms": statistics.median(walls) * 1e3, "rx_mb": statistics.median(rx) / 1e6,
            "server_cpu_ms": cpu * 1e3, "rows": want_rows, "asked": c._codec() or "plain"}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--rates", default="100mbit,1gbit,none")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "2026-12-05-whole" / "result-compression"))
    args = ap.parse_args(argv)

    import numpy as np

    from skyhook_py import demo_data, transcode
    from skyhook_py.cluster import Cluster
    from skyhook_py.service.client import Client
    from skyhook_py.service.server import open_session

    work = Path(tempfile.mkdtemp(prefix="skyhook-bench-rcomp-"))
    cluster = Cluster(work / "cluster")
    rows, server = [], None
    try:
        say("one storage host (mon + OSD in a network namespace)")
        cluster.up(osds=1, hosts=1)
        pool = "bench-rcomp"
        cluster.create_pool(pool, size=1)
        src = demo_data.write_nanoaod(str(work / "bench.root"), events=args.events, seed=7)
        with open_session(cluster.conf_path, pool, user="client.admin", keyring=str(cluster.admin_keyring)) as s:
            say(f"ingest {args.events:,} events")
            transcode.ingest(s.store, [src], "bench", tree="Events", partition_events=50_000)
            names = s.manifest("bench").schema.names
            met = np.sort(s.query("bench", columns=["MET_pt"])["MET_pt"].to_numpy())
        cols = ["event", "run", "MET_pt", "nMuon", "Muon_pt", "Muon_eta", "Muon_phi", "nJet", "Jet_pt", "Jet_eta"]
        cols = [c for c in cols if c in names]
        # 10 % first: an answer QueryWhole sends in one reply, the kind "auto" times
        queries = {"10 %": {"columns": cols, "where": f"MET_pt > {float(met[int(0.9 * len(met))])!r}"},
                   "100 %": {"columns": cols}}
        server, address = _serve_on_host(cluster, pool, work / "serve.log")
        say(f"coordinator on {address} (inside host0)")
        for rate in args.rates.split(","):
            cluster.set_link(None if rate == "none" else rate)
            # one Client per codec and link, as an analysis session holds one ("auto" learns)
            clients = {codec: Client(address, timeout=600, compression=codec) for codec in CODECS}
            for qname, query in queries.items():
                for codec, c in clients.items():
                    for use_cache in (False, True):
                        f = measure(cluster, c, server.pid, query, use_cache, args.repeats)
                        row = {"link": rate, "query": qname, "codec": codec or "plain",
                               "path": "hit" if use_cache else "no cache", **f}
                        rows.append(row)
                        say(f"{rate:>7} {qname:>5} {row['codec']:>5} {row['path']:>8}: {f['p50_ms']:8.1f} ms, "
                            f"{f['rx_mb']:6.2f} MB, coordinator {f['server_cpu_ms']:6.1f} ms CPU, "
                            f"then asking {f['asked']}")
            for c in clients.values():
                c.close()
    finally:
        if server is not None:
            server.kill()
            server.wait(10)
        cluster.purge()
        shutil.rmtree(work, ignore_errors=True)
    setup = {"events": args.events, "repeats": args.repeats, "columns": cols, "cpus": os.cpu_count(),
             "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "loadavg_end": os.getloadavg()}
    write(Path(args.out), rows, setup)


def write(out: Path, rows: list, setup: dict):
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"setup": setup, "rows": rows}, indent=1))
    lines = [f"# Answers compressed for the client ({setup['date']}, {setup['cpus']} CPUs shared)", "",
             f"{setup['events']:,} NanoAOD-like events in partitions of 50,000; {len(setup['columns'])} columns "
             f"({', '.join(setup['columns'])}); p50 of {setup['repeats']} queries each. The coordinator runs on "
             "the storage host, the client across the link; MB = bytes that crossed the client's link per query.",
             "\"auto\" starts plain and times the answers sent in one reply (the 10 % query's); "
             "\"asking\" is what it asked for after the point.",
             "", "| link | query | path | codec | p50 ms | MB | coordinator CPU ms | time / plain | asking |",
             "|---|---|---|---|---|---|---|---|---|"]
    plain = {(r["link"], r["query"], r["path"]): r["p50_ms"] for r in rows if r["codec"] == "plain"}
    for r in rows:
        base = plain.get((r["link"], r["query"], r["path"]))
        lines.append(f"| {r['link']} | {r['query']} | {r['path']} | {r['codec']} | {r['p50_ms']:.1f} | "
                     f"{r['rx_mb']:.2f} | {r['server_cpu_ms']:.1f} | {r['p50_ms'] / base:.2f} | {r['asked']} |")
    (out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    plot(out / "compression.png", rows)


def plot(path: Path, rows: list):
    """p50 time per link rate, a group of bars per codec, one panel per query and path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = list(dict.fromkeys((r["query"], r["path"]) for r in rows))
    links = list(dict.fromkeys(r["link"] for r in rows))
    codecs = list(dict.fromkeys(r["codec"] for r in rows))
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.8), squeeze=False)
    width = 0.8 / len(codecs)
    for ax, (q, p) in zip(axes[0], panels):
        for k, codec in enumerate(codecs):
            got = {r["link"]: r["p50_ms"] for r in rows if (r["query"], r["path"], r["codec"]) == (q, p, codec)}
            ax.bar([i + k * width for i in range(len(links))], [got.get(li, 0) for li in links], width, label=codec)
        ax.set_xticks([i + width * (len(codecs) - 1) / 2 for i in range(len(links))], links)
        ax.set_yscale("log")
        ax.set_title(f"{q} of the events, {p}")
        ax.set_ylabel("p50 ms (log)")
    axes[0][0].legend()
    fig.suptitle("Query time through the coordinator, by client link and answer codec")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
