"""Metadata at scale: query fixed cost, append cost and metadata bytes read against the
number of partitions and columns (issue 16).

On a throwaway one-OSD cluster (started and purged here), synthetic datasets of
10^3..10^5 partitions x 30..3,000 float columns are committed in the manifest format
of storage/pieces.py (a header plus columnar segments); no partition data is stored
(none is needed: the fixed cost of a query is the manifest and the plan).

Synthetic statistics: column ``c<j>`` of partition ``i`` holds [i + j, i + j + 10].
The statistics of the columns the benchmark's cut references (three, in three
different statistics objects) are written; those of the other columns are left as
holes of the sparse RADOS objects (zeros, never read by these queries), so that the
10^5 x 3,000 point does not need 16.8 GB written to a test cluster on a shared
2-core machine.  Every object has its full logical size (checked against the 16 MB
bound).  Appends and merges read and write whole objects, holes included.

Per point:
- cold: a new ManifestCache, then header + pieces read, query compiled, planned;
- warm: the same query again on the warm cache (one omap read of the version, then
  planning on the cached columns);
- metadata bytes read per cold query (header + pieces);
- append: committing one more partition (one new source, statistics of every
  column) onto the loaded version, median of APPENDS appends (the partition data
  write is the same at every size and is not included);
- the largest metadata object.
The old one-object JSON manifest (format_version 1) is measured at the sizes where it
is cheap to build (10^3 and 10^4 x 30, 10^3 x 300): bytes, read+parse+plan time.

Writes benchmarks/results/<date>-scale/{results.json,report.md,scale.png}.

    .venv/bin/python benchmarks/bench_scale.py [--quick]
"""

from __future__ import annotations

import argparse
import atexit
import datetime
import json
import platform
import shutil
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from skyhook_py.cluster import Cluster  # noqa: E402
from skyhook_py.query import planner  # noqa: E402
from skyhook_py.query.compile import compile_query  # noqa: E402
from skyhook_py.storage import manifest as mf  # noqa: E402
from skyhook_py.storage import pieces  # noqa: E402
from skyhook_py.storage.manifest import Manifest, Partition, Source  # noqa: E402
from skyhook_py.storage.rados_io import Store  # noqa: E402

EVENTS_PER_PARTITION = 1000
PARTITIONS_PER_SOURCE = 100
APPENDS = 31
REPEATS = 7


def names(ncols):
    return [f"c{j:04d}" for j in range(ncols)]


def referenced(ncols):
    """The three columns the cut references: first, middle, last."""
    return sorted({0, ncols // 2, ncols - 1})


def cut_of(ncols, nparts):
    a, b, c = (f"c{j:04d}" for j in referenced(ncols))
    # about 1 % of the partitions survive the first term
    lo = int(nparts * 0.99)
    return f"({a} > {lo}) & ({b} > -1) & ({c} < 1e12)"


def synth_stats(rows_first, rows, j):
    i = np.arange(rows_first, rows_first + rows, dtype=np.float64)
    out = np.full((pieces.NF, rows), np.nan)
    out[0] = i + j
    out[1] = i + j + 10
    out[2] = 0
    out[3] = 0
    out[4] = 4000
    return out


def synth_commit(store, dataset, nparts, ncols, splits=None):
    """Version 1 of a synthetic dataset, written directly as pieces + header (``splits``:
    the segments' partition ranges, default full segments and a remainder)."""
    cols = names(ncols)
    schema = pa.schema([(c, pa.float32()) for c in cols])
    writer = "00000000beef"
    segments = []
    keep = set(referenced(ncols))
    for seg, (a, b) in enumerate(splits or pieces._split(nparts)):
        rows = b - a
        idx = np.arange(a, b)
        table = {"object": np.array([f"part.{dataset}.{writer}.{i:06d}" for i in idx], dtype=object),
                 "event_start": idx * EVENTS_PER_PARTITION, "event_stop": (idx + 1) * EVENTS_PER_PARTITION,
                 "bytes": np.full(rows, 4000 * ncols), "source": idx // PARTITIONS_PER_SOURCE,
                 "entry_start": (idx % PARTITIONS_PER_SOURCE) * EVENTS_PER_PARTITION,
                 "entry_stop": (idx % PARTITIONS_PER_SOURCE + 1) * EVENTS_PER_PARTITION}
        tname = pieces._table_object(dataset, writer, seg)
        store.write_full(tname, pieces._encode_table(table))
        g = pieces.group_columns(rows, ncols)
        groups = []
        for gi, c0 in enumerate(range(0, ncols, g)):
            n = min(g, ncols - c0)
            name = pieces._stats_object(dataset, writer, seg, gi)
            size = pieces.NF * 8 * rows
            store.write_full(name, pieces.STATS_MAGIC + struct.pack("<II", rows, n))
            for j in range(c0, c0 + n):
                if j in keep:
                    store.write(name, synth_stats(a, rows, j).astype("<f8").tobytes(),
                                pieces.STATS_HEAD + (j - c0) * size)
            store.truncate(name, pieces.STATS_HEAD + n * size)
            groups.append([name, c0, n])
        segments.append({"first": a, "rows": rows, "table": tname, "stats": groups})
    nsources = -(-nparts // PARTITIONS_PER_SOURCE)
    sources = [Source(path=f"/data/{dataset}/f{k:06d}.root", name=f"f{k:06d}.root", size=10 ** 9,
                      sha256=f"{k:064x}", tree="Events",
                      entries=min(PARTITIONS_PER_SOURCE, nparts - k * PARTITIONS_PER_SOURCE)
                      * EVENTS_PER_PARTITION,
                      event_start=k * PARTITIONS_PER_SOURCE * EVENTS_PER_PARTITION)
               for k in range(nsources)]
    table, chunks = pieces._sources_table(sources), []
    for n, (a, b) in enumerate(pieces._split(len(sources))):
        name = pieces._sources_object(dataset, writer, n)
        store.write_full(name, pieces._encode_sources(table.slice(a, b - a)))
        chunks.append({"object": name, "first": a, "rows": b - a})
    header = {
        "format": "skyhook-manifest", "format_version": 2, "dataset": dataset, "version": 1,
        "created": "2026-12-01T00:00:00Z", "previous_version": None, "writer": writer,
        "encoding": {"format": "arrow", "compression": None},
        "schema": __import__("base64").b64encode(schema.serialize().to_pybytes()).decode(),
        "num_events": nparts * EVENTS_PER_PARTITION, "num_partitions": nparts,
        "column_bytes": [4000 * nparts] * ncols,
        "num_sources": len(sources), "source_chunks": chunks, "segments": segments,
    }
    store.replace_guarded(mf.manifest_object(dataset), json.dumps(header).encode(), mf.VERSION_KEY,
                          None, "1")
    mf.update_index(store, dataset, 1)


def fixed_cost(store, cache, dataset, where, column="c0000"):
    t0 = time.perf_counter()
    m = cache.get(store, dataset)
    q = compile_query(m.column_types(), where=where, columns=[column])
    p = planner.plan(m, q, "on")
    return time.perf_counter() - t0, m, p


def one_partition(m, k, ncols):
    start = m.num_events
    stats = {"version": 1, "rows": EVENTS_PER_PARTITION,
             "columns": {c: {"min": 1.0 * k, "max": 2.0 * k, "null_count": 0, "nan_count": 0,
                             "bytes": 4000} for c in names(ncols)}}
    part = Partition(object=f"part.{m.dataset}.0000000a{k:04x}.000000", event_start=start,
                     event_stop=start + EVENTS_PER_PARTITION, bytes=4000 * ncols,
                     source=m.num_sources, entry_start=0, entry_stop=EVENTS_PER_PARTITION, stats=stats)
    src = Source(path=f"/data/new{k}.root", name=f"new{k}.root", size=10 ** 6, sha256=f"{k:063x}a",
                 tree="Events", entries=EVENTS_PER_PARTITION, event_start=start)
    return part, src


def append_cost(store, dataset, ncols):
    times = []
    for k in range(APPENDS):
        t0 = time.perf_counter()
        old = mf.load_manifest(store, dataset)
        part, src = one_partition(old, k, ncols)
        m = mf.appended(old, [part], [src], old.encoding)
        mf.commit(store, m, old.version)
        times.append(time.perf_counter() - t0)
    return times


def _quartiles(xs):
    return statistics.quantiles(xs, n=4) if len(xs) > 1 else [xs[0]] * 3


def largest_object(store, dataset):
    objs = store.list_objects(f"manifest.{dataset}")
    return max(store.size(o) for o in objs if o == mf.manifest_object(dataset) or
               pieces.piece_dataset(o) == dataset)


def measure_v2(store, nparts, ncols):
    ds = f"s{nparts}x{ncols}"
    t0 = time.perf_counter()
    synth_commit(store, ds, nparts, ncols)
    build_s = time.perf_counter() - t0
    where = cut_of(ncols, nparts)
    cold, warm, bytes_read = [], [], []
    for _ in range(max(1, REPEATS // 2)):
        cache = mf.ManifestCache()
        s, m, p = fixed_cost(store, cache, ds, where)
        cold.append(s)
        bytes_read.append(len(store.read(mf.manifest_object(ds))) + m.pieces.bytes_read)
        for _ in range(REPEATS):
            warm.append(fixed_cost(store, cache, ds, where)[0])
    # the same version answers the same plan
    assert len(p.tasks) == sum(1 for i in range(nparts) if i + 10 > int(nparts * 0.99)), len(p.tasks)
    biggest = largest_object(store, ds)
    app = append_cost(store, ds, ncols)
    m2 = mf.load_manifest(store, ds)
    assert m2.num_partitions == nparts + APPENDS and m2.version == 1 + APPENDS
    return {"partitions": nparts, "columns": ncols, "build_s": build_s,
            "cold_ms": 1000 * statistics.median(cold), "warm_ms": 1000 * statistics.median(warm),
            "bytes_read": int(statistics.median(bytes_read)), "tasks": len(p.tasks),
            "append_ms": 1000 * statistics.median(app), "append_max_ms": 1000 * max(app),
            "append_min_ms": 1000 * min(app), "append_q1_ms": 1000 * _quartiles(app)[0],
            "append_q3_ms": 1000 * _quartiles(app)[2], "appends": len(app),
            "largest_object": biggest, "segments": len(m2.pieces.segments)}


def measure_merge(store, ncols):
    """The worst single append: a tail of segments 2048 + 1024 + ... + 1 (4,095 partitions)
    that one more partition merges into one full segment (every statistic of the tail is
    read and written again)."""
    ds = f"merge{ncols}"
    splits, a = [], 0
    for k in range(11, -1, -1):
        splits.append((a, a + (1 << k)))
        a += 1 << k
    synth_commit(store, ds, a, ncols, splits)
    old = mf.load_manifest(store, ds)
    part, src = one_partition(old, 0, ncols)
    t0 = time.perf_counter()
    m = mf.appended(old, [part], [src], old.encoding)
    mf.commit(store, m, old.version)
    took = time.perf_counter() - t0
    m2 = mf.load_manifest(store, ds)
    assert [s["rows"] for s in m2.pieces.segments] == [pieces.SEGMENT_ROWS], m2.pieces.segments
    return {"columns": ncols, "append_ms": 1000 * took,
            "rewritten_bytes": pieces.SEGMENT_ROWS * ncols * pieces.NF * 8}


def measure_v1(store, nparts, ncols):
    """The old format: one JSON object with every partition's statistics."""
    ds = f"old{nparts}x{ncols}"
    cols = names(ncols)
    parts = []
    for i in range(nparts):
        st = {"version": 1, "rows": EVENTS_PER_PARTITION,
              "columns": {c: {"min": float(i + j), "max": float(i + j + 10), "null_count": 0,
                              "nan_count": 0, "bytes": 4000} for j, c in enumerate(cols)}}
        parts.append(Partition(f"part.{ds}.00000000beef.{i:06d}", i * EVENTS_PER_PARTITION,
                               (i + 1) * EVENTS_PER_PARTITION, 4000 * ncols, 0, 0, 0, st))
    m = Manifest(ds, 1, pa.schema([(c, pa.float32()) for c in cols]), parts,
                 [Source("/x", "x", 1, "0" * 64, "Events", nparts * EVENTS_PER_PARTITION, 0)],
                 {"format": "arrow", "compression": None}, created="2026-12-01T00:00:00Z")
    data = m.to_json()
    store.replace_guarded(mf.manifest_object(ds), data, mf.VERSION_KEY, None, "1")
    where = cut_of(ncols, nparts)
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        m1 = mf.load_manifest(store, ds)
        q = compile_query(m1.column_types(), where=where, columns=["c0000"])
        planner.plan(m1, q, "on")
        times.append(time.perf_counter() - t0)
    return {"partitions": nparts, "columns": ncols, "bytes": len(data),
            "query_ms": 1000 * statistics.median(times),
            "bytes_per_partition_column": len(data) / nparts / ncols}


# -- a real ingest: many small partitions on the local cluster ---------------------------
REAL_EVENTS_PER_PARTITION = 10
REAL_CUT = "(nMuon >= 2) & (MET_pt > 40)"
REAL_APPENDS = 7


def _real_file(work, name, events, seed):
    from skyhook_py import demo_data

    return demo_data.write_nanoaod(str(work / f"{name}.root"), events=events, seed=seed)


def _oracle_count(paths):
    """The cut's count by uproot + NumPy on the original files (not Skyhook's code)."""
    import uproot

    n = 0
    for path in paths:
        with uproot.open(path) as f:
            a = f["Events"].arrays(["nMuon", "MET_pt"], library="np")
        n += int(np.count_nonzero((a["nMuon"] >= 2) & (a["MET_pt"] > 40)))
    return n


def measure_real(store, session, work, stages):
    """Ingest then append generated NanoAOD-like files in REAL_EVENTS_PER_PARTITION-event
    partitions until the dataset holds each of ``stages`` partitions; at each stage:
    query fixed cost (cold and warm: header + pieces + compile + plan), metadata bytes
    read, the whole query (checked against uproot), and the cost of appending one more
    one-partition file (median of REAL_APPENDS, with min and max)."""
    from skyhook_py.transcode import operations as ops

    ds, out, paths, seed, have = "real", [], [], 100, 0
    for target in stages:
        t0 = time.perf_counter()
        events = (target - have) * REAL_EVENTS_PER_PARTITION
        if events > 0:     # a stage at or below the size reached already is measured as it is
            path = _real_file(work, f"grow{target}", events, seed)
            seed += 1
            paths.append(path)
            (ops.ingest if have == 0 else ops.append)(store, [path], ds, tree="Events",
                                                       partition_events=REAL_EVENTS_PER_PARTITION)
            have = mf.load_manifest(store, ds).num_partitions
        grow_s = time.perf_counter() - t0
        print(f"real: {have:,} partitions ({grow_s:.0f} s to grow)", flush=True)
        cold, warm, bytes_read = [], [], []
        for _ in range(3):
            cache = mf.ManifestCache()
            s, m, _ = fixed_cost(store, cache, ds, REAL_CUT, column="MET_pt")
            cold.append(s)
            bytes_read.append(len(store.read(mf.manifest_object(ds))) + m.pieces.bytes_read)
            for _ in range(REPEATS):
                warm.append(fixed_cost(store, cache, ds, REAL_CUT, column="MET_pt")[0])
        t0 = time.perf_counter()
        agg = session.aggregate(ds, [{"kind": "count", "name": "n"}], where=REAL_CUT)
        query_s = time.perf_counter() - t0
        want = _oracle_count(paths)
        assert int(agg["n"]) == want, (agg, want)
        app = []
        for k in range(REAL_APPENDS):
            one = _real_file(work, f"one{target}_{k}", REAL_EVENTS_PER_PARTITION, seed)
            seed += 1
            t0 = time.perf_counter()
            ops.append(store, [one], ds, tree="Events", partition_events=REAL_EVENTS_PER_PARTITION)
            app.append(time.perf_counter() - t0)
            paths.append(one)
        have += REAL_APPENDS
        r = {"partitions": have - REAL_APPENDS, "cold_ms": 1000 * statistics.median(cold),
             "warm_ms": 1000 * statistics.median(warm), "bytes_read": int(statistics.median(bytes_read)),
             "query_s": query_s, "selected": want,
             "append_ms": 1000 * statistics.median(app), "append_min_ms": 1000 * min(app),
             "append_max_ms": 1000 * max(app), "grow_s": grow_s,
             "largest_object": largest_object(store, ds)}
        print("real", r, flush=True)
        out.append(r)
    return out


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 5, figsize=(22, 4.2))
    by_cols = sorted({r["columns"] for r in results["v2"]})
    for c in by_cols:
        rs = sorted((r for r in results["v2"] if r["columns"] == c), key=lambda r: r["partitions"])
        x = [r["partitions"] for r in rs]
        axes[0].plot(x, [r["cold_ms"] for r in rs], "o-", label=f"cold, {c} cols")
        axes[0].plot(x, [r["warm_ms"] for r in rs], "s--", label=f"warm, {c} cols")
        axes[1].plot(x, [r["bytes_read"] / 1e6 for r in rs], "o-", label=f"{c} cols")
        if all("append_q1_ms" in r for r in rs):
            axes[2].errorbar(x, [r["append_ms"] for r in rs],
                             yerr=[[r["append_ms"] - r["append_q1_ms"] for r in rs],
                                   [r["append_q3_ms"] - r["append_ms"] for r in rs]],
                             fmt="o-", capsize=3, label=f"{c} cols (quartiles)")
        else:
            axes[2].plot(x, [r["append_ms"] for r in rs], "o-", label=f"{c} cols")
        axes[3].plot(x, [r["largest_object"] / 1e6 for r in rs], "o-", label=f"{c} cols")
    old = sorted(results["v1"], key=lambda r: (r["columns"], r["partitions"]))
    for c in sorted({r["columns"] for r in old}):
        rs = [r for r in old if r["columns"] == c]
        axes[0].plot([r["partitions"] for r in rs], [r["query_ms"] for r in rs], "x:",
                     label=f"old JSON, {c} cols")
        axes[1].plot([r["partitions"] for r in rs], [r["bytes"] / 1e6 for r in rs], "x:",
                     label=f"old JSON, {c} cols")
    real = sorted(results.get("real", []), key=lambda r: r["partitions"])
    if real:
        x = [r["partitions"] for r in real]
        axes[4].plot(x, [r["cold_ms"] for r in real], "o-", label="fixed cost, cold (ms)")
        axes[4].plot(x, [r["warm_ms"] for r in real], "s--", label="fixed cost, warm (ms)")
        axes[4].errorbar(x, [r["append_ms"] for r in real],
                         yerr=[[r["append_ms"] - r["append_min_ms"] for r in real],
                               [r["append_max_ms"] - r["append_ms"] for r in real]],
                         fmt="^-", label="append a 1-partition file (ms, min..max)")
        axes[4].plot(x, [r["bytes_read"] / 1e3 for r in real], "x:", label="metadata read, cold (kB)")
    axes[0].axhline(50, color="grey", lw=0.5)
    axes[0].axhline(500, color="grey", lw=0.5)
    axes[3].axhline(16.0, color="grey", lw=0.5)
    titles = ["query fixed cost (ms): metadata + plan", "metadata bytes read per cold query (MB)",
              "append one partition: metadata (ms, median)", "largest metadata object (MB)",
              f"real ingest, {REAL_EVENTS_PER_PARTITION}-event partitions (local cluster)"]
    for ax, t in zip(axes, titles):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("partitions")
        ax.set_title(t, fontsize=9)
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def report(results) -> str:
    lines = [f"# Metadata at scale ({results['date']})", "",
             f"{results['machine']}; one OSD (bluestore on a file), loopback.  Synthetic "
             "statistics; the cut references 3 columns and keeps about 1 % of the partitions "
             f"(see benchmarks/bench_scale.py).  Medians; appends: {APPENDS} one-partition appends.", "",
             "| partitions | columns | cold ms | warm ms | bytes read (cold) | append ms (median / max) "
             "| largest object | segments after appends |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results["v2"]:
        lines.append(f"| {r['partitions']:,} | {r['columns']:,} | {r['cold_ms']:.1f} | {r['warm_ms']:.2f} "
                     f"| {r['bytes_read'] / 1e6:.2f} MB | {r['append_ms']:.1f} / {r['append_max_ms']:.1f} "
                     f"| {r['largest_object'] / 1e6:.2f} MB | {r['segments']} |")
    lines += ["", f"Append spread ({results['v2'][0].get('appends', APPENDS) if results['v2'] else APPENDS} "
              "one-partition appends per point; ms):", "",
              "| partitions | columns | min | q1 | median | q3 | max |", "|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results["v2"]:
        lines.append(f"| {r['partitions']:,} | {r['columns']:,} | {r['append_min_ms']:.1f} | {r['append_q1_ms']:.1f} "
                     f"| {r['append_ms']:.1f} | {r['append_q3_ms']:.1f} | {r['append_max_ms']:.1f} |")
    if results.get("real"):
        lines += ["", f"A real ingest on the local cluster: generated NanoAOD-like files in "
                  f"{REAL_EVENTS_PER_PARTITION}-event partitions, grown by ingest then appends; the query "
                  f"`{REAL_CUT}` (a count) checked against uproot at every stage; fixed cost = header + "
                  f"pieces + compile + plan; append = `append` of one more {REAL_EVENTS_PER_PARTITION}-event "
                  f"file (read, transcode, write, commit), {REAL_APPENDS} times:", "",
                  "| partitions | cold ms | warm ms | metadata bytes read (cold) | whole query s | events selected "
                  "| append ms (median; min..max) | largest metadata object |",
                  "|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in results["real"]:
            lines.append(f"| {r['partitions']:,} | {r['cold_ms']:.1f} | {r['warm_ms']:.2f} | {r['bytes_read'] / 1e3:.1f} kB "
                         f"| {r['query_s']:.1f} | {r['selected']:,} | {r['append_ms']:.0f} "
                         f"({r['append_min_ms']:.0f}..{r['append_max_ms']:.0f}) | {r['largest_object'] / 1e3:.1f} kB |")
    if results.get("merge"):
        lines += ["", "Worst single append: the tail (segments of 2048 + 1024 + ... + 1 partitions) merged "
                  "into one full segment of 4,096 partitions by one more append:", "",
                  "| columns | statistics rewritten | append ms |", "|---:|---:|---:|"]
        for r in results["merge"]:
            lines.append(f"| {r['columns']:,} | {r['rewritten_bytes'] / 1e6:.0f} MB | {r['append_ms']:.0f} |")
    lines += ["", "The old format (one JSON object, format_version 1), read + parsed + planned:", "",
              "| partitions | columns | JSON bytes | bytes per partition x column | query ms |",
              "|---:|---:|---:|---:|---:|"]
    for r in results["v1"]:
        lines.append(f"| {r['partitions']:,} | {r['columns']:,} | {r['bytes'] / 1e6:.1f} MB "
                     f"| {r['bytes_per_partition_column']:.0f} | {r['query_ms']:.0f} |")
    if results.get("real_from"):
        lines += ["", f"The real ingest and the tail merges above are from {results['real_from']}, "
                  "an earlier run of this benchmark."]
    lines += ["", "## Targets", ""] + results["targets"]
    return "\n".join(lines) + "\n"


def targets(results) -> list[str]:
    out = []
    big = [r for r in results["v2"] if r["partitions"] == max(x["partitions"] for x in results["v2"])
           and r["columns"] == max(x["columns"] for x in results["v2"])]
    v1 = results["v1"]
    per = statistics.median(r["bytes_per_partition_column"] for r in v1) if v1 else 110
    if big:
        b = big[0]
        today = per * b["partitions"] * b["columns"]
        out.append(f"- {b['partitions']:,} x {b['columns']:,}: warm {b['warm_ms']:.1f} ms (target <= 50), "
                   f"cold {b['cold_ms']:.0f} ms (target <= 500): "
                   f"{'met' if b['warm_ms'] <= 50 else 'NOT met'} / {'met' if b['cold_ms'] <= 500 else 'NOT met'}")
        out.append(f"- metadata bytes read {b['bytes_read'] / 1e6:.1f} MB against today's "
                   f"{today / 1e9:.1f} GB (the old JSON's {per:.0f} B per partition x column, measured "
                   f"here): {100 * b['bytes_read'] / today:.3f} % (target <= 1 %)")
    largest = max((r["largest_object"] for r in results["v2"] + results.get("real", [])), default=0)
    out.append(f"- largest metadata object {largest / 1e6:.2f} MB (target <= 16 MB): "
               f"{'met' if largest <= 16_000_000 else 'NOT met'}")
    for c in sorted({r["columns"] for r in results["v2"]}):
        rs = sorted((r for r in results["v2"] if r["columns"] == c), key=lambda r: r["partitions"])
        small, large = rs[0], rs[-1]
        ratio = large["append_ms"] / small["append_ms"]
        out.append(f"- append one partition, {c} columns (median of {small.get('appends', APPENDS)}, "
                   f"quartiles): {small['append_ms']:.1f} ms ({small['append_q1_ms']:.1f}..{small['append_q3_ms']:.1f}) at "
                   f"{small['partitions']:,} partitions, {large['append_ms']:.1f} ms "
                   f"({large['append_q1_ms']:.1f}..{large['append_q3_ms']:.1f}) at {large['partitions']:,}: "
                   f"{ratio:.2f}x (target within 2x): {'met' if ratio <= 2 else 'NOT met'}")
    real = sorted(results.get("real", []), key=lambda r: r["partitions"])
    if len(real) > 1:
        a, b = real[0], real[-1]
        out.append(f"- real ingest: {b['partitions']:,} partitions of {REAL_EVENTS_PER_PARTITION} events: fixed cost "
                   f"cold {b['cold_ms']:.1f} ms / warm {b['warm_ms']:.2f} ms (at {a['partitions']:,}: "
                   f"{a['cold_ms']:.1f} / {a['warm_ms']:.2f}); appending a one-partition file {b['append_ms']:.0f} ms "
                   f"against {a['append_ms']:.0f} ms at {a['partitions']:,} partitions "
                   f"({b['append_ms'] / a['append_ms']:.2f}x)")
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="10^3..10^4 x 30..300 only")
    ap.add_argument("--out", default=None)
    ap.add_argument("--real-stages", default=None,
                    help="partition counts of the real ingest, comma-separated (default 10,100,1000,4000)")
    ap.add_argument("--only-real", action="store_true", help="the real ingest only")
    ap.add_argument("--real-from", default=None, metavar="RESULTS_JSON",
                    help="take the real ingest and the tail merges from an earlier results.json "
                         "instead of measuring them again")
    args = ap.parse_args(argv)
    date = datetime.date.today().isoformat()
    out = Path(args.out or ROOT / "benchmarks" / "results" / f"{date}-scale")
    out.mkdir(parents=True, exist_ok=True)
    ap_real = args.real_stages
    if args.quick:
        grid = [(p, c) for c in (30, 300) for p in (10, 1000, 10000)]
        old = [(1000, 30)]
        stages = [10, 60]
        merges = [30]
    else:
        grid = [(p, c) for c in (30, 300, 3000) for p in (10, 1000, 10000, 100000)]
        old = [(1000, 30), (10000, 30), (1000, 300)]
        stages = [10, 100, 1000, 4000]
        merges = [30, 300, 3000]
    if ap_real:
        stages = [int(x) for x in ap_real.split(",")]
    if args.only_real:
        grid, old, merges = [], [], []
    work = Path(tempfile.mkdtemp(prefix="skyhook-scale-"))
    atexit.register(shutil.rmtree, work, True)   # the work folder goes with the process
    cluster = Cluster(work / "cluster")
    results = {"date": date, "machine": f"{platform.node()} ({platform.processor() or platform.machine()})",
               "v2": [], "v1": [], "real": [], "merge": []}
    try:
        cluster.up(osds=1)
        cluster.create_pool("scale", size=1)
        with Store(str(cluster.conf_path), "scale") as store:
            from skyhook_py.session import Session

            if args.real_from:
                earlier = json.loads(Path(args.real_from).read_text())
                results["real"], merges = earlier["real"], []
                results["merge"] = earlier["merge"]
                results["real_from"] = f"{args.real_from} ({earlier['date']})"
            else:
                results["real"] = measure_real(store, Session(store, str(cluster.conf_path)), work, stages)
            for c in merges:
                try:
                    r = measure_merge(store, c)
                except Exception as e:  # noqa: BLE001 - recorded: the rest of the run still counts
                    r = {"columns": c, "error": f"{type(e).__name__}: {e}", "append_ms": float("nan"),
                         "rewritten_bytes": pieces.SEGMENT_ROWS * c * pieces.NF * 8}
                print("merge", r, flush=True)
                results["merge"].append(r)
            for p, c in old:
                r = measure_v1(store, p, c)
                print("old", r, flush=True)
                results["v1"].append(r)
            for p, c in grid:
                r = measure_v2(store, p, c)
                print("new", r, flush=True)
                results["v2"].append(r)
    finally:
        cluster.purge()
    results["targets"] = targets(results)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    (out / "report.md").write_text(report(results))
    plot(results, out / "scale.png")
    print(report(results))


if __name__ == "__main__":
    main()
