"""What coffea column discovery buys: a processor run over Skyhook with the columns it
touches found by tracing (``skyhook_py.coffea.run`` without ``columns``) against the same
run asking for every column of the dataset (what a runner that cannot tell would do),
and the cost of the discovery itself (``columns_touched``, no data read).

On a throwaway one-OSD cluster (started and purged here), one NanoAOD-like dataset.
Medians of ``--repeats`` runs; bytes are those that crossed from the OSDs to the client
(Summary.bytes_returned, summed over the chunks).  Writes
benchmarks/results/coffea.{json,md,png}.

    .venv/bin/python benchmarks/bench_coffea.py [--events N] [--repeats N]
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
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import awkward as ak  # noqa: E402
import hist  # noqa: E402
from coffea import processor  # noqa: E402

from skyhook_py import coffea as sc  # noqa: E402
from skyhook_py import demo_data, transcode  # noqa: E402
from skyhook_py.cluster import Cluster  # noqa: E402
from skyhook_py.service.server import open_session  # noqa: E402


class MuonMet(processor.ProcessorABC):
    def process(self, events):
        good = events.Muon[(events.Muon.pt > 20) & (abs(events.Muon.eta) < 2.4)]
        met = hist.Hist.new.Reg(20, 0, 200, name="met").Double().fill(met=events.MET.pt[ak.num(good) > 0])
        return {"good_muons": int(ak.sum(ak.num(good))), "met": met}

    def postprocess(self, accumulator):
        return accumulator


def measured(session):
    """Wrap session.run to sum the bytes each chunk's query returned."""
    seen = {"bytes": 0}
    real = session.run

    def run(dataset, **kw):
        r = real(dataset, **kw)
        seen["bytes"] += r.summary.bytes_returned
        return r

    session.run = run
    return seen


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--partition-events", type=int, default=25_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore")

    work = Path(tempfile.mkdtemp(prefix="skyhook-bench-"))
    atexit.register(shutil.rmtree, work, True)   # the work folder goes with the process
    cluster = Cluster(work / "cluster")
    try:
        cluster.up(osds=1)
        pool = "bench-coffea"
        cluster.create_pool(pool, size=1)
        src = demo_data.write_nanoaod(str(work / "bench.root"), events=args.events, seed=11)
        session = open_session(cluster.conf_path, pool, user="client.admin", keyring=str(cluster.admin_keyring))
        transcode.ingest(session.store, [src], "bench", tree="Events", partition_events=args.partition_events)
        all_columns = list(session.manifest("bench").column_types())
        seen = measured(session)

        def one(columns):
            seen["bytes"] = 0
            t0 = time.perf_counter()
            out, report = sc.run(MuonMet(), "bench", columns=columns, where="nMuon >= 1", session=session)
            return time.perf_counter() - t0, seen["bytes"], out, report

        discovery = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            touched = sc.columns_touched(MuonMet(), "bench", session=session)
            discovery.append(time.perf_counter() - t0)
        runs = {"discovered": [one(None) for _ in range(args.repeats)],
                "all_columns": [one(all_columns) for _ in range(args.repeats)]}
        a, b = runs["discovered"][0][2], runs["all_columns"][0][2]
        assert a["good_muons"] == b["good_muons"] and (a["met"].values() == b["met"].values()).all()
        results = {
            "setup": {"events": args.events, "partition_events": args.partition_events,
                      "dataset_columns": len(all_columns), "touched": touched,
                      "columns_asked": runs["discovered"][0][3]["columns"], "repeats": args.repeats,
                      "host": platform.node(), "python": platform.python_version()},
            "discovery_s_median": statistics.median(discovery),
        }
        for name, rs in runs.items():
            results[name] = {"seconds_median": statistics.median(r[0] for r in rs),
                             "bytes_returned": rs[0][1], "columns": len(rs[0][3]["columns"])}
        results["time_ratio_all_over_discovered"] = (results["all_columns"]["seconds_median"]
                                                      / results["discovered"]["seconds_median"])
        results["bytes_ratio_all_over_discovered"] = (results["all_columns"]["bytes_returned"]
                                                       / max(1, results["discovered"]["bytes_returned"]))
        write(results, Path(args.out))
        session.close()
    finally:
        cluster.purge()


def write(results, out: Path):
    out.mkdir(parents=True, exist_ok=True)
    (out / "coffea.json").write_text(json.dumps(results, indent=1))
    s = results["setup"]
    lines = [
        "# coffea processor over Skyhook: discovered columns vs every column",
        "",
        f"One OSD, {s['events']:,} NanoAOD-like events in {s['partition_events']:,}-event partitions, "
        f"{s['dataset_columns']} columns; processor: good muons (pt, eta) and a MET histogram, cut "
        f"`nMuon >= 1` pushed down; medians of {s['repeats']} runs.",
        "",
        f"Touched (traced, no data read): {', '.join(s['touched'])}; asked: {len(s['columns_asked'])} columns "
        f"(those + the event IDs NanoAODSchema wants). Discovery: **{results['discovery_s_median'] * 1000:.0f} ms** median.",
        "",
        "| run | columns asked | seconds (median) | bytes returned |",
        "|---|---|---|---|",
    ]
    for name in ("discovered", "all_columns"):
        r = results[name]
        lines.append(f"| {name} | {r['columns']} | {r['seconds_median']:.2f} | {r['bytes_returned']:,} |")
    lines += ["", f"every column / discovered: time x{results['time_ratio_all_over_discovered']:.1f}, "
                  f"bytes x{results['bytes_ratio_all_over_discovered']:.1f}"]
    (out / "coffea.md").write_text("\n".join(lines) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(1, 2, figsize=(8, 3))
        names = ["discovered", "all_columns"]
        ax[0].bar(names, [results[n]["seconds_median"] for n in names])
        ax[0].set_ylabel("seconds (median)")
        ax[1].bar(names, [results[n]["bytes_returned"] / 1e6 for n in names])
        ax[1].set_ylabel("MB returned")
        fig.suptitle("coffea processor over Skyhook")
        fig.tight_layout()
        fig.savefig(out / "coffea.png", dpi=100)
    except ImportError:
        pass
    print("\n".join(lines))


if __name__ == "__main__":
    main()
