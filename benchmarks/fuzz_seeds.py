"""Seeds of the libFuzzer target (scripts/fuzz.sh): FOLDER/objects/ and FOLDER/requests/
(the fixed inputs of the two modes) and FOLDER/request/, FOLDER/object/ (the seed
inputs: a selector byte, then a request or a partition).  benchmarks/malformed.py
makes them."""

from __future__ import annotations

import sys
from pathlib import Path

from benchmarks import malformed


def main(folder: str) -> int:
    root = Path(folder)
    for sub in ("objects", "requests", "request", "object"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    parts = malformed.partitions(root / "objects", rows=600)
    reqs = malformed.valid_requests()
    for i, r in enumerate(reqs):
        (root / "requests" / f"r{i:02d}.bin").write_bytes(r)
    for i, r in enumerate(reqs):          # request mode: object selector + request
        for k in range(len(parts)):
            (root / "request" / f"r{i:02d}_o{k}").write_bytes(bytes([k]) + r)
    for k, p in enumerate(parts):         # object mode: request selector + partition
        (root / "object" / f"o{k}").write_bytes(bytes([k % len(reqs)]) + p.read_bytes())
    print(f"fuzz seeds in {root}: {len(parts)} partitions, {len(reqs)} requests", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
