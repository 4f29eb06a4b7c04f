"""The coordinator's fast path: repeated queries skip compiling, cached answers skip encoding.

Two caches, both beside the coordinator's result cache (skyhook_py.service.coordinator):

- ``CompiledQueries``: a compiled query (``ir.Query`` and its cache key) by the
  request's *token* (``wire.request_token``: the QueryRequest without its per-call
  fields) and by the
  manifest object it was compiled against.  The manifest comes from the session's
  ManifestCache, which hands out the same object while the committed version is
  unchanged (one omap read per query decides that) and a new object after any commit,
  so an entry compiled against another manifest object is never used: a repeated
  query skips only the parse, check and planner check, never the version check.
- ``WireAnswer``: a cached answer as ready-to-send QueryEvent bodies (Arrow IPC output):
  the result batches coalesced into as few chunks as the chunk size allows (one for a
  small answer: one message and one IPC decode on the client instead of one per
  partition) and the Summary without its per-call fields; no Progress (a hit answers
  at once, and the Summary has the totals).  A hit only prepends the query id (a
  serialized ``QueryEvent(query_id=...)``: protobuf merges concatenated messages) and appends the per-call summary fields (cache_hit,
  seconds, server_seconds) as a second summary message part, which the parser merges
  into the first.  For a client that reads ``final_summary``
  (QueryOptions.summary_with_rows) the summary goes in the last chunk's message: a
  small hit is one message.  Built once per result compression (plain, or the codec a
  client asked for), at the first hit that asks for it, and kept with the cached events
  (its bytes are counted in the result cache's bound).  The batches are combined into
  one record batch per chunk: the client decodes one.

``send_hit`` replays a WireAnswer for one QueryRun with the same checks (cancellation,
deadline) and tracker updates as ``QueryRun.events`` does for a replay.

What it ignores: Ceph, planning, execution; which answers are cached (the coordinator).
"""

from __future__ import annotations

import dataclasses
import logging
import time

import pyarrow as pa

from ..query.compile import COMPILED_ENTRIES, CompiledQueries  # noqa: F401 - by request token here
from ..query.results import Progress, ResultBatch, Summary, delivered_bytes

log = logging.getLogger("skyhook.server")


@dataclasses.dataclass
class WireAnswer:
    """A cached answer, ready to send (see the module's docstring)."""

    bodies: list            # serialized QueryEvent without query_id: the result chunks
    summary_body: bytes     # serialized QueryEvent(summary=...) without the per-call fields
    final_summary_body: bytes   # the same as QueryEvent(final_summary=...), for summary_with_rows
    summary: Summary        # the recorded one (the tracker reads it)
    rows: int               # what the tracker counts as delivered
    nbytes: int

    @property
    def size(self) -> int:
        return sum(len(b) for b in self.bodies) + len(self.summary_body) + len(self.final_summary_body) + 128


def encode_answer(events, compression: str | None = None) -> WireAnswer | None:
    """The WireAnswer of a cached event list (Arrow IPC, its chunks compressed with
    ``compression``), None if it has no Summary."""
    from . import wire
    from ._grpc_stubs import pb

    # no Progress: a hit answers at once, and the Summary has the totals
    batches = [ev for ev in events if isinstance(ev, ResultBatch)]
    summary = next((ev for ev in events if isinstance(ev, Summary)), None)
    if summary is None:
        return None
    bodies = []
    if len(batches) > 1:
        try:   # one record batch: the client decodes one (13 µs for a small hit, 38 as 8)
            merged = [ResultBatch(batches[0].partition,
                                  pa.concat_tables([b.table for b in batches]).combine_chunks())]
        except (pa.ArrowInvalid, pa.ArrowTypeError):   # schemas differ: one chunk per batch
            merged = batches
    else:
        merged = batches
    for b in merged:
        bodies += [m.SerializeToString() for m in wire.event_to_protos(b, "", pb.ARROW_IPC, compression=compression)]
    base = dataclasses.replace(summary, cache_hit=False, seconds=0.0)
    summary_msg = wire.summary_to_proto(base, server_seconds=0.0)
    return WireAnswer(bodies, pb.QueryEvent(summary=summary_msg).SerializeToString(),
                      pb.QueryEvent(final_summary=summary_msg).SerializeToString(), summary,
                      rows=sum(b.table.num_rows for b in batches),
                      nbytes=sum(delivered_bytes(b.table, b.ipc) for b in batches))


def wire_answer(cache, key, events, compression: str | None = None) -> WireAnswer | None:
    """The WireAnswer kept with ``events`` (a cached list) for ``compression``, built at
    the first hit that asks for it."""
    wires = getattr(events, "wires", None)
    answer = wires.get(compression) if wires is not None else None
    if answer is None:
        try:
            answer = encode_answer(events, compression)
        except Exception:
            log.exception("cannot encode a cached answer; replaying its events")
            return None
        if answer is None or wires is None:   # a plain list (not one the cache made): build every time
            return answer
        wires[compression] = answer
        cache.grow(key, answer.size, events)
    return answer


def send_hit(run, answer: WireAnswer, summary_with_rows: bool = False):
    """The serialized QueryEvents of a cache hit for ``run`` (a coordinator.QueryRun);
    ``summary_with_rows``: the Summary rides in the last chunk's message (final_summary)."""
    from ..query import tracker
    from ._grpc_stubs import pb

    t0 = time.perf_counter()
    prefix = pb.QueryEvent(query_id=run.id).SerializeToString()
    attach = summary_with_rows and bool(answer.bodies)
    try:
        for body in answer.bodies[:-1] if attach else answer.bodies:
            run._check()
            yield prefix + body
        run._check()
        if run.status is not None:
            run.status.delivered_totals(answer.rows, answer.nbytes)
            run.status.completed_from_cache(answer.summary)
        per_call = pb.Summary(cache_hit=True, seconds=time.perf_counter() - t0, server_seconds=run.elapsed())
        if attach:
            yield (prefix + answer.bodies[-1] + answer.final_summary_body
                   + pb.QueryEvent(final_summary=per_call).SerializeToString())
        else:
            yield prefix + answer.summary_body + pb.QueryEvent(summary=per_call).SerializeToString()
    finally:
        if run.status is not None:
            run.status.finish(tracker.CANCELLED, "the request ended before its answer")
        run.coordinator._finished(run)


# A miss's result batches are held back at most this long and sent together: each
# message costs ~0.3 ms of CPU between the two ends (gRPC Python's per-message work), and
# a small query's eight partitions answer within a few milliseconds.
COALESCE_SECONDS = 0.02


@dataclasses.dataclass
class LastBatch:
    """What ``coalesced`` yields, with ``summary_with_rows``, for an answer's last batch
    when the Summary follows it at once: both go in one message (wire.last_chunk_to_protos)."""

    batch: object           # a ResultBatch or a wire.IpcRows
    summary: Summary


def coalesced(events, window: float = COALESCE_SECONDS, chunk_bytes: int | None = None,
              summary_with_rows: bool = False):
    """``events`` (a QueryRun's, with ``idle_after`` set) with the result batches that
    arrive within ``window`` seconds of the first one held merged into one event (the
    first batch's partition, rows in partition order; no more than ``chunk_bytes`` held):
    a wire.IpcRows of the OSDs' spliced IPC streams, or a ResultBatch (``_merged``).  A
    Progress that arrives while batches are held goes out after them; a failure sends
    what is held first.  executor.Idle events (nothing happened for a
    while) send what is held once it is ``window`` old, and are dropped.

    The plan's first Progress is held too, for ``window`` seconds: a query that ends
    within it sends only its rows and the Summary (which has the totals), one message
    fewer (~0.3 ms of CPU between the two ends, a tenth of a small query).  The Summary
    also supersedes a held Progress.  With ``summary_with_rows`` the last held batch and
    the Summary come out as one LastBatch: the client gets them in one message."""
    from ..query.executor import Idle
    from .wire import CHUNK_BYTES

    chunk_bytes = CHUNK_BYTES if chunk_bytes is None else chunk_bytes
    held, held_bytes, since, progress = [], 0, 0.0, None
    first, started = None, time.monotonic()

    def flush(final=False):
        nonlocal held, held_bytes, progress, first
        out = held
        if len(held) > 1:
            out = _merged(held)
        if not final:
            if progress is not None:   # the latest progress supersedes the plan's
                out = out + [progress]
            elif first is not None:
                out = [first] + out
        held, held_bytes, progress, first = [], 0, None, None
        return out

    for i, ev in enumerate(events):
        if i == 0 and isinstance(ev, Progress):
            first = ev
            continue
        if isinstance(ev, Idle):
            now = time.monotonic()
            if (held and now - since >= window) or (first is not None and now - started >= window):
                yield from flush()
            continue
        if isinstance(ev, ResultBatch):
            if not held:
                since = time.monotonic()
            held.append(ev)
            held_bytes += delivered_bytes(ev.table, ev.ipc)
            if held_bytes >= chunk_bytes or time.monotonic() - since >= window:
                yield from flush()
            continue
        if isinstance(ev, Progress) and (held or first is not None):
            progress = ev
            continue
        if isinstance(ev, Summary):
            out = flush(final=True)
            if summary_with_rows and out:
                yield from out[:-1]
                yield LastBatch(out[-1], ev)
                continue
            yield from out
        elif held or first is not None or progress is not None:
            yield from flush()
        yield ev
    if held or first is not None or progress is not None:
        yield from flush()


def _merged(batches: list) -> list:
    """Held batches as one event: the OSDs' IPC streams spliced together when every
    batch has one (wire.IpcRows, nothing decoded or encoded again), else one
    ResultBatch of their tables; the batches as they are if their schemas differ."""
    from .wire import FORWARD_BYTES, IpcRows, splice_ipc_streams

    if not any(pa.types.is_dictionary(f.type) for f in batches[0].table.schema):
        spliced = splice_ipc_streams([b.ipc for b in batches])
        if spliced is not None and len(spliced) <= FORWARD_BYTES:
            return [IpcRows(batches[0].partition, spliced, sum(b.table.num_rows for b in batches))]
    try:
        return [ResultBatch(batches[0].partition, pa.concat_tables([b.table for b in batches]))]
    except (pa.ArrowInvalid, pa.ArrowTypeError):   # schemas differ: one chunk per batch
        return batches


def serialize_event(msg) -> bytes:
    """The response serializer of Query and QueryWhole: bytes pass through (a
    WireAnswer's, QueryWhole's framed reply)."""
    return msg if isinstance(msg, bytes) else msg.SerializeToString()


# the methods whose replies the servicer may hand over serialized
PASS_BYTES_METHODS = ("Query", "QueryWhole")


class _Capture:
    """Stands in for the server while the generated code registers the servicer."""

    def __init__(self):
        self.generic = []
        self.registered = []

    def add_generic_rpc_handlers(self, handlers):
        self.generic.append(handlers)

    def add_registered_method_handlers(self, service, handlers):
        self.registered.append((service, handlers))


def add_servicer(server, servicer, add_fn) -> bool:
    """Register ``servicer`` with the generated ``add_fn`` (rpc.add_SkyhookServicer_to_server),
    its PASS_BYTES_METHODS with a serializer that passes bytes through.  Returns whether
    it could (the generated code's shape is known); if not, registers it unchanged."""
    import grpc

    cap = _Capture()
    add_fn(servicer, cap)
    if len(cap.registered) != 1 or not all(m in cap.registered[0][1] for m in PASS_BYTES_METHODS):
        for h in cap.generic:
            server.add_generic_rpc_handlers(h)
        for service, handlers in cap.registered:
            server.add_registered_method_handlers(service, handlers)
        return False
    service, handlers = cap.registered[0]
    handlers = dict(handlers)
    for m in PASS_BYTES_METHODS:
        handlers[m] = handlers[m]._replace(response_serializer=serialize_event)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, handlers),))
    server.add_registered_method_handlers(service, handlers)
    return True
