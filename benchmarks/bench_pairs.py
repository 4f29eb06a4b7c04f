"""Pair queries (issue 15 item 2): the object class's kernel against the reference evaluator
and against what a physicist runs on the client (awkward ``ak.combinations`` /
``ak.cartesian`` + ``vector``), on the same in-memory events.

    .venv/bin/python -m benchmarks.bench_pairs                  # ~1 min on 2 cores
    .venv/bin/python -m benchmarks.bench_pairs --events 100000 --repeats 20

Events are synthetic NanoAOD-like (Poisson(2) muons, Poisson(5) jets per event, float32
kinematics) so that the size can be chosen.  Every timing is the median of ``--repeats``
runs: the kernel's from ``skyhook_scan_local --repeat`` (one process, the IPC partition in
the page cache), the others in this process.  Each answer is checked against awkward +
vector before it is timed.  Output: ``results.json``, ``report.md`` and ``pairs.png`` in
``--out`` (default ``benchmarks/results/<date>-pairs``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import awkward as ak
import numpy as np
import pyarrow as pa

from skyhook_py.query import codec, reference
from skyhook_py.query.compile import compile_query
from skyhook_py.query.ir import ColumnType

ROOT = Path(__file__).resolve().parents[1]
RUNNER = ROOT / "build" / "bin" / "skyhook_scan_local"

QUERIES = {
    "Z cut (pairs, inv_mass)": dict(
        where="any((pairs(Muon).charge1 != pairs(Muon).charge2) & (pairs(Muon).mass > 60) "
              "& (pairs(Muon).mass < 120))", columns=["event"]),
    "no jet near a muon (cross, delta_r)": dict(
        where="~any(cross(Muon, Jet, Muon_pt > 20).delta_r < 0.4)", columns=["event"]),
    "leading pair mass (output)": dict(expressions={"mll": "firsts(pairs(Muon).mass)"}),
    "cleaned jets (cross_all)": dict(
        expressions={"jets": "Jet_pt[cross_all(cross(Jet, Muon, mask2=Muon_pt > 20).delta_r >= 0.4)]"}),
}


def make_events(n: int, seed: int = 1) -> pa.Table:
    rng = np.random.default_rng(seed)
    cols = {"event": pa.array(np.arange(n, dtype=np.uint64))}
    for coll, mean, mass in (("Muon", 2.0, 0.1057), ("Jet", 5.0, None)):
        counts = rng.poisson(mean, n)
        total = int(counts.sum())
        offsets = pa.array(np.concatenate([[0], np.cumsum(counts)]).astype(np.int32))
        fields = {
            "pt": rng.exponential(30.0, total) + 5.0,
            "eta": rng.uniform(-2.5, 2.5, total),
            "phi": rng.uniform(-np.pi, np.pi, total),
            "mass": np.full(total, mass) if mass else rng.exponential(8.0, total),
        }
        for f, v in fields.items():
            cols[f"{coll}_{f}"] = pa.ListArray.from_arrays(offsets, pa.array(v.astype(np.float32)))
        if coll == "Muon":
            q = rng.choice(np.array([-1, 1], np.int32), total)
            cols["Muon_charge"] = pa.ListArray.from_arrays(offsets, pa.array(q))
    return pa.table(cols)


def schema_of(table: pa.Table) -> dict:
    out = {}
    for f in table.schema:
        t = f.type.value_type if pa.types.is_list(f.type) else f.type
        kind = "float" if pa.types.is_floating(t) else "uint" if pa.types.is_unsigned_integer(t) else "int"
        out[f.name] = ColumnType(kind, pa.types.is_list(f.type))
    return out


def awkward_vector(ev, name: str):
    """What a physicist writes on the client for each query."""
    import vector

    vector.register_awkward()

    def vec(prefix, dtype=None):
        cast = (lambda a: ak.values_astype(a, dtype)) if dtype else (lambda a: a)
        rec = {f: cast(ev[f"{prefix}_{f}"]) for f in ("pt", "eta", "phi", "mass")}
        if prefix == "Muon":
            rec["charge"] = ev["Muon_charge"]
        return ak.zip(rec, with_name="Momentum4D")

    if name.startswith("Z cut"):
        p = ak.combinations(vec("Muon", np.float64), 2, fields=["a", "b"])
        m = (p.a + p.b).mass
        return ev.event[ak.any((p.a.charge != p.b.charge) & (m > 60) & (m < 120), axis=1)]
    if name.startswith("no jet"):
        mu, jet = vec("Muon"), vec("Jet")
        c = ak.cartesian({"m": mu[mu.pt > 20], "j": jet})
        return ev.event[~ak.any(c.m.deltaR(c.j) < 0.4, axis=1)]
    if name.startswith("leading"):
        p = ak.combinations(vec("Muon", np.float64), 2, fields=["a", "b"])
        return ak.firsts((p.a + p.b).mass)
    mu, jet = vec("Muon"), vec("Jet")
    c = ak.cartesian({"j": jet, "m": mu[mu.pt > 20]}, nested=True)
    return jet.pt[ak.all(c.j.deltaR(c.m) >= 0.4, axis=2)]


def median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def kernel_ms(req: bytes, part: Path, repeats: int, tmp: Path) -> tuple[float, pa.Table]:
    (tmp / "req.bin").write_bytes(req)
    r = subprocess.run([str(RUNNER), str(tmp / "req.bin"), str(part), str(tmp / "reply.bin"),
                        "--repeat", str(repeats)], capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise RuntimeError(f"skyhook_scan_local failed ({r.returncode}): {r.stderr.strip()}")
    m = re.search(r"median_ms ([\d.]+)", r.stderr)
    return float(m.group(1)), codec.decode_scan_reply((tmp / "reply.bin").read_bytes()).table


def check(name: str, got: pa.Table, want) -> None:
    col = got.column(got.column_names[0]).to_pylist()
    want = ak.to_list(want)
    if name.startswith("leading"):
        ok = len(col) == len(want) and all(
            (a is None and b is None) or (a is not None and b is not None and abs(a - b) <= 1e-9 * max(1, abs(b)))
            for a, b in zip(col, want))
    else:
        ok = col == want
    if not ok:
        raise AssertionError(f"{name}: the answer differs from awkward + vector")


def plot(rows: list, events: int, out: Path) -> None:
    """pairs.png: the medians per query, log scale."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(8, 4))
        x = np.arange(len(rows))
        for i, (key, label) in enumerate((("kernel_ms", "kernel (C++, skyhook_scan_local)"),
                                          ("reference_ms", "reference (Python)"),
                                          ("awkward_vector_ms", "awkward + vector"))):
            ax.bar(x + (i - 1) * 0.27, [r[key] for r in rows], 0.27, label=label)
        ax.set_xticks(x, [r["query"].split(" (")[0] for r in rows], fontsize=8)
        ax.set_ylabel("median ms")
        ax.set_yscale("log")
        ax.set_title(f"pair queries, {events} events")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "pairs.png", dpi=100)
    except ImportError:  # pragma: no cover
        pass


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--replot", type=Path, default=None, help="redraw DIR/pairs.png from DIR/results.json")
    args = ap.parse_args(argv)
    if args.replot:
        saved = json.loads((args.replot / "results.json").read_text())
        plot(saved["rows"], saved["config"]["events"], args.replot)
        return 0
    out = args.out or ROOT / "benchmarks" / "results" / f"{datetime.date.today()}-pairs"
    out.mkdir(parents=True, exist_ok=True)
    table = make_events(args.events)
    schema = schema_of(table)
    ev = ak.from_arrow(table)
    rows = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        part = tmp / "part.arrow"
        with pa.ipc.new_file(str(part), table.schema) as w:
            w.write_table(table, max_chunksize=8192)
        for name, q in QUERIES.items():
            query = compile_query(schema, **q)
            req = codec.encode_scan_request(outputs=query.outputs, where=query.where)
            k_ms, k_table = kernel_ms(req, part, args.repeats, tmp)
            want = awkward_vector(ev, name)
            check(name, k_table, want)
            def ref(query=query):
                return reference.scan_table(table, outputs=query.outputs, where=query.where)

            check(name, ref().table, want)
            r_ms = median_ms(ref, args.repeats)
            a_ms = median_ms(lambda name=name: awkward_vector(ev, name), args.repeats)
            rows.append({"query": name, "kernel_ms": k_ms, "reference_ms": r_ms, "awkward_vector_ms": a_ms,
                         "rows": k_table.num_rows})
            print(f"{name:40s} kernel {k_ms:8.2f} ms  reference {r_ms:8.2f} ms  awkward+vector {a_ms:8.2f} ms",
                  flush=True)
    config = {"events": args.events, "repeats": args.repeats,
              "muons": int(ak.sum(ak.num(ev.Muon_pt))), "jets": int(ak.sum(ak.num(ev.Jet_pt)))}
    (out / "results.json").write_text(json.dumps({"config": config, "rows": rows}, indent=1) + "\n")
    lines = [f"# Pair queries: {args.events} synthetic events ({config['muons']} muons, {config['jets']} jets)",
             "", f"Medians of {args.repeats} runs on this machine (2 shared cores); every answer was "
             "checked against awkward + vector first.", "",
             "| query | kernel (C++) ms | reference ms | awkward+vector ms | awkward+vector / kernel |",
             "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['query']} | {r['kernel_ms']:.2f} | {r['reference_ms']:.2f} | "
                     f"{r['awkward_vector_ms']:.2f} | {r['awkward_vector_ms'] / r['kernel_ms']:.1f}x |")
    (out / "report.md").write_text("\n".join(lines) + "\n")
    plot(rows, args.events, out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
