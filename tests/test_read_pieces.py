"""Reads that come back in pieces (positional_file.cc): the OSD hands out each
segment of a cls_cxx_read as its own buffer, as BlueStore answers cached data in
the pieces it first read it in; a column spanning two pieces is copied from them,
and block checksums are verified across piece boundaries.  The local runner cuts
its reads at multiples of ``--pieces N`` bytes: every cut must give the answer of
a plain pread, and a corrupted byte must be caught (EBADMSG) whatever the cuts."""

from __future__ import annotations

import errno
import subprocess

import pyarrow as pa
import pytest

from skyhook_py.query import codec
from skyhook_py.query.ir import AggKind, Aggregation, Axis, Op, call, col
from skyhook_py.storage import checksum

from test_cls_kernel import DATA, RUNNER, write_ipc

pytestmark = pytest.mark.skipif(not RUNNER.exists(), reason=f"{RUNNER} not built yet (make build)")

BLOCK = 4096
PIECES = [1000, 4096, 7777, 65536]
REQUESTS = {
    "cut and lists": dict(outputs=[("pt", col("Muon_pt")[col("Muon_pt") > 20]), ("met", col("MET_pt")),
                                   ("lead", call(Op.First, col("Jet_pt")))],
                          where=call(Op.Count, col("Muon_pt")) >= 2),
    "aggregates": dict(aggregations=[Aggregation(AggKind.Hist1D, "h", col("Jet_pt"), x_axis=Axis(10, 0, 100)),
                                     Aggregation(AggKind.Sum, "n", col("nJet"))]),
    "every row": dict(outputs=[("e", col("event")), ("q", col("Muon_charge")), ("id", col("Jet_jetId"))]),
}


@pytest.fixture(scope="module")
def partition(tmp_path_factory):
    import awkward as ak
    import uproot

    d = tmp_path_factory.mktemp("pieces")
    arrays = uproot.open(DATA / "uproot-small-dy-withoffsets.root")["tree"].arrays(library="ak")
    path = write_ipc(ak.to_arrow_table(arrays, extensionarray=False), d / "dy.arrow", batch_rows=128)
    data = path.read_bytes()
    sums = d / "dy.crc"
    sums.write_bytes(checksum.xattr_value(data, block=BLOCK))
    return path, sums


def scan(request: bytes, obj, tmp_path, *options) -> tuple[int, bytes]:
    req, out = tmp_path / "req", tmp_path / "out"
    req.write_bytes(request)
    out.unlink(missing_ok=True)
    p = subprocess.run([str(RUNNER), str(req), str(obj), str(out), *map(str, options)], capture_output=True,
                       timeout=60)
    return p.returncode, out.read_bytes() if out.exists() else b""


def answer(reply: bytes):
    r = codec.decode_scan_reply(reply)
    figures = {k: v for k, v in r.figures.items() if k not in ("cpu_ns", "bytes_read")}
    return r.table, figures, [(a.name, a.count, a.sumw, a.int_value, a.float_value) for a in r.aggregates]


@pytest.mark.parametrize("name", sorted(REQUESTS))
@pytest.mark.parametrize("pieces", PIECES)
def test_pieces_give_the_pread_answer(partition, tmp_path, name, pieces):
    path, sums = partition
    request = codec.encode_scan_request(**REQUESTS[name])
    status, want = scan(request, path, tmp_path)
    assert status == 0
    for options in (("--pieces", pieces), ("--pieces", pieces, "--checksums", sums)):
        status, got = scan(request, path, tmp_path, *options)
        assert status == 0, options
        t_got, f_got, a_got = answer(got)
        t_want, f_want, a_want = answer(want)
        assert t_got.equals(t_want) and f_got == f_want and a_got == a_want, options


@pytest.mark.parametrize("pieces", PIECES)
def test_a_corrupted_byte_is_caught_across_pieces(partition, tmp_path, pieces):
    """A byte of the Muon_pt values flipped: verified blocks give EBADMSG however the
    reads are cut (a block may span two pieces); without checksums it goes unseen."""
    path, sums = partition
    reader = pa.ipc.open_file(pa.memory_map(str(path)))
    batch = reader.get_batch(0)
    values = batch.column(batch.schema.get_field_index("Muon_pt")).values.buffers()[1]
    data = bytearray(path.read_bytes())
    at = data.find(values.to_pybytes()[:64])
    assert at > 0
    data[at + 17] ^= 0x40
    bad = tmp_path / "bad.arrow"
    bad.write_bytes(bytes(data))
    request = codec.encode_scan_request(**REQUESTS["cut and lists"])
    status, _ = scan(request, bad, tmp_path, "--pieces", pieces, "--checksums", sums)
    assert status == errno.EBADMSG
    status, _ = scan(request, bad, tmp_path, "--pieces", pieces)
    assert status == 0   # the flip is in a float's value: only the checksums see it


def lendable_partition(tmp_path, n=150_000):
    """A partition whose column buffers are large enough to be lent (scan.cc kLendBytes):
    numbers, bools and a list, in 50,000-row batches, with its block checksums."""
    import numpy as np

    rng = np.random.default_rng(5)
    counts = rng.integers(0, 4, n)
    table = pa.table({
        "event": pa.array(np.arange(n, dtype=np.uint64)),
        "x": pa.array(rng.normal(size=n).astype(np.float32)),
        "flag": pa.array(rng.random(n) < 0.5),
        "pt": pa.ListArray.from_arrays(pa.array(np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)),
                                       pa.array(rng.exponential(30, int(counts.sum())).astype(np.float32))),
    })
    path = write_ipc(table, tmp_path / "big.arrow", batch_rows=50_000)
    sums = tmp_path / "big.crc"
    sums.write_bytes(checksum.xattr_value(path.read_bytes(), block=BLOCK))
    return table, path, sums


# every row of four columns, and a row range of two
LEND_REQUESTS = [([("e", col("event")), ("x", col("x")), ("f", col("flag")), ("pt", col("pt"))], None),
                 ([("x", col("x")), ("pt", col("pt"))], (10_000, 120_000))]
LEND_OPTIONS = [("--reads", "mapped"), ("--reads", "mapped", "--checksums"), ("--pieces", 1 << 20)]


def lent_run(runner, request: bytes, path, sums, options, tmp_path) -> tuple[bytes, int, str]:
    """The runner's reply, the bytes it lent and its stderr (``--checksums`` gets ``sums``)."""
    req, out = tmp_path / "req", tmp_path / "out"
    req.write_bytes(request)
    out.unlink(missing_ok=True)
    args = [str(o) for o in options] + ([str(sums)] if options[-1] == "--checksums" else [])
    p = subprocess.run([str(runner), str(req), str(path), str(out), *args, "--repeat", "1"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    return out.read_bytes(), int(p.stderr.split("lent_bytes ")[1].split()[0]), p.stderr


def test_columns_passed_through_are_lent_not_copied_and_give_the_pread_answer(tmp_path):
    """Mapped reads stand for the OSD's cached data: the reply leaves the large column
    buffers it passes through out of its block (the class sends them as references
    on the object store's memory, scan.cc EncodeReply) and the runner fills them in.
    The answer must be pread's (which copies everything), with lists, bools, a cut
    slice of rows and block checksums, and the runner must report lent bytes."""
    table, path, sums = lendable_partition(tmp_path)
    n = table.num_rows
    for outputs, event_range in LEND_REQUESTS:
        kw = {} if event_range is None else {"row_start": event_range[0], "row_stop": event_range[1]}
        request = codec.encode_scan_request(outputs=outputs, **kw)
        status, want = scan(request, path, tmp_path)
        assert status == 0
        t_want, f_want, _ = answer(want)
        lo, hi = event_range or (0, n)
        assert t_want.num_rows == hi - lo
        assert t_want.column(outputs[0][0]).to_numpy().tolist() == \
            table.column(outputs[0][1].name).slice(lo, hi - lo).to_numpy().tolist()
        for options in LEND_OPTIONS:
            got, lent, err = lent_run(RUNNER, request, path, sums, options, tmp_path)
            assert lent > 100_000, (options, err)
            t_got, f_got, _ = answer(got)
            assert t_got.equals(t_want) and f_got == f_want, options
