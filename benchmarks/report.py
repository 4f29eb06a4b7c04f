"""results.json -> report.md + PNG plots.

    .venv/bin/python -m benchmarks.report benchmarks/results/<date>-<tag>

Every comparison is a ratio against Skyhook (auto) measured in the same run:
a ratio above 1 means the other system took longer / delivered more / used more.
The headline section checks the issue's targets at 1 % and 100 % selectivity with
10 columns on the largest dataset.  Nothing here measures anything.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

BASELINE = "skyhook"
MARKERS = "osD^v<>ph*"


def _med(r: dict, metric: str):
    return (r.get(metric) or {}).get("median")


def _ratio(x, base):
    if x is None or base is None or base == 0:
        return None
    return x / base


def _fmt_ms(s):
    return "–" if s is None else (f"{s * 1e3:,.1f}" if s < 10 else f"{s * 1e3:,.0f}")


def _fmt_bytes(n):
    if n is None:
        return "–"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{n:,.0f} B"


def _fmt_x(r):
    return "–" if r is None else (f"{r:,.2f}×" if r < 10 else f"{r:,.0f}×")


def _pct(x):
    return f"{x * 100:g} %"


def alternatives(results: dict) -> list[str]:
    return [n for n, s in results["systems"].items() if s["kind"] == "alternative"]


def headline_points(results: dict) -> dict:
    """The grid points at 1 % and 100 % selectivity with 10 columns."""
    out = {}
    for p in results["points"]:
        if "grid" in p.get("axes", []) and p["ncols"] == 10 and p["selectivity"] in (0.01, 1.0):
            out[p["selectivity"]] = p
    return out


def targets(results: dict) -> list[dict]:
    """The issue's targets, checked against the best alternative at each headline point."""
    rows = []
    alts = alternatives(results)
    hp = headline_points(results)
    for sel, p in sorted(hp.items()):
        res = p.get("results", {})
        sky = res.get(BASELINE)
        cands = {n: res[n] for n in alts if n in res}
        if p.get("error") or not sky or not cands:
            rows.append({"selectivity": sel, "what": "all", "met": None,
                         "text": p.get("error") or "Skyhook or every alternative missing"})
            continue
        t_sky = _med(sky, "seconds")
        best_t = min(cands, key=lambda n: _med(cands[n], "seconds"))
        t_best = _med(cands[best_t], "seconds")
        if sel == 0.01:
            speed = t_best / t_sky
            rows.append({"selectivity": sel, "what": "time", "met": speed >= 5,
                         "text": f"{speed:.2f}× faster than the fastest alternative ({best_t}); target ≥ 5×"})
            b_sky = _med(sky, "bytes_delivered")
            best_b = min(cands, key=lambda n: _med(cands[n], "bytes_delivered") or float("inf"))
            b_best = _med(cands[best_b], "bytes_delivered")
            if b_sky and b_best:
                rows.append({"selectivity": sel, "what": "bytes", "met": b_best / b_sky >= 20,
                             "text": f"{b_best / b_sky:,.1f}× fewer bytes delivered than the leanest "
                                     f"alternative ({best_b}); target ≥ 20×"})
        else:
            slow = t_sky / t_best
            rows.append({"selectivity": sel, "what": "time", "met": slow <= 1.1,
                         "text": f"{slow:.2f}× the time of the fastest alternative ({best_t}); target ≤ 1.1×"})
    return rows


NETWORKS = (("10 Gb/s", 10e9), ("1 Gb/s", 1e9))


def projected_network(results: dict, hp: dict) -> list[str]:
    """Measured time plus the bytes delivered at a network's line rate: a projection,
    not a measurement (everything here ran on loopback), labelled as such."""
    lines = ["### Projection (not measured): the same bytes over a real network", "",
             "Loopback makes moving bytes nearly free. Adding *bytes delivered / line rate* to the "
             "measured median gives a lower bound for a client on another host "
             "(no protocol overhead, no congestion).", "",
             "| selectivity | system | measured ms | " + " | ".join(f"+ {n} ms" for n, _ in NETWORKS)
             + " | " + " | ".join(f"vs Skyhook at {n}" for n, _ in NETWORKS) + " |",
             "|" + "---|" * (3 + 2 * len(NETWORKS))]
    for sel, p in sorted(hp.items()):
        res = p.get("results", {})
        base = res.get(BASELINE)
        if not base:
            continue

        def at(r, bw):
            t, b = _med(r, "seconds"), _med(r, "bytes_delivered")
            return None if t is None or b is None else t + b * 8 / bw

        for name, r in res.items():
            lines.append(f"| {_pct(sel)} | {name} | {_fmt_ms(_med(r, 'seconds'))} | "
                         + " | ".join(_fmt_ms(at(r, bw)) for _, bw in NETWORKS) + " | "
                         + " | ".join(_fmt_x(_ratio(at(r, bw), at(base, bw))) for _, bw in NETWORKS) + " |")
    return lines + [""]


def point_table(results: dict, p: dict) -> list[str]:
    res = p.get("results", {})
    base = res.get(BASELINE, {})
    bt, bb, bc = _med(base, "seconds"), _med(base, "bytes_delivered"), _med(base, "client_cpu_seconds")
    lines = ["| system | median ms | IQR ms | min–max ms | time vs Skyhook | bytes delivered | bytes vs Skyhook "
             "| client CPU ms | CPU vs Skyhook | OSD CPU ms (/proc) | OSD CPU ms (reported) | gateway/coordinator CPU ms "
             "| bytes read (system) | bytes read (bluestore) | OSD bytes out |",
             "|" + "---|" * 15]
    for name, r in res.items():
        s = r["seconds"]
        sv = _med(r, "server_cpu_seconds")
        lines.append(
            f"| {name} | {_fmt_ms(s['median'])} | {_fmt_ms(s['q1'])}–{_fmt_ms(s['q3'])} | "
            f"{_fmt_ms(s['min'])}–{_fmt_ms(s['max'])} | {_fmt_x(_ratio(s['median'], bt))} | "
            f"{_fmt_bytes(_med(r, 'bytes_delivered'))} | {_fmt_x(_ratio(_med(r, 'bytes_delivered'), bb))} | "
            f"{_fmt_ms(_med(r, 'client_cpu_seconds'))} | {_fmt_x(_ratio(_med(r, 'client_cpu_seconds'), bc))} | "
            f"{_fmt_ms(_med(r, 'osd_cpu_seconds'))} | {_fmt_ms(_med(r, 'osd_cpu_reported'))} | "
            f"{_fmt_ms(sv)} | {_fmt_bytes(_med(r, 'bytes_read_store'))} | "
            f"{_fmt_bytes(_med(r, 'osd_bytes_read'))} | {_fmt_bytes(_med(r, 'osd_bytes_out'))} |")
    return lines


def render_markdown(results: dict, plots: list[str]) -> str:
    m = results["machine"]
    cfg = results["config"]
    out = [f"# Skyhook benchmark: sweep `{results['sweep']}`, {m['date']}", ""]
    out += ["Skyhook (pushdown into the OSDs) against what a user would pick instead, measured in one run on "
            "one machine. Every ratio is *other system / Skyhook (auto)* from the same run: above 1 means "
            "the other system took longer, delivered more bytes or used more client CPU. Every system's "
            "answer was compared with the reference (uproot on the source files; sorted by event number, "
            "every column) before any timing; a point whose answers differ is reported as an error and not timed.", ""]
    out += ["## Machine", "", "| | |", "|---|---|"]
    for k in ("date", "nproc", "cpu_model", "memory", "kernel", "os", "ceph", "python", "pyarrow", "numpy",
              "awkward", "uproot", "git_commit", "loadavg_start", "loadavg_end"):
        if k in m:
            out.append(f"| {k} | {m[k]} |")
    out += ["", f"Total run time {results.get('total_seconds', 0):.0f} s, including data generation, ingest, "
            "cluster and gateway start.", ""]
    out += ["## Targets (issue): 10 columns, largest dataset, first OSD count", ""]
    for t in targets(results):
        mark = {True: "MET", False: "NOT MET", None: "NOT MEASURED"}[t["met"]]
        out.append(f"- {_pct(t['selectivity'])} selectivity, {t['what']}: **{mark}** — {t['text']}")
    out.append("")
    hp = headline_points(results)
    if hp:
        out += ["### Headline ratios (other system / Skyhook)", "",
                "| selectivity | system | time | bytes delivered | client CPU | OSD CPU (/proc) |", "|---|---|---|---|---|---|"]
        for sel, p in sorted(hp.items()):
            res = p.get("results", {})
            base = res.get(BASELINE)
            if not base:
                continue
            for name, r in res.items():
                if name == BASELINE:
                    continue
                out.append(f"| {_pct(sel)} | {name} | {_fmt_x(_ratio(_med(r, 'seconds'), _med(base, 'seconds')))} | "
                           f"{_fmt_x(_ratio(_med(r, 'bytes_delivered'), _med(base, 'bytes_delivered')))} | "
                           f"{_fmt_x(_ratio(_med(r, 'client_cpu_seconds'), _med(base, 'client_cpu_seconds')))} | "
                           f"{_fmt_x(_ratio(_med(r, 'osd_cpu_seconds'), _med(base, 'osd_cpu_seconds')))} |")
        out.append("")
        out += projected_network(results, hp)
    if results.get("notes"):
        out += ["## Notes from the run", ""] + [f"- {n}" for n in results["notes"]] + [""]
    out += ["## Systems", "", "| name | kind | what it does |", "|---|---|---|"]
    for n, s in results["systems"].items():
        out.append(f"| {n} | {s['kind']} | {s['description']} |")
    out += ["", "## Datasets", "",
            "| OSDs | dataset | events | columns | partitions | in RADOS | Parquet on S3 | ROOT files | encoding | ingest s |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for d in results["datasets"]:
        out.append(f"| {d['osds']} | {d['name']} | {d['events']:,} | {d['columns']} | {d['partitions']} | "
                   f"{_fmt_bytes(d['bytes_stored'])} | {_fmt_bytes(d.get('bytes_parquet'))} | "
                   f"{_fmt_bytes(d['bytes_root'])} | {d.get('encoding')} | {d['ingest_seconds']:.1f} |")
    out += ["", f"Configuration: `{json.dumps(cfg)}`", ""]
    if plots:
        out += ["## Plots", ""] + [f"![{p}]({p})" for p in plots] + [""]
    out += ["## Every point", "",
            "Times are wall-clock seconds of the query call in the client, median and spread over "
            f"{cfg.get('repeats')} runs. *bytes delivered*: what reached the client process (Skyhook: reply "
            "bytes; plain reads: whole objects; S3: radosgw's `get_b`; uproot: bytes requested from the file). "
            "*OSD CPU (/proc)*: CPU time of every thread of every ceph-osd process around the query (/proc/PID/task/*/schedstat); *(reported)*: the "
            "object class's own figure in Skyhook's summary. *bytes read (bluestore)*: buffer hit+miss bytes "
            "of the OSDs (every system, including radosgw's reads).", ""]
    for p in results["points"]:
        out.append(f"### {p['osds']} OSD(s), {p['events']:,} events, {_pct(p['selectivity'])} selected "
                   f"(actual {p.get('selectivity_actual', 0):.3%}, {p.get('rows_expected', '?'):,} rows), "
                   f"{p['ncols']} columns [{', '.join(p.get('axes', []))}]")
        out.append("")
        out.append(f"Cut `{p.get('cut')}`; reference {p.get('reference')}.")
        out.append("")
        bad = {n: c for n, c in p.get("check", {}).items() if c != "ok"}
        if p.get("error"):
            out += [f"**ERROR: {p['error']}**", ""]
        for n, c in bad.items():
            out.append(f"- {n}: {c}")
        if bad:
            out.append("")
        if p.get("results"):
            out += point_table(results, p) + [""]
    return "\n".join(out) + "\n"


# -- plots -----------------------------------------------------------------------------

def _series(points, system, metric):
    xs, ys, lo, hi = [], [], [], []
    for x, p in points:
        r = p.get("results", {}).get(system)
        if not r or not r.get(metric):
            continue
        s = r[metric]
        xs.append(x)
        ys.append(s["median"])
        lo.append(s["median"] - s.get("q1", s["median"]))
        hi.append(s.get("q3", s["median"]) - s["median"])
    return xs, ys, lo, hi


def _legend(fig, axes):
    handles, labels = {}, []
    for ax in axes[0]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in handles:
                handles[lab] = h
                labels.append(lab)
    if handles:
        fig.legend([handles[lab] for lab in labels], labels, loc="lower center", ncol=min(len(labels), 7),
                   fontsize=8, frameon=False)


def make_plots(results: dict, out_dir: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results["systems"])
    style = {n: dict(marker=MARKERS[i % len(MARKERS)], linestyle="-" if results["systems"][n]["kind"] == "skyhook"
                     else "--") for i, n in enumerate(names)}
    grid = [p for p in results["points"] if "grid" in p.get("axes", [])]
    ncols = sorted({p["ncols"] for p in grid})
    files = []

    def by_selectivity(metric, ylabel, fname, title, scale=1.0):
        if not grid:
            return
        fig, axes = plt.subplots(1, len(ncols), figsize=(5 * len(ncols), 4.2), squeeze=False, sharey=True)
        for ax, n in zip(axes[0], ncols):
            pts = sorted(((p["selectivity"], p) for p in grid if p["ncols"] == n), key=lambda t: t[0])
            for name in names:
                xs, ys, lo, hi = _series(pts, name, metric)
                if xs:
                    ax.errorbar(xs, [y * scale for y in ys], yerr=[[v * scale for v in lo], [v * scale for v in hi]],
                                label=name, capsize=2, **style[name])
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("fraction of events selected")
            ax.set_title(f"{n} column{'s' if n > 1 else ''}")
            ax.grid(True, which="both", alpha=0.3)
        axes[0][0].set_ylabel(ylabel)
        _legend(fig, axes)
        ev = grid[0]["events"]
        fig.suptitle(f"{title} ({ev:,} events, {grid[0]['osds']} OSD(s); median, bars: IQR)")
        fig.tight_layout(rect=(0, 0.1, 1, 1))
        fig.savefig(out_dir / fname, dpi=110)
        plt.close(fig)
        files.append(fname)

    by_selectivity("seconds", "wall time [ms]", "time_vs_selectivity.png", "Query time", 1e3)
    by_selectivity("bytes_delivered", "bytes delivered to the client", "bytes_vs_selectivity.png", "Bytes delivered")
    by_selectivity("client_cpu_seconds", "client CPU [ms]", "client_cpu_vs_selectivity.png", "Client CPU", 1e3)
    by_selectivity("osd_cpu_seconds", "OSD CPU (/proc) [ms]", "osd_cpu_vs_selectivity.png", "OSD CPU", 1e3)

    size_pts = [p for p in results["points"] if "size" in p.get("axes", [])]
    sels = sorted({p["selectivity"] for p in size_pts})
    if len({p["events"] for p in size_pts}) > 1:
        fig, axes = plt.subplots(1, len(sels), figsize=(5 * len(sels), 4.2), squeeze=False)
        for ax, sel in zip(axes[0], sels):
            pts = sorted(((p["events"], p) for p in size_pts if p["selectivity"] == sel), key=lambda t: t[0])
            for name in names:
                xs, ys, lo, hi = _series(pts, name, "seconds")
                if xs:
                    ax.errorbar(xs, [y * 1e3 for y in ys], yerr=[[v * 1e3 for v in lo], [v * 1e3 for v in hi]],
                                label=name, capsize=2, **style[name])
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("events in the dataset")
            ax.set_ylabel("wall time [ms]")
            ax.set_title(f"{_pct(sel)} selected, {size_pts[0]['ncols']} columns")
            ax.grid(True, which="both", alpha=0.3)
        _legend(fig, axes)
        fig.suptitle("Scaling with dataset size")
        fig.tight_layout(rect=(0, 0.1, 1, 1))
        fig.savefig(out_dir / "scaling_size.png", dpi=110)
        plt.close(fig)
        files.append("scaling_size.png")

    osd_pts = [p for p in results["points"] if "osds" in p.get("axes", [])]
    osd_counts = sorted({p["osds"] for p in osd_pts})
    if len(osd_counts) > 1:
        sels = sorted({p["selectivity"] for p in osd_pts})
        fig, axes = plt.subplots(1, len(sels), figsize=(6 * len(sels), 4.2), squeeze=False)
        width = 0.8 / len(osd_counts)
        for ax, sel in zip(axes[0], sels):
            for k, n in enumerate(osd_counts):
                p = next((q for q in osd_pts if q["osds"] == n and q["selectivity"] == sel), None)
                if not p:
                    continue
                vals = [_med(p.get("results", {}).get(s, {}), "seconds") for s in names]
                ax.bar([i + k * width for i in range(len(names))], [(v or 0) * 1e3 for v in vals], width,
                       label=f"{n} OSD(s)")
            ax.set_xticks([i + width * (len(osd_counts) - 1) / 2 for i in range(len(names))])
            ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
            ax.set_yscale("log")
            ax.set_ylabel("wall time [ms]")
            ax.set_title(f"{_pct(sel)} selected, {osd_pts[0]['ncols']} columns, {osd_pts[0]['events']:,} events")
            ax.legend(fontsize=8)
        fig.suptitle("Scaling with the number of OSDs (same host, 2 cores)")
        fig.tight_layout()
        fig.savefig(out_dir / "scaling_osds.png", dpi=110)
        plt.close(fig)
        files.append("scaling_osds.png")
    return files


def write_report(results: dict, out_dir) -> Path:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = make_plots(results, out_dir)
    md = out_dir / "report.md"
    md.write_text(render_markdown(results, plots))
    (out_dir / "machine.json").write_text(json.dumps(results["machine"], indent=1))
    return md


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m benchmarks.report RESULTS_DIR", file=sys.stderr)
        return 2
    d = Path(argv[0])
    print(write_report(json.loads((d / "results.json").read_text()), d))
    return 0


if __name__ == "__main__":
    sys.exit(main())
