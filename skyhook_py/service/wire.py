"""Translation between the domain objects and the messages of proto/skyhook/v1.

Both ends of the gRPC API use it: the servicer (skyhook_py.service.server) to encode
events, summaries and dataset descriptions, the client (skyhook_py.service.client) to
decode them back into the same ``results`` dataclasses the in-process Session
yields.  Pure data conversion: no grpc import, no I/O, no policy.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
import struct

import numpy as np
import pyarrow as pa

from ..errors import QueryError
from ..query import ir
from ..query.results import PartitionFailure, Progress, ResultBatch, Summary, table_bytes
from ._grpc_stubs import pb

LANGUAGES = {"cut": pb.CUT, "qastle": pb.QASTLE, "uproot-raw": pb.UPROOT_RAW}
LANGUAGE_NAMES = {v: k for k, v in LANGUAGES.items()}
PUSHDOWN = {"auto": pb.PUSHDOWN_AUTO, "on": pb.PUSHDOWN_ON, "off": pb.PUSHDOWN_OFF}
PUSHDOWN_NAMES = {v: k for k, v in PUSHDOWN.items()}
OUTPUT_FORMATS = {"arrow": pb.ARROW_IPC, "parquet": pb.PARQUET}
# result chunks compressed for the client (Arrow's and Parquet's codec names)
RESULT_COMPRESSIONS = {None: pb.RESULT_UNCOMPRESSED, "lz4": pb.RESULT_LZ4, "zstd": pb.RESULT_ZSTD}
RESULT_COMPRESSION_NAMES = {v: k for k, v in RESULT_COMPRESSIONS.items()}
RESULT_CODECS = sorted(k for k in RESULT_COMPRESSIONS if k)   # for messages

# One result chunk carries at most about this many bytes of Arrow data, well under
# gRPC's default 4 MiB message limit, and small enough to keep the stream flowing.
CHUNK_BYTES = 1 << 20
# An OSD's answer up to this size is forwarded as it came (its Arrow IPC stream, not
# cut and encoded again: at 100 % of 10 columns a 50,000-event partition is 2.7 MB),
# still under the 4 MiB that gRPC clients accept by default, with room for the message.
FORWARD_BYTES = (4 << 20) - (64 << 10)


@dataclasses.dataclass
class IpcRows:
    """Rows already encoded as one Arrow IPC stream, sent as they are: the fast path's
    merge of close OSD answers (splice_ipc_streams; service/fastpath.py)."""

    partition: int      # the first merged partition's
    ipc: bytes
    num_rows: int


_IPC_CONTINUATION = b"\xff\xff\xff\xff"
_IPC_END = _IPC_CONTINUATION + b"\x00\x00\x00\x00"


def splice_ipc_streams(streams) -> bytes | None:
    """One Arrow IPC stream holding the record batches of ``streams`` in order, made
    without decoding them: the first stream's schema message, every stream's messages
    after its schema, one end marker.  None unless every stream starts with the same
    schema message (the same bytes) and ends with the end marker.  The streams must
    hold no dictionaries (a second stream's would replace the first's).  Costs a copy
    of the bytes (4 µs for 8 small answers) where decoding, concatenating and encoding
    again cost 200 µs."""
    if not streams or any(s is None for s in streams):
        return None
    first = streams[0]
    if len(first) < 16 or first[:4] != _IPC_CONTINUATION:
        return None
    head = 8 + struct.unpack_from("<i", first, 4)[0]   # the schema message: no body
    if head <= 8 or head + 8 > len(first):
        return None
    schema = first[:head]
    parts = []
    for s in streams:
        if len(s) < head + 8 or s[:head] != schema or s[-8:] != _IPC_END:
            return None
        parts.append(memoryview(s)[head:len(s) - 8])
    return b"".join([schema, *parts, _IPC_END])


# -- expressions (for aggregations and computed columns) --------------------------

def expression_to_proto(e) -> "pb.Expression":
    if isinstance(e, ir.Expr):
        return pb.Expression(ir_json=json.dumps(e.key()))
    if isinstance(e, str):
        return pb.Expression(text=e)
    raise QueryError(f"an expression must be text or an IR node, got {e!r} ({type(e).__name__})")


def expression_from_proto(p, where: str):
    """The IR of an Expression message (text is parsed; the compile entry checks it
    against the dataset's schema), or None."""
    from ..query import lang

    form = p.WhichOneof("form")
    if form is None:
        return None
    if form == "text":
        return lang.compile_expression(p.text)
    try:
        return _expr_from_key(json.loads(p.ir_json))
    except (QueryError, ValueError, TypeError, IndexError, RecursionError) as e:
        raise QueryError(f"the IR of the {where} is malformed: {e}") from None


def _expr_from_key(k):
    tag = k[0]
    if tag == "col":
        return ir.Column(str(k[1]))
    if tag == "lit":
        kind, v = k[1], k[2]
        if kind == "bool":
            return ir.Literal(bool(v))
        if kind == "int":
            return ir.Literal(int(v))
        return ir.Literal(float("nan") if v == "nan" else float(v))
    if tag == "call":
        return ir.Call(ir.Op(int(k[1])), tuple(_expr_from_key(a) for a in k[3]), int(k[2]))
    raise ValueError(f"unknown IR node tag {tag!r}")


def aggregation_to_proto(a) -> "pb.Aggregation":
    """An ir.Aggregation, or a dict such as ``{"kind": "hist1d", "name": "met",
    "x": "MET_pt", "bins": 50, "low": 0, "high": 200}``."""
    if isinstance(a, ir.Aggregation):
        msg = pb.Aggregation(kind=int(a.kind), name=a.name)
        for role in ("x", "y", "weight"):
            e = getattr(a, role)
            if e is not None:
                getattr(msg, role).CopyFrom(expression_to_proto(e))
        for role in ("x_axis", "y_axis"):
            ax = getattr(a, role)
            if ax is not None:
                getattr(msg, role).CopyFrom(pb.Axis(bins=ax.bins, low=ax.low, high=ax.high))
        return msg
    if isinstance(a, dict):
        d = dict(a)
        kinds = {k.name.lower(): k for k in ir.AggKind}
        kind = str(d.pop("kind", "")).lower()
        if kind not in kinds:
            raise QueryError(f"aggregation kind must be one of {sorted(kinds)}, got {kind!r}")
        msg = pb.Aggregation(kind=int(kinds[kind]), name=str(d.pop("name", kind)))
        for role in ("x", "y", "weight"):
            if d.get(role) is not None:
                getattr(msg, role).CopyFrom(expression_to_proto(d.pop(role)))
        if "bins" in d:
            msg.x_axis.CopyFrom(pb.Axis(bins=int(d.pop("bins")), low=float(d.pop("low")), high=float(d.pop("high"))))
        if "y_bins" in d:
            msg.y_axis.CopyFrom(pb.Axis(bins=int(d.pop("y_bins")), low=float(d.pop("y_low")),
                                        high=float(d.pop("y_high"))))
        if d:
            raise QueryError(f"unknown keys in aggregation {msg.name!r}: {sorted(d)}")
        return msg
    raise QueryError(f"an aggregation must be an ir.Aggregation or a dict, got {a!r}")


def aggregation_from_proto(p) -> ir.Aggregation:
    where = f"aggregation {p.name!r}"
    axis = lambda f: ir.Axis(int(getattr(p, f).bins), getattr(p, f).low, getattr(p, f).high) \
        if p.HasField(f) else None  # noqa: E731
    return ir.Aggregation(
        ir.AggKind(p.kind), p.name,
        x=expression_from_proto(p.x, where),
        y=expression_from_proto(p.y, where),
        weight=expression_from_proto(p.weight, where),
        x_axis=axis("x_axis"), y_axis=axis("y_axis"))


# -- generic values (aggregates) -----------------------------------------------------

def value_to_proto(v) -> "pb.Value":
    if v is None:
        return pb.Value(is_null=True)
    if isinstance(v, (bool, np.bool_)):
        return pb.Value(boolean=bool(v))
    if isinstance(v, (int, np.integer)) and -(2**63) <= int(v) < 2**63:
        return pb.Value(integer=int(v))
    if isinstance(v, (int, np.integer)) and 2**63 <= int(v) < 2**64:
        return pb.Value(unsigned_integer=int(v))   # exact, not through float
    if isinstance(v, (float, np.floating, int, np.integer)):
        return pb.Value(real=float(v))
    if isinstance(v, str):
        return pb.Value(text=v)
    if isinstance(v, np.ndarray):
        a = np.ascontiguousarray(v)
        if a.dtype.kind not in "biuf":
            raise TypeError(f"cannot send an array of dtype {a.dtype}")
        return pb.Value(array=pb.NDArray(dtype=a.dtype.str, shape=list(a.shape), data=a.tobytes()))
    if isinstance(v, dict):
        return pb.Value(map=pb.ValueMap(entries={str(k): value_to_proto(x) for k, x in v.items()}))
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        entries = {f.name: value_to_proto(getattr(v, f.name)) for f in dataclasses.fields(v)}
        return pb.Value(map=pb.ValueMap(entries=entries, type_name=f"{type(v).__module__}.{type(v).__qualname__}"))
    if isinstance(v, (list, tuple)):
        return pb.Value(list=pb.ValueList(items=[value_to_proto(x) for x in v]))
    raise TypeError(f"cannot send a value of type {type(v).__name__}")


def value_from_proto(p):
    kind = p.WhichOneof("kind")
    if kind in (None, "is_null"):
        return None
    if kind == "array":
        a = p.array
        return np.frombuffer(a.data, dtype=np.dtype(a.dtype)).reshape(tuple(a.shape)).copy()
    if kind == "map":
        d = {k: value_from_proto(x) for k, x in p.map.entries.items()}
        cls = _dataclass_named(p.map.type_name)
        return cls(**d) if cls is not None else d
    if kind == "list":
        return [value_from_proto(x) for x in p.list.items]
    return getattr(p, kind)


def _dataclass_named(name: str):
    # only our own dataclasses are rebuilt; anything else stays a dict
    module, _, qual = name.rpartition(".")
    if not module.startswith("skyhook_py."):
        return None
    try:
        cls = getattr(importlib.import_module(module), qual)
    except (ImportError, AttributeError):
        return None
    return cls if dataclasses.is_dataclass(cls) else None


# -- summary ------------------------------------------------------------------------

_SUMMARY_SCALARS = [f.name for f in dataclasses.fields(Summary)
                    if f.name not in ("aggregates", "fallen_back_objects")]


def summary_to_proto(s: Summary, server_seconds: float = 0.0) -> "pb.Summary":
    msg = pb.Summary(**{k: getattr(s, k) for k in _SUMMARY_SCALARS}, server_seconds=server_seconds)
    msg.fallen_back_objects.extend(s.fallen_back_objects)
    for name, v in (s.aggregates or {}).items():
        msg.aggregates[name].CopyFrom(value_to_proto(v))
    return msg


def summary_from_proto(p) -> Summary:
    s = Summary(**{k: getattr(p, k) for k in _SUMMARY_SCALARS})
    s.fallen_back_objects = list(p.fallen_back_objects)
    s.aggregates = {k: value_from_proto(v) for k, v in p.aggregates.items()}
    s.server_seconds = p.server_seconds  # not a field of Summary: an extra the client shows
    return s


# -- events -------------------------------------------------------------------------

def event_to_protos(ev, query_id: str, output_format: int = pb.ARROW_IPC, server_seconds: float = 0.0,
                    compression: str | None = None):
    """One domain event as one or more QueryEvent messages (large tables are cut into
    chunks); ``compression`` (RESULT_COMPRESSIONS): result chunks encoded with that codec."""
    if isinstance(ev, Progress):
        yield pb.QueryEvent(query_id=query_id, progress=pb.Progress(**dataclasses.asdict(ev)))
    elif isinstance(ev, ResultBatch):
        if (ev.ipc is not None and output_format == pb.ARROW_IPC and compression is None
                and len(ev.ipc) <= FORWARD_BYTES):
            # forward the OSD's IPC stream, do not cut and encode it again
            yield pb.QueryEvent(query_id=query_id, result=pb.ResultChunk(
                partition=ev.partition, data=ev.ipc, num_rows=ev.table.num_rows))
            return
        for piece in _pieces(ev.table):
            yield pb.QueryEvent(query_id=query_id, result=pb.ResultChunk(
                partition=ev.partition, data=encode_table(piece, output_format, compression),
                num_rows=piece.num_rows))
    elif isinstance(ev, IpcRows):
        data = ev.ipc if compression is None else encode_table(decode_table(ev.ipc), pb.ARROW_IPC, compression)
        yield pb.QueryEvent(query_id=query_id, result=pb.ResultChunk(
            partition=ev.partition, data=data, num_rows=ev.num_rows))
    elif isinstance(ev, PartitionFailure):
        yield pb.QueryEvent(query_id=query_id, failure=pb.PartitionFailure(
            partition=ev.partition, object=ev.object, errno=ev.errno, message=ev.message))
    elif isinstance(ev, Summary):
        yield pb.QueryEvent(query_id=query_id, summary=summary_to_proto(ev, server_seconds))
    else:  # pragma: no cover - a new event kind needs a message first
        raise TypeError(f"no message for event {type(ev).__name__}")


def last_chunk_to_protos(batch: ResultBatch, summary: Summary, query_id: str,
                         output_format: int = pb.ARROW_IPC, server_seconds: float = 0.0,
                         compression: str | None = None):
    """The messages of an answer's last batch, the Summary in the last one
    (QueryEvent.final_summary: for a request that set QueryOptions.summary_with_rows)."""
    msgs = list(event_to_protos(batch, query_id, output_format, compression=compression))
    msgs[-1].final_summary.CopyFrom(summary_to_proto(summary, server_seconds))
    return msgs


def framed_event(body: bytes) -> bytes:
    """A serialized QueryEvent as one element of QueryAnswer.events (field 1, length
    delimited): QueryWhole joins these into its reply without decoding the events."""
    n, head = len(body), bytearray(b"\x0a")
    while n >= 0x80:
        head.append(n & 0x7F | 0x80)
        n >>= 7
    head.append(n)
    return bytes(head) + body


def events_from_proto(p):
    """The domain events of one QueryEvent: its event, then its final_summary if it has one."""
    ev = event_from_proto(p)
    if ev is not None:
        yield ev
    if p.HasField("final_summary"):
        yield summary_from_proto(p.final_summary)


def event_from_proto(p):
    kind = p.WhichOneof("event")
    if kind == "progress":
        g = p.progress
        return Progress(g.partitions_done, g.partitions_total, g.events_done, g.events_total)
    if kind == "result":
        return ResultBatch(p.result.partition, decode_table(p.result.data))
    if kind == "failure":
        f = p.failure
        return PartitionFailure(f.partition, f.object, f.errno, f.message)
    if kind == "summary":
        return summary_from_proto(p.summary)
    return None  # a newer server's event kind: ignore


def _pieces(table: pa.Table):
    nbytes = table_bytes(table)
    if table.num_rows == 0 or nbytes <= CHUNK_BYTES:
        yield table
        return
    rows = max(1, int(table.num_rows * CHUNK_BYTES / nbytes))
    for start in range(0, table.num_rows, rows):
        yield table.slice(start, rows)


def encode_table(table: pa.Table, output_format: int = pb.ARROW_IPC, compression: str | None = None) -> bytes:
    """``table`` as one Arrow IPC stream or Parquet file; ``compression``: its codec
    (Arrow IPC body compression, or Parquet's; None: plain IPC, Parquet's default)."""
    sink = pa.BufferOutputStream()
    if output_format == pb.PARQUET:
        import pyarrow.parquet as pq

        pq.write_table(table, sink, **({"compression": compression} if compression else {}))
    else:
        with pa.ipc.new_stream(sink, table.schema, options=pa.ipc.IpcWriteOptions(compression=compression)) as w:
            w.write_table(table)
    return sink.getvalue().to_pybytes()


def result_compression(request) -> str | None:
    """The codec a QueryRequest asks its result chunks in (RESULT_COMPRESSIONS)."""
    value = request.options.result_compression
    if value not in RESULT_COMPRESSION_NAMES:
        raise QueryError(f"unknown result compression {value} (known: {RESULT_CODECS})")
    return RESULT_COMPRESSION_NAMES[value]


def decode_table(data: bytes) -> pa.Table:
    if data[:4] == b"PAR1":
        import pyarrow.parquet as pq

        return pq.read_table(pa.BufferReader(data))
    return pa.ipc.open_stream(data).read_all()


# -- datasets -----------------------------------------------------------------------

def description_to_proto(m, request=None, history=None) -> "pb.DatasetDescription":
    """A manifest (skyhook_py.storage.manifest.Manifest) as a DatasetDescription: the
    bounded summary, its catalogue metadata and kept versions (``history``:
    storage.versions.VersionInfo), plus the page of partitions and sources the request
    asks for (storage/summary.py; never the whole manifest)."""
    from ..storage import summary as sm

    types = m.column_types()
    d = sm.summary(m)
    msg = pb.DatasetDescription(
        name=m.dataset, version=m.version, num_events=m.num_events,
        arrow_schema=m.schema.serialize().to_pybytes(), num_partitions=d["num_partitions"],
        num_sources=d["num_sources"], stored_bytes=d["bytes"], created=m.created or "",
        summary_json=json.dumps(d, default=_json_default))
    msg.versions.extend(v for v in (m.previous_version, m.version) if v is not None)
    for field in m.schema:
        t = types.get(field.name)
        msg.columns.add(name=field.name, kind=t.kind if t else "", is_list=bool(t and t.is_list),
                        arrow_type=str(field.type))
    msg.metadata_json = json.dumps(getattr(m, "metadata", {}) or {})
    for v in history or ():
        msg.kept_versions.add(version=v.version, created=v.created, num_events=v.num_events,
                              num_partitions=v.num_partitions, change=v.change,
                              metadata_json=json.dumps(v.metadata), current=v.current)
    if request is None:
        return msg
    stats_columns = list(request.stats_columns)
    n = sm.page_size(request.max_partitions, len(stats_columns))
    if n:
        first = sm.parse_token(m, request.page_token)
        page = sm.partition_page(m, first, n, stats_columns)
        msg.first_partition = first
        for p in page:
            msg.partitions.add(object=p["object"], event_start=p["event_start"], event_stop=p["event_stop"],
                               bytes=p["bytes"], stats_json=json.dumps(p["stats"], default=_json_default))
        if first + len(page) < d["num_partitions"]:
            msg.next_page_token = sm.make_token(m, first + len(page))
    n = max(0, min(int(request.max_sources), sm.MAX_PAGE_SOURCES))
    if n:
        first = sm.parse_token(m, request.source_page_token, "source_page_token")
        page = sm.source_page(m, first, n)
        msg.first_source = first
        for s in page:
            msg.sources.add(name=s["name"], path=s["path"], size=s["size"], sha256=s.get("sha256") or "",
                            tree=s.get("tree") or "", entries=s["entries"], event_start=s["event_start"])
        if first + len(page) < d["num_sources"]:
            msg.next_source_page_token = sm.make_token(m, first + len(page))
    return msg


def entry_to_proto(e: dict) -> "pb.DatasetEntry":
    """A catalogue listing row (catalogue.listing.entries) as a DatasetEntry."""
    return pb.DatasetEntry(name=e["name"], version=int(e.get("version") or 0),
                           metadata_json=json.dumps(e.get("metadata") or {}),
                           num_events=int(e.get("events") or 0), num_partitions=int(e.get("partitions") or 0),
                           created=e.get("created") or "")


def entry_from_proto(d) -> dict:
    return {"name": d.name, "version": d.version, "created": d.created, "events": d.num_events,
            "partitions": d.num_partitions, "metadata": json.loads(d.metadata_json or "{}")}


def _json_default(x):
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    return str(x)


@dataclasses.dataclass
class DatasetInfo:
    """What the client's ``describe`` returns."""

    name: str
    version: int
    versions: list
    num_events: int
    schema: pa.Schema
    columns: dict           # name -> ir.ColumnType
    partitions: list        # dicts: object, event_start, event_stop, bytes, stats
    sources: list           # dicts: name, path, size, sha256, tree, entries, event_start
    manifest: dict          # the summary (storage/summary.py): counts, sizes, encoding
    num_partitions: int = 0
    num_sources: int = 0
    stored_bytes: int = 0
    first_partition: int = 0
    next_page_token: str = ""
    first_source: int = 0
    next_source_page_token: str = ""
    metadata: dict = dataclasses.field(default_factory=dict)
    kept_versions: list = dataclasses.field(default_factory=list)   # dicts, oldest first

    def column_types(self) -> dict:
        return dict(self.columns)


def description_from_proto(p) -> DatasetInfo:
    return DatasetInfo(
        name=p.name, version=p.version, versions=list(p.versions), num_events=p.num_events,
        schema=pa.ipc.read_schema(pa.py_buffer(p.arrow_schema)),
        columns={c.name: ir.ColumnType(c.kind, c.is_list) for c in p.columns},
        partitions=[dict(object=x.object, event_start=x.event_start, event_stop=x.event_stop,
                         bytes=x.bytes, stats=json.loads(x.stats_json or "{}")) for x in p.partitions],
        sources=[dict(name=s.name, path=s.path, size=s.size, sha256=s.sha256, tree=s.tree,
                      entries=s.entries, event_start=s.event_start) for s in p.sources],
        manifest=json.loads(p.summary_json or p.manifest_json or "{}"),
        num_partitions=p.num_partitions, num_sources=p.num_sources, stored_bytes=p.stored_bytes,
        first_partition=p.first_partition, next_page_token=p.next_page_token,
        first_source=p.first_source, next_source_page_token=p.next_source_page_token,
        metadata=json.loads(p.metadata_json or "{}"),
        kept_versions=[dict(version=v.version, created=v.created, num_events=v.num_events,
                            num_partitions=v.num_partitions, change=v.change,
                            metadata=json.loads(v.metadata_json or "{}"), current=v.current)
                       for v in p.kept_versions])


# -- requests -----------------------------------------------------------------------

def spec_from_proto(p, grpc_time_remaining: float | None = None):
    """A QueryRequest as a coordinator.QuerySpec; expressions and aggregations are
    compiled later, against the dataset's schema."""
    from .coordinator import QuerySpec

    language = LANGUAGE_NAMES.get(p.language)
    if language is None:
        raise QueryError(f"unknown query language {p.language} (known: {sorted(LANGUAGES)})")
    pushdown = PUSHDOWN_NAMES.get(p.options.pushdown)
    if pushdown is None:
        raise QueryError(f"unknown pushdown mode {p.options.pushdown} (known: {sorted(PUSHDOWN)})")
    if p.output_format not in OUTPUT_FORMATS.values():
        raise QueryError(f"unknown output format {p.output_format} (known: {sorted(OUTPUT_FORMATS)})")
    result_compression(p)   # raises for an unknown one, before any work
    deadlines = [d for d in (p.options.deadline_ms / 1000 if p.options.deadline_ms else None,
                             grpc_time_remaining) if d is not None]
    event_range = None
    if p.HasField("event_range"):
        event_range = (p.event_range.start, p.event_range.stop if p.event_range.HasField("stop") else None)
    from ..query.compile import check_sizes

    # sizes first, before any work proportional to them (decoding IR, compiling)
    check_sizes(where=p.selection, columns=list(p.columns),
                expressions={i: None for i in range(len(p.expressions))},
                aggregations=p.aggregations)
    exprs = [(x.name, x.expression) for x in p.expressions]
    names = [n for n, _ in exprs]
    if len(set(names)) != len(names):
        seen, dup = set(), []
        for n in names:
            if n in seen and n not in dup:
                dup.append(n)
            seen.add(n)
        raise QueryError(f"computed column names must be unique, repeated: {dup[:10]}"
                         + (f" and {len(dup) - 10} more" if len(dup) > 10 else ""))

    # text stays text (the compile entry parses and checks it); IR is decoded here
    expressions = {name: (e.text if e.WhichOneof("form") == "text"
                          else expression_from_proto(e, f"output column {name!r}"))
                   for name, e in exprs}
    aggs = [aggregation_from_proto(a) for a in p.aggregations]
    return QuerySpec(
        dataset=list(p.datasets) if p.datasets else p.dataset, language=language, selection=p.selection or None,
        columns=list(p.columns) or None, expressions=expressions if exprs else None,
        event_range=event_range, limit=p.limit if p.HasField("limit") else None,
        aggregations=aggs,
        pushdown=pushdown, allow_partial=p.options.allow_partial,
        deadline=min(deadlines) if deadlines else None, query_id=p.query_id,
        use_cache=not p.options.no_cache)


def fill_selection(msg, columns, expressions, event_range):
    """Set the columns, computed expressions and event range of a QueryRequest or a
    SkimRequest (the same fields in both)."""
    msg.columns.extend(columns or [])
    for name, e in (expressions or {}).items():
        msg.expressions.add(name=name, expression=expression_to_proto(e))
    if event_range is not None:
        start, stop = event_range
        msg.event_range.start = int(start or 0)
        if stop is not None:
            msg.event_range.stop = int(stop)


def request_token(request) -> bytes:
    """The identity of what a QueryRequest asks: its deterministic serialization without
    the per-call fields (query id, deadline, no-cache flag, output format, result
    compression).  The coordinator keys compiled queries by it; a Client, the requests
    whose answers were too large for one reply."""
    r = pb.QueryRequest()
    r.CopyFrom(request)
    r.query_id = ""
    r.output_format = 0
    r.options.deadline_ms = 0
    r.options.no_cache = False
    r.options.result_compression = 0
    return r.SerializeToString(deterministic=True)


def request_to_proto(dataset, *, columns=None, where=None, expressions=None, language="cut",
                     event_range=None, limit=None, pushdown="auto", aggregations=(),
                     allow_partial=False, deadline=None, query_id="", output_format="arrow",
                     use_cache=True, summary_with_rows=True, compression=None) -> "pb.QueryRequest":
    if language not in LANGUAGES:
        raise QueryError(f"language must be one of {sorted(LANGUAGES)}, got {language!r}")
    if pushdown not in PUSHDOWN:
        raise QueryError(f"pushdown must be one of {sorted(PUSHDOWN)}, got {pushdown!r}")
    if output_format not in OUTPUT_FORMATS:
        raise QueryError(f"output_format must be one of {sorted(OUTPUT_FORMATS)}, got {output_format!r}")
    if compression not in RESULT_COMPRESSIONS:
        raise QueryError(f"compression must be one of {RESULT_CODECS} or None, got {compression!r}")
    if isinstance(columns, str):
        columns = [columns]
    datasets = [] if isinstance(dataset, str) else list(dataset)
    msg = pb.QueryRequest(
        dataset=dataset if isinstance(dataset, str) else "", datasets=datasets,
        language=LANGUAGES[language], selection=where or "",
        output_format=OUTPUT_FORMATS[output_format], query_id=query_id or "",
        options=pb.QueryOptions(allow_partial=allow_partial, pushdown=PUSHDOWN[pushdown],
                                deadline_ms=int(deadline * 1000) if deadline else 0,
                                no_cache=not use_cache, summary_with_rows=summary_with_rows,
                                result_compression=RESULT_COMPRESSIONS[compression]))
    if where is not None and not isinstance(where, str):
        raise QueryError("over gRPC the selection travels as text; pass where= as a string")
    for c in columns or []:
        if not isinstance(c, str):
            raise QueryError(f"over gRPC, pass computed columns as expressions={{name: expr}}, not {c!r}")
    fill_selection(msg, columns, expressions, event_range)
    if limit is not None:
        msg.limit = int(limit)
    msg.aggregations.extend(aggregation_to_proto(a) for a in aggregations or ())
    return msg
