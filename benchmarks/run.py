"""The benchmark harness: Skyhook against what a user would pick instead, in one run.

    .venv/bin/python -m benchmarks.run --sweep small
    .venv/bin/python -m benchmarks.run --sweep medium --osds 1,3 --out benchmarks/results/2026-11-22-medium

For each OSD count it starts a throwaway cluster (skyhook_py.cluster), an S3
gateway on it (benchmarks/s3.py, unless --s3-endpoint names another S3 service),
generates NanoAOD-like ROOT files (skyhook_py.demo_data), ingests them
(skyhook_py.transcode) and uploads the same partitions as Parquet.  Then, per
point (dataset size x selectivity x columns returned), every system answers the
query once and the answers are compared (sorted by event number, every column);
only when all agree is each system timed ``repeats`` times, the systems taking
turns so that a burst of load from elsewhere hits them all alike.  Results go to
``<out>/results.json``; benchmarks/report.py turns them into report.md and PNGs.

With ``--hosts 3 --link loopback,1gbit,10gbit`` the OSDs and radosgw run on 3
storage hosts (network namespaces, skyhook_py.netns) and the client reaches them
over tbf-shaped links, so bytes are paid for in network time: one cluster, the link
reshaped between passes; ``loopback`` is the one-host cluster on 127.0.0.1 as a
reference point.  Rate only: this kernel has no netem, so link delay (latency) is
not emulated.

What it ignores: cold caches (the first, checking run warms the OSDs' and the
kernel's caches for every system alike).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import gc
import json
import os
import platform
import random
import signal
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

SWEEPS = {
    # sizes in events; partition_events fixed per sweep, so bigger datasets have more partitions
    "small": dict(sizes=[10_000, 25_000, 50_000], partition_events=6_250, extra_columns=120, repeats=5),
    "medium": dict(sizes=[100_000, 300_000, 1_000_000], partition_events=50_000, extra_columns=120, repeats=5),
    # bounded by the cluster's 4 GiB bluestore file per OSD: the Arrow partitions and their
    # Parquet copies of the largest dataset must fit on one OSD
    "large": dict(sizes=[300_000, 1_000_000, 3_000_000], partition_events=100_000, extra_columns=120, repeats=7),
}
SELECTIVITIES = [0.001, 0.01, 0.1, 1.0]
NCOLUMNS = [1, 10, 100]
# Skyhook with a fixed reply compression instead of its default (auto: per OSD, by link speed)
REPLY_VARIANTS = {"skyhook-plain-replies": "none", "skyhook-lz4-replies": "lz4", "skyhook-zstd-replies": "zstd"}
ALL_SYSTEMS = ["skyhook", "skyhook-on", *REPLY_VARIANTS, "skyhook-grpc", "rados-plain", "rados-pyarrow", "s3-parquet",
               "s3-seaweedfs", "uproot-s3", "uproot"]
BASELINE = "skyhook"           # every ratio is against this system, measured in the same run
CUT_COLUMN = "MET_pt"
POOL = "bench"
NAMESPACE = "bench"
# BlueStore's cache per OSD: room for the medium sweep's largest dataset (697 MB), as the
# systems compared keep theirs in the host's page cache (24 GB here).  With the default
# 512 MiB, a plain-read system's run (every byte of every object) evicted the columns
# Skyhook scans, and the next Skyhook run read them from the block file: 11 or 37 ms at
# 1 %, depending on what ran before.
BENCH_OSD_CACHE_BYTES = 1536 * 2**20
SEED = 20261122


def log(msg: str):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- what to measure -----------------------------------------------------------------

def plan_points(sizes, osd_counts, selectivities=SELECTIVITIES, ncolumns=NCOLUMNS) -> list[dict]:
    """The sweep's points.  Not the full product (it would not fit in the time budget):
    - grid: every selectivity x every column count, largest dataset, first OSD count;
    - size: every dataset size at 1 % and 100 %, 10 columns (scaling with dataset size);
    - osds: every other OSD count at 1 % and 100 %, 10 columns, largest dataset."""
    big, first = max(sizes), osd_counts[0]
    mid_cols = 10 if 10 in ncolumns else ncolumns[len(ncolumns) // 2]
    points: dict[tuple, dict] = {}

    def add(osds, events, sel, ncols, axis):
        key = (osds, events, sel, ncols)
        points.setdefault(key, dict(osds=osds, events=events, selectivity=sel, ncols=ncols, axes=[]))
        if axis not in points[key]["axes"]:
            points[key]["axes"].append(axis)

    for sel in selectivities:
        for n in ncolumns:
            add(first, big, sel, n, "grid")
    for events in sizes:
        for sel in (0.01, 1.0):
            if sel in selectivities:
                add(first, events, sel, mid_cols, "size")
    for osds in osd_counts:
        for sel in (0.01, 1.0):
            if sel in selectivities:
                add(osds, big, sel, mid_cols, "osds")
    return sorted(points.values(), key=lambda p: (p["osds"], p["events"], p["ncols"], p["selectivity"]))


def choose_columns(schema_names: list[str], ncols: int, key: str) -> list[str]:
    """``ncols`` columns: the event number first (the comparison key), the cut column,
    then the dataset's columns in their order (NanoAOD: event-level, then collections)."""
    order = [key] + [c for c in [CUT_COLUMN] if c != key] + [c for c in schema_names if c not in (key, CUT_COLUMN)]
    return order[:ncols]


# -- the cluster side ------------------------------------------------------------------

class ClusterProbe:
    """CPU and byte counters of the cluster's OSD processes, read around each run."""

    def __init__(self, cluster):
        from .s3 import perf_counters

        self._perf = perf_counters
        self.cluster = cluster
        self.network = cluster.network  # None on loopback
        self.osds = {}
        for i in cluster.osd_ids:
            pidfile = cluster.run_dir / f"osd.{i}.pid"
            try:
                self.osds[i] = int(pidfile.read_text().strip())
            except (OSError, ValueError):
                pass
        if len(self.osds) != len(cluster.osd_ids):  # pid files missing: ask the cluster
            for name, pid in cluster._daemon_pids().items():
                if name.startswith("osd."):
                    self.osds[int(name[4:])] = pid

    def cpu(self) -> float:
        from .systems import proc_cpu_seconds

        return sum(proc_cpu_seconds(p) or 0.0 for p in self.osds.values())

    def counters(self) -> dict:
        out = {"osd_bytes_out": 0, "osd_bytes_read": 0}
        if self.network is not None:  # bytes that crossed the client's link (all traffic)
            out["link_bytes"] = self.network.counters()["client"]
        for i in self.osds:
            try:
                d = self._perf(self.cluster.run_dir / f"osd.{i}.asok")
            except OSError:
                return {}
            out["osd_bytes_out"] += d["osd"]["op_out_bytes"]
            bs = d.get("bluestore", {})
            out["osd_bytes_read"] += bs.get("bluestore_buffer_hit_bytes", 0) + bs.get("bluestore_buffer_miss_bytes", 0)
        return out


def machine_description() -> dict:
    def first(path, prefix, sep=":"):
        try:
            for line in open(path):
                if line.startswith(prefix):
                    return line[len(prefix):].lstrip(" \t" + sep).strip().strip('"')
        except OSError:
            return None

    def cmd(*args):
        try:
            return subprocess.run(args, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return None

    import awkward
    import numpy
    import pyarrow
    import uproot

    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "hostname": platform.node(),
        "nproc": os.cpu_count(),
        "cpu_model": first("/proc/cpuinfo", "model name"),
        "memory": first("/proc/meminfo", "MemTotal"),
        "kernel": platform.release(),
        "os": first("/etc/os-release", "PRETTY_NAME", "="),
        "ceph": cmd("ceph", "--version"),
        "python": platform.python_version(),
        "pyarrow": pyarrow.__version__, "numpy": numpy.__version__,
        "awkward": awkward.__version__, "uproot": uproot.__version__,
        "git_commit": cmd("git", "-C", str(REPO), "rev-parse", "--short", "HEAD"),
        "loadavg_start": open("/proc/loadavg").read().split()[:3],
    }


# -- one point ---------------------------------------------------------------------------

def summarize(values: list[float]) -> dict:
    vs = sorted(v for v in values if v is not None)
    if not vs:
        return {}
    q = statistics.quantiles(vs, n=4, method="inclusive") if len(vs) > 1 else [vs[0]] * 3
    return {"median": statistics.median(vs), "q1": q[0], "q3": q[2], "min": vs[0], "max": vs[-1], "n": len(vs)}


def one_run(system, query, probe: ClusterProbe) -> tuple[dict, object]:
    from .systems import proc_cpu_seconds

    servers = system.server_pids()
    gc.collect()  # the previous system's garbage is not this one's cost
    c0, k0 = system.counters(), probe.counters()
    s0 = {n: proc_cpu_seconds(p) for n, p in servers.items()}
    o0 = probe.cpu()
    p0 = time.process_time()
    t0 = time.perf_counter()
    m = system.run(query)
    t1 = time.perf_counter()
    p1 = time.process_time()
    o1 = probe.cpu()
    s1 = {n: proc_cpu_seconds(p) for n, p in servers.items()}
    c1, k1 = system.counters(), probe.counters()
    for k, v in c1.items():
        if getattr(m, k, None) is None and k in c0:
            setattr(m, k, v - c0[k])
    from .systems import num_rows

    run = {
        "seconds": t1 - t0,
        "client_cpu_seconds": p1 - p0,
        "osd_cpu_seconds": o1 - o0,                     # all OSD processes, from /proc
        "server_cpu_seconds": {n: (s1[n] - s0[n]) if s1.get(n) is not None and s0.get(n) is not None else None
                               for n in servers},
        "osd_cpu_reported": m.osd_cpu_reported,         # what Skyhook's summary says
        "bytes_delivered": m.bytes_delivered,
        "bytes_read_store": m.bytes_read_store,
        "osd_bytes_out": (k1["osd_bytes_out"] - k0["osd_bytes_out"]) if k0 and k1 else None,
        "osd_bytes_read": (k1["osd_bytes_read"] - k0["osd_bytes_read"]) if k0 and k1 else None,
        "link_bytes": (k1["link_bytes"] - k0["link_bytes"]) if "link_bytes" in k0 and "link_bytes" in k1 else None,
        "rows": num_rows(m.table),
        "details": m.details,
    }
    return run, m


def measure_point(point: dict, query, systems: dict, probe: ClusterProbe, repeats: int, key: str) -> dict:
    from .systems import compare_answers

    label = (f"link={point.get('link', 'loopback')} osds={point['osds']} events={point['events']:,} "
             f"sel={point['selectivity']:.1%} cols={point['ncols']}")
    point.update(columns=list(query.columns), cut=query.cut, threshold=query.threshold,
                 dataset=query.dataset, error=None, check={}, results={})
    # 1. every system answers once; the answers must agree before anything is timed
    answers, first_runs = {}, {}
    for name, s in systems.items():
        try:
            run, m = one_run(s, query, probe)
            answers[name], first_runs[name] = m.table, run
        except Exception as e:  # noqa: BLE001 - reported per system and point
            point["check"][name] = f"error: {type(e).__name__}: {e}"
            log(f"{label}: {name} FAILED: {type(e).__name__}: {e}")
            if os.environ.get("SKYHOOK_BENCH_DEBUG"):
                traceback.print_exc()
    reference = "uproot" if "uproot" in answers else next(iter(answers), None)
    point["reference"] = reference
    if reference is None:
        point["error"] = "no system answered"
        return point
    mismatches = []
    for name, table in answers.items():
        diff = compare_answers(answers[reference], table, key, query.columns) if name != reference else None
        point["check"][name] = "ok" if diff is None else f"MISMATCH vs {reference}: {diff}"
        if diff:
            mismatches.append(f"{name}: {diff}")
    point["rows_expected"] = first_runs[reference]["rows"]
    if mismatches:
        point["error"] = "answers differ, point not timed: " + "; ".join(mismatches)
        log(f"{label}: {point['error']}")
        return point
    answers.clear()
    # 2. timed runs, systems taking turns
    runs = {name: [] for name in first_runs}
    order = list(runs)
    rng = random.Random(SEED)
    for r in range(repeats):
        # a new order every round: a system runs faster or slower depending on what ran
        # just before it (CPU caches, memory the previous one freed); seen as a steady
        # 20-40 % penalty for whoever always followed uproot
        rng.shuffle(order)
        for name in order:
            try:
                run, _m = one_run(systems[name], query, probe)
                if runs[name]:
                    run.pop("details")  # the same for every run; kept once
                runs[name].append(run)
            except Exception as e:  # noqa: BLE001
                point["check"][name] = f"error while timing: {type(e).__name__}: {e}"
    for name, rs in runs.items():
        if not rs:
            continue
        point["results"][name] = {
            "runs": rs,
            "seconds": summarize([r["seconds"] for r in rs]),
            "client_cpu_seconds": summarize([r["client_cpu_seconds"] for r in rs]),
            "osd_cpu_seconds": summarize([r["osd_cpu_seconds"] for r in rs]),
            "osd_cpu_reported": summarize([r["osd_cpu_reported"] for r in rs]),
            "server_cpu_seconds": summarize([sum(v for v in r["server_cpu_seconds"].values() if v is not None)
                                             for r in rs]) if rs[0]["server_cpu_seconds"] else {},
            "bytes_delivered": summarize([r["bytes_delivered"] for r in rs]),
            "bytes_read_store": summarize([r["bytes_read_store"] for r in rs]),
            "osd_bytes_out": summarize([r["osd_bytes_out"] for r in rs]),
            "osd_bytes_read": summarize([r["osd_bytes_read"] for r in rs]),
            "link_bytes": summarize([r.get("link_bytes") for r in rs]),
            "rows": rs[0]["rows"],
            "details": rs[0].get("details", {}),
        }
    base = point["results"].get(BASELINE, {}).get("seconds", {}).get("median")
    parts = []
    for name, r in point["results"].items():
        med = r["seconds"]["median"]
        parts.append(f"{name} {med * 1e3:.1f} ms" + (f" ({med / base:.1f}x)" if base and name != BASELINE else ""))
    log(f"{label} rows={point['rows_expected']:,}: " + ", ".join(parts))
    return point


# -- data ------------------------------------------------------------------------------

def generate_files(data_dir: Path, events: int, extra_columns: int) -> list[str]:
    """The ROOT files of one dataset size, generated once and kept in ``data_dir``."""
    from skyhook_py import demo_data

    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / f"nano-{events}ev-x{extra_columns}-s{SEED}.root"
    if not path.exists():
        t0 = time.perf_counter()
        tmp = path.with_suffix(".tmp.root")
        demo_data.write_nanoaod(str(tmp), events, seed=SEED + events, extra_branches=extra_columns)
        tmp.replace(path)
        log(f"generated {path.name} ({path.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - t0:.1f} s")
    return [str(path)]


def cut_values(files: list[str], tree: str = "Events"):
    """The cut column's values, read with uproot (independent of Skyhook) for the thresholds."""
    import numpy as np
    import uproot

    return np.concatenate([uproot.open(f)[tree][CUT_COLUMN].array(library="np") for f in files])


# -- the run ----------------------------------------------------------------------------

def make_systems(names, ctx, workdir: Path, notes: list[str]) -> dict:
    from . import systems as S

    out = {}
    for name in names:
        try:
            if name == "skyhook":
                out[name] = S.SkyhookSession(ctx, "auto")
            elif name == "skyhook-on":
                out[name] = S.SkyhookSession(ctx, "on")
            elif name in REPLY_VARIANTS:
                out[name] = S.SkyhookSession(ctx, "auto", reply_compression=REPLY_VARIANTS[name])
            elif name == "rados-plain":
                out[name] = S.SkyhookSession(ctx, "off")
            elif name == "skyhook-grpc":
                out[name] = S.SkyhookGrpc(ctx, str(workdir))
            elif name == "rados-pyarrow":
                out[name] = S.PyarrowRados(ctx)
            elif name == "s3-parquet":
                if not ctx.s3_endpoint:
                    raise RuntimeError("no S3 endpoint (radosgw failed to start?)")
                out[name] = S.S3Parquet(ctx, bucket="skyhook-bench")
            elif name == "uproot-s3":
                if not ctx.s3_endpoint:
                    raise RuntimeError("no S3 endpoint (radosgw failed to start?)")
                out[name] = S.UprootS3(ctx)
            elif name == "s3-seaweedfs":
                if not ctx.seaweedfs_endpoint:
                    raise RuntimeError("no SeaweedFS endpoint (weed failed to start?)")
                out[name] = S.SeaweedParquet(ctx, bucket="skyhook-bench")
            elif name == "uproot":
                out[name] = S.Uproot()
            else:
                raise ValueError(f"unknown system {name!r}; known: {', '.join(ALL_SYSTEMS)}")
        except ValueError:
            raise
        except Exception as e:  # noqa: BLE001 - a missing component skips that system, with a note
            msg = f"system {name} skipped: {type(e).__name__}: {e}"
            log(msg)
            notes.append(msg)
    return out


def run(args, clusters: dict | None = None) -> dict:
    """Run the sweep ``args`` describes.  ``clusters``: {osd count: running Cluster} to use
    instead of starting throwaway ones (the tests pass theirs); those are left running."""
    from skyhook_py.cluster import Cluster
    from . import s3, seaweedfs
    from .systems import BenchDataset, BenchQuery, Context, float32_threshold, open_session

    cfg = dict(SWEEPS[args.sweep])
    if args.sizes:
        cfg["sizes"] = [int(x) for x in args.sizes.split(",")]
    if args.repeats:
        cfg["repeats"] = args.repeats
    if args.extra_columns is not None:
        cfg["extra_columns"] = args.extra_columns
    if args.partition_events:
        cfg["partition_events"] = args.partition_events
    selectivities = [float(x) for x in args.selectivities.split(",")] if args.selectivities else SELECTIVITIES
    ncolumns = [int(x) for x in args.columns.split(",")] if args.columns else NCOLUMNS
    osd_counts = [int(x) for x in args.osds.split(",")]
    hosts = getattr(args, "hosts", None)
    if hosts:
        # one multi-host cluster reshaped per link; "loopback": the one-host cluster
        links = args.link.split(",")
        osd_counts = [hosts]
        setups = [dict(osds=hosts, link=link, hosts=None if link == "loopback" else hosts) for link in links]
    else:
        setups = [dict(osds=o, link="loopback", hosts=None) for o in osd_counts]
    names = args.systems.split(",") if args.systems else [n for n in ALL_SYSTEMS if n not in REPLY_VARIANTS]
    if BASELINE not in names:
        names.insert(0, BASELINE)
    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    points = []
    for setup in setups:
        for p in plan_points(cfg["sizes"], [setup["osds"]], selectivities, ncolumns):
            p["link"] = setup["link"]
            points.append(p)
    t_start = time.perf_counter()
    results = {"machine": machine_description(), "sweep": args.sweep, "config": dict(
        cfg, selectivities=selectivities, ncolumns=ncolumns, osds=osd_counts, systems=names,
        baseline=BASELINE, cut_column=CUT_COLUMN, pool=args.pool, pool_size=1,
        hosts=hosts, links=[s["link"] for s in setups],
        s3=args.s3_endpoint or ("radosgw on host0 (started by the harness)" if getattr(args, "hosts", None)
                                else "radosgw on loopback (started by the harness)"),
        seaweedfs=args.seaweedfs_endpoint or "weed on the client's loopback (started by the harness)"),
        "systems": {}, "datasets": [], "points": [], "notes": []}
    notes = results["notes"]
    log(f"sweep {args.sweep}: {len(points)} points x {len(names)} systems x {cfg['repeats']} runs; workdir {workdir}")

    files = {n: generate_files(workdir / "data", n, cfg["extra_columns"]) for n in cfg["sizes"]}
    for si, setup in enumerate(setups):
        osds, link = setup["osds"], setup["link"]
        todo = [p for p in points if p["osds"] == osds and p["link"] == link]
        if not todo:
            continue
        owned = not (clusters and osds in clusters)
        multihost = setup["hosts"] is not None
        if owned:
            cluster = Cluster(workdir / (f"cluster-{osds}hosts" if multihost else f"cluster-{osds}osd"),
                              osd_cache_bytes=BENCH_OSD_CACHE_BYTES)
        else:
            cluster = clusters[osds]
        # the multi-host cluster stays up for the next link
        keep_for_next = multihost and any(s["hosts"] for s in setups[si + 1:])
        gateway = weed = None
        systems: dict = {}
        try:
            t0 = time.perf_counter()
            if owned and multihost:
                cluster.up(hosts=setup["hosts"], link=None if link == "none" else link)
                from skyhook_py import netns

                rates = [netns.measure_rate(cluster.network, h, nbytes=128 << 20, python=sys.executable)
                         for h in range(len(cluster.hosts))]
                results.setdefault("links_measured", {})[link] = rates
                log(f"link {link}: measured {', '.join(f'{r / 1e9:.2f}' for r in rates)} Gb/s to the hosts")
            elif owned:
                cluster.up(osds=osds)
            if args.pool not in cluster.pools():
                cluster.create_pool(args.pool, size=1, pg_num=16 * osds)
            class_state = cluster.class_state(args.pool)
            log(f"cluster with {osds} OSD(s) up in {time.perf_counter() - t0:.1f} s; skyhook class {class_state}")
            if class_state != "loaded":
                notes.append(f"{osds} OSD(s): the skyhook class is {class_state}: Skyhook's pushdown "
                             "falls back to plain reads, its figures are NOT pushdown figures")
            ctx = Context(conf=str(cluster.conf_path), pool=args.pool, namespace=NAMESPACE)
            if {"s3-parquet", "uproot-s3"} & set(names):   # both read through the gateway
                if args.s3_endpoint:
                    ctx.s3_endpoint, ctx.s3_key, ctx.s3_secret = args.s3_endpoint, args.s3_key, args.s3_secret
                else:
                    try:
                        t0 = time.perf_counter()
                        gateway = s3.RadosGateway(cluster, host=0 if multihost else None).start()
                        ctx.s3_endpoint, ctx.s3_admin_socket, ctx.s3_pid = (
                            gateway.endpoint, str(gateway.admin_socket), gateway.pid)
                        log(f"radosgw on {gateway.endpoint} in {time.perf_counter() - t0:.1f} s")
                    except Exception as e:  # noqa: BLE001
                        notes.append(f"radosgw did not start: {e}")
                        log(f"radosgw did not start: {e}")
            if "s3-seaweedfs" in names:
                if args.seaweedfs_endpoint:
                    ctx.seaweedfs_endpoint = args.seaweedfs_endpoint
                    ctx.seaweedfs_key, ctx.seaweedfs_secret = args.s3_key, args.s3_secret
                else:
                    try:
                        t0 = time.perf_counter()
                        weed = seaweedfs.SeaweedFS(workdir / f"seaweedfs-{osds}osd").start()
                        ctx.seaweedfs_endpoint, ctx.seaweedfs_pid = weed.endpoint, weed.pid
                        log(f"SeaweedFS S3 on {weed.endpoint} in {time.perf_counter() - t0:.1f} s")
                    except Exception as e:  # noqa: BLE001
                        notes.append(f"SeaweedFS did not start: {e}")
                        log(f"SeaweedFS did not start: {e}")
            sizes = sorted({p["events"] for p in todo})
            datasets = {}
            with open_session(ctx) as session:
                have = set(session.datasets())
                for n in sizes:
                    name = f"nano-{n}"
                    t0 = time.perf_counter()
                    if name not in have:
                        session.ingest(files[n], name, partition_events=cfg["partition_events"])
                    m = session.manifest(name)
                    datasets[n] = (BenchDataset(name, files[n], n), m)
                    info = {"osds": osds, "name": name, "events": m.num_events, "partitions": len(m.partitions),
                            "bytes_stored": sum(p.bytes for p in m.partitions),
                            "bytes_root": sum(os.path.getsize(f) for f in files[n]),
                            "columns": len(m.schema.names), "encoding": m.encoding,
                            "ingest_seconds": time.perf_counter() - t0}
                    results["datasets"].append(info)
                    log(f"dataset {name}: {info['partitions']} partitions, {info['bytes_stored'] / 1e6:.1f} MB "
                        f"in RADOS, {info['columns']} columns ({info['ingest_seconds']:.1f} s)")
            systems = make_systems(names, ctx, workdir, notes)
            for name, s in systems.items():
                results["systems"][name] = {"label": s.label, "kind": s.kind, "description": s.description}
            probe = ClusterProbe(cluster)
            for n in sizes:
                ds, m = datasets[n]
                for name, s in list(systems.items()):
                    try:
                        t0 = time.perf_counter()
                        s.prepare(ds)
                        if name in ("s3-parquet", "s3-seaweedfs"):
                            up = s.uploaded[ds.name]
                            for info in results["datasets"]:
                                if info["name"] == ds.name and info["osds"] == osds:
                                    info[f"bytes_parquet_{name}"] = info["bytes_parquet"] = sum(u["bytes"] for u in up)
                            log(f"uploaded {ds.name} as {len(up)} Parquet files "
                                f"({sum(u['bytes'] for u in up) / 1e6:.1f} MB) in {time.perf_counter() - t0:.1f} s")
                    except Exception as e:  # noqa: BLE001
                        notes.append(f"system {name} skipped: prepare({ds.name}) failed: {type(e).__name__}: {e}")
                        log(notes[-1])
                        s.close()
                        del systems[name]
                values = cut_values(ds.files)
                key = "event" if "event" in m.schema.names else m.schema.names[0]
                for point in [p for p in todo if p["events"] == n]:
                    cols = choose_columns(m.schema.names, point["ncols"], key)
                    if len(cols) < point["ncols"]:
                        notes.append(f"dataset {ds.name} has {len(cols)} columns; asked {point['ncols']}")
                    q = BenchQuery(ds.name, tuple(cols), CUT_COLUMN,
                                   float32_threshold(values, point["selectivity"]), point["selectivity"])
                    point["selectivity_actual"] = float((values > q.threshold).mean())
                    results["points"].append(measure_point(point, q, systems, probe, cfg["repeats"], key))
                    _save(results, args.out)  # partial results survive a crash
        finally:
            for s in systems.values():
                try:
                    s.close()
                except Exception:  # noqa: BLE001
                    pass
            if gateway is not None:
                gateway.stop()
            if weed is not None:
                weed.stop()
            if not owned or keep_for_next:
                pass
            elif args.keep_cluster:
                log(f"cluster left running in {cluster.dir}")
            else:
                cluster.purge()
    results["machine"]["loadavg_end"] = open("/proc/loadavg").read().split()[:3]
    results["total_seconds"] = time.perf_counter() - t_start
    return results


def _save(results: dict, out: str):
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / "results.json.tmp"
    tmp.write_text(json.dumps(results, indent=1, default=_json_default))
    tmp.replace(out_dir / "results.json")


def _json_default(o):
    if dataclasses.is_dataclass(o):
        return dataclasses.asdict(o)
    if hasattr(o, "item"):
        return o.item()
    return str(o)


def parse_args(argv=None):
    today = datetime.date.today().isoformat()
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--sweep", choices=sorted(SWEEPS), default="small")
    p.add_argument("--systems", help=f"comma-separated subset of {','.join(ALL_SYSTEMS)} "
                                     "(default: all but the fixed reply compressions, skyhook-*-replies)")
    p.add_argument("--osds", default="1,3", help="OSD counts, one throwaway cluster each (default 1,3)")
    p.add_argument("--hosts", type=int, help="storage hosts as network namespaces (one OSD each; radosgw "
                   "on the first); the client reads over --link")
    p.add_argument("--link", default="loopback,1gbit,10gbit",
                   help="with --hosts: link rates, comma-separated (tbf, both ways; 'none': unshaped veth; "
                        "'loopback': the one-host cluster on 127.0.0.1); default loopback,1gbit,10gbit")
    p.add_argument("--sizes", help="dataset sizes in events, comma-separated (default: the sweep's)")
    p.add_argument("--selectivities", help="comma-separated fractions (default 0.001,0.01,0.1,1)")
    p.add_argument("--columns", help="numbers of columns returned (default 1,10,100)")
    p.add_argument("--repeats", type=int, help="timed runs per system and point (default: the sweep's)")
    p.add_argument("--extra-columns", type=int, help="scalar columns added to the generated files")
    p.add_argument("--partition-events", type=int, help="events per partition at ingest")
    p.add_argument("--s3-endpoint", help="an existing S3 service (MinIO, AWS...) instead of radosgw")
    p.add_argument("--seaweedfs-endpoint", help="an existing SeaweedFS (or MinIO) S3 service for "
                   "s3-seaweedfs, same keys as --s3-key/--s3-secret (default: start `weed` on loopback)")
    p.add_argument("--s3-key", help="access key for --s3-endpoint")
    p.add_argument("--s3-secret", help="secret key for --s3-endpoint")
    p.add_argument("--workdir", default=os.environ.get("SKYHOOK_BENCH_DIR", "/tmp/skyhook-bench"),
                   help="generated files and the throwaway clusters (default /tmp/skyhook-bench)")
    p.add_argument("--keep-cluster", action="store_true", help="leave the clusters running (default: purge)")
    p.add_argument("--pool", default=POOL, help=f"RADOS pool of the benchmark data (default {POOL}; created, size 1)")
    p.add_argument("--out", help=f"output folder (default benchmarks/results/{today}-<sweep>)")
    args = p.parse_args(argv)
    if args.out is None:
        args.out = str(REPO / "benchmarks" / "results" / f"{today}-{args.sweep}" + ("-hosts" if args.hosts else ""))
    if (args.s3_endpoint or args.seaweedfs_endpoint) and not (args.s3_key and args.s3_secret):
        p.error("--s3-endpoint/--seaweedfs-endpoint need --s3-key and --s3-secret")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    # a SIGTERM (kill, a CI timeout) unwinds like Ctrl-C: clusters, gateways, SeaweedFS and
    # namespaces are removed by the finally blocks that started them
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    results = run(args)
    _save(results, args.out)
    from . import report

    md = report.write_report(results, args.out)
    log(f"done in {results['total_seconds']:.0f} s: {Path(args.out) / 'results.json'}, {md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
