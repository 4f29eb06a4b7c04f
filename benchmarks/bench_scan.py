"""The scan kernel against the speed of memory, and the OSD against the local kernel.

    .venv/bin/python -m benchmarks.bench_scan --out benchmarks/results/$(date +%F)-scan
    .venv/bin/python -m benchmarks.bench_scan --no-osd --repeats 50      # kernel only, no cluster

One partition of the benchmark's data (``skyhook_py.demo_data``, 148 columns:
NanoAOD-like collections plus 120 float scalars, 50,000 events, the sweeps'
seed), encoded as ingest encodes it (``transcode.encoder``: one Arrow IPC file,
one batch) plain, LZ4 and ZSTD.  Query: the first *n* columns (``event``,
``MET_pt``, then the schema's order: benchmarks/run.py ``choose_columns``) of the
events with ``MET_pt > t``, ``t`` a float32 quantile (1 %, 10 %, 100 % selected).

Per point (selectivity x columns x compression):

- **kernel**: ``build/bin/skyhook_scan_local --repeat N`` on the partition file,
  the same code the OSD runs, reading with pread (a copy per read); its median wall
  time; and again with ``--reads mapped`` (zero-copy slices of the mapped file, as the
  OSD hands out BlueStore's cached data), with its own memcpy;
- **memcpy**: in the same process and the same run, after every scan, a
  ``memcpy`` of exactly the referenced buffers (the Arrow buffers of the selected
  columns, uncompressed sizes, as separate sources into one destination); its
  median.  ``scan/memcpy`` = memcpy time / scan time (1 = the scan costs one copy
  of what it references);
- **OSD** (unless ``--no-osd``): the same request sent N times to the same
  partition stored in a throwaway one-OSD cluster (``Store.execute``, one call
  at a time); OSD time per partition = CPU time of the whole ceph-osd process
  (all threads: op queue, object store, messenger, our class; from
  /proc/<pid>/task/*/schedstat) over the N calls / N, next to the class's own
  thread CPU (ScanReply ``cpu_ns``) and the client's wall time; ``osd/local`` =
  OSD time per partition / the kernel's median CPU time on the same partition
  (CPU against CPU: on a shared machine wall time includes waiting for a core).

Output: ``results.json``, ``report.md`` (tables) and ``scan.png`` in ``--out``.
What it ignores: cold caches (every figure is warm: page cache for the local
runner, BlueStore's cache for the OSD) and the network (loopback).
"""

from __future__ import annotations

import argparse
import atexit
import datetime
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RUNNER = REPO / "build" / "bin" / "skyhook_scan_local"
EVENTS = 50_000
EXTRA_COLUMNS = 120
SELECTIVITIES = [0.01, 0.1, 1.0]
NCOLUMNS = [1, 10, 100]
COMPRESSIONS = ["none", "lz4", "zstd"]
MAX_REPLY = 256 << 20


def log(msg: str):
    print(f"[bench_scan {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- data ------------------------------------------------------------------------------

def make_partitions(workdir: Path) -> tuple[dict[str, Path], list[str]]:
    """The partition files (one per compression) and the column order of the queries."""
    import pyarrow as pa

    from skyhook_py import demo_data
    from skyhook_py.transcode.encoder import encode
    from skyhook_py.transcode.readers import open_reader

    from .run import SEED, choose_columns

    workdir.mkdir(parents=True, exist_ok=True)
    root = workdir / f"nano-{EVENTS}ev-x{EXTRA_COLUMNS}-s{SEED}.root"
    if not root.exists():  # the benchmark's own file name and seed: shared with benchmarks.run
        tmp = root.with_suffix(".tmp.root")
        demo_data.write_nanoaod(str(tmp), EVENTS, seed=SEED + EVENTS, extra_branches=EXTRA_COLUMNS)
        tmp.replace(root)
    files = {c: workdir / f"partition-{EVENTS}-{c}.arrow" for c in COMPRESSIONS}
    table = None
    for comp, path in files.items():
        if not path.exists():
            if table is None:
                with open_reader(str(root)) as r:
                    table = pa.Table.from_batches([next(r.batches(0, r.entries, r.entries))])
            path.write_bytes(encode(table, "arrow", None if comp == "none" else comp))
    schema = pa.ipc.open_file(pa.memory_map(str(files["none"]))).schema
    return files, choose_columns(schema.names, max(NCOLUMNS), "event")


def buffer_sizes(path: Path, columns: list[str]) -> list[int]:
    """The sizes of the Arrow buffers of these columns, uncompressed: what a scan references."""
    import pyarrow as pa

    batch = pa.ipc.open_file(pa.memory_map(str(path))).get_batch(0)
    sizes = []
    for c in columns:  # Array.buffers(): its own and its children's (offsets, values, bitmaps)
        sizes += [b.size for b in batch.column(batch.schema.get_field_index(c)).buffers()
                  if b is not None and b.size]
    return sizes


def thresholds(path: Path) -> dict[float, float]:
    import pyarrow as pa

    from .systems import float32_threshold

    met = pa.ipc.open_file(pa.memory_map(str(path))).read_all().column("MET_pt").to_numpy()
    return {s: float32_threshold(met, s) for s in SELECTIVITIES}


def request(columns: list[str], threshold: float) -> bytes:
    from skyhook_py.query import codec
    from skyhook_py.query.ir import col

    return codec.encode_scan_request(outputs=[(c, col(c)) for c in columns],
                                     where=col("MET_pt") > threshold, max_reply_bytes=MAX_REPLY)


# -- the kernel and memcpy, one process --------------------------------------------------

_LINE = re.compile(r"runs (\d+) median_ms ([\d.]+) min_ms ([\d.]+)")


def run_local(req: bytes, path: Path, sizes: list[int], repeats: int, tmp: Path) -> dict:
    """The kernel with pread (a copy per read) and, under ``mapped``, with zero-copy
    reads of the mapped file (what the OSD does with BlueStore's cached data)."""
    out = _run_local(req, path, sizes, repeats, tmp, "pread")
    mapped = _run_local(req, path, sizes, repeats, tmp, "mapped")
    out["mapped"] = {k: mapped[k] for k in ("scan_ms", "scan_min_ms", "scan_cpu_ms", "memcpy_ms", "memcpy_min_ms")}
    return out


def _run_local(req: bytes, path: Path, sizes: list[int], repeats: int, tmp: Path, reads: str) -> dict:
    (tmp / "req.bin").write_bytes(req)
    (tmp / "sizes.txt").write_text("\n".join(map(str, sizes)) + "\n")
    r = subprocess.run([str(RUNNER), str(tmp / "req.bin"), str(path), str(tmp / "reply.bin"),
                        "--repeat", str(repeats), "--memcpy-sizes", str(tmp / "sizes.txt"), "--reads", reads],
                       capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise RuntimeError(f"skyhook_scan_local failed ({r.returncode}): {r.stderr.strip()}")
    lines = r.stderr.strip().splitlines()
    scan = _LINE.search(lines[0])
    cpu = re.search(r"cpu_median_ms ([\d.]+)", lines[1])
    copy = _LINE.search(lines[2])
    from skyhook_py.query import codec

    reply = codec.decode_scan_reply((tmp / "reply.bin").read_bytes())
    return {"scan_ms": float(scan.group(2)), "scan_min_ms": float(scan.group(3)),
            "scan_cpu_ms": float(cpu.group(1)),
            "memcpy_ms": float(copy.group(2)), "memcpy_min_ms": float(copy.group(3)),
            "referenced_bytes": sum(sizes), "rows": reply.table.num_rows,
            "reply_bytes": (tmp / "reply.bin").stat().st_size,
            "bytes_read": reply.figures["bytes_read"]}


# -- the OSD ---------------------------------------------------------------------------

class Osd:
    """A throwaway one-OSD cluster holding the partitions, and the OSD's CPU clock."""

    def __init__(self, files: dict[str, Path], keep: bool = False):
        from skyhook_py.cluster import Cluster
        from skyhook_py.storage import checksum
        from skyhook_py.storage.rados_io import Store

        from .systems import proc_cpu_seconds

        self._cpu = proc_cpu_seconds
        self.dir = tempfile.mkdtemp(prefix="skyhook-scan-")
        atexit.register(shutil.rmtree, self.dir, True)   # the work folder goes with the process
        self.cluster = Cluster(self.dir)
        self.keep = keep
        self.cluster.up(osds=1)
        self.cluster.create_pool("scan", size=1)
        self.pid = self.cluster._daemon_pids()["osd.0"]
        self.store = Store(str(self.cluster.conf_path), "scan", namespace="scan")
        self.objects = {}
        for comp, path in files.items():
            data = path.read_bytes()
            self.objects[comp] = f"partition.{comp}"
            self.store.write_full(self.objects[comp], data)
            # as ingest stores it: with block checksums, which the class verifies
            self.store.write_full(self.objects[comp] + ".crc", data, {checksum.XATTR: checksum.xattr_value(data)})

    def run(self, comp: str, req: bytes, repeats: int) -> dict:
        """Calls on the object without checksums (what compares with the local
        kernel, which verifies none) and on the same bytes with them."""
        out = self._run(self.objects[comp], req, repeats)
        crc = self._run(self.objects[comp] + ".crc", req, repeats)
        out.update({"osd_crc_ms": crc["osd_ms"], "class_crc_cpu_ms": crc["class_cpu_ms"]})
        return out

    def _run(self, obj: str, req: bytes, repeats: int) -> dict:
        from skyhook_py.query import codec

        for _ in range(2):  # warm BlueStore's cache and the class
            self.store.execute(obj, "skyhook", "scan", req, MAX_REPLY)
        walls, cls_cpu = [], []
        c0 = self._cpu(self.pid)
        for _ in range(repeats):
            t0 = time.perf_counter()
            out = self.store.execute(obj, "skyhook", "scan", req, MAX_REPLY)
            walls.append(time.perf_counter() - t0)
            cls_cpu.append(codec.decode_scan_reply(out).figures["cpu_ns"] / 1e6)
        c1 = self._cpu(self.pid)
        return {"osd_ms": (c1 - c0) * 1e3 / repeats, "class_cpu_ms": statistics.median(cls_cpu),
                "client_wall_ms": statistics.median(walls) * 1e3}

    def close(self):
        self.store.close()
        if self.keep:
            self.cluster.down()
        else:
            self.cluster.purge()


# -- report ----------------------------------------------------------------------------

def write_report(out: Path, results: dict):
    pts = results["points"]
    lines = [f"# Scan kernel against memcpy, OSD against the local kernel ({results['machine']['date']})", "",
             f"One partition of {EVENTS:,} events of the benchmark's 148-column data, Arrow IPC (one batch); "
             f"`MET_pt > t` selecting 1 / 10 / 100 %; the first n columns returned. Kernel and memcpy: "
             f"medians of {results['config']['repeats']} runs in one `skyhook_scan_local` process "
             f"(memcpy of the referenced buffers after every scan); reads with pread (a copy each), and "
             f"\"mapped\": zero-copy slices of the mapped file, as the OSD now reads BlueStore's cached data. OSD: ceph-osd process CPU per call over "
             f"{results['config']['osd_repeats']} calls (one OSD, loopback), class = the class's own thread CPU "
             f"(ScanReply cpu_ns); with crc: the same object stored with block checksums as ingest stores it, which the class verifies for every block it reads (the local runner verifies none). Machine: {results['machine']['nproc']} cores, load average "
             f"{' '.join(results['machine']['loadavg_start'])} at the start (shared).", "",
             "| compression | selected | columns | referenced MB | rows | kernel ms | memcpy ms | scan/memcpy "
             "| kernel ms, mapped | memcpy ms, mapped run | scan/memcpy, mapped "
             "| kernel CPU ms | OSD CPU ms | class CPU ms | osd/local (CPU) | client wall ms | OSD CPU ms with crc "
             "| class CPU ms with crc |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for p in pts:
        osd = p.get("osd") or {}
        mp = p["mapped"]
        ratio = p["memcpy_ms"] / p["scan_ms"] if p["scan_ms"] else float("nan")
        ol = osd.get("osd_ms", float("nan")) / p["scan_cpu_ms"] if osd else float("nan")
        lines.append(
            f"| {p['compression']} | {p['selectivity']:.0%} | {p['ncols']} | {p['referenced_bytes'] / 1e6:.2f} "
            f"| {p['rows']:,} | {p['scan_ms']:.3f} | {p['memcpy_ms']:.3f} | {ratio:.2f} "
            f"| {mp['scan_ms']:.3f} | {mp['memcpy_ms']:.3f} | {mp['memcpy_ms'] / mp['scan_ms']:.2f} | {p['scan_cpu_ms']:.3f} | "
            + (f"{osd['osd_ms']:.3f} | {osd['class_cpu_ms']:.3f} | {ol:.2f} | {osd['client_wall_ms']:.2f} | "
               f"{osd['osd_crc_ms']:.3f} | {osd['class_crc_cpu_ms']:.3f} |"
               if osd else "- | - | - | - | - | - |"))
    lines += ["", "Targets (issue 11): scan/memcpy >= 0.5 at 1 % and >= 0.25 at 100 % (10 columns, "
              "uncompressed); OSD time per partition <= 1.3x the local kernel's."]
    for sel, want in ((0.01, 0.5), (1.0, 0.25)):
        p = next((p for p in pts if p["compression"] == "none" and p["ncols"] == 10 and p["selectivity"] == sel), None)
        if p:
            r = p["memcpy_ms"] / p["scan_ms"]
            lines.append(f"- {sel:.0%}, 10 columns: scan/memcpy {r:.2f} with pread "
                         f"(target {want}: {'met' if r >= want else 'not met'})")
            r = p["mapped"]["memcpy_ms"] / p["mapped"]["scan_ms"]
            lines.append(f"- {sel:.0%}, 10 columns: scan/memcpy {r:.2f} with zero-copy reads, as in the OSD "
                         f"(target {want}: {'met' if r >= want else 'not met'})")
        if p and p.get("osd"):
            r = p["osd"]["osd_ms"] / p["scan_cpu_ms"]
            lines.append(f"- {sel:.0%}, 10 columns: OSD CPU {p['osd']['osd_ms']:.3f} ms vs local kernel CPU {p['scan_cpu_ms']:.3f} ms = "
                         f"{r:.2f}x (target <= 1.3x: {'met' if r <= 1.3 else 'not met'})")
    (out / "report.md").write_text("\n".join(lines) + "\n")


def plot(out: Path, results: dict):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = results["points"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    ax = axes[0]
    for comp, marker in zip(COMPRESSIONS, "osD"):
        for sel, color in zip(SELECTIVITIES, ("tab:blue", "tab:orange", "tab:green")):
            ps = [p for p in pts if p["compression"] == comp and p["selectivity"] == sel]
            ax.plot([p["ncols"] for p in ps], [p["memcpy_ms"] / p["scan_ms"] for p in ps], marker=marker,
                    color=color, linestyle="-" if comp == "none" else ":",
                    label=f"{sel:.0%} {comp}, pread")
            ax.plot([p["ncols"] for p in ps], [p["mapped"]["memcpy_ms"] / p["mapped"]["scan_ms"] for p in ps],
                    marker=marker, color=color, linestyle="--", alpha=0.6, label=f"{sel:.0%} {comp}, mapped")
    ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax.axhline(0.25, color="grey", lw=0.8, ls="-.")
    ax.set_xscale("log")
    ax.set_xlabel("columns returned")
    ax.set_ylabel("memcpy time / scan time")
    ax.set_title("kernel: scan against memcpy of the referenced buffers")
    ax.legend(fontsize=7, ncol=3)
    ax = axes[1]
    ps = [p for p in pts if p.get("osd")]
    if ps:
        labels = [f"{p['compression']}\n{p['selectivity']:.0%} {p['ncols']}c" for p in ps]
        x = range(len(ps))
        ax.bar([i - 0.2 for i in x], [p["scan_cpu_ms"] for p in ps], width=0.4, label="local kernel CPU")
        ax.bar([i + 0.2 for i in x], [p["osd"]["osd_ms"] for p in ps], width=0.4, label="ceph-osd CPU per call")
        ax.set_xticks(list(x))
        ax.set_xticklabels(labels, fontsize=5, rotation=90)
        ax.set_yscale("log")
        ax.set_ylabel("ms per partition")
        ax.set_title("OSD time per partition against the local kernel")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "scan.png", dpi=120)


# -- main ------------------------------------------------------------------------------

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench_scan", description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / f"{datetime.date.today()}-scan")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/skyhook-bench"))
    ap.add_argument("--repeats", type=int, default=200, help="kernel runs per point (default 200)")
    ap.add_argument("--osd-repeats", type=int, default=30, help="OSD calls per point (default 30)")
    ap.add_argument("--no-osd", action="store_true", help="kernel and memcpy only, no cluster")
    ap.add_argument("--selectivities", default=",".join(map(str, SELECTIVITIES)))
    ap.add_argument("--columns", default=",".join(map(str, NCOLUMNS)))
    ap.add_argument("--compressions", default=",".join(COMPRESSIONS))
    args = ap.parse_args(argv)
    if not RUNNER.exists():
        ap.error(f"{RUNNER} is not built (scripts/setup.sh build)")
    from .run import machine_description

    sels = [float(s) for s in args.selectivities.split(",")]
    ncols = [int(n) for n in args.columns.split(",")]
    comps = args.compressions.split(",")
    files, order = make_partitions(args.workdir / "scan")
    thr = thresholds(files["none"])
    results = {"machine": machine_description(),
               "config": {"events": EVENTS, "repeats": args.repeats, "osd_repeats": args.osd_repeats,
                          "runner": str(RUNNER)},
               "points": []}
    osd = None if args.no_osd else Osd({c: files[c] for c in comps})
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for comp in comps:
                for sel in sels:
                    for n in ncols:
                        cols = order[:n]
                        req = request(cols, thr[sel])
                        p = {"compression": comp, "selectivity": sel, "ncols": n,
                             "object_bytes": files[comp].stat().st_size}
                        p.update(run_local(req, files[comp], buffer_sizes(files["none"], cols),
                                           args.repeats, Path(tmp)))
                        if osd is not None:
                            p["osd"] = osd.run(comp, req, args.osd_repeats)
                        results["points"].append(p)
                        o = p.get("osd", {})
                        log(f"{comp} {sel:.0%} {n} cols: kernel {p['scan_ms']:.3f} ms, memcpy {p['memcpy_ms']:.3f} ms"
                            + (f", OSD {o['osd_ms']:.3f} ms (class {o['class_cpu_ms']:.3f})" if o else ""))
    finally:
        if osd is not None:
            osd.close()
    results["machine"]["loadavg_end"] = open("/proc/loadavg").read().split()[:3]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    write_report(args.out, results)
    try:
        plot(args.out, results)
    except ImportError as e:
        log(f"no plot: {e}")
    log(f"wrote {args.out}/report.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
