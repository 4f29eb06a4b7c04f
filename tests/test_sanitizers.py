"""The ASan + UBSan build of the kernel (issue 12, "an ASan/UBSan build of the local
runner and a libFuzzer target"): a small corpus of corrupted partitions and malformed
requests gives errors only, never a sanitizer report, a signal or a hang.

Part of the reliability suite (marker `reliability`, run by `make test` and CI): the
fixture runs `scripts/setup.sh sanitize` (or `fuzz`, see san_runner), which installs
clang with apt when it is missing and builds; it never skips.  The full-size runs are `make sanitize`
and `make fuzz` (benchmarks/sanitize_corpus.py, scripts/fuzz.sh).
"""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SAN_RUNNER = ROOT / "build-asan" / "bin" / "skyhook_scan_local"
# the fuzzer's build (`make fuzz`) has an ASan + UBSan skyhook_scan_local too
FUZZ_RUNNER = ROOT / "build-fuzz" / "bin" / "skyhook_scan_local"

pytestmark = pytest.mark.reliability


@pytest.fixture(scope="module")
def san_runner() -> Path:
    """An up-to-date sanitized skyhook_scan_local: build-asan/'s when it exists, else
    build-fuzz/'s (the same sanitizers; in `make test` tests/test_reliability.py has just
    built it, which saves a second build).  Always through setup.sh (installs clang with
    apt when missing; an incremental build takes seconds), so a stale runner never tests
    old code; a failed install or build fails the test."""
    mode, runner = ("sanitize", SAN_RUNNER) if SAN_RUNNER.exists() else ("fuzz", FUZZ_RUNNER)
    r = subprocess.run(["nice", "-n", "10", str(ROOT / "scripts" / "setup.sh"), mode],
                       cwd=ROOT, capture_output=True, text=True, timeout=3600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert runner.exists(), f"scripts/setup.sh {mode} built no {runner}"
    return runner


def test_sanitizer_build_is_instrumented(san_runner):
    # the build really carries ASan: its runtime's symbols are in the binary
    nm = subprocess.run(["nm", "-C", str(san_runner)], capture_output=True, text=True).stdout
    assert "__asan_init" in nm or "__asan_report_load" in nm
    assert "__ubsan_handle" in nm


def test_sanitizer_runs_report_errors_only(san_runner):
    from benchmarks import sanitize_corpus

    summary = sanitize_corpus.run_corpus(san_runner, n_requests=60, n_objects=30, seed=12)
    assert summary["runs"] == 90
    assert summary["findings"] == [], summary["findings"][:3]
    # the corpus is not all refused at the door: some runs answer, some are errors
    assert summary["outcomes"].get("ok", 0) > 0
    assert any(k.startswith("errno ") for k in summary["outcomes"])


def test_lent_reply_pieces_under_the_sanitizers(san_runner, tmp_path):
    """The reply's lent pieces (columns passed through by reference, then filled in by
    the runner) under ASan and UBSan: no report, and pread's answer."""
    from skyhook_py.query import codec
    from test_read_pieces import LEND_OPTIONS, LEND_REQUESTS, answer, lendable_partition, lent_run, scan

    _, path, sums = lendable_partition(tmp_path, n=60_000)
    for outputs, event_range in LEND_REQUESTS:
        kw = {} if event_range is None else {"row_start": event_range[0], "row_stop": min(event_range[1], 50_000)}
        request = codec.encode_scan_request(outputs=outputs, **kw)
        status, want = scan(request, path, tmp_path)
        assert status == 0
        for options in LEND_OPTIONS:
            got, lent, err = lent_run(san_runner, request, path, sums, options, tmp_path)
            assert "Sanitizer" not in err and "runtime error" not in err, err[-2000:]
            assert lent > 0 and answer(got)[:2] == answer(want)[:2], options


def test_a_sanitizer_report_is_a_finding(tmp_path):
    # the classifier itself: a runner that trips ASan is a finding, an errno is not
    from benchmarks import sanitize_corpus

    fake = tmp_path / "fake_runner"
    fake.write_text("#!/bin/sh\necho '==1==ERROR: AddressSanitizer: heap-buffer-overflow' >&2\nexit 223\n")
    fake.chmod(0o755)
    out, _ = sanitize_corpus.run_one(fake, tmp_path / "r", tmp_path / "o", tmp_path / "x", timeout=10)
    assert sanitize_corpus.is_finding(out) and out == "asan"
    fake.write_text("#!/bin/sh\nexit 74\n")
    out, _ = sanitize_corpus.run_one(fake, tmp_path / "r", tmp_path / "o", tmp_path / "x", timeout=10)
    assert out == "errno 74" and not sanitize_corpus.is_finding(out)


# A libFuzzer finding (2026-12-05, object mode): an Arrow IPC file whose footer puts its
# 8-byte record batch blocks 4 bytes off their alignment (the flatbuffers verifier checks
# only the vector's length field).  Reading them through a typed pointer was undefined
# behaviour ("reference binding to misaligned address", ipc_partition.cc FooterBlocks).
MISALIGNED_FOOTER = base64.b64decode(
    "BwoADAAGAAUACAAKAAAAAAEEAAwAAAD/////AAAAABAAAAAMABQABgAIAAwAEAAMAAAAAAAEADQAAABIAQAAGAEAAOgA"
    "AAC8AAAA4AAAAAQAAAB0/v//AAABEBQAAAAYAAAABAAAAAEAAAAQAAAAAwAAAGlkcwBU////nP7//wAAAQIQAAAAGAAA"
    "AAQAAAAAAAAABAAAAGl0ZW0AAAAA/P7//wAAAAFAAAAAzP7//wAAAQ0UAAAAHAAAAAQAAAABAAAAFAAAAP8AAABqRXRz"
    "AAAAALD////4/v//AAABAxAAAAAYAAAABAAAAAAAAAAEAAAAaXRlbQAAAADu/v//AAABACT///8AAAEGEAAAABgAAAAE"
    "AAAAAAAAAAEAAABiAAAABAAEAAQAAABM////AAABAhAAAAAYAAAABAAAAAAAAAAAAAEAJP///wAAAQYQAAAAGAAAAAQA"
    "AAAAAAAAAQAAAGIAAAAEAAQABAAAAEz///8AAAECEAAAABgAAAAEAAAAAAAAAAEAAAB1AAYACAAEAAYAAABAAAAAeP//"
    "/wAAAQIQAAAAFAAAAAQAAAAAAAAAAgAAAGk4AADU////AAAAAQgAAACk////AAABAhAAAAAcAAAABAAAAAAAAAABAAAA"
    "bgAEAAgADAAIAAcACAAAAAAAAAEgAAAA2P///wAAAQYQAAAAFAAAAAQAAAAAAAAAAQAAAGYAAADK////AAABnRAAFAAI"
    "AAYABwAMAAAAEAAQAAAAAAABAxAAAAAYAAAABAAAAAAAAAABAAAAeAAGAAgABgAGAAAAAAACAEACAABBUlJPVzE=")


def test_a_footer_with_misaligned_blocks_gives_no_sanitizer_report(san_runner, tmp_path):
    from benchmarks import sanitize_corpus
    from skyhook_py.query import codec, ir

    obj, request = tmp_path / "partition.arrow", tmp_path / "request"
    obj.write_bytes(MISALIGNED_FOOTER)
    request.write_bytes(codec.encode_scan_request(outputs=[("x", ir.col("x"))]))
    outcome, err = sanitize_corpus.run_one(san_runner, request, obj, tmp_path / "out", timeout=60)
    assert not sanitize_corpus.is_finding(outcome), err[-2000:]
