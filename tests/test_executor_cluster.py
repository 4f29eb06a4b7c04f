"""The executor's error policy on a real cluster: a class error is reported with its
cause and never resent (FACTS.md: a resent crashing request takes down the next
replica too), and a query on a healthy dataset is unaffected by a corrupt one.
"""

import glob

import pytest

from skyhook_py.errors import CorruptObjectError

pytestmark = pytest.mark.cluster


def _scan_error_lines(cluster, errno_):
    """OSD log lines of failed scans with that errno (the class cannot know the object's
    name, so it logs the object's size and mtime instead)."""
    n = 0
    for log in glob.glob(str(cluster.dir / "log" / "osd.*.log")):
        with open(log, errors="replace") as f:
            n += sum(1 for line in f if "skyhook scan" in line and f"(-{errno_})" in line)
    return n


@pytest.fixture(scope="module")
def victim(session, store, shared_data):
    """Datasets zmumu_bad (partition 2 corrupt) and zmumu_ok, made once for the module so
    that each test also runs alone (they were made by the first test)."""
    session.ingest([shared_data / "uproot-Zmumu.root"], "zmumu_bad", tree="events", partition_events=500)
    session.ingest([shared_data / "uproot-Zmumu.root"], "zmumu_ok", tree="events", partition_events=500)
    m = session.manifest("zmumu_bad")
    victim = m.partitions[2].object
    store.write_full(victim, b"ARROW1\x00\x00" + b"\xde\xad\xbe\xef" * 1000)
    return victim


def test_corrupt_partition_is_reported_once_and_not_resent(session, victim, ceph_cluster):
    before = _scan_error_lines(ceph_cluster, 74)

    with pytest.raises(CorruptObjectError) as e:
        session.run("zmumu_bad", columns=["M"], where="M > 80", pushdown="on")
    assert victim in str(e.value) and "corrupt" in str(e.value)
    assert e.value.errno == 74  # EBADMSG, formats/README.md

    # exactly one call reached an OSD for that object: the error was not resent
    assert _scan_error_lines(ceph_cluster, 74) - before == 1

    # the OSD that answered is still serving, and other datasets are unaffected
    r = session.run("zmumu_ok", columns=["M"], where="M > 80", pushdown="on")
    assert r.summary.partitions_failed == 0 and r.summary.events_matched > 0


def test_allow_partial_reports_failed_partition(session, victim):
    r = session.run("zmumu_bad", columns=["M"], where="M > 80", pushdown="on", fail_fast=False)
    assert r.summary.partitions_failed == 1
    assert len(r.failures) == 1 and r.failures[0].errno == 74
    # every other partition answered
    ok = session.run("zmumu_ok", columns=["M"], where="M > 80", pushdown="on")
    assert r.table.num_rows < ok.table.num_rows
