"""Partitioner: a stream of record batches -> partitions of whole events.

Every row is one event, so any row boundary is an event boundary.  A partition
closes when it reaches ``target_bytes`` of uncompressed Arrow data (the encoded
object is smaller when compressed) or ``target_events`` events, whichever comes
first; a single event larger than the target makes a partition of its own.  The
partitioner holds at most one partition plus one batch in memory.

It knows nothing about files or encodings: the caller says where events come from.
"""

from __future__ import annotations

import math
from typing import Iterable, Iterator

import pyarrow as pa

# one partition is one RADOS write_full, and OSDs refuse writes over osd_max_write_size
# (90 MiB by default); the object class would refuse objects over 1 GiB anyway (-EFBIG)
MAX_PARTITION_BYTES = 80 << 20


def check_targets(target_bytes: int | None, target_events: int | None) -> None:
    if target_bytes is not None and not (1 <= target_bytes <= MAX_PARTITION_BYTES):
        raise ValueError(f"partition size {target_bytes} bytes is outside 1 B .. "
                         f"{MAX_PARTITION_BYTES >> 20} MiB (one partition is one RADOS write, and OSDs "
                         "refuse writes over osd_max_write_size, 90 MiB by default)")
    if target_events is not None and target_events < 1:
        raise ValueError(f"partition events must be at least 1, not {target_events}")
    if target_bytes is None and target_events is None:
        raise ValueError("give a partition size in bytes, in events, or both")


def partitions(batches: Iterable[pa.RecordBatch], schema: pa.Schema,
               target_bytes: int | None = None,
               target_events: int | None = None) -> Iterator[pa.Table]:
    """Yield tables of whole events of about ``target_bytes`` / ``target_events``."""
    check_targets(target_bytes, target_events)
    pending: list[pa.RecordBatch] = []
    rows = 0
    nbytes = 0
    for batch in batches:
        while batch.num_rows:
            take = batch.num_rows
            if target_events is not None:
                take = min(take, target_events - rows)
            if target_bytes is not None:
                per_event = batch.nbytes / batch.num_rows
                room = target_bytes - nbytes
                # at least one event, so a partition always makes progress
                take = min(take, max(1 if rows == 0 else 0, math.floor(room / per_event) if per_event else take))
            if take:
                piece = batch.slice(0, take)
                pending.append(piece)
                rows += take
                nbytes += piece.nbytes if take < batch.num_rows else batch.nbytes
                batch = batch.slice(take)
            full = (target_events is not None and rows >= target_events) or \
                   (target_bytes is not None and (nbytes >= target_bytes or
                                                  (batch.num_rows and take == 0)))
            if full:
                yield pa.Table.from_batches(pending, schema=schema)
                pending, rows, nbytes = [], 0, 0
    if rows:
        yield pa.Table.from_batches(pending, schema=schema)
