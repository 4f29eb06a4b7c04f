"""Writing a query's rows to a file as they arrive: Parquet, Arrow IPC, CSV, JSON lines.

``write_events`` consumes a stream of events (``Session.stream_query`` or the gRPC
``Client.stream``) and writes each ResultBatch as it comes, holding one batch at a
time, never the whole answer.  The file appears only when the stream ended with its
Summary: it is written to ``<path>.part`` and renamed, so a failed or cut-short query
leaves no file (and no half file) behind.  ``skyhook query -o FILE`` uses it.

CSV has no list type: a CSV answer with collection columns is refused before any row
is written (use Parquet, Arrow or JSON lines for those).
"""

from __future__ import annotations

import json
import os

import pyarrow as pa

from ..errors import ProtocolError, QueryError
from .results import PartitionFailure, Progress, ResultBatch, Summary

SUFFIXES = {".parquet": "parquet", ".pq": "parquet", ".arrow": "arrow", ".feather": "arrow",
            ".ipc": "arrow", ".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}


def format_of(path) -> str | None:
    """The output format a file name asks for (by suffix), None if none is known."""
    return SUFFIXES.get(os.path.splitext(os.fspath(path))[1].lower())


class _Writer:
    def __init__(self, kind: str, path: str, schema: pa.Schema):
        self.kind = kind
        if kind == "parquet":
            import pyarrow.parquet as pq

            self._w = pq.ParquetWriter(path, schema)
        elif kind == "arrow":
            self._sink = pa.OSFile(path, "wb")
            self._w = pa.ipc.new_file(self._sink, schema)
        elif kind == "csv":
            import pyarrow.csv as pacsv

            lists = [f.name for f in schema if pa.types.is_list(f.type) or pa.types.is_large_list(f.type)
                     or pa.types.is_fixed_size_list(f.type) or pa.types.is_struct(f.type)]
            if lists:
                raise QueryError(f"CSV cannot hold collection columns ({', '.join(lists[:5])}"
                                 f"{', ...' if len(lists) > 5 else ''}): write .parquet, .arrow or .jsonl")
            self._w = pacsv.CSVWriter(path, schema)
        else:
            self._f = open(path, "w", encoding="utf-8")
            self._w = None

    def write(self, table: pa.Table):
        if self.kind == "jsonl":
            for batch in table.to_batches(max_chunksize=4096):
                self._f.write("".join(json.dumps(row, allow_nan=True) + "\n" for row in batch.to_pylist()))
        else:
            self._w.write_table(table)

    def close(self):
        if self.kind == "jsonl":
            self._f.close()
            return
        self._w.close()
        if self.kind == "arrow":
            self._sink.close()


def write_events(events, path, *, empty_table=None, on_progress=None, keep_rows: int = 0,
                 format: str | None = None):
    """Write the rows of ``events`` to ``path`` (format from the suffix, or ``format``) as
    they arrive.

    Returns (summary, failures, rows written, head): ``head`` holds the first
    ``keep_rows`` rows (for showing), nothing more is kept.  ``empty_table()`` gives
    the columns of an answer without rows."""
    kind = format or format_of(path)
    if kind is None:
        raise QueryError(f"cannot tell the output format of {os.fspath(path)!r}: use one of "
                         f"{', '.join(sorted(SUFFIXES))}")
    tmp = f"{os.fspath(path)}.part"
    writer, summary, failures, rows, head = None, None, [], 0, []
    try:
        for ev in events:
            if isinstance(ev, ResultBatch) and ev.table is not None:
                if writer is None:
                    writer = _Writer(kind, tmp, ev.table.schema)
                if ev.table.num_rows:
                    writer.write(ev.table)
                    if rows < keep_rows:
                        head.append(ev.table.slice(0, keep_rows - rows))
                    rows += ev.table.num_rows
            elif isinstance(ev, PartitionFailure):
                failures.append(ev)
            elif isinstance(ev, Progress):
                if on_progress is not None:
                    on_progress(ev)
            elif isinstance(ev, Summary):
                summary = ev
        if summary is None:
            raise ProtocolError(f"the answer ended without its summary: it is incomplete "
                                f"({rows:,} rows received); {os.fspath(path)!r} not written")
        if writer is None:
            empty = empty_table() if empty_table else None
            writer = _Writer(kind, tmp, empty.schema if empty is not None else pa.schema([]))
            if empty is not None:
                head.append(empty)
        writer.close()
        writer = None
        os.replace(tmp, path)
    finally:
        if writer is not None:
            try:
                writer.close()
            except Exception:  # noqa: BLE001 - the first error is the one to report
                pass
        if os.path.exists(tmp):
            os.remove(tmp)
    head_table = pa.concat_tables(head) if head else None
    return summary, failures, rows, head_table
