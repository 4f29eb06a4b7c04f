"""The benchmark harness: its answer gate, its thresholds, and a tiny end-to-end sweep.

The smoke run uses the suite's throwaway cluster, a radosgw the harness starts on
it, and two tiny generated datasets; it checks that every system gives the same
answer as uproot (the oracle) and as an independent NumPy count, and that the
report and the plots are written.  No timing is asserted.
"""

from __future__ import annotations

import json
import uuid

import awkward as ak
import numpy as np
import pyarrow as pa
import pytest

from benchmarks import report
from benchmarks import run as bench
from benchmarks.systems import (BenchQuery, Measurement, System, compare_answers,
                                float32_threshold)


# -- the gate --------------------------------------------------------------------------

def _answer():
    return pa.table({"event": pa.array([3, 1, 2], pa.uint64()),
                     "MET_pt": pa.array([30.5, 10.25, 20.0], pa.float32()),
                     "Muon_pt": pa.array([[40.0], [], [25.0, 21.5]], pa.list_(pa.float32()))})


def test_compare_accepts_other_order_types_and_containers():
    ref = _answer()
    shuffled = ref.take([2, 0, 1])
    as_ak = ak.Array({"event": np.array([1, 2, 3], np.int64),  # other integer width
                      "MET_pt": np.array([10.25, 20.0, 30.5], np.float32),
                      "Muon_pt": [[], [25.0, 21.5], [40.0]]})
    cols = ref.column_names
    assert compare_answers(ref, shuffled, "event", cols) is None
    assert compare_answers(ref, as_ak, "event", cols) is None
    assert compare_answers(ref, pa.concat_tables([ref.slice(0, 1), ref.slice(1)]), "event", cols) is None


@pytest.mark.parametrize("change, expect", [
    (lambda t: t.slice(1), "2 rows"),
    (lambda t: t.set_column(1, "MET_pt", pa.array([30.5, 10.25, 20.5], pa.float32())), "'MET_pt'"),
    (lambda t: t.set_column(2, "Muon_pt", pa.array([[40.0], [1.0], [25.0, 21.5]], pa.list_(pa.float32()))),
     "list lengths"),
    (lambda t: t.set_column(2, "Muon_pt", pa.array([[40.0], [], [25.0, 22.5]], pa.list_(pa.float32()))),
     "values"),
    (lambda t: t.drop_columns(["Muon_pt"]), "missing"),
])
def test_compare_finds_differences(change, expect):
    ref = _answer()
    diff = compare_answers(ref, change(ref), "event", ref.column_names)
    assert diff is not None and expect in diff


def test_nan_equals_nan():
    a = pa.table({"event": [1, 2], "x": pa.array([np.nan, 1.0], pa.float32())})
    assert compare_answers(a, a.take([1, 0]), "event", ["event", "x"]) is None


@pytest.mark.parametrize("selectivity", [0.001, 0.01, 0.1, 1.0])
def test_threshold_selects_the_fraction_in_float32_and_float64(selectivity):
    values = np.random.default_rng(1).gamma(2.0, 18.7, 20_000).astype(np.float32)
    t = float32_threshold(values, selectivity)
    assert np.float32(t) == t  # exactly a float32: the comparison is the same in both widths
    n32 = int((values > np.float32(t)).sum())
    n64 = int((values.astype(np.float64) > t).sum())
    assert n32 == n64 == round(selectivity * len(values))


def test_plan_covers_the_grid_and_both_scalings():
    pts = bench.plan_points([10, 20, 30], [1, 3])
    grid = [p for p in pts if "grid" in p["axes"]]
    assert len(grid) == 12 and {p["events"] for p in grid} == {30} and {p["osds"] for p in grid} == {1}
    assert {p["events"] for p in pts if "size" in p["axes"]} == {10, 20, 30}
    assert {p["osds"] for p in pts if "osds" in p["axes"]} == {1, 3}
    assert len({(p["osds"], p["events"], p["selectivity"], p["ncols"]) for p in pts}) == len(pts)


def test_choose_columns_puts_the_key_and_the_cut_first():
    names = ["run", "event", "MET_pt", "Muon_pt", "Extra_000"]
    assert bench.choose_columns(names, 1, "event") == ["event"]
    assert bench.choose_columns(names, 3, "event") == ["event", "MET_pt", "run"]


class _Fixed(System):
    def __init__(self, name, table, kind="alternative"):
        self.name, self.label, self.kind, self.table = name, name, kind, table

    def run(self, query):
        return Measurement(table=self.table, bytes_delivered=self.table.nbytes)


class _NoProbe:
    def cpu(self):
        return 0.0

    def counters(self):
        return {}


def test_a_wrong_answer_stops_the_point_before_timing():
    good = _answer()
    bad = good.set_column(1, "MET_pt", pa.array([30.5, 10.25, 99.0], pa.float32()))
    systems = {"skyhook": _Fixed("skyhook", good, "skyhook"), "uproot": _Fixed("uproot", good),
               "s3-parquet": _Fixed("s3-parquet", bad)}
    q = BenchQuery("d", tuple(good.column_names), "MET_pt", 0.0, 1.0)
    point = bench.measure_point(dict(osds=1, events=3, selectivity=1.0, ncols=3, axes=["grid"]),
                                q, systems, _NoProbe(), repeats=3, key="event")
    assert point["reference"] == "uproot"
    assert point["error"] and "s3-parquet" in point["error"]
    assert point["check"]["skyhook"] == "ok" and point["check"]["s3-parquet"].startswith("MISMATCH")
    assert point["results"] == {}
    md = report.render_markdown({"machine": {"date": "x"}, "config": {}, "systems": {}, "datasets": [],
                                 "points": [point], "sweep": "t"}, [])
    assert "ERROR: answers differ" in md


# -- a tiny sweep on the test cluster ----------------------------------------------------

@pytest.mark.cluster
def test_small_sweep_systems_agree_and_report_is_written(ceph_cluster, tmp_path):
    import uproot

    osds = len(ceph_cluster.osd_ids)
    pool = f"t-bench-{uuid.uuid4().hex[:6]}"
    out = tmp_path / "out"
    args = bench.parse_args([
        "--sizes", "1000,3000", "--osds", str(osds), "--selectivities", "0.01,1",
        "--columns", "1,10", "--repeats", "1", "--extra-columns", "12", "--partition-events", "1000",
        "--workdir", str(tmp_path / "work"), "--out", str(out), "--pool", pool])
    try:
        results = bench.run(args, clusters={osds: ceph_cluster})
    finally:
        if pool in ceph_cluster.pools():
            ceph_cluster.delete_pool(pool)
    bench._save(results, str(out))
    md = report.write_report(results, out)

    must_agree = {"skyhook", "skyhook-on", "rados-plain", "rados-pyarrow", "s3-parquet", "uproot"}
    try:   # SeaweedFS's S3 (MinIO's stand-in) when its binary is installed (the bench extra)
        from benchmarks.seaweedfs import weed_binary

        weed_binary()
        must_agree.add("s3-seaweedfs")
    except RuntimeError:
        pass
    assert must_agree <= set(results["systems"]), results["notes"]
    assert len(results["points"]) == len(bench.plan_points([1000, 3000], [osds], [0.01, 1.0], [1, 10]))
    for p in results["points"]:
        assert p["error"] is None, p["error"]
        for name in must_agree:
            assert p["check"][name] == "ok", (name, p["check"][name])
            assert p["results"][name]["rows"] == p["rows_expected"]
        # the number of selected events, counted by NumPy on the source file
        files = next(d for d in results["datasets"] if d["events"] == p["events"])
        met = uproot.open(bench.generate_files(tmp_path / "work" / "data", p["events"], 12)[0])["Events"]["MET_pt"]
        assert p["rows_expected"] == int((met.array(library="np") > np.float32(p["threshold"])).sum())
        assert files["partitions"] == p["events"] // 1000
    # Skyhook's own summary and the harness's counters were recorded
    sky = results["points"][0]["results"]["skyhook"]
    assert sky["bytes_delivered"]["median"] > 0 and sky["seconds"]["median"] > 0
    s3 = results["points"][0]["results"]["s3-parquet"]
    assert s3["bytes_delivered"]["median"] > 0  # radosgw's get_b counter moved

    saved = json.loads((out / "results.json").read_text())
    assert saved["machine"]["nproc"] >= 1 and "pyarrow" in saved["machine"]
    text = md.read_text()
    assert "## Targets" in text and "| skyhook |" in text
    for png in ("time_vs_selectivity.png", "bytes_vs_selectivity.png", "client_cpu_vs_selectivity.png",
                "scaling_size.png"):
        assert (out / png).stat().st_size > 10_000, png
        assert f"]({png})" in text


@pytest.mark.cluster
def test_scale_benchmark_real_ingest_smoke(session, store, tmp_path):
    """bench_scale's real ingest, tiny: the dataset grows to each stage, its count equals
    uproot's (asserted inside), and the report and plot are written.  No timing asserted."""
    from benchmarks import bench_scale as bs

    real = bs.measure_real(store, session, tmp_path, [4, 20])
    assert [r["partitions"] for r in real] == [4, 20]
    assert all(r["selected"] >= 0 and r["bytes_read"] > 0 for r in real)
    m = session.manifest("real")
    assert m.num_partitions == 20 + bs.REAL_APPENDS
    assert m.num_events == (20 + bs.REAL_APPENDS) * bs.REAL_EVENTS_PER_PARTITION
    results = {"date": "test", "machine": "test", "v2": [], "v1": [], "real": real, "merge": []}
    results["targets"] = bs.targets(results)
    text = bs.report(results)
    assert "| 20 |" in text and "real ingest" in text
    bs.plot(results, tmp_path / "scale.png")
    assert (tmp_path / "scale.png").stat().st_size > 0


def test_link_targets_count_the_harness_seaweedfs_as_on_the_clients_host():
    """With --hosts the harness's SeaweedFS runs on the client's loopback (0 bytes on the
    shaped link): a target "through the link" must not be measured against it, unless
    the run was given a SeaweedFS endpoint of its own."""
    def run(seaweedfs=None, hosts=3):
        def res(seconds):
            return {"seconds": {"median": seconds}, "bytes_delivered": {"median": 1000}}
        point = {"link": "1gbit", "axes": ["grid"], "ncols": 10, "selectivity": 1.0,
                 "results": {"skyhook": res(0.45), "s3-seaweedfs": res(0.19), "uproot-s3": res(0.40),
                             "uproot": res(0.39)}}
        cfg = {"hosts": hosts, "links": ["1gbit"]}
        if seaweedfs:
            cfg["seaweedfs"] = seaweedfs
        systems = {"skyhook": {"kind": "skyhook"}, "s3-seaweedfs": {"kind": "alternative"},
                   "uproot-s3": {"kind": "alternative"}, "uproot": {"kind": "alternative"}}
        return report.link_targets({"config": cfg, "systems": systems, "points": [point]}, "1gbit")

    (row,) = run()
    assert "(uproot-s3)" in row["text"] and row["text"].startswith("1.12×") and row["met"] is False
    assert "(s3-seaweedfs)" in row["text"].split("incl. local copies")[1]   # still shown, as local
    (row,) = run(seaweedfs="http://10.0.0.1:8333")       # a SeaweedFS of its own: through the link
    assert "(s3-seaweedfs)" in row["text"] and row["text"].startswith("2.37×")
    (row,) = run(hosts=None)                             # one host: everything is on loopback
    assert row["text"].startswith("2.37×")
