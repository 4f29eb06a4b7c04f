"""Queries keep answering, and answer the same, while the dataset is resharded
(new partition size, format and compression) and while gc removes the old version.

A query holds the manifest it started with; the old partitions stay until gc,
so a query that began before the commit still finds them.  A query that races
gc may find a partition gone: it must fail with a clear error, never return a
partial or mixed answer.
"""

import threading
import time

import awkward as ak
import pytest
import uproot

from skyhook_py import transcode
from skyhook_py.errors import ObjectClassError
from skyhook_py.session import Session

pytestmark = pytest.mark.cluster

CUT = "(nJet >= 4) & (MET_pt > 20)"
COLUMNS = ["event", "MET_pt", "Jet_pt"]


def test_queries_during_reshard_and_gc(store, shared_data):
    path = shared_data / "nanoAOD_2015_CMS_Open_Data_ttbar.root"
    with uproot.open(path) as f:
        expected = ak.to_list(f["Events"].arrays(COLUMNS, cut=CUT))
    session = Session(store, store.conf)
    session.ingest([path], "ttbar_reshard", tree="Events", partition_events=20)

    answers, errors, unexpected, stop = [], [], [], threading.Event()

    def query_loop():
        while not stop.is_set():
            for pushdown in ("on", "off"):
                try:
                    r = session.run("ttbar_reshard", columns=COLUMNS, where=CUT, pushdown=pushdown)
                    answers.append((r.summary.manifest_version, ak.to_list(ak.from_arrow(r.table))))
                except (ObjectClassError, FileNotFoundError) as e:
                    errors.append(e)  # only acceptable while gc runs: a vanished partition
                except BaseException as e:  # noqa: BLE001 - a thread's exception was lost before
                    unexpected.append(e)
                    return

    threads = [threading.Thread(target=query_loop) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        transcode.reshard(store, "ttbar_reshard", partition_events=70, compression="zstd")
        v3 = transcode.reshard(store, "ttbar_reshard", partition_events=200, format="parquet")
        _wait_for(lambda: any(v == v3.version for v, _ in answers))
        errors_before_gc = len(errors)
        removed = transcode.gc(store, "ttbar_reshard", grace=0)
        n = len(answers)
        _wait_for(lambda: len(answers) >= n + 4)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=120)

    assert not any(t.is_alive() for t in threads), "a query thread did not stop"
    assert not unexpected, unexpected[:3]   # a query thread died of another error
    assert errors_before_gc == 0, errors[:3]
    assert removed, "gc should remove the partitions of versions 1 and 2"
    versions = {v for v, _ in answers}
    assert v3.version in versions and len(versions) >= 2, versions  # old and new were both queried
    for v, rows in answers:
        assert rows == expected, f"a query on version {v} answered differently"
    # a failure that raced gc names the missing partition
    for e in errors:
        assert "does not exist" in str(e) or "no object" in str(e)


def _wait_for(condition, timeout=120):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "queries stopped answering"
        time.sleep(0.01)
