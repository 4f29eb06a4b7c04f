"""Encoder: a partition (pa.Table) <-> the bytes of one RADOS object.

Arrow IPC **file** format by default: one record batch and a footer, so that the
object class reads the footer first and then only the buffers of the columns a
query needs; buffers optionally compressed with LZ4 (frame) or ZSTD.  Parquet is the
alternative (one row group).  Nothing here knows about Ceph or manifests.
"""

from __future__ import annotations

import pyarrow as pa

FORMATS = ("arrow", "parquet")
COMPRESSIONS = (None, "lz4", "zstd")


def check_encoding(format: str, compression: str | None) -> dict:
    if format not in FORMATS:
        raise ValueError(f"unknown partition format {format!r}; use one of {', '.join(FORMATS)}")
    if compression in ("none", ""):
        compression = None
    if compression not in COMPRESSIONS:
        raise ValueError(f"unknown compression {compression!r}; use lz4, zstd or none")
    return {"format": format, "compression": compression}


def encode(table: pa.Table, format: str = "arrow", compression: str | None = None) -> bytes:
    table = table.combine_chunks()
    sink = pa.BufferOutputStream()
    if format == "arrow":
        options = pa.ipc.IpcWriteOptions(compression=compression)
        with pa.ipc.new_file(sink, table.schema, options=options) as writer:
            # one batch: the class then reads one footer entry and the needed buffers
            writer.write_table(table, max_chunksize=max(1, table.num_rows))
    elif format == "parquet":
        import pyarrow.parquet as pq

        pq.write_table(table, sink, compression=compression or "none",
                       row_group_size=max(1, table.num_rows))
    else:
        raise ValueError(f"unknown partition format {format!r}")
    return sink.getvalue().to_pybytes()


def decode(data: bytes, columns: list[str] | None = None) -> pa.Table:
    """The table of a partition object, whichever format it is in (by its magic)."""
    buf = pa.py_buffer(data)
    if data[:4] == b"PAR1":
        import pyarrow.parquet as pq

        return pq.read_table(pa.BufferReader(buf), columns=columns)
    table = pa.ipc.open_file(buf).read_all()
    table = table.select(columns) if columns is not None else table
    table.validate(full=True)   # a corrupt offset would crash the first kernel that reads it
    return table
