"""The Session's compiled-query and plan caches (lean client, issue 11): a repeated query
reuses its compiled form and plan only against the very manifest object they were made
for, so an append between repeats is never missed; answers against uproot."""

from __future__ import annotations

import awkward as ak
import pytest
import uproot

from skyhook_py import demo_data, transcode


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("session-cache-data")
    return [demo_data.write_nanoaod(str(d / "a.root"), events=500, seed=21),
            demo_data.write_nanoaod(str(d / "b.root"), events=300, seed=22)]


def _uproot(paths, cols, cut):
    arrays = []
    for p in paths:
        with uproot.open(p) as f:
            arrays.append(f["Events"].arrays(cols, cut=cut))
    return ak.concatenate(arrays)


def test_repeats_reuse_compiled_query_and_plan_until_a_commit(session, store, files):
    session.ingest([files[0]], "cached", tree="Events", partition_events=100)
    cols, where = ["event", "MET_pt", "Muon_pt"], "(nMuon >= 1) & (MET_pt > 30)"
    first = session.query("cached", cols, where)
    m1, q1 = session.build_query("cached", columns=cols, where=where)
    m2, q2 = session.build_query("cached", columns=cols, where=where)
    assert m1 is m2 and q1 is q2                  # compiled once for this manifest
    hits = session._plans.hits
    again = session.query("cached", cols, where)
    assert session._plans.hits == hits + 1        # planned once too
    assert again.equals(first)
    expected = _uproot(files[:1], cols, where)
    assert ak.to_list(ak.from_arrow(first)["event"]) == ak.to_list(expected["event"])

    transcode.append(store, [files[1]], "cached", tree="Events")
    m3, q3 = session.build_query("cached", columns=cols, where=where)
    assert m3 is not m1 and q3 is not q1          # a new version: compiled again
    after = session.query("cached", cols, where)
    expected = _uproot(files, cols, where)
    got = ak.from_arrow(after)
    for c in cols:
        assert ak.to_list(got[c]) == ak.to_list(expected[c]), c
    assert after.num_rows > first.num_rows


def test_arguments_that_differ_only_in_type_do_not_share_an_entry():
    from skyhook_py.query.compile import arguments_token

    assert arguments_token(where="x > 1", limit=1) != arguments_token(where="x > 1", limit=True)
    assert arguments_token(columns=["a", "b"]) == arguments_token(columns=("a", "b"))
    assert arguments_token(columns=["a", "b"]) != arguments_token(columns=["b", "a"])
    assert arguments_token(aggregations=[{"kind": "count"}]) is not None
    assert arguments_token(where=object()) is None      # IR values and the like: not cached
