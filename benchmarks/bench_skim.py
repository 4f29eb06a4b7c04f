"""Skims kept in storage vs pulling the selection to the client, and the cost of tracking.

On a throwaway one-OSD cluster (started and purged here), one NanoAOD-like dataset:
- a skim (cut + column subset) written in-process (``Session.skim``) and in the gRPC
  coordinator (``Client.skim``: no event crosses to the client), against the same
  selection pulled through the coordinator into a local Parquet file
  (``Client.to_parquet``); medians of --repeats runs, bytes that reached the client;
- the tracked-request bookkeeping: ``Session.stream_query`` with and without a
  RequestStatus (median ratio).
Every skim is checked against the same query on the source before any time is taken.
Writes benchmarks/results/skim.{json,md,png}.

    .venv/bin/python benchmarks/bench_skim.py [--events N] [--repeats N]
"""

from __future__ import annotations

import argparse
import atexit
import json
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from skyhook_py import demo_data, transcode
from skyhook_py.cluster import Cluster
from skyhook_py.service.client import Client
from skyhook_py.service.coordinator import Coordinator
from skyhook_py.service.server import open_session, open_writer, start_server
from skyhook_py.session import new_status

CUT = "(nMuon >= 2) & (MET_pt > 40)"
COLUMNS = ["run", "luminosityBlock", "event", "nMuon", "Muon_pt", "Muon_eta", "Muon_phi", "MET_pt"]


def median_time(fn, repeats, before=None):
    out = []
    for _ in range(repeats):
        if before:
            before()
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return statistics.median(out), out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--partition-events", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="skyhook-bench-skim-"))
    atexit.register(shutil.rmtree, work, True)   # the work folder goes with the process
    cluster = Cluster(work / "cluster")
    running = None
    try:
        cluster.up(osds=1)
        pool = "bench-skim"
        cluster.create_pool(pool, size=1)
        src = demo_data.write_nanoaod(str(work / "bench.root"), events=args.events, seed=11)
        admin = dict(user="client.admin", keyring=str(cluster.admin_keyring))
        session = open_session(cluster.conf_path, pool, **admin)
        transcode.ingest(session.store, [src], "bench", tree="Events", partition_events=args.partition_events)
        server_session = open_session(cluster.conf_path, pool, **admin)
        writer = open_writer(cluster.conf_path, pool, **admin)
        running = start_server(Coordinator(server_session, writer=writer), "127.0.0.1:0")
        client = Client(running.address, timeout=600)

        want = session.query("bench", columns=COLUMNS, where=CUT)
        session.skim("bench", "check", where=CUT, columns=COLUMNS)
        assert session.query("check", columns=COLUMNS).equals(want), "skim differs from the query"
        client.skim("bench", "check_grpc", where=CUT, columns=COLUMNS)
        assert session.query("check_grpc", columns=COLUMNS).equals(want), "gRPC skim differs"
        summary = session.run("bench", columns=COLUMNS, where=CUT).summary

        def drop(name):
            def f():
                if name in session.datasets():
                    transcode.delete(session.store, name)
            return f

        t_inproc, runs_inproc = median_time(lambda: session.skim("bench", "s1", where=CUT, columns=COLUMNS),
                                            args.repeats, drop("s1"))
        t_grpc, runs_grpc = median_time(lambda: client.skim("bench", "s2", where=CUT, columns=COLUMNS),
                                        args.repeats, drop("s2"))
        pq_path = work / "sel.parquet"
        pulled = {}

        def pull():
            client.to_parquet(pq_path, "bench", columns=COLUMNS, where=CUT, use_cache=False)
            # the Arrow bytes the coordinator delivered to this client (its tracked request)
            pulled["bytes"] = client.status(client.last_query_id)["bytes_delivered"]

        t_pull, runs_pull = median_time(pull, args.repeats)

        m, q = session.build_query("bench", columns=COLUMNS, where=CUT)

        def stream(status):
            for _ in session.stream_query(m, q, status=status):
                pass

        # interleaved pairs after a warm-up, so that caches and load drift hit both alike
        for _ in range(3):
            stream(None)
            stream(new_status("bench"))
        plain, tracked = [], []
        for i in range(args.repeats * 6):   # which one goes first alternates
            if i % 2:
                tracked.append(median_time(lambda: stream(new_status("bench")), 1)[0])
            plain.append(median_time(lambda: stream(None), 1)[0])
            if not i % 2:
                tracked.append(median_time(lambda: stream(new_status("bench")), 1)[0])
        t_plain, t_tracked = statistics.median(plain), statistics.median(tracked)
        pair_ratio = statistics.median(t / p for t, p in zip(tracked, plain))

        results = {
            "setup": {"events": args.events, "partitions": summary.partitions_total, "cut": CUT,
                      "columns": COLUMNS, "rows_selected": want.num_rows,
                      "pushed_down": summary.partitions_pushed_down, "repeats": args.repeats,
                      "host": platform.node(), "python": platform.python_version()},
            "median_s": {"skim_in_process": t_inproc, "skim_in_coordinator": t_grpc,
                         "pull_to_client_parquet": t_pull,
                         "stream_untracked": t_plain, "stream_tracked": t_tracked},
            "runs_s": {"skim_in_process": runs_inproc, "skim_in_coordinator": runs_grpc,
                       "pull_to_client_parquet": runs_pull},
            "bytes_to_client": {"skim_in_coordinator": 0,
                                "pull_to_client_parquet": pulled["bytes"]},
            "ratios": {"coordinator_skim_over_pull": t_grpc / t_pull,
                       "tracked_over_untracked_stream": pair_ratio},
        }
        client.close()
        session.close()
        write(results, Path(args.out))
    finally:
        if running is not None:
            running.stop(close_session=True)
        cluster.purge()


def write(results, out: Path):
    out.mkdir(parents=True, exist_ok=True)
    (out / "skim.json").write_text(json.dumps(results, indent=1))
    s, med, r = results["setup"], results["median_s"], results["ratios"]
    lines = [
        "# Skims kept in storage",
        "",
        f"One OSD, {s['events']:,} NanoAOD-like events in {s['partitions']} partitions; cut `{s['cut']}`, "
        f"{len(s['columns'])} columns, {s['rows_selected']:,} events selected; medians of {s['repeats']} runs "
        f"({platform.node()}, a shared 2-core machine: absolute times are noisy).",
        "",
        "| path | median s | bytes to the client |",
        "|---|---|---|",
        f"| skim in-process (`Session.skim`) | {med['skim_in_process']:.3f} | (reads the pushed-down answers) |",
        f"| skim in the coordinator (`Client.skim`) | {med['skim_in_coordinator']:.3f} | 0 |",
        f"| selection pulled to a local Parquet file (`Client.to_parquet`) | {med['pull_to_client_parquet']:.3f} | "
        f"{results['bytes_to_client']['pull_to_client_parquet']:,} |",
        "",
        f"Coordinator skim / pull to the client: **{r['coordinator_skim_over_pull']:.2f}x** the time "
        "(the skim also encodes, checksums, writes and commits the new partitions).",
        f"Request tracking: a tracked stream takes **{r['tracked_over_untracked_stream']:.3f}x** an untracked one "
        f"(median of {s['repeats'] * 6} interleaved pairs' ratios; medians {med['stream_tracked'] * 1000:.1f} vs "
        f"{med['stream_untracked'] * 1000:.1f} ms).",
    ]
    (out / "skim.md").write_text("\n".join(lines) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        names = ["skim in-process", "skim in coordinator", "pull to client"]
        vals = [med["skim_in_process"], med["skim_in_coordinator"], med["pull_to_client_parquet"]]
        fig, ax = plt.subplots(figsize=(6, 3))
        ax.barh(names, vals)
        ax.set_xlabel("median seconds")
        ax.set_title(f"{s['rows_selected']:,} of {s['events']:,} events, {len(s['columns'])} columns")
        fig.tight_layout()
        fig.savefig(out / "skim.png", dpi=100)
    except ImportError:
        pass
    print("\n".join(lines))


if __name__ == "__main__":
    main()
