"""Block checksums of a partition object (formats/layout.md "Checksums").

crc32c of every ``BLOCK`` bytes of the object (the last block shorter), recorded
at ingest twice: in the partition's xattr ``skyhook.crc32c`` (binary, what the
object class verifies for exactly the blocks it reads) and in the manifest's
partition entry (what the plain-read path verifies for the whole object).
Partitions written before checksums existed have neither: they are not verified.
Nothing here reads or writes storage.
"""

from __future__ import annotations

import base64
import errno
import struct

import crc32c as _crc32c

XATTR = "skyhook.crc32c"
BLOCK = 64 * 1024
ALGORITHM = "crc32c"
_MAGIC = b"SKC1"


class ChecksumMismatch(ValueError):
    """The bytes of a partition do not match the checksums recorded at ingest."""

    errno = errno.EBADMSG


def block_crcs(data: bytes, block: int = BLOCK) -> list[int]:
    mv = memoryview(data)
    return [_crc32c.crc32c(mv[i:i + block]) for i in range(0, len(data), block)]


def xattr_value(data: bytes, crcs: list[int] | None = None, block: int = BLOCK) -> bytes:
    """The ``skyhook.crc32c`` xattr: "SKC1", u32 block, u64 size, u32 count, u32 crcs (LE)."""
    crcs = block_crcs(data, block) if crcs is None else crcs
    return _MAGIC + struct.pack(f"<IQI{len(crcs)}I", block, len(data), len(crcs), *crcs)


def manifest_entry(data: bytes, crcs: list[int] | None = None, block: int = BLOCK) -> dict:
    """The manifest's ``checksum`` of a partition: the same crcs, base64 of u32 LE."""
    crcs = block_crcs(data, block) if crcs is None else crcs
    return {"algorithm": ALGORITHM, "block": block, "size": len(data),
            "crcs": base64.b64encode(struct.pack(f"<{len(crcs)}I", *crcs)).decode("ascii")}


def verify(data: bytes, entry: dict | None, what: str = "partition") -> None:
    """Raise ChecksumMismatch unless ``data`` matches ``entry`` (None: not recorded, not verified)."""
    if not entry:
        return
    try:
        if entry.get("algorithm") != ALGORITHM:
            raise ChecksumMismatch(f"{what}: unknown checksum algorithm {entry.get('algorithm')!r}")
        block, size = int(entry["block"]), int(entry["size"])
        raw = base64.b64decode(entry["crcs"], validate=True)
    except (KeyError, TypeError, ValueError) as e:
        if isinstance(e, ChecksumMismatch):
            raise
        raise ChecksumMismatch(f"{what}: malformed checksum record: {e}") from e
    if len(data) != size:
        raise ChecksumMismatch(f"{what}: {len(data)} bytes, {size} recorded at ingest")
    if block <= 0 or len(raw) != 4 * ((size + block - 1) // block):
        raise ChecksumMismatch(f"{what}: malformed checksum record")
    want = struct.unpack(f"<{len(raw) // 4}I", raw)
    for i, (got, exp) in enumerate(zip(block_crcs(data, block), want)):
        if got != exp:
            raise ChecksumMismatch(f"{what}: checksum mismatch in block {i} "
                                   f"(bytes {i * block}..{min(size, (i + 1) * block)})")
