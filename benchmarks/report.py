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


def links(results: dict) -> list[str]:
    """The links of a multi-host run in the order measured (``["loopback"]`` otherwise)."""
    return results["config"].get("links") or ["loopback"]


def link_rate(link: str) -> float:
    """Bits per second of a link name, for ordering and plotting (loopback: none, unshaped)."""
    from skyhook_py.netns import parse_rate

    if link in ("loopback", "none"):
        return float("inf")
    return float(parse_rate(link))


def headline_points(results: dict, link: str | None = None) -> dict:
    """The grid points at 1 % and 100 % selectivity with 10 columns (of ``link``)."""
    link = link or links(results)[0]
    out = {}
    for p in results["points"]:
        if p.get("link", "loopback") != link:
            continue
        if "grid" in p.get("axes", []) and p["ncols"] == 10 and p["selectivity"] in (0.01, 1.0):
            out[p["selectivity"]] = p
    return out


# the speed target at 1 % selectivity against what reads through the link
SPEED_TARGET = {"1gbit": 10.0, "10gbit": 5.0}


def local_only(results: dict) -> set:
    """The systems that read from the client's own host: the best case, not "through the
    link".  uproot reads a local copy; with --hosts, the harness's SeaweedFS also runs on
    the client's loopback, not behind the shaped link (0 bytes on the client's link),
    unless an endpoint was given."""
    cfg = results.get("config", {})
    out = {"uproot"}
    if cfg.get("hosts") and not str(cfg.get("seaweedfs", "")).startswith("http"):
        out.add("s3-seaweedfs")
    return out


def link_targets(results: dict, link: str) -> list[dict]:
    """The issue's targets at one link: at 1 %, >= 5x (10 Gb/s) or >= 10x (1 Gb/s) faster
    than every alternative that reads through the link and >= 20x fewer bytes; at 100 %,
    <= 1.1x the best alternative."""
    rows = []
    local_systems = local_only(results)
    through = [n for n in alternatives(results) if n not in local_systems]
    target = SPEED_TARGET.get(link, 5.0)
    for sel, p in sorted(headline_points(results, link).items()):
        res = p.get("results", {})
        sky = res.get(BASELINE)
        cands = {n: res[n] for n in through if n in res}
        if p.get("error") or not sky or not cands:
            rows.append({"link": link, "selectivity": sel, "what": "all", "met": None,
                         "text": p.get("error") or "Skyhook or every alternative missing"})
            continue
        t_sky = _med(sky, "seconds")
        best_t = min(cands, key=lambda n: _med(cands[n], "seconds"))
        t_best = _med(cands[best_t], "seconds")
        local = {n: _med(res[n], "seconds") / t_sky for n in sorted(local_systems) if n in res}
        note = "".join(f"; {n} on the client's host: {v:.2f}×" for n, v in local.items())
        if sel == 0.01:
            rows.append({"link": link, "selectivity": sel, "what": "time", "met": t_best / t_sky >= target,
                         "text": f"{t_best / t_sky:.2f}× faster than the fastest alternative through the link "
                                 f"({best_t}); target ≥ {target:g}×{note}"})
            b_sky = _med(sky, "bytes_delivered")
            best_b = min(cands, key=lambda n: _med(cands[n], "bytes_delivered") or float("inf"))
            b_best = _med(cands[best_b], "bytes_delivered")
            if b_sky and b_best:
                rows.append({"link": link, "selectivity": sel, "what": "bytes", "met": b_best / b_sky >= 20,
                             "text": f"{b_best / b_sky:,.1f}× fewer bytes delivered than the leanest "
                                     f"alternative ({best_b}); target ≥ 20×"})
        else:
            every = dict(cands, **{n: res[n] for n in local_systems if n in res})
            best_all = min(every, key=lambda n: _med(every[n], "seconds"))
            rows.append({"link": link, "selectivity": sel, "what": "time", "met": t_sky / t_best <= 1.1,
                         "text": f"{t_sky / t_best:.2f}× the time of the fastest alternative through the link "
                                 f"({best_t}); target ≤ 1.1×; against every system incl. local copies: "
                                 f"{t_sky / _med(every[best_all], 'seconds'):.2f}× ({best_all})"})
    return rows


def measured_over_links(results: dict) -> list[str]:
    """Per link, 1 % and 100 % selectivity, 10 columns: measured, not projected."""
    lines = ["### Measured over the links (10 columns, largest dataset)", "",
             "Every link shaped with tbf in both directions at the rate named (achieved rates below). "
             "**Rate only: this kernel has no netem, so no link delay was emulated**; a real network "
             "adds latency per round trip, which costs the many-request systems (S3, uproot over HTTP) "
             "more than Skyhook.", "",
             "| link | selectivity | system | median ms | time vs Skyhook | bytes delivered | bytes vs Skyhook "
             "| bytes on the client's link |", "|---|---|---|---|---|---|---|---|"]
    for link in links(results):
        for sel, p in sorted(headline_points(results, link).items()):
            res = p.get("results", {})
            base = res.get(BASELINE, {})
            for name, r in res.items():
                lines.append(f"| {link} | {_pct(sel)} | {name} | {_fmt_ms(_med(r, 'seconds'))} | "
                             f"{_fmt_x(_ratio(_med(r, 'seconds'), _med(base, 'seconds')))} | "
                             f"{_fmt_bytes(_med(r, 'bytes_delivered'))} | "
                             f"{_fmt_x(_ratio(_med(r, 'bytes_delivered'), _med(base, 'bytes_delivered')))} | "
                             f"{_fmt_bytes(_med(r, 'link_bytes'))} |")
    rates = results.get("links_measured", {})
    if rates:
        lines += ["", "Achieved link rates (TCP, 128 MiB from the client to each host, measured once): "
                  + "; ".join(f"{k}: {', '.join(f'{r / 1e9:.2f}' for r in v)} Gb/s" for k, v in rates.items())
                  + ". loopback: the one-host cluster on 127.0.0.1 (no link)."]
    return lines + [""]


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
    if any(_med(r, "link_bytes") is not None for r in res.values()):
        lines[0] += " bytes on the client's link |"
        lines[1] += "---|"
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
            f"{_fmt_bytes(_med(r, 'osd_bytes_read'))} | {_fmt_bytes(_med(r, 'osd_bytes_out'))} |"
            + (f" {_fmt_bytes(_med(r, 'link_bytes'))} |" if lines[1].count("|") > 16 else ""))
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
    multihost = bool(cfg.get("hosts"))
    if multihost:
        out += [f"## Targets (issue 10): 10 columns, largest dataset, {cfg['hosts']} storage hosts, per link", ""]
        for link in links(results):
            for t in link_targets(results, link):
                mark = {True: "MET", False: "NOT MET", None: "NOT MEASURED"}[t["met"]]
                out.append(f"- {link}, {_pct(t['selectivity'])} selectivity, {t['what']}: **{mark}** — {t['text']}")
        out.append("")
        out += measured_over_links(results)
    else:
        out += ["## Targets (issue): 10 columns, largest dataset, first OSD count", ""]
    for t in ([] if multihost else targets(results)):
        mark = {True: "MET", False: "NOT MET", None: "NOT MEASURED"}[t["met"]]
        out.append(f"- {_pct(t['selectivity'])} selectivity, {t['what']}: **{mark}** — {t['text']}")
    out.append("")
    hp = {} if multihost else headline_points(results)
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
        out.append(f"### link {p.get('link', 'loopback')}, {p['osds']} OSD(s), {p['events']:,} events, "
                   f"{_pct(p['selectivity'])} selected "
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
    files = []
    all_links = links(results)
    for link in all_links:
        suffix = "" if len(all_links) == 1 else f"_{link}"
        _plots_of_link(results, out_dir, plt, names, style, files, link, suffix)
    if len(all_links) > 1:
        _plots_vs_link(results, out_dir, plt, names, style, files)
    return files


def _plots_vs_link(results, out_dir, plt, names, style, files):
    """Time and bytes against link rate, 1 % and 100 % selectivity, 10 columns."""
    order = sorted(links(results), key=link_rate)
    labels = [("unshaped\n(loopback)" if lk == "loopback" else lk) for lk in order]
    for metric, ylabel, fname, scale in (("seconds", "wall time [ms]", "time_vs_link.png", 1e3),
                                         ("bytes_delivered", "bytes delivered to the client", "bytes_vs_link.png", 1.0)):
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.4), squeeze=False)
        for ax, sel in zip(axes[0], (0.01, 1.0)):
            pts = [(i, headline_points(results, lk).get(sel)) for i, lk in enumerate(order)]
            pts = [(i, p) for i, p in pts if p]
            for name in names:
                xs, ys, lo, hi = _series(pts, name, metric)
                if xs:
                    ax.errorbar(xs, [y * scale for y in ys], yerr=[[v * scale for v in lo], [v * scale for v in hi]],
                                label=name, capsize=2, **style[name])
            ax.set_xticks(range(len(order)))
            ax.set_xticklabels(labels)
            ax.set_yscale("log")
            ax.set_xlabel("link rate (tbf; no delay emulated)")
            ax.set_title(f"{_pct(sel)} selected, 10 columns")
            ax.grid(True, which="both", alpha=0.3)
        axes[0][0].set_ylabel(ylabel)
        _legend(fig, axes)
        fig.suptitle(f"{ylabel.split(' [')[0].capitalize()} against link rate "
                     f"({results['config'].get('hosts')} storage hosts; median, bars: IQR)")
        fig.tight_layout(rect=(0, 0.1, 1, 1))
        fig.savefig(out_dir / fname, dpi=110)
        plt.close(fig)
        files.append(fname)


def _plots_of_link(results, out_dir, plt, names, style, files, link, suffix):
    pts_link = [p for p in results["points"] if p.get("link", "loopback") == link]
    grid = [p for p in pts_link if "grid" in p.get("axes", [])]
    ncols = sorted({p["ncols"] for p in grid})

    def by_selectivity(metric, ylabel, fname, title, scale=1.0):
        fname = fname.replace(".png", f"{suffix}.png")
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
        fig.suptitle(f"{title} ({ev:,} events, {grid[0]['osds']} OSD(s), link {link}; median, bars: IQR)")
        fig.tight_layout(rect=(0, 0.1, 1, 1))
        fig.savefig(out_dir / fname, dpi=110)
        plt.close(fig)
        files.append(fname)

    by_selectivity("seconds", "wall time [ms]", "time_vs_selectivity.png", "Query time", 1e3)
    by_selectivity("bytes_delivered", "bytes delivered to the client", "bytes_vs_selectivity.png", "Bytes delivered")
    by_selectivity("client_cpu_seconds", "client CPU [ms]", "client_cpu_vs_selectivity.png", "Client CPU", 1e3)
    by_selectivity("osd_cpu_seconds", "OSD CPU (/proc) [ms]", "osd_cpu_vs_selectivity.png", "OSD CPU", 1e3)

    size_pts = [p for p in pts_link if "size" in p.get("axes", [])]
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
        fig.suptitle(f"Scaling with dataset size (link {link})")
        fig.tight_layout(rect=(0, 0.1, 1, 1))
        fig.savefig(out_dir / f"scaling_size{suffix}.png", dpi=110)
        plt.close(fig)
        files.append(f"scaling_size{suffix}.png")

    osd_pts = [p for p in pts_link if "osds" in p.get("axes", [])]
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
