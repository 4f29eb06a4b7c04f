"""The wire codec: IR nodes <-> the flatbuffers ScanRequest/ScanReply of formats/skyhook_scan.fbs.

``encode_scan_request`` flattens expression trees into the request's node list
(deduplicated by ``Expr.key()``, topologically sorted: every argument strictly
before its user); ``decode_scan_reply`` turns the class's reply into an Arrow
table, the call's figures and the partial aggregates.  ``decode_scan_request``
and ``encode_scan_reply`` are the inverse directions, used by the round-trip
tests and by the Python fallback, which answers with the same reply bytes.

This module only translates; it checks what the wire format needs (types of
literals, sizes, the identifier) and leaves the semantics to the evaluators.
"""

from __future__ import annotations

import dataclasses
import io
import struct

import flatbuffers
import numpy as np
import pyarrow as pa

from .. import defaults
from ..errors import ProtocolError, QueryError, SkyhookError  # noqa: F401
from . import ir
from .results import PartialAggregate, ScanResult  # noqa: F401 - the reply's types

try:
    from .._generated import skyhook_scan_generated as fb
except ImportError as e:  # pragma: no cover - the build generates it
    raise ImportError(
        "skyhook_py/_generated is missing: run `make setup` or "
        "`flatc --python --gen-onefile -o skyhook_py/_generated formats/skyhook_scan.fbs`"
    ) from e

VERSION = 1
IDENTIFIER = b"SKH1"
DEFAULT_MAX_REPLY = defaults.MAX_REPLY_BYTES
# The class refuses (E2BIG) histograms of more cells than this in one request (bins plus
# under/overflow per axis, multiplied for Hist2D, summed over the request): 16 bytes
# each, built twice for the reply, within the class's per-call memory cap.
MAX_HIST_CELLS = 4_000_000
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1

_COMPRESSION = {"none": 0, "lz4": 1, "zstd": 2}
_COMPRESSION_NAME = {v: k for k, v in _COMPRESSION.items()}


@dataclasses.dataclass
class ScanRequest:
    """A decoded request (the inverse of ``encode_scan_request``'s arguments)."""

    outputs: tuple
    where: ir.Expr | None
    row_start: int
    row_stop: int
    limit: int
    aggregations: tuple
    compression: str
    max_reply_bytes: int
    deadline_ms: int = 0
    slice_us: int = 0
    version: int = VERSION


# -- request --------------------------------------------------------------------

class _NodeTable:
    """Collects expressions into a deduplicated, topologically sorted node list."""

    def __init__(self):
        self.nodes: list[ir.Expr] = []
        self.index: dict = {}

    def add(self, expr: ir.Expr) -> int:
        # iterative post-order: expressions can be deep (long chains of & from cut strings)
        stack = [(expr, False)]
        while stack:
            e, expanded = stack.pop()
            k = e.key()
            if k in self.index:
                continue
            if isinstance(e, ir.Call) and not expanded:
                stack.append((e, True))
                for a in reversed(e.args):
                    if a.key() not in self.index:
                        stack.append((a, False))
                continue
            self.index[k] = len(self.nodes)
            self.nodes.append(e)
        return self.index[expr.key()]


def _build_node(b: flatbuffers.Builder, e: ir.Expr, index: dict) -> int:
    name = b.CreateString(e.name) if isinstance(e, ir.Column) else None
    args = None
    if isinstance(e, ir.Call):
        fb.NodeStartArgsVector(b, len(e.args))
        for a in reversed(e.args):
            b.PrependUint32(index[a.key()])
        args = b.EndVector()
    fb.NodeStart(b)
    if isinstance(e, ir.Column):
        fb.NodeAddOp(b, ir.Op.Column)
        fb.NodeAddName(b, name)
    elif isinstance(e, ir.Literal):
        fb.NodeAddOp(b, ir.Op.Literal)
        v = e.value
        if e.kind == "float":
            fb.NodeAddLiteralKind(b, fb.LiteralKind.Float)
            fb.NodeAddFloatValue(b, v)
        elif e.is_uint64:   # [2^63, 2^64): the uint64's bits in the int64 field
            fb.NodeAddLiteralKind(b, fb.LiteralKind.UInt)
            fb.NodeAddIntValue(b, int(v) - (1 << 64))
        else:
            if not _INT64_MIN <= int(v) <= _INT64_MAX:
                raise QueryError(f"integer literal {v} does not fit in 64 bits")
            fb.NodeAddLiteralKind(b, fb.LiteralKind.Bool if e.kind == "bool" else fb.LiteralKind.Int)
            fb.NodeAddIntValue(b, int(v))
    else:
        fb.NodeAddOp(b, int(e.op))
        fb.NodeAddArgs(b, args)
        if e.op == ir.Op.Index:
            if not _INT64_MIN <= e.index <= _INT64_MAX:
                raise QueryError(f"index position {e.index} does not fit in 64 bits")
            fb.NodeAddIntValue(b, e.index)
    return fb.NodeEnd(b)


def _build_axis(b, axis: ir.Axis | None):
    if axis is None:
        return None
    fb.AxisStart(b)
    fb.AxisAddBins(b, axis.bins)
    fb.AxisAddLow(b, axis.low)
    fb.AxisAddHigh(b, axis.high)
    return fb.AxisEnd(b)


def _vector(b, start_fn, offsets):
    start_fn(b, len(offsets))
    for o in reversed(offsets):
        b.PrependUOffsetTRelative(o)
    return b.EndVector()


def check_histogram_cells(aggregations) -> None:
    """Refuse up front what the class would refuse with E2BIG: histograms of more than
    MAX_HIST_CELLS cells together (called when a query is compiled; the encoder itself
    still encodes anything, as another client could send it)."""
    cells = 0
    for a in aggregations:
        if a.kind in (ir.AggKind.Hist1D, ir.AggKind.Hist2D) and a.x_axis is not None:
            c = a.x_axis.bins + 2
            if a.kind == ir.AggKind.Hist2D and a.y_axis is not None:
                c *= a.y_axis.bins + 2
            cells += c
    if cells > MAX_HIST_CELLS:
        raise QueryError(f"the histograms of this query have {cells:,} cells together (bins plus "
                         f"under/overflow, x times y for 2-D); at most {MAX_HIST_CELLS:,} per query: "
                         "use fewer bins or split the histograms over several queries")



def encode_scan_request(outputs=(), where=None, row_start=0, row_stop=-1, limit=-1,
                        aggregations=(), compression="none",
                        max_reply_bytes=DEFAULT_MAX_REPLY, deadline_ms=0,
                        resume=(), slice_us=0) -> bytes:
    """The ScanRequest bytes for these (name, expression) outputs, cut and aggregations.

    ``row_stop``/``limit`` of -1 (or None) mean "to the end" and "all".  ``deadline_ms``:
    the caller's deadline in wall-clock ms since the epoch (0: none); the class refuses
    the request once it has passed and stops its work then (-ETIME).  ``resume``: the
    PartialAggregates of the previous time slices of this scan (formats/README.md "Time
    slices"); ``slice_us``: the longest slice wanted (0: the class's own).
    """
    row_stop = -1 if row_stop is None else row_stop
    limit = -1 if limit is None else limit
    if row_start < 0 or row_stop < -1 or (row_stop != -1 and row_stop < row_start):
        raise QueryError(f"bad row range [{row_start}, {row_stop})")
    if not 0 <= int(deadline_ms) < 2**63:
        raise QueryError(f"deadline_ms must be milliseconds since the epoch, got {deadline_ms}")
    if limit < -1:
        raise QueryError(f"limit must be >= 0 or -1 (all), got {limit}")
    if compression not in _COMPRESSION:
        raise QueryError(f"compression must be one of {sorted(_COMPRESSION)}, got {compression!r}")
    if not 0 < max_reply_bytes < 2**64:
        raise QueryError(f"max_reply_bytes must be positive, got {max_reply_bytes}")
    if not 0 <= int(slice_us) < 2**32:
        raise QueryError(f"slice_us must be microseconds in [0, 2**32), got {slice_us}")

    outputs = [(str(n), ir.as_expr(e)) for n, e in outputs]
    nodes = _NodeTable()
    out_idx = [(n, nodes.add(e)) for n, e in outputs]
    filter_idx = -1 if where is None else nodes.add(ir.as_expr(where))
    agg_idx = []
    for a in aggregations:
        agg_idx.append(tuple(-1 if e is None else nodes.add(e) for e in (a.x, a.y, a.weight)))

    b = flatbuffers.Builder(1024)
    node_offs = [_build_node(b, e, nodes.index) for e in nodes.nodes]
    nodes_vec = _vector(b, fb.ScanRequestStartNodesVector, node_offs)

    out_offs = []
    for name, idx in out_idx:
        s = b.CreateString(name)
        fb.OutputStart(b)
        fb.OutputAddName(b, s)
        fb.OutputAddNode(b, idx)
        out_offs.append(fb.OutputEnd(b))
    outputs_vec = _vector(b, fb.ScanRequestStartOutputsVector, out_offs)

    agg_offs = []
    for a, (x, y, w) in zip(aggregations, agg_idx):
        s = b.CreateString(a.name)
        xa, ya = _build_axis(b, a.x_axis), _build_axis(b, a.y_axis)
        fb.AggregationStart(b)
        fb.AggregationAddKind(b, int(a.kind))
        fb.AggregationAddName(b, s)
        fb.AggregationAddX(b, x)
        fb.AggregationAddY(b, y)
        fb.AggregationAddWeight(b, w)
        if xa is not None:
            fb.AggregationAddXAxis(b, xa)
        if ya is not None:
            fb.AggregationAddYAxis(b, ya)
        agg_offs.append(fb.AggregationEnd(b))
    aggs_vec = _vector(b, fb.ScanRequestStartAggregationsVector, agg_offs)
    resume_vec = _vector(b, fb.ScanRequestStartResumeVector, _build_aggregate_results(b, resume)) if resume else None

    fb.ScanRequestStart(b)
    fb.ScanRequestAddVersion(b, VERSION)
    fb.ScanRequestAddNodes(b, nodes_vec)
    fb.ScanRequestAddOutputs(b, outputs_vec)
    fb.ScanRequestAddFilter(b, filter_idx)
    fb.ScanRequestAddRowStart(b, row_start)
    fb.ScanRequestAddRowStop(b, row_stop)
    fb.ScanRequestAddLimit(b, limit)
    fb.ScanRequestAddAggregations(b, aggs_vec)
    fb.ScanRequestAddCompression(b, _COMPRESSION[compression])
    fb.ScanRequestAddMaxReplyBytes(b, max_reply_bytes)
    if deadline_ms:
        fb.ScanRequestAddDeadlineMs(b, int(deadline_ms))
    if resume_vec is not None:
        fb.ScanRequestAddResume(b, resume_vec)
    if slice_us:
        fb.ScanRequestAddSliceUs(b, int(slice_us))
    b.Finish(fb.ScanRequestEnd(b), file_identifier=IDENTIFIER)
    return bytes(b.Output())


_DEADLINE_FIELD = 10    # ScanRequest's fields in order: version, nodes, ..., max_reply_bytes, deadline_ms
_U64 = struct.Struct("<Q")


def with_deadline(request: bytes, deadline_ms: int) -> bytes:
    """A copy of ``request`` (encoded with a deadline, any) carrying ``deadline_ms``
    instead: the same bytes ``encode_scan_request`` gives for it, without the ~50 µs of
    building the flatbuffer again (the deadline is new with every query, the rest is not)."""
    if not 0 < int(deadline_ms) < 2**63:
        raise QueryError(f"deadline_ms must be milliseconds since the epoch, got {deadline_ms}")
    at = _table_fields(request, _U32.unpack_from(request, 0)[0], _DEADLINE_FIELD + 1)[_DEADLINE_FIELD]
    if at is None:
        raise ValueError("the request was encoded without a deadline: nothing to replace")
    out = bytearray(request)
    _U64.pack_into(out, at, int(deadline_ms))
    return bytes(out)


def _check_identifier(data: bytes, what: str) -> None:
    if len(data) < 8 or bytes(data[4:8]) != IDENTIFIER:
        raise ProtocolError(
            f"not a skyhook {what}: expected file identifier {IDENTIFIER!r} at bytes 4..8, "
            f"got {bytes(data[4:8])!r} ({len(data)} bytes)"
        )


def decode_scan_request(data: bytes) -> ScanRequest:
    """The inverse of ``encode_scan_request`` (for tests and the Python fallback)."""
    _check_identifier(data, "ScanRequest")
    try:
        r = fb.ScanRequest.GetRootAs(data, 0)
        exprs: list[ir.Expr] = []
        for i in range(r.NodesLength()):
            n = r.Nodes(i)
            op = ir.Op(n.Op())
            if op == ir.Op.Column:
                exprs.append(ir.Column(n.Name().decode()))
            elif op == ir.Op.Literal:
                kind = n.LiteralKind()
                if kind == fb.LiteralKind.Float:
                    exprs.append(ir.Literal(n.FloatValue()))
                elif kind == fb.LiteralKind.Bool:
                    exprs.append(ir.Literal(bool(n.IntValue())))
                elif kind == fb.LiteralKind.UInt:
                    exprs.append(ir.Literal(n.IntValue() % (1 << 64)))
                elif kind == fb.LiteralKind.Int:
                    exprs.append(ir.Literal(n.IntValue()))
                else:   # the class answers EINVAL "unknown literal kind"
                    raise ProtocolError(f"node {i}: unknown literal kind {kind}")
            else:
                args = [int(a) for a in (n.ArgsAsNumpy() if n.ArgsLength() else [])]
                if any(a >= i for a in args):
                    raise ProtocolError(f"node {i} ({op.name}) refers to a later node {args}")
                exprs.append(ir.Call(op, tuple(exprs[a] for a in args),
                                     n.IntValue() if op == ir.Op.Index else 0))

        def node(i):
            if i < 0:
                return None
            if i >= len(exprs):
                raise ProtocolError(f"node index {i} out of range ({len(exprs)} nodes)")
            return exprs[i]

        outputs = tuple((r.Outputs(i).Name().decode(), node(r.Outputs(i).Node()))
                        for i in range(r.OutputsLength()))
        aggs = []
        for i in range(r.AggregationsLength()):
            a = r.Aggregations(i)

            def axis(ax):
                return None if ax is None else ir.Axis(ax.Bins(), ax.Low(), ax.High())

            aggs.append(ir.Aggregation(ir.AggKind(a.Kind()), a.Name().decode(), node(a.X()),
                                       node(a.Y()), node(a.Weight()), axis(a.XAxis()), axis(a.YAxis())))
        return ScanRequest(
            outputs=outputs, where=node(r.Filter()), row_start=r.RowStart(), row_stop=r.RowStop(),
            limit=r.Limit(), aggregations=tuple(aggs),
            compression=_COMPRESSION_NAME.get(r.Compression(), str(r.Compression())),
            max_reply_bytes=r.MaxReplyBytes(), deadline_ms=r.DeadlineMs(), slice_us=r.SliceUs(),
            version=r.Version(),
        )
    except SkyhookError:
        raise
    except Exception as e:  # flatbuffers raises bare struct/index errors on garbage
        raise ProtocolError(f"malformed ScanRequest: {type(e).__name__}: {e}") from e


# -- reply ------------------------------------------------------------------------

_FIGURES = ("rows_scanned", "rows_matched", "rows_returned", "bytes_read", "object_bytes", "cpu_ns")


def table_to_ipc_stream(table: pa.Table, compression: str = "none") -> bytes:
    opts = pa.ipc.IpcWriteOptions(compression=None if compression == "none" else compression)
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema, options=opts) as w:
        w.write_table(table)
    return sink.getvalue()


def _build_aggregate_results(b: flatbuffers.Builder, partials) -> list:
    """AggregateResult tables of these PartialAggregates (a reply's, or a resumed request's)."""
    agg_offs = []
    for p in partials:
        s = b.CreateString(p.name)
        vecs = []
        for vals, start in ((p.sumw, fb.AggregateResultStartSumwVector),
                            (p.sumw2, fb.AggregateResultStartSumw2Vector)):
            vecs.append(None if vals is None else b.CreateNumpyVector(np.asarray(vals, dtype="<f8")))
        fb.AggregateResultStart(b)
        fb.AggregateResultAddName(b, s)
        fb.AggregateResultAddKind(b, int(p.kind))
        fb.AggregateResultAddCount(b, p.count)
        fb.AggregateResultAddIsInteger(b, p.is_integer)
        # the wire's int_value is an int64: a uint64 travels as its bits (is_unsigned)
        fb.AggregateResultAddIntValue(b, (p.int_value + 2**63) % 2**64 - 2**63)
        if p.is_unsigned:
            fb.AggregateResultAddIsUnsigned(b, True)
        fb.AggregateResultAddFloatValue(b, p.float_value)
        if vecs[0] is not None:
            fb.AggregateResultAddSumw(b, vecs[0])
        if vecs[1] is not None:
            fb.AggregateResultAddSumw2(b, vecs[1])
        agg_offs.append(fb.AggregateResultEnd(b))
    return agg_offs


def encode_scan_reply(result: ScanResult, compression: str = "none") -> bytes:
    """The ScanReply bytes of ``result`` (what the class sends; used by tests and fallback)."""
    b = flatbuffers.Builder(1024)
    ipc = b.CreateByteVector(table_to_ipc_stream(result.table, compression))
    agg_offs = _build_aggregate_results(b, result.aggregates)
    fb.ScanReplyStartAggregatesVector(b, len(agg_offs))
    for o in reversed(agg_offs):
        b.PrependUOffsetTRelative(o)
    aggs = b.EndVector()
    fb.FiguresStart(b)
    for f in _FIGURES:
        getattr(fb, "FiguresAdd" + "".join(w.title() for w in f.split("_")))(b, int(result.figures.get(f, 0)))
    if result.resume_row >= 0:
        fb.FiguresAddResumeRow(b, result.resume_row)
    figures = fb.FiguresEnd(b)
    fb.ScanReplyStart(b)
    fb.ScanReplyAddVersion(b, VERSION)
    fb.ScanReplyAddFigures(b, figures)
    fb.ScanReplyAddIpcStream(b, ipc)
    fb.ScanReplyAddAggregates(b, aggs)
    b.Finish(fb.ScanReplyEnd(b), file_identifier=IDENTIFIER)
    return bytes(b.Output())


_U16 = struct.Struct("<H")
_I32 = struct.Struct("<i")
_U32 = struct.Struct("<I")
_FIGURES_STRUCT = struct.Struct("<q")


def _table_fields(data, pos: int, nfields: int) -> tuple:
    """The absolute positions of a flatbuffers table's first ``nfields`` fields (None:
    absent), read from its vtable with every offset checked against the buffer."""
    n = len(data)
    if not 0 <= pos <= n - 4:
        raise ValueError(f"table offset {pos} outside the {n}-byte reply")
    vt = pos - _I32.unpack_from(data, pos)[0]
    if not 0 <= vt <= n - 4:
        raise ValueError(f"vtable offset {vt} outside the {n}-byte reply")
    vt_size = _U16.unpack_from(data, vt)[0]
    if vt_size < 4 or vt + vt_size > n:
        raise ValueError(f"vtable of {vt_size} bytes at {vt} outside the {n}-byte reply")
    present = min(nfields, (vt_size - 4) // 2)   # a vtable may be shorter: later fields absent
    rel = _vtable_struct(present).unpack_from(data, vt + 4)
    return tuple(pos + r if r else None for r in rel) + (None,) * (nfields - present)


_VTABLE_STRUCTS: dict = {}


def _vtable_struct(count: int) -> struct.Struct:
    st = _VTABLE_STRUCTS.get(count)
    if st is None:
        st = _VTABLE_STRUCTS[count] = struct.Struct(f"<{count}H")
    return st


def _field_uoffset(data, at: int) -> int:
    """The position an offset field at ``at`` points to (checked)."""
    n = len(data)
    if not 0 <= at <= n - 4:
        raise ValueError(f"offset field at {at} outside the {n}-byte reply")
    target = at + _U32.unpack_from(data, at)[0]
    if target > n - 4:
        raise ValueError(f"offset {target} outside the {n}-byte reply")
    return target


def decode_scan_reply(data: bytes) -> ScanResult:
    """The table, figures and partial aggregates of a ScanReply; checks identifier and version.

    The reply's few fields (version, figures, IPC stream, aggregate count) are read
    straight from the flatbuffer's vtables with every offset checked (the generic
    flatbuffers accessors cost ~40 calls per reply, the largest part of a small query's
    client time); the aggregates, when there are any, through the generated code."""
    _check_identifier(data, "ScanReply")
    try:
        n = len(data)
        root = _U32.unpack_from(data, 0)[0]
        f_version, f_figures, f_ipc, f_aggs = _table_fields(data, root, 4)
        version = 0 if f_version is None else _U16.unpack_from(data, f_version)[0]
        if version != VERSION:
            raise ProtocolError(f"ScanReply version {version}, this client speaks {VERSION}")
        figures = dict.fromkeys(_FIGURES, 0)
        resume_row = -1
        if f_figures is not None:
            # Figures' fields in order: _FIGURES, then resume_row (default -1)
            *at, at_resume = _table_fields(data, _field_uoffset(data, f_figures), len(_FIGURES) + 1)
            for k, p in zip(_FIGURES, at):
                if p is not None:
                    figures[k] = _FIGURES_STRUCT.unpack_from(data, p)[0]
            if at_resume is not None:
                resume_row = _FIGURES_STRUCT.unpack_from(data, at_resume)[0]
        ipc_bytes = None
        if f_ipc is not None:
            v = _field_uoffset(data, f_ipc)
            length = _U32.unpack_from(data, v)[0]
            if v + 4 + length > n:
                raise ValueError(f"IPC stream of {length} bytes at {v + 4} outside the {n}-byte reply")
            if length:
                ipc_bytes = bytes(memoryview(data)[v + 4:v + 4 + length])
        if ipc_bytes is None:
            table = pa.table({})
        else:
            table = pa.ipc.open_stream(pa.py_buffer(ipc_bytes)).read_all()
        n_aggs = 0
        if f_aggs is not None:
            n_aggs = _U32.unpack_from(data, _field_uoffset(data, f_aggs))[0]
        r = fb.ScanReply.GetRootAs(data, 0) if n_aggs else None
        aggs = []
        for i in range(n_aggs):
            a = r.Aggregates(i)
            unsigned = bool(a.IsUnsigned())
            aggs.append(PartialAggregate(
                name=a.Name().decode(), kind=ir.AggKind(a.Kind()), count=a.Count(),
                is_integer=bool(a.IsInteger()), is_unsigned=unsigned,
                int_value=a.IntValue() % 2**64 if unsigned else a.IntValue(),
                float_value=a.FloatValue(),
                sumw=None if a.SumwIsNone() else a.SumwAsNumpy().tolist(),
                sumw2=None if a.Sumw2IsNone() else a.Sumw2AsNumpy().tolist(),
            ))
        return ScanResult(table=table, figures=figures, aggregates=aggs, ipc=ipc_bytes, resume_row=resume_row)
    except SkyhookError:
        raise
    except pa.ArrowInvalid as e:
        raise ProtocolError(f"the ScanReply's Arrow IPC stream is invalid: {e}") from e
    except Exception as e:
        raise ProtocolError(f"malformed ScanReply: {type(e).__name__}: {e}") from e
