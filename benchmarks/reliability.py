"""The reliability suite at full size (issue 12 "Targets"; not run in CI: about 20-40 min).

Against a throwaway 3-OSD cluster started here (skyhook_py.cluster, loopback):

1. malformed requests (benchmarks/malformed.py: mutated, truncated, random and hostile
   requests) sent with the query key straight to the class over partitions of every
   encoding: errno histogram, hangs (a call that times out), and for every request the
   class answers, its answer against the reference evaluator on the same partition
   (a difference is a silent wrong answer unless the reference refuses the request);
2. corrupted partitions (the generator of tests/test_corruption_cluster.py, plus
   truncation and appended bytes) of ingested datasets, each scanned through pushdown
   and through the plain read, rows and aggregates: EBADMSG, the exact uncorrupted
   answer, or a silent wrong answer;
3. poison pills: latency of good queries from one client alone, then while another
   client sends expensive requests (CPU-heavy, about 8,000 nodes) and malformed ones to
   the same partitions: p50/p99 and their ratios;
4. OSD crashes (a daemon pid that changed or vanished, "Caught signal" in the OSD logs).

    nice -n 10 .venv/bin/python -m benchmarks.reliability \
        [--malformed 10000] [--corrupt 1000] [--poison-seconds 60] \
        [--out benchmarks/results/2026-12-04-reliability]

Writes report.md, results.json and reliability.png into --out.

The phase functions are importable: tests/test_reliability.py (marker `reliability`,
part of `make test`) runs CI-sized versions of phases 1, 2 and 4 on the tests' cluster.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import errno
import json
import os
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from benchmarks import malformed
from skyhook_py.errors import ClusterError, ObjectClassError, SkyhookError
from skyhook_py.query import codec, reference, slices
from skyhook_py.query.ir import AggKind, Aggregation, col

ROOT = malformed.ROOT
MAX_REPLY = 16 << 20   # sync execute: a longer reply is ERANGE, never an overflow (FACTS.md)


def _log(msg: str):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _pct(xs, q):
    return float(np.percentile(np.asarray(xs), q)) if xs else float("nan")


# -- 1. malformed requests ------------------------------------------------------------
def _column_match(x, y) -> str:
    """"exact", "close" (floats within 1e-6 relative: transcendental kernels differ in
    ULPs between libm and NumPy's SIMD code, formats/README.md) or "differs"; NaN == NaN."""
    import pyarrow as pa
    import pyarrow.compute as pc

    x, y = x.combine_chunks(), y.combine_chunks()
    if x.type != y.type or len(x) != len(y) or x.null_count != y.null_count:
        return "differs"
    if x.equals(y):
        return "exact"
    if pa.types.is_list(x.type) or pa.types.is_large_list(x.type):
        if not pc.list_value_length(x).equals(pc.list_value_length(y)):
            return "differs"
        x, y = pc.list_flatten(x), pc.list_flatten(y)
    if x.null_count and not x.is_null().equals(y.is_null()):
        return "differs"
    u, v = x.to_numpy(zero_copy_only=False), y.to_numpy(zero_copy_only=False)
    if u.dtype.kind != "f":
        return "exact" if np.array_equal(u, v) else "differs"
    if np.array_equal(u, v, equal_nan=True):
        return "exact"
    return "close" if np.allclose(u, v, rtol=1e-6, atol=0, equal_nan=True) else "differs"


def _value_match(u, v) -> str:
    if isinstance(u, list) or isinstance(v, list):
        if u is None or v is None or len(u) != len(v):
            return "differs"
        a, b = np.asarray(u, np.float64), np.asarray(v, np.float64)
        if np.array_equal(a, b, equal_nan=True):
            return "exact"
        return "close" if np.allclose(a, b, rtol=1e-6, atol=0, equal_nan=True) else "differs"
    if isinstance(u, float) or isinstance(v, float):
        if u == v or (np.isnan(u) and np.isnan(v)):
            return "exact"
        return "close" if np.isclose(u, v, rtol=1e-6, atol=0) else "differs"
    return "exact" if u == v else "differs"


def _same_scan(a, b) -> str:
    """The class's ScanResult against the reference's: "exact", "close" or "differs"."""
    out = {"exact"}
    if a.table.column_names != b.table.column_names:
        return "differs"
    for c in a.table.column_names:
        out.add(_column_match(a.table.column(c), b.table.column(c)))
    ag = {p.name: p for p in a.aggregates}
    bg = {p.name: p for p in b.aggregates}
    if ag.keys() != bg.keys() or len(a.aggregates) != len(b.aggregates):
        return "differs"
    for k in ag:
        x, y = dataclasses.asdict(ag[k]), dataclasses.asdict(bg[k])
        for f in x:
            out.add(_value_match(x[f], y[f]))
    return "differs" if "differs" in out else "close" if "close" in out else "exact"


def malformed_phase(store, objects: dict, tables: dict, n: int, seed: int) -> dict:
    reqs = malformed.malformed_requests(n, seed)
    names = sorted(objects)
    errnos = collections.Counter()
    outcome = collections.Counter()
    wrong, unexplained, lat = [], [], []
    t0 = time.monotonic()
    for i, req in enumerate(reqs):
        if i and i % 1000 == 0:
            _log(f"malformed: {i}/{n} ({time.monotonic() - t0:.0f} s) {dict(outcome)}")
        obj = names[i % len(names)]
        s = time.monotonic()
        try:
            # the whole answer: a scan may stop at the end of its time slice (resumed here)
            got = slices.scan_to_end(lambda r, o=objects[obj]: store.execute(o, "skyhook", "scan", r, MAX_REPLY), req)
        except ObjectClassError as e:
            errnos[errno.errorcode.get(e.errno, str(e.errno))] += 1
            outcome["error"] += 1
            lat.append(time.monotonic() - s)
            continue
        except ClusterError as e:   # timed out: a hang as far as the client knows
            outcome["hang"] += 1
            unexplained.append({"request": i, "what": f"timeout: {e}"})
            continue
        except SkyhookError as e:
            outcome["answered"] += 1
            wrong.append({"request": i, "object": obj, "what": f"undecodable reply: {e}"})
            continue
        lat.append(time.monotonic() - s)
        outcome["answered"] += 1
        try:
            r = codec.decode_scan_request(req)
            ref = reference.scan_table(tables[obj], outputs=r.outputs, where=r.where, row_start=r.row_start,
                                       row_stop=r.row_stop, limit=r.limit, aggregations=r.aggregations)
        except Exception as e:  # noqa: BLE001 - the reference refuses what the class accepted
            outcome["answered; reference refuses"] += 1
            unexplained.append({"request": i, "object": obj, "what": f"{type(e).__name__}: {str(e)[:200]}"})
            continue
        match = _same_scan(got, ref)
        if match == "exact":
            outcome["answered = reference"] += 1
        elif match == "close":
            outcome["answered = reference within float rounding"] += 1
        else:
            wrong.append({"request": i, "object": obj, "what": "differs from the reference"})
    return {"requests": n, "seconds": round(time.monotonic() - t0, 1), "outcomes": dict(outcome),
            "errnos": dict(errnos.most_common()), "silent_wrong": len(wrong), "wrong": wrong[:50],
            "unexplained": unexplained[:50], "latency_p50_ms": _pct(lat, 50) * 1e3,
            "latency_p99_ms": _pct(lat, 99) * 1e3, "latency_max_ms": max(lat) * 1e3 if lat else None}


# -- 2. corrupted objects ---------------------------------------------------------------
def corruption_phase(session, store, shared_data: Path, n: int, seed: int, sources=None,
                     encodings=None, prefix: str = "rel") -> dict:
    """``n`` corrupted objects over datasets of ``sources`` (names of
    test_corruption_cluster.SOURCES, default all) x ``encodings`` (default its ENCODINGS),
    ingested here as ``<prefix>_<source>_<format>_<compression>``."""
    import test_corruption_cluster as tc

    datasets = []
    for source in sorted(sources or tc.SOURCES):
        path, tree, partition_events, rows_q, aggs_q = tc.SOURCES[source]
        for fmt, comp in (encodings or tc.ENCODINGS):
            name = f"{prefix}_{source}_{fmt}_{comp or 'none'}"
            session.ingest([shared_data / path], name, tree=tree, partition_events=partition_events,
                           format=fmt, compression=comp)
            m = session.manifest(name)
            ans = lambda p, name=name, rq=rows_q, aq=aggs_q: tc._answer(session, name, p, rq, aq)  # noqa: E731
            expected = {p: ans(p) for p in ("on", "off")}
            assert all(v[0] == "ok" for v in expected.values()), expected
            datasets.append((name, m, ans, expected))
    rng = random.Random(seed)
    counts = collections.Counter()
    per_kind = collections.defaultdict(collections.Counter)
    other = []
    t0 = time.monotonic()
    for trial in range(n):
        name, m, ans, expected = datasets[trial % len(datasets)]
        victim = m.partitions[rng.randrange(len(m.partitions))].object
        good = store.read(victim)
        kind = malformed.CORRUPTIONS[trial % len(malformed.CORRUPTIONS)]
        bad = malformed.corrupted(good, rng, kind)
        store.write_full(victim, bad)
        try:
            for pushdown in ("on", "off"):
                got = ans(pushdown)
                if got[0] == "error":
                    key = "EBADMSG" if got[1] == errno.EBADMSG else f"errno {got[1]}"
                    if got[1] != errno.EBADMSG:
                        other.append((name, kind, pushdown, got[1]))
                elif tc._same(got, expected[pushdown]):
                    key = "same answer"
                else:
                    key = "silent wrong"
                counts[key] += 1
                per_kind[f"{kind}/{pushdown}"][key] += 1
        finally:
            store.write_full(victim, good)
        if (trial + 1) % 100 == 0:
            _log(f"corruption: {trial + 1}/{n} objects ({time.monotonic() - t0:.0f} s) {dict(counts)}")
    still = all(tc._same(ans("on"), exp["on"]) for _, _, ans, exp in datasets)
    return {"objects": n, "scans": 2 * n, "queries": 4 * n, "seconds": round(time.monotonic() - t0, 1),
            "datasets": [d[0] for d in datasets], "outcomes": dict(counts),
            "per_kind": {k: dict(v) for k, v in sorted(per_kind.items())}, "other_errnos": other[:50],
            "uncorrupted_still_exact": still}


# -- 3. poison pills --------------------------------------------------------------------
def _send_poison(store_args: dict, part_objects: list, seconds: float, results, benign: bool = False) -> None:
    """The attacker: its own process (its own librados instance and interpreter, so that
    building requests cannot slow the good client through the GIL), 4 threads sending,
    back to back, half heavy requests and half malformed ones straight to the class.
    ``benign``: the control, the same 4 threads sending a cheap valid request instead
    (what any busy neighbour costs on this machine)."""
    from skyhook_py.storage.rados_io import Store

    store = Store(**store_args)
    if benign:
        cheap = codec.encode_scan_request(where=col("M") > 80.0, aggregations=[Aggregation(AggKind.Count, "n")])
        heavy, bad_reqs = cheap, [cheap]
    else:   # built once: an 8,000-node request takes seconds to build in Python
        heavy, bad_reqs = malformed.heavy_request("M"), malformed.malformed_requests(500, seed=99)
    sent = collections.Counter()
    took = collections.defaultdict(list)    # outcome -> wall seconds of each poison call
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def poison(k):
        rng = random.Random(k)
        while time.monotonic() < stop_at:
            target = rng.choice(part_objects)
            req, what = (heavy, "heavy") if rng.random() < 0.5 else (rng.choice(bad_reqs), "malformed")
            s = time.monotonic()
            try:
                r = codec.decode_scan_reply(store.execute(target, "skyhook", "scan", req, MAX_REPLY))
                outcome = what + (" answered in part (time slice)" if r.resume_row >= 0 else " answered")
            except ObjectClassError as e:
                outcome = f"{what} {errno.errorcode.get(e.errno, e.errno)}"
            except ClusterError:
                outcome = what + " timeout"
            with lock:
                sent[outcome] += 1
                took[outcome].append(time.monotonic() - s)

    threads = [threading.Thread(target=poison, args=(k,), daemon=True) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    store.close()
    results.put((dict(sent), {k: round(_pct(v, 50) * 1e3, 2) for k, v in sorted(took.items())}))


def poison_phase(session, store_args: dict, dataset: str, seconds: float, control: bool = False) -> dict:
    """Good queries alone, then while another process sends poison (``_send_poison``);
    ``control``: also while it sends cheap valid requests as fast (a benign flood)."""
    import multiprocessing

    def good_latencies(stop_at):
        lat = []
        while time.monotonic() < stop_at:
            s = time.monotonic()
            session.run(dataset, columns=["M"], where="M > 80", pushdown="on")
            lat.append(time.monotonic() - s)
        return lat

    def under_attack(benign):
        ctx = multiprocessing.get_context("spawn")
        results = ctx.Queue()
        attacker = ctx.Process(target=_send_poison, args=(store_args, part_objects, seconds + 10, results, benign))
        attacker.start()
        time.sleep(5)   # the attacker is connected and its calls are flowing before the good client starts
        _log(f"poison: good client while 4 threads of another process send {'cheap valid requests' if benign else 'poison'}")
        try:
            lat = good_latencies(time.monotonic() + seconds)
            sent, call_p50 = results.get(timeout=seconds + 120)
        finally:
            attacker.join(timeout=60)
            if attacker.is_alive():
                attacker.kill()
        time.sleep(1.5)   # the attacker's calls are more than a second old: the good client is alone again
        return lat, sent, call_p50

    _log("poison: good client alone")
    alone = good_latencies(time.monotonic() + seconds)
    part_objects = [p.object for p in session.manifest(dataset).partitions]
    control_res = {}
    if control:
        benign_lat, benign_sent, benign_p50 = under_attack(benign=True)
        control_res = {"under_benign_flood": {"queries": len(benign_lat), "p50_ms": _pct(benign_lat, 50) * 1e3,
                                              "p99_ms": _pct(benign_lat, 99) * 1e3, "sent": benign_sent,
                                              "call_p50_ms": benign_p50},
                       "latencies_benign": benign_lat}
    under, sent, call_p50 = under_attack(benign=False)
    return {**control_res, "seconds_each": seconds, "poison_threads": 4, "poison_sent": sent, "poison_call_p50_ms": call_p50,
            "alone": {"queries": len(alone), "p50_ms": _pct(alone, 50) * 1e3, "p99_ms": _pct(alone, 99) * 1e3},
            "under_poison": {"queries": len(under), "p50_ms": _pct(under, 50) * 1e3,
                             "p99_ms": _pct(under, 99) * 1e3},
            "p50_ratio": _pct(under, 50) / _pct(alone, 50), "p99_ratio": _pct(under, 99) / _pct(alone, 99),
            "latencies_alone": alone, "latencies_under": under}


# -- 4. crashes -------------------------------------------------------------------------
def caught_signals(cluster) -> dict[str, int]:
    """Lines with "Caught signal" (a daemon's fatal-signal handler) per log of ``cluster``."""
    out = {}
    for log in Path(cluster.dir).rglob("*.log"):
        try:
            text = log.read_text(errors="replace")
        except OSError:
            continue
        if "Caught signal" in text:
            out[str(log.relative_to(cluster.dir))] = text.count("Caught signal")
    return out


def crash_check(cluster, pids_before: dict, signals_before: dict | None = None) -> dict:
    """Daemons whose pid changed or vanished since ``pids_before``, and logs with more
    "Caught signal" lines than ``signals_before`` (caught_signals() at the start; none
    by default): a shared cluster's earlier crashes are not counted again."""
    pids = cluster._daemon_pids()
    changed = sorted(k for k in pids_before if pids.get(k) != pids_before[k])
    before = signals_before or {}
    caught = sorted(k for k, v in caught_signals(cluster).items() if v > before.get(k, 0))
    return {"daemons_restarted_or_gone": changed, "logs_with_caught_signal": caught,
            "osd_crashes": len([c for c in changed if c.startswith("osd.")]) + len(caught)}


# -- the report -------------------------------------------------------------------------
def write_report(out: Path, res: dict):
    out.mkdir(parents=True, exist_ok=True)
    slim = json.loads(json.dumps(res, default=str))
    for k in ("latencies_alone", "latencies_under"):
        slim.get("poison", {}).pop(k, None)
    (out / "results.json").write_text(json.dumps(slim, indent=1))
    _plot(out / "reliability.png", res)
    mal, cor, poi, cr = res["malformed"], res["corruption"], res["poison"], res["crashes"]
    lines = [
        "# Reliability suite at full size (issue 12)",
        "",
        f"Run {res['started']} on this shared 2-core machine (load average at start "
        f"{res['load_start']}), `nice -n 10 python -m benchmarks.reliability` "
        f"({' '.join(res['argv']) or 'default sizes'}); a throwaway cluster of 3 bluestore OSDs on loopback, "
        f"the class from this branch's build.  Raw figures: `results.json`; plot: `reliability.png`.",
        "",
        "## Summary",
        "",
        "| figure | value |",
        "|---|---|",
        f"| OSD crashes (daemon restarted/gone, 'Caught signal' in logs) | {cr['osd_crashes']} |",
        f"| malformed requests sent (query key) | {mal['requests']:,} |",
        f"| ... hangs (call timed out) | {mal['outcomes'].get('hang', 0)} |",
        f"| ... answered, equal to the reference / within float rounding | "
        f"{mal['outcomes'].get('answered = reference', 0):,} / "
        f"{mal['outcomes'].get('answered = reference within float rounding', 0):,} |",
        f"| ... answered, answer differs from the reference (silent wrong) | {mal['silent_wrong']} |",
        f"| corrupted objects | {cor['objects']:,} ({cor['scans']:,} scans, {cor['queries']:,} queries) |",
        f"| ... silent wrong answers | {cor['outcomes'].get('silent wrong', 0)} |",
        f"| poison pills: good-query p50 alone / under poison | {poi['alone']['p50_ms']:.1f} ms / "
        f"{poi['under_poison']['p50_ms']:.1f} ms (x{poi['p50_ratio']:.2f}) |",
        f"| poison pills: good-query p99 alone / under poison | {poi['alone']['p99_ms']:.1f} ms / "
        f"{poi['under_poison']['p99_ms']:.1f} ms (x{poi['p99_ratio']:.2f}) |",
        "",
        "## 1. Malformed requests",
        "",
        f"{mal['requests']:,} requests in {mal['seconds']} s (p50 {mal['latency_p50_ms']:.1f} ms, "
        f"p99 {mal['latency_p99_ms']:.1f} ms, max {mal['latency_max_ms']:.0f} ms per call).",
        "Generators: `benchmarks/malformed.py` (bit flips, overwritten bytes, truncation, junk "
        "appended, 32/64-bit fields set to extremes, duplicated ranges, random bytes behind the "
        "identifier, random bytes; plus 16 x 10^6-bin histograms, unknown columns, far row ranges, "
        "a 200-deep tree), over 4 partitions (Arrow IPC none/lz4/zstd, Parquet) of 3,000 rows "
        "with float, int, uint64 >= 2^63, bool and list columns.",
        "",
        "Outcomes: " + ", ".join(f"{k}: {v:,}" for k, v in mal["outcomes"].items()),
        "",
        "Errno histogram of the refused requests:",
        "",
        "| errno | requests |",
        "|---|---|",
        *[f"| {k} | {v:,} |" for k, v in mal["errnos"].items()],
        "",
    ]
    if mal["unexplained"]:
        lines += ["Answered by the class but refused by the Python reference (not counted as wrong; "
                  "first ones):", ""]
        lines += [f"- request {u['request']}: {u['what']}" for u in mal["unexplained"][:10]]
        lines.append("")
    if mal["wrong"]:
        lines += ["Silent wrong answers (first ones):", ""]
        lines += [f"- request {w['request']} on {w['object']}: {w['what']}" for w in mal["wrong"][:10]]
        lines.append("")
    lines += [
        "## 2. Corrupted objects",
        "",
        f"{cor['objects']:,} corruptions in {cor['seconds']} s over {len(cor['datasets'])} datasets "
        f"({', '.join(cor['datasets'])}); each corrupted object scanned through pushdown and plain "
        "read, with a row query and an aggregate query each (`tests/test_corruption_cluster.py`'s "
        "queries and comparison).",
        "",
        "Outcomes (scans): " + ", ".join(f"{k}: {v:,}" for k, v in cor["outcomes"].items()),
        "",
        "| corruption / path | " + " | ".join(["EBADMSG", "same answer", "silent wrong"]) + " |",
        "|---|---|---|---|",
        *[f"| {k} | {v.get('EBADMSG', 0)} | {v.get('same answer', 0)} | {v.get('silent wrong', 0)} |"
          for k, v in cor["per_kind"].items()],
        "",
        f"Other errnos: {cor['other_errnos'] or 'none'}. After the run the uncorrupted datasets still "
        f"answer exactly: {cor['uncorrupted_still_exact']}.",
        "",
        "## 3. Poison pills",
        "",
        f"One client ran `M > 80` over Zmumu (pushdown) for {poi['seconds_each']} s alone, then for "
        f"{poi['seconds_each']} s while {poi['poison_threads']} threads sent poison to the same "
        "partition objects: half CPU-heavy valid requests (about 8,000 nodes, 2,048 sines; the "
        "caller's deadline 2 s ahead), half malformed ones.",
        "",
        "| | queries | p50 ms | p99 ms |",
        "|---|---|---|---|",
        f"| alone | {poi['alone']['queries']} | {poi['alone']['p50_ms']:.1f} | {poi['alone']['p99_ms']:.1f} |",
        f"| under poison | {poi['under_poison']['queries']} | {poi['under_poison']['p50_ms']:.1f} | "
        f"{poi['under_poison']['p99_ms']:.1f} |",
        "",
        "Poison sent: " + ", ".join(f"{k}: {v}" for k, v in sorted(poi["poison_sent"].items())),
        "",
        "## 4. Crashes",
        "",
        f"Daemons restarted or gone: {cr['daemons_restarted_or_gone'] or 'none'}; logs with "
        f"'Caught signal': {cr['logs_with_caught_signal'] or 'none'}.",
        "",
    ]
    (out / "report.md").write_text("\n".join(lines))


def _latency_cdf(ax, p: dict):
    """The poison phase's good-query latencies (seconds), one CDF per condition."""
    for name, key in (("alone", "latencies_alone"), ("under a benign flood", "latencies_benign"),
                      ("under poison", "latencies_under")):
        if key in p:
            xs = np.sort(np.asarray(p[key]) * 1e3)
            ax.plot(xs, np.arange(1, len(xs) + 1) / max(1, len(xs)), label=name)
    ax.set_xscale("log")
    ax.set_xlabel("good query latency (ms)")
    ax.set_ylabel("fraction of queries")
    ax.legend()
    ax.set_title(f"poison pills: p50 x{p['p50_ratio']:.2f}, p99 x{p['p99_ratio']:.2f}")


def _plot(path: Path, res: dict):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 3, figsize=(16, 4.8))
    e = res["malformed"]["errnos"]
    ax[0].barh(list(e)[::-1], list(e.values())[::-1])
    ax[0].set_xscale("log")
    ax[0].set_title(f"{res['malformed']['requests']:,} malformed requests: errnos")
    c = res["corruption"]["per_kind"]
    kinds = list(c)
    keys = ["EBADMSG", "same answer", "silent wrong"]
    left = np.zeros(len(kinds))
    for k in keys:
        v = np.array([c[x].get(k, 0) for x in kinds])
        ax[1].barh(kinds, v, left=left, label=k)
        left += v
    ax[1].legend(fontsize=8)
    ax[1].set_title(f"{res['corruption']['objects']:,} corrupted objects: scans")
    _latency_cdf(ax[2], res["poison"])
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def write_poison_report(out: Path, res: dict):
    """The poison-pill phase alone (``--poison-only``): report.md, results.json, a plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    p = res["poison"]
    # the raw latencies, in ms to the microsecond (the plot's data)
    kept = {**res, "poison": {k: ([round(x * 1e3, 3) for x in v] if k.startswith("latencies") else v)
                              for k, v in p.items()}}
    (out / "results.json").write_text(json.dumps(kept, default=str))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    _latency_cdf(ax, p)
    fig.tight_layout()
    fig.savefig(out / "poison.png", dpi=90)
    a, u = p["alone"], p["under_poison"]
    lines = [
        "# Poison pills: good queries while 4 threads send heavy and malformed requests",
        "",
        f"Run {res['started']} (load average at start {res['load_start']}), "
        f"`nice -n 10 python -m benchmarks.reliability --poison-only --poison-seconds {p['seconds_each']}`: "
        "a throwaway cluster of 3 bluestore OSDs on loopback, the class from this build.  One good "
        "client (its own librados instance) runs `M > 80` over the one-partition Zmumu dataset "
        f"for {p['seconds_each']} s alone, then for as long while 4 threads of another process (the "
        "attacker: its own librados instance) send, straight to the same object with the query key, "
        "heavy requests (2,048 sines, about 8,000 nodes, built once, no deadline) and malformed ones, "
        "half each, back to back.",
        "",
        "| | queries | p50 (ms) | p99 (ms) |",
        "|---|---|---|---|",
        f"| alone | {a['queries']} | {a['p50_ms']:.2f} | {a['p99_ms']:.2f} |",
        *([f"| under a benign flood (control: the same 4 threads sending a cheap valid count) | "
           f"{p['under_benign_flood']['queries']} | {p['under_benign_flood']['p50_ms']:.2f} | "
           f"{p['under_benign_flood']['p99_ms']:.2f} |"] if "under_benign_flood" in p else []),
        f"| under poison | {u['queries']} | {u['p50_ms']:.2f} | {u['p99_ms']:.2f} |",
        f"| ratio | | {p['p50_ratio']:.2f} | {p['p99_ratio']:.2f} |",
        "",
        f"Poison sent: {json.dumps(p['poison_sent'])}; wall time per poison call, p50 (ms): "
        f"{json.dumps(p['poison_call_p50_ms'])}.  Crashes: {json.dumps(res['crashes'])}.",
        "",
        "![latency CDF](poison.png)",
        "",
        "Raw figures: `results.json` (every good query's latency, in ms).",
    ]
    (out / "README.md").write_text("\n".join(lines) + "\n")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--malformed", type=int, default=10_000)
    p.add_argument("--corrupt", type=int, default=1_000)
    p.add_argument("--poison-seconds", type=float, default=60)
    p.add_argument("--seed", type=int, default=2026)
    p.add_argument("--poison-only", action="store_true",
                   help="only the poison-pill phase (its own report: README.md, results.json, poison.png)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "2026-12-04-reliability")
    args = p.parse_args(argv)
    from skyhook_py.cluster import POOL, QUERY_USER, Cluster
    from skyhook_py.paths import shared_data_dir
    from skyhook_py.session import Session
    from skyhook_py.storage.rados_io import Store

    res = {"started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
           "load_start": " ".join(f"{x:.1f}" for x in os.getloadavg()), "argv": sys.argv[1:] if argv is None else argv}
    cluster = Cluster(tempfile.mkdtemp(prefix="skyhook-rel-"))
    try:
        _log(f"cluster up in {cluster.dir}")
        cluster.up(osds=3)
        pids = cluster._daemon_pids()
        admin = Store(str(cluster.conf_path), POOL, keyring=str(cluster.admin_keyring))
        query_args = dict(conf=str(cluster.conf_path), pool=POOL, name=QUERY_USER, keyring=str(cluster.query_keyring))
        query = Store(**query_args)
        session = Session(admin, admin.conf)
        if args.poison_only:
            session.ingest([shared_data_dir() / "uproot-Zmumu.root"], "rel_zmumu_arrow_none", tree="events",
                           partition_events=5000)
            _log("poison pills")
            res["poison"] = poison_phase(session, query_args, "rel_zmumu_arrow_none", args.poison_seconds,
                                         control=True)
            res["crashes"] = crash_check(cluster, pids)
            query.close()
            admin.close()
            write_poison_report(args.out, res)
            _log(f"report in {args.out}")
            return 0
        with tempfile.TemporaryDirectory(prefix="skyhook-rel-parts-") as tmp:
            parts = malformed.partitions(Path(tmp))
            import pyarrow.parquet as pq
            import pyarrow as pa

            objects, tables = {}, {}
            for i, path in enumerate(parts):
                name = f"part.reliability.0123456789ab.{i:06d}"
                admin.write_full(name, path.read_bytes())
                objects[path.name] = name
                tables[path.name] = (pq.read_table(path) if path.suffix == ".parquet"
                                     else pa.ipc.open_file(str(path)).read_all())
            _log(f"malformed requests: {args.malformed}")
            res["malformed"] = malformed_phase(query, objects, tables, args.malformed, args.seed)
        res["crashes_after_malformed"] = crash_check(cluster, pids)
        _log(f"corrupted objects: {args.corrupt}")
        res["corruption"] = corruption_phase(session, admin, shared_data_dir(), args.corrupt, args.seed)
        _log("poison pills")
        res["poison"] = poison_phase(session, query_args, "rel_zmumu_arrow_none", args.poison_seconds)
        res["crashes"] = crash_check(cluster, pids)
        query.close()
        admin.close()
    finally:
        cluster.purge()
    write_report(args.out, res)
    _log(f"report in {args.out}")
    print(json.dumps({k: res[k] for k in ("crashes",)}, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
