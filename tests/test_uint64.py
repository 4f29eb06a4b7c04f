"""uint64 values >= 2**63 and int64 values past 2**53 (issue 12, "uint64 min/max through
int64"): aggregates and pruning must be exact, identical in the object class and the
reference, and equal to NumPy on uproot's arrays of a ROOT file written here."""

from __future__ import annotations

import numpy as np
import pytest

BIG = 2**63
# per partition of 4 events: values >= 2**63 in some, small ones in others, so that the
# merge across partitions compares uint64 values too
U = np.array([BIG + 5, 2**64 - 1, 3, BIG,       17, 4, 2**64 - 2, 9,
              BIG + 1, BIG + 2, BIG + 3, BIG + 4,  7, 8, 6, 5], dtype=np.uint64)
# int64 values past 2**53: float64 has no exact value for them
V = np.array([2**62 + 1] * 4 + [2**62 + 3] * 4 + [-(2**62) - 1] * 4 + [2**53 + 1] * 4, dtype=np.int64)
JAG = [[BIG + 1, 1], [], [2**64 - 1], [2, 3, BIG]] * 4


@pytest.fixture(scope="module")
def big_file(tmp_path_factory):
    import awkward as ak
    import uproot

    path = tmp_path_factory.mktemp("u64") / "u64.root"
    with uproot.recreate(path) as f:   # a TTree (mktree; f["t"] = ... would write an RNTuple)
        f.mktree("t", {"u": np.uint64, "v": np.int64, "j": "var * uint64"})
        flat = np.array([x for row in JAG for x in row], dtype=np.uint64)
        jag = ak.unflatten(flat, [len(row) for row in JAG])
        f["t"].extend({"u": U, "v": V, "j": jag})
    return path


@pytest.fixture(scope="module")
def big_dataset(session, big_file):
    session.ingest([big_file], "u64", tree="t", partition_events=4)
    return "u64"


def _numpy(big_file):
    import uproot

    return uproot.open(big_file)["t"].arrays(["u", "v", "j"], library="np")


def test_the_file_holds_what_was_written(big_file):
    a = _numpy(big_file)
    assert a["u"].dtype == np.uint64 and (a["u"] == U).all()
    assert int(a["u"].max()) == 2**64 - 1


@pytest.mark.cluster
@pytest.mark.parametrize("pushdown", ["on", "off"])
def test_uint64_aggregates_match_numpy(session, big_dataset, big_file, pushdown):
    a = _numpy(big_file)
    u, v = a["u"], a["v"]
    flat_j = np.concatenate([x.astype(np.uint64) for x in a["j"]])
    want = {
        "umin": int(u.min()), "umax": int(u.max()), "usum": int(np.sum(u, dtype=np.uint64)),
        "ucount": len(u),
        # uint64 + a weak int stays uint64 (NEP 50) and wraps
        "u1max": int((u + 1).max()), "u1min": int((u + 1).min()),
        "jmin": int(flat_j.min()), "jmax": int(flat_j.max()),
        "vmin": int(v.min()), "vmax": int(v.max()),
    }
    aggs = [{"kind": "min", "name": "umin", "x": "u"}, {"kind": "max", "name": "umax", "x": "u"},
            {"kind": "sum", "name": "usum", "x": "u"}, {"kind": "count", "name": "ucount", "x": "u"},
            {"kind": "max", "name": "u1max", "x": "u + 1"}, {"kind": "min", "name": "u1min", "x": "u + 1"},
            {"kind": "min", "name": "jmin", "x": "j"}, {"kind": "max", "name": "jmax", "x": "j"},
            {"kind": "min", "name": "vmin", "x": "v"}, {"kind": "max", "name": "vmax", "x": "v"}]
    got = session.aggregate(big_dataset, aggs, pushdown=pushdown)
    assert got == want
    # with a cut selecting only values >= 2**63 (no uint64 literal >= 2**63 can be sent)
    sel = u > 2**62
    got = session.aggregate(big_dataset, aggs[:3], where="u > 2**62", pushdown=pushdown)
    assert got == {"umin": int(u[sel].min()), "umax": int(u[sel].max()),
                   "usum": int(np.sum(u[sel], dtype=np.uint64))}


@pytest.mark.cluster
@pytest.mark.parametrize("cut", ["v < 2**62 + 2", "v <= 2**62 + 1", "v == 2**62 + 3", "v > 2**62 + 2",
                                 "v >= 2**62 + 3", "v == 2**53 + 1", "v > 2**53", "-v > -(2**62) - 2",
                                 "u > 2**62", "u < 2**62", "v != 2**62 + 1"])
@pytest.mark.parametrize("pushdown", ["on", "off"])
def test_pruning_is_sound_past_2_53(session, big_dataset, big_file, cut, pushdown):
    # a literal rounded to the nearest float64 (2**62 + 2 -> 2**62) proved `v < 2**62 + 2`
    # false for the partition holding 2**62 + 1: the whole partition was pruned
    a = _numpy(big_file)
    want = np.flatnonzero(eval(cut, {}, {"u": a["u"], "v": a["v"]}))
    got = session.run(big_dataset, columns=["v"], where=cut, pushdown=pushdown).table
    assert got.num_rows == len(want), (cut, got.num_rows, len(want))
    assert got.column("v").to_pylist() == a["v"][want].tolist()


@pytest.mark.cluster
def test_statistics_at_ingest_bound_the_values(session, big_dataset, big_file):
    # the manifest's float64 statistics are rounded outwards: every value within them
    m = session.manifest(big_dataset)
    stats = m.column_stats("u")
    lo, hi = stats[0], stats[1]
    for j, part in enumerate(np.split(U, 4)):
        assert lo[j] <= float(int(part.min())) and all(int(x) >= lo[j] for x in part)
        assert all(int(x) <= hi[j] for x in part)


def test_reference_and_merge_keep_uint64_exact():
    # no cluster: the reference over two partitions, merged through the codec's wire form
    import pyarrow as pa

    from skyhook_py.query import aggregates, codec, reference
    from skyhook_py.query.ir import AggKind, Aggregation, col

    aggs = [Aggregation(AggKind.Min, "lo", col("u")), Aggregation(AggKind.Max, "hi", col("u")),
            Aggregation(AggKind.Sum, "s", col("u"))]
    partials = []
    for part in np.split(U, 4):
        res = reference.scan_table(pa.table({"u": part}), aggregations=aggs)
        wire = codec.decode_scan_reply(codec.encode_scan_reply(res))
        assert [p.is_unsigned for p in wire.aggregates] == [True] * 3
        partials.append(wire.aggregates)
    got = aggregates.finalize(aggregates.merge(partials), aggs)
    assert got == {"lo": int(U.min()), "hi": int(U.max()), "s": int(np.sum(U, dtype=np.uint64))}


def test_grpc_values_keep_uint64_exact():
    from skyhook_py.service import wire

    for v in (2**63, 2**64 - 1, 2**63 - 1, -(2**63), 0):
        assert wire.value_from_proto(wire.value_to_proto(v)) == v
    # beyond 64 bits it is a float, as before
    assert wire.value_from_proto(wire.value_to_proto(2**64)) == float(2**64)
