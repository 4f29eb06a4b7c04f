"""A cheap check that uproot will be able to read a TBranch, before ingest relies on it.

uproot refuses a basket whose entry count (``fNevBuf`` in the basket's key) differs
from what the branch's ``fBasketEntry`` says the basket holds ("basket N ... has the
wrong number of entries"); found only when that basket is read, it used to fail the
whole file after partitions of it were written.  Here each written basket's key
header (a few dozen bytes, no decompression) is read and its entry count compared
with ``fBasketEntry``: a branch that fails is skipped (or refused with ``--strict``)
at open time, like a branch of an unsupported type.  What this cannot see (a basket
whose compressed bytes are damaged) still fails when read, naming the branch.
"""

from __future__ import annotations

import struct

_HEAD = 256   # bytes read per basket key: the key header and TBasket fields, names included


def problem(branch) -> str | None:
    """Why uproot cannot read ``branch`` (an uproot TBranch), or None if its baskets agree."""
    try:
        n = int(branch.member("fWriteBasket"))
        seeks = branch.member("fBasketSeek")
        entries = branch.member("fBasketEntry")
        total = int(branch.member("fEntries"))
    except Exception as e:  # noqa: BLE001 - a branch without these members: not a TBranch we know
        return f"its basket table cannot be read ({type(e).__name__}: {e})"
    if n < 0 or n > len(seeks) or n > len(entries):
        return f"its basket table is inconsistent ({n} baskets written, {len(seeks)} seeks)"
    source = branch.file.source
    file_size = getattr(source, "num_bytes", None)
    for i in range(n):
        seek, start, stop = int(seeks[i]), int(entries[i]), int(entries[i + 1]) if i + 1 < len(entries) else total
        if seek <= 0:   # a basket kept in the TBranch itself (embedded): nothing to check here
            continue
        if file_size is not None and seek >= file_size:
            return f"basket {i} starts at byte {seek}, past the end of the file ({file_size} bytes)"
        head = _read(source, seek, _HEAD, file_size)
        if len(head) < 18:
            return f"basket {i}: its key is cut short"
        keylen = struct.unpack(">h", head[14:16])[0]
        if keylen < 18 + 19:
            return f"basket {i}: a key of {keylen} bytes is too short for a TBasket"
        if keylen > len(head):
            head = _read(source, seek, keylen, file_size)
            if len(head) < keylen:
                return f"basket {i}: its key is cut short"
        # the TBasket fields end the key: fVersion(2) fBufferSize(4) fNevBufSize(4)
        # fNevBuf(4) fLast(4) flag(1), big-endian
        nev = struct.unpack(">i", head[keylen - 9:keylen - 5])[0]
        if stop < start or nev != stop - start:
            return (f"basket {i} has the wrong number of entries (its key says {nev}, the "
                    f"branch's basket table {stop - start})")
    return None


def _read(source, start: int, size: int, file_size: int | None) -> bytes:
    stop = start + size if file_size is None else min(file_size, start + size)
    return bytes(source.chunk(start, stop).raw_data)
