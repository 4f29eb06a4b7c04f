"""The class's crc32c (checksum.cc: three interleaved SSE4.2 streams joined by
shift tables, or a table fallback) against the `crc32c` package, which ingest
uses to record the checksums the class verifies.  Lengths cover every path:
whole 3 x 8192-byte and 3 x 256-byte rounds, leftover words and bytes."""

from __future__ import annotations

import random
import subprocess
from pathlib import Path

import crc32c
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

RUNNER = Path(__file__).resolve().parents[1] / "build" / "bin" / "skyhook_scan_local"
pytestmark = pytest.mark.skipif(not RUNNER.exists(), reason=f"{RUNNER} not built yet (make build)")


def kernel_crc32c(data: bytes, tmp: Path) -> int:
    f = tmp / "bytes"
    f.write_bytes(data)
    out = subprocess.run([str(RUNNER), "--crc32c", str(f)], capture_output=True, text=True, check=True)
    return int(out.stdout)


EDGES = [0, 1, 7, 8, 9, 255, 767, 768, 769, 3 * 8192 - 1, 3 * 8192, 3 * 8192 + 1,
         3 * 8192 + 768 + 13, 64 * 1024, 2 * 3 * 8192 + 5 * 768 + 8 * 7 + 3]


@pytest.mark.parametrize("n", EDGES)
def test_crc32c_edges(n, tmp_path):
    data = bytes((i * 131 + 7) % 251 for i in range(n))
    assert kernel_crc32c(data, tmp_path) == crc32c.crc32c(data)


@given(n=st.integers(0, 200_000), seed=st.integers(0, 2**32))
@settings(max_examples=60, deadline=None)
def test_crc32c_random(n, seed, tmp_path_factory):
    data = random.Random(seed).randbytes(n)
    assert kernel_crc32c(data, tmp_path_factory.mktemp("crc")) == crc32c.crc32c(data)
