"""Before/after figures of bench_coordinator.py runs: a table (medians over rounds) and a plot.

    .venv/bin/python benchmarks/compare_coordinator.py OUT_DIR before1.json before2.json -- after1.json after2.json

Writes OUT_DIR/comparison.md, OUT_DIR/comparison.json and OUT_DIR/coordinator.png.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

PATHS = ["in_process", "server_hit", "grpc_no_cache", "grpc_cache_hit"]
TARGETS = {  # figure -> (target, "<=" or ">=")
    "in_process p50 ms": (3.0, "<="),
    "gRPC overhead p50 ms": (1.0, "<="),
    "grpc_cache_hit p50 ms": (1.0, "<="),
    "server_hit p50 ms": (1.0, "<="),
    "32 client processes, cache hits, queries/s": (1000.0, ">="),
}


def figures(run: dict) -> dict:
    lat = run["latency"]
    out = {}
    for p in PATHS:
        if p in lat:
            out[f"{p} p50 ms"] = lat[p]["p50_ms"]
            out[f"{p} CPU p50 ms"] = lat[p].get("cpu_p50_ms")
    out["gRPC overhead p50 ms"] = run["grpc_overhead_p50_ms"]
    if "grpc_no_cache" in lat and "in_process" in lat and lat["in_process"].get("cpu_p50_ms") is not None:
        out["gRPC overhead CPU p50 ms"] = lat["grpc_no_cache"]["cpu_p50_ms"] - lat["in_process"]["cpu_p50_ms"]
    for t in run["throughput"]:
        name = f"{t['clients']} client {t.get('kind', 'threads')}, cache hits"
        out[f"{name}, queries/s"] = t["queries_per_s"]
        if t.get("queries_per_server_cpu_s"):
            out[f"{name}, queries per server CPU-s"] = t["queries_per_server_cpu_s"]
    return out


def median_of(runs: list[dict]) -> dict:
    figs = [figures(r) for r in runs]
    keys = [k for k in figs[0] if all(f.get(k) is not None for f in figs)]
    return {k: statistics.median(f[k] for f in figs) for k in keys}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    out = Path(argv[0])
    split = argv.index("--")
    before = [json.loads(Path(p).read_text()) for p in argv[1:split]]
    after = [json.loads(Path(p).read_text()) for p in argv[split + 1:]]
    b, a = median_of(before), median_of(after)
    rows = ["| figure | before | after | after/before | target | met (after) |", "|---|---|---|---|---|---|"]
    for k in a:
        if k not in b:
            continue
        ratio = a[k] / b[k] if b[k] else float("nan")
        t = TARGETS.get(k)
        target, met = "", ""
        if t is not None:
            target = f"{t[1]} {t[0]:g}"
            met = "yes" if (a[k] <= t[0] if t[1] == "<=" else a[k] >= t[0]) else "**no**"
        rows.append(f"| {k} | {b[k]:.2f} | {a[k]:.2f} | {ratio:.2f} | {target} | {met} |")
    out.mkdir(parents=True, exist_ok=True)
    (out / "comparison.md").write_text("\n".join(rows) + "\n")
    (out / "comparison.json").write_text(json.dumps({"before": b, "after": a, "before_runs": before,
                                                     "after_runs": after}, indent=1))
    print("\n".join(rows))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    ax = axes[0]
    x = range(len(PATHS))
    w = 0.2
    for i, (label, runs, key, hatch) in enumerate([("before wall", before, "p50_ms", ""),
                                                   ("after wall", after, "p50_ms", ""),
                                                   ("before CPU", before, "cpu_p50_ms", "//"),
                                                   ("after CPU", after, "cpu_p50_ms", "//")]):
        vals = [statistics.median(r["latency"][p][key] for r in runs) for p in PATHS]
        ax.bar([xi + (i - 1.5) * w for xi in x], vals, w, label=label, hatch=hatch,
               color=("tab:gray" if label.startswith("before") else "tab:blue"), edgecolor="black")
    ax.set_xticks(list(x))
    ax.set_xticklabels(PATHS, rotation=15)
    ax.set_yscale("log")
    ax.set_ylabel("ms per query (p50, median of rounds)")
    ax.axhline(1.0, color="red", lw=0.8, ls="--")
    ax.set_title("latency: wall (loaded machine) and CPU of this process")
    ax.legend(fontsize=8)

    ax = axes[1]
    kinds = sorted({(t["clients"], t.get("kind", "threads")) for r in after for t in r["throughput"]},
                   key=lambda c: (c[1], c[0]))
    labels = [f"{c} {k}" for c, k in kinds]

    def q(runs, c, k, field):
        return statistics.median(next(t.get(field) for t in r["throughput"] if t["clients"] == c
                                      and t.get("kind", "threads") == k) or 0 for r in runs)

    xs = range(len(kinds))
    ax.bar([xi - 0.3 for xi in xs], [q(before, c, k, "queries_per_s") for c, k in kinds], 0.2,
           label="before queries/s", color="tab:gray", edgecolor="black")
    ax.bar([xi - 0.1 for xi in xs], [q(after, c, k, "queries_per_s") for c, k in kinds], 0.2,
           label="after queries/s", color="tab:blue", edgecolor="black")
    ax.bar([xi + 0.1 for xi in xs], [q(before, c, k, "queries_per_server_cpu_s") for c, k in kinds], 0.2,
           label="before queries per CPU-s", color="tab:gray", hatch="//", edgecolor="black")
    ax.bar([xi + 0.3 for xi in xs], [q(after, c, k, "queries_per_server_cpu_s") for c, k in kinds], 0.2,
           label="after queries per CPU-s", color="tab:blue", hatch="//", edgecolor="black")
    ax.axhline(1000, color="red", lw=0.8, ls="--")
    ax.set_xticks(list(xs))
    ax.set_xticklabels(labels, rotation=15)
    ax.set_yscale("log")
    ax.set_title("cache hits: concurrent clients")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "coordinator.png", dpi=110)


if __name__ == "__main__":
    main()
