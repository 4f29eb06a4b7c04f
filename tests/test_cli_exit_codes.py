"""Exit codes and one-line messages of ingest, `--hist` and `--output` (issue 12,
"Smaller": user errors exit 2 everywhere, failures never end in a traceback), and
branches uproot cannot read skipped at ingest with a warning naming file, tree and
branch (refused with --strict)."""

from __future__ import annotations

import struct
import subprocess
import sys
import warnings

import numpy as np
import pytest

from skyhook_py.errors import InputFileError
from skyhook_py.transcode import readers

ROWS = 1000


def write_unreadable_branch(path) -> None:
    """A TTree with branches a, bad, c where basket 0 of `bad` says it holds ROWS - 1
    entries while the branch's basket table says ROWS: uproot cannot read `bad`
    ("basket 0 ... has the wrong number of entries"), a and c are fine."""
    import uproot

    with uproot.recreate(path, compression=None) as f:
        f.mktree("t", {"a": np.float64, "bad": np.int32, "c": np.int64})
        f["t"].extend({"a": np.arange(ROWS, dtype=np.float64) / 2, "bad": np.arange(ROWS, dtype=np.int32),
                       "c": np.arange(ROWS, dtype=np.int64) * 3})
    seek = int(uproot.open(path)["t"]["bad"].member("fBasketSeek")[0])
    data = bytearray(path.read_bytes())
    keylen = struct.unpack(">h", data[seek + 14:seek + 16])[0]
    at = seek + keylen - 9   # fNevBuf, the TBasket field before fLast and the flag byte
    assert struct.unpack(">i", data[at:at + 4])[0] == ROWS
    data[at:at + 4] = struct.pack(">i", ROWS - 1)
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def unreadable(tmp_path_factory):
    path = tmp_path_factory.mktemp("unreadable") / "unreadable.root"
    write_unreadable_branch(path)
    return path


def test_uproot_cannot_read_the_branch(unreadable):
    # the oracle: uproot itself fails on `bad` and reads the others
    import uproot

    t = uproot.open(unreadable)["t"]
    with pytest.raises(ValueError, match="wrong number of entries"):
        t["bad"].array()
    assert len(t["a"].array()) == ROWS and len(t["c"].array()) == ROWS


def test_reader_skips_the_unreadable_branch_with_a_warning(unreadable):
    import uproot

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = readers.open_reader(str(unreadable))
    msgs = [str(w.message) for w in caught if issubclass(w.category, readers.IngestWarning)]
    assert len(msgs) == 1
    assert str(unreadable) in msgs[0] and "'t'" in msgs[0] and "bad" in msgs[0]
    assert r.schema.names == ["a", "c"]
    batch = next(r.batches(0, ROWS, ROWS))
    t = uproot.open(unreadable)["t"]
    assert batch.column("a").to_numpy().tolist() == t["a"].array(library="np").tolist()
    assert batch.column("c").to_numpy().tolist() == t["c"].array(library="np").tolist()
    r.close()


def test_strict_refuses_the_unreadable_branch(unreadable):
    with pytest.raises(InputFileError, match="bad.*strict"):
        readers.open_reader(str(unreadable), strict=True)


def test_readable_files_lose_no_branch(shared_data):
    # the check must not skip what uproot reads: every branch of the shared files that
    # uproot reads as an array stays
    import uproot

    for name, tree in [("nano_dy.root", "Events"), ("uproot-HZZ.root", "events")]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r = readers.open_reader(str(shared_data / name), tree)
        reasons = [why for _, why in r.skipped]
        r.close()
        assert not any("cannot read it" in why for why in reasons), reasons[:5]
        assert uproot.open(shared_data / name)[tree].num_entries == r.entries


# -- the CLI --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def slow_dataset(session, shared_data):
    session.ingest([shared_data / "uproot-HZZ.root"], "exitcodes", tree="events", partition_events=500)
    return "exitcodes"


def _cli(ceph_cluster, pool, args, cwd=None):
    base = [sys.executable, "-m", "skyhook_py.cli", "--conf", str(ceph_cluster.conf_path),
            "--pool", pool, "--keyring", str(ceph_cluster.admin_keyring)]
    return subprocess.run(base + [str(a) for a in args], capture_output=True, text=True, timeout=300)


def _one_line_error(r, code):
    assert r.returncode == code, (r.returncode, r.stderr[-2000:])
    assert "Traceback" not in r.stderr
    errors = [ln for ln in r.stderr.splitlines() if "error" in ln]
    assert len(errors) == 1, r.stderr[-2000:]
    return errors[0]


@pytest.mark.cluster
def test_ingest_skips_unreadable_branch_and_strict_refuses(ceph_cluster, pool, unreadable, session):
    import uproot

    r = _cli(ceph_cluster, pool, ["ingest", unreadable, "--dataset", "unread", "--tree", "t"])
    assert r.returncode == 0, r.stderr[-2000:]
    warning = [ln for ln in r.stderr.splitlines() if ln.startswith("warning")]
    assert len(warning) == 1 and str(unreadable) in warning[0] and "'t'" in warning[0] \
        and "bad" in warning[0]
    got = session.query("unread", columns=["a", "c"])
    t = uproot.open(unreadable)["t"]
    assert got.column("a").to_pylist() == t["a"].array(library="np").tolist()
    assert got.column("c").to_pylist() == t["c"].array(library="np").tolist()
    assert "bad" not in session.manifest("unread").column_types()
    line = _one_line_error(_cli(ceph_cluster, pool, ["ingest", unreadable, "--dataset", "unread_strict",
                                                     "--tree", "t", "--strict"]), 2)
    assert "bad" in line and "strict" in line
    assert "unread_strict" not in session.datasets()


@pytest.mark.cluster
@pytest.mark.parametrize("files,needle", [
    (["/nonexistent/x.root"], "no such file"),
    (["{notes}"], "neither a ROOT file nor an HDF5 file"),
    (["{hzz}", "--tree", "nope"], "no tree 'nope'"),
])
def test_ingest_errors_exit_2_with_one_line(ceph_cluster, pool, shared_data, tmp_path, files, needle):
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    files = [f.format(notes=notes, hzz=shared_data / "uproot-HZZ.root") for f in files]
    line = _one_line_error(_cli(ceph_cluster, pool, ["ingest", *files, "--dataset", "e2"]), 2)
    assert needle in line


@pytest.mark.cluster
@pytest.mark.parametrize("spec,needle", [
    ("NMuon:abc:0:5", "BINS must be a whole number"),
    ("NMuon:0:0:5", "BINS must be at least 1"),
    ("NMuon:10:low:5", "LOW must be a number"),
    ("NMuon:10:0:inf", "HIGH must be finite"),
    ("NMuon:10:5:0", "LOW (5) must be less than HIGH (0)"),
    ("NMuon:10:0", "wants [NAME=]EXPR:BINS:LOW:HIGH"),
    (":10:0:5", "wants [NAME=]EXPR:BINS:LOW:HIGH"),
])
def test_hist_errors_say_which_part(ceph_cluster, pool, slow_dataset, spec, needle):
    line = _one_line_error(_cli(ceph_cluster, pool, ["query", slow_dataset, "--hist", spec]), 2)
    assert needle in line, line


@pytest.mark.cluster
@pytest.mark.parametrize("args,needle", [
    (["--columns", "NMuon", "-o", "{tmp}/x.txt"], "must end in one of .arrow, .csv"),
    (["--hist", "NMuon:5:0:5", "-o", "{tmp}/x.arrow"], "must end in .json or .root"),
    (["--columns", "NMuon", "-o", "{tmp}/absent/x.arrow"], "does not exist"),
    (["--columns", "NMuon", "-o", "{tmp}"], "must end in"),
])
def test_output_errors_exit_2_before_the_query(ceph_cluster, pool, slow_dataset, tmp_path, args, needle):
    args = [a.format(tmp=tmp_path) for a in args]
    r = _cli(ceph_cluster, pool, ["query", slow_dataset, *args])
    line = _one_line_error(r, 2)
    assert needle in line
    assert r.stdout == ""                      # refused before the query ran: nothing printed
    assert sorted(p.name for p in tmp_path.iterdir()) == []   # nothing written
