"""A dataset version in pieces: a small header and columnar partition tables.

The header (``manifest.<dataset>``, JSON, swapped atomically as before) holds the
schema once, the encoding, the sources, the counts, per-column byte totals and the
list of **segments**.  A segment covers a contiguous range of partitions (at most
SEGMENT_ROWS) and is stored as immutable objects named after the commit that wrote
them, under the ``manifest.`` prefix that the query key may read:

- ``manifest.<dataset>@<writer>.t<seg>``: the partition table, an Arrow IPC stream
  (ZSTD) of object, event_start, event_stop, bytes, source, entry_start, entry_stop;
- ``manifest.<dataset>@<writer>.s<seg>.<group>``: the statistics of a group of
  consecutive columns: a 16-byte head (``SKYSTAT1``, rows, columns as uint32 LE) then,
  per column, STAT_FIELDS x rows float64 (little-endian), NaN where absent.  A column's
  statistics are one contiguous range at an offset computed from the header alone, so
  planning reads exactly the columns a cut references.  Groups are sized so that no
  object passes MAX_PIECE_BYTES.

An append writes segments for its new partitions only and shares every older
segment, except that the trailing segments that are not full and no larger than the
new part are merged with it (a binary counter), then cut into full segments and a
remainder: a version holds the full segments plus O(log SEGMENT_ROWS) partial ones,
and a partition's statistics are rewritten O(log SEGMENT_ROWS) times over its life.

This module reads and writes pieces; the header's guarded swap is manifest.commit's.
"""

from __future__ import annotations

import base64
import json
import math
import re
import secrets
import struct
import threading

import numpy as np
import pyarrow as pa

from ..errors import SkyhookError

STAT_FIELDS = ("min", "max", "null_count", "nan_count", "bytes", "min_length", "max_length")
NF = len(STAT_FIELDS)
SEGMENT_ROWS = 4096
MAX_PIECE_BYTES = 16_000_000   # the bound, 16 MB
STATS_MAGIC = b"SKYSTAT1"
STATS_HEAD = 16
_PIECE = re.compile(r"[0-9a-f]{12}\.(t\d{6}|s\d{6}\.\d{4}|r\d{6})")
SOURCE_STR = ("path", "name", "sha256", "tree")
SOURCE_INT = ("size", "entries", "event_start")
TABLE_FIELDS = ("event_start", "event_stop", "bytes", "source", "entry_start", "entry_stop")
# the partition's block checksums (storage/checksum.py) as JSON text; null for partitions
# written before checksums (not verified), and absent from tables written before it
CHECKSUM_FIELD = "checksum"


class PieceMissingError(SkyhookError):
    """A piece of a loaded version is gone: gc collected it after a newer version was
    committed (the reader held the old header), or the metadata is damaged."""

    def __init__(self, message: str, obj: str = ""):
        super().__init__(message)
        self.message = message
        self.object = obj


def reload_after_missing_piece(store, old, error: PieceMissingError):
    """The current version of ``old``'s dataset, for a reader whose version lost a piece
    to gc: a newer version is loaded afresh (the caller replans on it, once); if the
    version it holds is still the current one, the piece is really lost and a clear
    error says so; a dataset deleted meanwhile raises UnknownDatasetError."""
    from .manifest import load_manifest

    fresh = load_manifest(store, old.dataset)
    if fresh.identity() == old.identity():
        raise SkyhookError(f"{error.message.split(' (removed by gc')[0]}, and version {old.version} is "
                           f"still the current one: the dataset's metadata is damaged") from error
    if not fresh.schema.equals(old.schema):
        raise SkyhookError(f"version {old.version} of dataset {old.dataset!r} was collected by gc while "
                           f"this query read it, and version {fresh.version} has another schema: "
                           "run the query again") from error
    return fresh


def piece_dataset(obj: str) -> str | None:
    """The dataset a manifest piece belongs to, None if ``obj`` is not a piece
    ('@' never occurs in a dataset name)."""
    if not obj.startswith("manifest.") or "@" not in obj:
        return None
    ds, _, rest = obj[len("manifest."):].rpartition("@")
    return ds if _PIECE.fullmatch(rest) else None


def _table_object(dataset, writer, seg):
    return f"manifest.{dataset}@{writer}.t{seg:06d}"


def _stats_object(dataset, writer, seg, group):
    return f"manifest.{dataset}@{writer}.s{seg:06d}.{group:04d}"


def _sources_object(dataset, writer, n):
    return f"manifest.{dataset}@{writer}.r{n:06d}"


def _encode_sources(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema,
                           options=pa.ipc.IpcWriteOptions(compression="zstd")) as w:
        w.write_table(table)
    return sink.getvalue().to_pybytes()


def _sources_table(sources) -> pa.Table:
    cols = [pa.array([getattr(s, f) for s in sources], pa.string()) for f in SOURCE_STR]
    cols += [pa.array([getattr(s, f) for s in sources], pa.int64()) for f in SOURCE_INT]
    return pa.table(cols, names=[*SOURCE_STR, *SOURCE_INT])


def group_columns(rows: int, ncols: int) -> int:
    """Columns per statistics object for a segment of ``rows`` partitions."""
    per_col = NF * 8 * max(1, rows)
    return max(1, min(ncols, (MAX_PIECE_BYTES - STATS_HEAD) // per_col))


# -- partitions <-> arrays -------------------------------------------------------------
def table_arrays(partitions) -> dict:
    out = {"object": np.array([p.object for p in partitions], dtype=object)}
    for f in TABLE_FIELDS:
        out[f] = np.fromiter((getattr(p, f) for p in partitions), dtype=np.int64,
                             count=len(partitions))
    out[CHECKSUM_FIELD] = np.array([None if p.checksum is None else json.dumps(p.checksum)
                                    for p in partitions], dtype=object)
    return out


def lower_bound(v) -> float:
    """A float64 no greater than ``v`` (an int past 2^53 may round up: unsound for a min)."""
    f = float(v)
    if not isinstance(v, float) and f > v:
        f = math.nextafter(f, -math.inf)
    return f


def upper_bound(v) -> float:
    f = float(v)
    if not isinstance(v, float) and f < v:
        f = math.nextafter(f, math.inf)
    return f


def stats_matrix(partitions, names) -> np.ndarray:
    """(len(names), NF, len(partitions)) float64 from the partitions' statistics dicts."""
    out = np.full((len(names), NF, len(partitions)), np.nan)
    for j, p in enumerate(partitions):
        cols = (p.stats or {}).get("columns") or {}
        for i, name in enumerate(names):
            s = cols.get(name)
            if not s:
                continue
            if s.get("min") is not None and s.get("max") is not None:
                out[i, 0, j] = lower_bound(s["min"])
                out[i, 1, j] = upper_bound(s["max"])
            for k in range(2, NF):
                v = s.get(STAT_FIELDS[k])
                if v is not None:
                    out[i, k, j] = v
    return out


def _stats_dicts(table: dict, stats: np.ndarray, names) -> list[dict]:
    """Back to statistics dicts (float values), for ``Manifest.partitions``."""
    n = len(table["event_start"])
    out = []
    for j in range(n):
        cols = {}
        for i, name in enumerate(names):
            col = stats[i, :, j]
            s = {}
            if not math.isnan(col[0]):
                s["min"], s["max"] = float(col[0]), float(col[1])
            for k in range(2, NF):
                if not math.isnan(col[k]):
                    s[STAT_FIELDS[k]] = int(col[k])
            if s:
                cols[name] = s
        out.append({"version": 1, "rows": int(table["event_stop"][j] - table["event_start"][j]),
                    "columns": cols})
    return out


# -- writing -------------------------------------------------------------------------
def _encode_table(table: dict) -> bytes:
    n = len(table["object"])
    crcs = table.get(CHECKSUM_FIELD)
    batch = pa.record_batch([pa.array(list(table["object"]), pa.string())]
                            + [pa.array(table[f], pa.int64()) for f in TABLE_FIELDS]
                            + [pa.array(list(crcs) if crcs is not None else [None] * n, pa.string())],
                            names=["object", *TABLE_FIELDS, CHECKSUM_FIELD])
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema,
                           options=pa.ipc.IpcWriteOptions(compression="zstd")) as w:
        w.write_batch(batch)
    return sink.getvalue().to_pybytes()


def write_segment(store, dataset: str, writer: str, seg: int, first: int, table: dict,
                  stats: np.ndarray, written: list) -> dict:
    """Write one segment (``stats``: (ncols, NF, rows)); returns its header entry."""
    rows = len(table["event_start"])
    ncols = stats.shape[0]
    name = _table_object(dataset, writer, seg)
    written.append(name)
    store.write_full(name, _encode_table(table))
    g = group_columns(rows, ncols)
    groups = []
    for gi, c0 in enumerate(range(0, ncols, g)):
        block = np.ascontiguousarray(stats[c0:c0 + g], dtype="<f8")
        name = _stats_object(dataset, writer, seg, gi)
        written.append(name)
        store.write_full(name, STATS_MAGIC + struct.pack("<II", rows, block.shape[0]) + block.tobytes())
        groups.append([name, c0, block.shape[0]])
    return {"first": first, "rows": rows, "table": _table_object(dataset, writer, seg), "stats": groups}


def _split(total: int) -> list[tuple[int, int]]:
    return [(a, min(total, a + SEGMENT_ROWS)) for a in range(0, total, SEGMENT_ROWS)]


def write_pieces(store, m) -> tuple[bytes, list[str]]:
    """Write the segments ``m`` does not share and build its header; returns (header
    bytes, names written).  A failure removes what it wrote."""
    names = m.schema.names
    writer = secrets.token_hex(6)
    written: list[str] = []
    try:
        if m.base is not None and m.base.pieces is not None:
            base = m.base.pieces
            segments = [dict(s) for s in base.segments]
            col_bytes = list(base.header["column_bytes"]) if base.header.get("column_bytes") else None
            new = m._new
            first = base.num_partitions
            ncols = len(names)
            new_stats = stats_matrix(new, names)
            tbl, st, start = table_arrays(new), new_stats, first
            # merge the trailing segments that are not full and no larger than what comes
            # after them (a binary counter), then cut into full segments and a remainder
            while (segments and segments[-1]["rows"] < SEGMENT_ROWS
                   and segments[-1]["rows"] <= len(tbl["event_start"])):
                prev = segments.pop()
                ta, sa = base.read_segment(prev, ncols)
                tbl = {k: np.concatenate([ta[k], tbl[k]]) for k in tbl}
                st = np.concatenate([sa, st], axis=2)
                start = prev["first"]
            for a, b in _split(len(tbl["event_start"])):
                segments.append({"first": start + a, "rows": b - a,
                                 "mem": ({k: v[a:b] for k, v in tbl.items()}, st[:, :, a:b])})
            for i, seg in enumerate(segments):
                if "mem" in seg:
                    tbl, st = seg.pop("mem")
                    segments[i] = write_segment(store, m.dataset, writer, i, seg["first"], tbl, st, written)
            if col_bytes is not None:
                add = new_stats[:, STAT_FIELDS.index("bytes"), :]
                if np.isnan(add).any():
                    col_bytes = None
                else:
                    col_bytes = [int(a + b) for a, b in zip(col_bytes, add.sum(axis=1))]
        else:
            parts = m.partitions
            segments = []
            for seg_no, (a, b) in enumerate(_split(len(parts))):
                part = parts[a:b]
                segments.append(write_segment(store, m.dataset, writer, seg_no, a, table_arrays(part),
                                              stats_matrix(part, names), written))
            cb = m.column_bytes()
            col_bytes = None if cb is None else [int(cb.get(n, 0)) for n in names]
        chunks, n_sources = _write_source_chunks(store, m, writer, written)
        header = {
            "format": "skyhook-manifest", "format_version": 2,
            "dataset": m.dataset, "version": m.version, "created": m.created,
            "previous_version": m.previous_version, "writer": writer,
            "metadata": dict(m.metadata), "change": m.change,
            "encoding": dict(m.encoding),
            "schema": base64.b64encode(m.schema.serialize().to_pybytes()).decode("ascii"),
            "num_events": m.num_events,
            "num_partitions": sum(s["rows"] for s in segments),
            "column_bytes": col_bytes,
            "num_sources": n_sources,
            "source_chunks": chunks,
            "segments": segments,
        }
        if getattr(m, "provenance", None) is not None:
            header["provenance"] = m.provenance
        return json.dumps(header, separators=(",", ":")).encode(), written
    except BaseException:
        for name in written:
            try:
                store.remove(name)
            except Exception:  # noqa: BLE001
                pass
        raise


def _write_source_chunks(store, m, writer, written):
    """The sources in chunks of at most SEGMENT_ROWS, shared and merged as segments are."""
    if m.base is not None and m.base.pieces is not None:
        base = m.base.pieces
        chunks = [dict(c) for c in base.header["source_chunks"]]
        table, start = _sources_table(m._new_sources), base.num_sources
        while chunks and chunks[-1]["rows"] < SEGMENT_ROWS and chunks[-1]["rows"] <= table.num_rows:
            prev = chunks.pop()
            table = pa.concat_tables([base._source_chunk(prev), table])
            start = prev["first"]
    else:
        chunks, table, start = [], _sources_table(m.sources), 0
    for a, b in _split(table.num_rows):
        name = _sources_object(m.dataset, writer, len(chunks))
        written.append(name)
        store.write_full(name, _encode_sources(table.slice(a, b - a)))
        chunks.append({"object": name, "first": start + a, "rows": b - a})
    return chunks, sum(c["rows"] for c in chunks)


# -- reading -------------------------------------------------------------------------
class Pieces:
    """The pieces of one loaded version: read on demand, kept once read (immutable)."""

    def __init__(self, store, header: dict, where: str):
        self.store, self.header, self.where = store, header, where
        self.segments = header["segments"]
        self.writer = header.get("writer", "")
        self.num_partitions = int(header["num_partitions"])
        self.num_sources = int(header["num_sources"])
        self._sources = None
        self._table = None
        self._columns: dict[int, np.ndarray] = {}
        self._lock = threading.Lock()
        self.bytes_read = 0

    def _read(self, obj: str, length: int | None = None, offset: int = 0) -> bytes:
        try:
            data = self.store.read(obj, length=length, offset=offset) if length is not None \
                else self.store.read(obj)
        except FileNotFoundError:
            raise PieceMissingError(f"{self.where}: piece {obj!r} is missing (removed by gc after a "
                                    "newer version? query again)", obj) from None
        if length is not None and len(data) != length:
            raise SkyhookError(f"corrupt {self.where}: piece {obj!r} holds {len(data)} bytes at "
                               f"offset {offset}, expected {length}")
        self.bytes_read += len(data)
        return data

    def _segment_table(self, seg: dict) -> dict:
        data = self._read(seg["table"])
        try:
            t = pa.ipc.open_stream(pa.py_buffer(data)).read_all()
        except pa.ArrowInvalid as e:
            raise SkyhookError(f"corrupt {self.where}: piece {seg['table']!r}: {e}") from e
        if t.num_rows != seg["rows"]:
            raise SkyhookError(f"corrupt {self.where}: piece {seg['table']!r} has {t.num_rows} "
                               f"partitions, the header says {seg['rows']}")
        out = {"object": np.array(t.column("object").to_pylist(), dtype=object)}
        for f in TABLE_FIELDS:
            out[f] = t.column(f).to_numpy()
        out[CHECKSUM_FIELD] = np.array(t.column(CHECKSUM_FIELD).to_pylist()
                                       if CHECKSUM_FIELD in t.column_names else [None] * t.num_rows,
                                       dtype=object)
        return out

    def _segment_column(self, seg: dict, col: int) -> np.ndarray:
        rows = seg["rows"]
        for name, c0, n in seg["stats"]:
            if c0 <= col < c0 + n:
                size = NF * 8 * rows
                data = self._read(name, size, STATS_HEAD + (col - c0) * size)
                return np.frombuffer(data, dtype="<f8").reshape(NF, rows)
        raise SkyhookError(f"corrupt {self.where}: no statistics piece holds column {col}")

    def read_segment(self, seg: dict, ncols: int):
        """A whole segment: (table arrays, stats (ncols, NF, rows)) (for merges)."""
        table = self._segment_table(seg)
        stats = np.empty((ncols, NF, seg["rows"]))
        for name, c0, n in seg["stats"]:
            data = self._read(name)
            head = data[:STATS_HEAD]
            if head[:8] != STATS_MAGIC or struct.unpack("<II", head[8:]) != (seg["rows"], n) \
                    or len(data) != STATS_HEAD + n * NF * 8 * seg["rows"]:
                raise SkyhookError(f"corrupt {self.where}: statistics piece {name!r}")
            stats[c0:c0 + n] = np.frombuffer(data, dtype="<f8", offset=STATS_HEAD).reshape(n, NF, seg["rows"])
        return table, stats

    def table(self) -> dict:
        with self._lock:
            if self._table is None:
                parts = [self._segment_table(s) for s in self.segments]
                if parts:
                    self._table = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
                else:
                    self._table = {"object": np.array([], dtype=object),
                                   **{f: np.array([], dtype=np.int64) for f in TABLE_FIELDS},
                                   CHECKSUM_FIELD: np.array([], dtype=object)}
            return self._table

    def column(self, col: int) -> np.ndarray:
        with self._lock:
            got = self._columns.get(col)
            if got is None:
                blocks = [self._segment_column(s, col) for s in self.segments]
                got = np.concatenate(blocks, axis=1) if blocks else np.empty((NF, 0))
                self._columns[col] = got
            return got

    def column_bytes(self, names) -> dict[str, int] | None:
        cb = self.header.get("column_bytes")
        return None if cb is None else dict(zip(names, cb))

    def materialize(self, names) -> list:
        from .manifest import Partition

        t = self.table()
        stats = np.stack([self.column(i) for i in range(len(names))]) if names else \
            np.empty((0, NF, self.num_partitions))
        dicts = _stats_dicts(t, stats, names)
        return [Partition(object=str(t["object"][j]), event_start=int(t["event_start"][j]),
                          event_stop=int(t["event_stop"][j]), bytes=int(t["bytes"][j]),
                          source=int(t["source"][j]), entry_start=int(t["entry_start"][j]),
                          entry_stop=int(t["entry_stop"][j]), stats=dicts[j],
                          checksum=None if t[CHECKSUM_FIELD][j] is None else json.loads(t[CHECKSUM_FIELD][j]))
                for j in range(len(t["event_start"]))]

    def _source_chunk(self, chunk: dict) -> pa.Table:
        data = self._read(chunk["object"])
        try:
            t = pa.ipc.open_stream(pa.py_buffer(data)).read_all()
        except pa.ArrowInvalid as e:
            raise SkyhookError(f"corrupt {self.where}: piece {chunk['object']!r}: {e}") from e
        if t.num_rows != chunk["rows"]:
            raise SkyhookError(f"corrupt {self.where}: piece {chunk['object']!r} has {t.num_rows} "
                               f"sources, the header says {chunk['rows']}")
        return t

    def source_table(self) -> pa.Table:
        with self._lock:
            if self._sources is None:
                tables = [self._source_chunk(c) for c in self.header["source_chunks"]]
                self._sources = pa.concat_tables(tables) if tables else _sources_table([])
            return self._sources

    def sources(self) -> list:
        from .manifest import Source

        return [Source(**row) for row in self.source_table().to_pylist()]

    def known_sources(self) -> dict[str, str]:
        t = self.source_table()
        return dict(zip(t.column("sha256").to_pylist(), t.column("path").to_pylist()))

    def first_tree(self) -> str | None:
        chunks = self.header["source_chunks"]
        if not chunks:
            return None
        return self._source_chunk(chunks[0]).column("tree")[0].as_py()

    def objects(self) -> set[str]:
        out = {c["object"] for c in self.header["source_chunks"]}
        for s in self.segments:
            out.add(s["table"])
            out.update(g[0] for g in s["stats"])
        return out


def from_header(store, d: dict, where: str):
    from .manifest import FORMAT, Manifest

    try:
        if d.get("format") != FORMAT:
            raise ValueError(f"not a skyhook manifest (format {d.get('format')!r})")
        if d.get("format_version") != 2:
            raise ValueError(f"manifest format_version {d.get('format_version')!r}, "
                             "this Skyhook reads 1 and 2")
        schema = pa.ipc.read_schema(pa.py_buffer(base64.b64decode(d["schema"])))
        return Manifest(dataset=d["dataset"], version=int(d["version"]), schema=schema,
                        partitions=None, sources=None,
                        encoding=dict(d["encoding"]), created=d.get("created", ""),
                        previous_version=d.get("previous_version"),
                        metadata=d.get("metadata") or {}, change=d.get("change", ""),
                        pieces=Pieces(store, d, where), provenance=d.get("provenance"))
    except (ValueError, KeyError, TypeError) as e:
        raise SkyhookError(f"corrupt {where}: {e}") from e
