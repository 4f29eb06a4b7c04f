"""What the catalogue costs: a filtered listing from the index vs reading every header,
and the price of versions (a metadata commit, loading ``ds@v1`` vs the current one).

On a throwaway one-OSD cluster (started and purged here): one real dataset (the
NanoAOD ttbar file) with metadata, then N datasets made by copying its header under N
names and recording N index entries (varied metadata), for N in --sizes.  Per N, the
median of --repeats runs of:
- ``index``: ``catalogue.listing.entries(store, where=...)`` (one omap read);
- ``headers``: what a listing without the index mirror would do: read every
  dataset's header (``load_manifest``) and filter its metadata.
Both must select the same datasets (checked).  Then: a ``skyhook meta`` commit
(copy of the old header + pieces + swap + index entry) and loading the current version
vs ``ds@v1`` (the kept copy).  Writes benchmarks/results/catalogue.{json,md,png}.

    .venv/bin/python benchmarks/bench_catalogue.py [--sizes 10,100,1000] [--repeats 5]
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

from skyhook_py.catalogue import listing  # noqa: E402
from skyhook_py.catalogue.where import Filter  # noqa: E402
from skyhook_py.cluster import Cluster  # noqa: E402
from skyhook_py.paths import shared_data_dir  # noqa: E402
from skyhook_py.service.server import open_session  # noqa: E402
from skyhook_py.storage import manifest as mf  # noqa: E402

WHERE = "year == 2018 and is_mc"


def median_s(fn, repeats):
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def make_copies(store, base: str, start: int, stop: int):
    header = json.loads(store.read(mf.manifest_object(base)))
    for i in range(start, stop):
        name = f"cat{i:05d}"
        h = dict(header, dataset=name, metadata={"year": 2015 + i % 4, "is_mc": i % 3 != 0,
                                                   "process": ["DY", "ttbar", "W"][i % 3]})
        store.write_full(mf.manifest_object(name), json.dumps(h).encode())
        store.set_omap(mf.manifest_object(name), {mf.VERSION_KEY: str(h["version"]).encode()})
        mf.update_index(store, name, h["version"], {"events": h["num_events"], "metadata": h["metadata"]})


def by_headers(store):
    f = Filter(WHERE)
    out = []
    for name in mf.list_datasets(store):
        m = mf.load_manifest(store, name)
        if f.matches(listing.filter_fields(name, {"metadata": m.metadata, "version": m.version})):
            out.append(name)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10,100,1000")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args(argv)
    sizes = [int(x) for x in args.sizes.split(",")]
    work = Path(tempfile.mkdtemp(prefix="skyhook-bench-catalogue-"))
    atexit.register(shutil.rmtree, work, True)   # the work folder goes with the process
    cluster = Cluster(work / "cluster")
    rows, versions = [], {}
    try:
        cluster.up(osds=1)
        pool = "bench-catalogue"
        cluster.create_pool(pool, size=1)
        s = open_session(cluster.conf_path, pool, user="client.admin", keyring=str(cluster.admin_keyring))
        src = shared_data_dir() / "nanoAOD_2015_CMS_Open_Data_ttbar.root"
        s.ingest([src], "base", partition_events=50, metadata={"year": 2015, "is_mc": True})
        made = 0
        for n in sizes:
            make_copies(s.store, "base", made, n)
            made = n
            want = by_headers(s.store)
            got = [r["name"] for r in listing.entries(s.store, where=WHERE)]
            assert got == want, (got[:5], want[:5])
            t_index = median_s(lambda: listing.entries(s.store, where=WHERE), args.repeats)
            t_headers = median_s(lambda: by_headers(s.store), args.repeats)
            rows.append({"datasets": n + 1, "selected": len(got), "index_ms": t_index * 1e3,
                         "headers_ms": t_headers * 1e3, "ratio": t_headers / t_index})
            print(rows[-1], file=sys.stderr)
        k = [0]

        def meta_commit():
            k[0] += 1
            s.set_metadata("base", {"note": f"n{k[0]}"})
        versions["meta_commit_ms"] = median_s(meta_commit, max(args.repeats, 5)) * 1e3
        versions["load_current_ms"] = median_s(lambda: mf.load_manifest(s.store, "base"), 20) * 1e3
        versions["load_v1_ms"] = median_s(lambda: mf.load_manifest(s.store, "base@v1"), 20) * 1e3
        s.close()
    finally:
        cluster.purge()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = {"rows": rows, "versions": versions, "where": WHERE, "repeats": args.repeats,
              "machine": {"node": platform.node(), "python": platform.python_version()}}
    (out / "catalogue.json").write_text(json.dumps(result, indent=1))
    md = ["# Catalogue: filtered listing from the index vs reading every header", "",
          f"`--where '{WHERE}'`, median of {args.repeats} runs, one-OSD cluster on this machine.", "",
          "| datasets | selected | index (ms) | every header (ms) | ratio |", "|---|---|---|---|---|"]
    md += [f"| {r['datasets']} | {r['selected']} | {r['index_ms']:.1f} | {r['headers_ms']:.1f} | "
           f"{r['ratio']:.1f}x |" for r in rows]
    md += ["", f"A metadata commit (`skyhook meta`): {versions['meta_commit_ms']:.1f} ms (median); "
           f"loading the current header {versions['load_current_ms']:.2f} ms, `base@v1` "
           f"{versions['load_v1_ms']:.2f} ms (one more read: the current header first)."]
    (out / "catalogue.md").write_text("\n".join(md) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 3.5))
        x = [r["datasets"] for r in rows]
        ax.loglog(x, [r["index_ms"] for r in rows], "o-", label="index (one omap read)")
        ax.loglog(x, [r["headers_ms"] for r in rows], "s-", label="read every header")
        ax.set_xlabel("datasets in the pool")
        ax.set_ylabel("list --where, median ms")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "catalogue.png", dpi=120)
    except ImportError:
        pass
    print("\n".join(md))


if __name__ == "__main__":
    main()
