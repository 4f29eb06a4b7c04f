"""The gRPC client of a Skyhook coordinator: ``Client(address)``.

It speaks pyarrow, like the in-process Session: ``query`` returns a Table,
``stream`` yields the same events (results.Progress, ResultBatch,
PartitionFailure, then the Summary), ``batches`` yields record batches as they
arrive, ``to_awkward`` and ``to_parquet`` convert.  ``query`` and ``run`` ask for the
whole answer in one reply (QueryWhole, cheaper than a stream for both ends) and
stream only an answer over 4 MiB; ``compression=`` has the answers sent compressed.  A failed RPC is raised as the
domain exception the server raised (QueryError, UnknownColumnError, ...), with the
server's message; the gRPC code is in ``exc.grpc_code``.

What it ignores: Ceph.  The client never holds cluster credentials; it may hold a
bearer token and a CA certificate for TLS.
"""

from __future__ import annotations

import collections
import sys
import time
import uuid

import grpc
import grpc.experimental
import pyarrow as pa

from .. import defaults, errors
from ..query import results
from ..query.reply_compression import ReplyCompression
from ..query.results import Progress, QueryResult, ResultBatch, Summary
from . import wire
from ._grpc_stubs import pb, rpc


DEADLINE_GRACE = 0.5   # seconds past a query's deadline before the client gives up the call
LARGE_ANSWERS_KEPT = 256   # requests remembered as answered over one QueryWhole reply
AUTO_SAMPLE_BYTES = 1 << 20   # compression="auto" times replies this large or larger
COORDINATOR_LINK = "coordinator"   # the one link a Client's "auto" estimator keys


def _error_kind(e: grpc.RpcError) -> str | None:
    """The class name of the server's domain exception; None for gRPC's own errors."""
    return dict(e.trailing_metadata() or ()).get("skyhook-error") if hasattr(e, "trailing_metadata") else None


def remote_error(e: grpc.RpcError) -> Exception:
    """The domain exception for a failed RPC, carrying the server's own message."""
    code = e.code()
    kind = _error_kind(e)
    cls = (errors.WIRE_EXCEPTIONS.get(kind) or errors.EXCEPTION_OF_STATUS.get(getattr(code, "name", None))
           or errors.SkyhookError)
    message = e.details() or str(code)
    if code == grpc.StatusCode.UNAVAILABLE and kind is None:
        message = f"the coordinator is unreachable: {message}"
    # the server's message is authoritative: build the instance without the
    # constructor, which would compose a message of its own
    err = cls.__new__(cls)
    Exception.__init__(err, message)
    err.message = message
    err.grpc_code = code
    return err


class Client:
    """A connection to a coordinator at ``address`` (host:port).

    token: bearer token (sent as ``authorization: Bearer <token>``).
    tls_ca: path of a PEM CA bundle, or True for the system roots: use TLS.
    timeout: default deadline in seconds of every call (None: none).
    own_connection: a connection of its own.  gRPC otherwise shares one connection among
    the Clients of a process that reach the same address, so they all talk to the same
    one of several coordinator processes behind it (service/processes.py).
    compression: "lz4" or "zstd": the coordinator compresses the answers' Arrow data
    (or Parquet files) with that codec, for a slow link; it costs the coordinator CPU.
    "auto": ZSTD while answers of 1 MiB or more arrive slower than 150 MB/s, timed as
    the call's wall time less the coordinator's (Summary.server_seconds), as the
    executor times the OSDs' replies (query/reply_compression.py); plain until then.
    """

    def __init__(self, address: str, token: str | None = None, tls_ca=None, timeout: float | None = None,
                 own_connection: bool = False, compression: str | None = None):
        if compression != "auto" and compression not in wire.RESULT_COMPRESSIONS:
            raise ValueError(f"compression must be one of {wire.RESULT_CODECS}, 'auto' or None, "
                             f"got {compression!r}")
        self.address = address
        self.timeout = timeout
        self.compression = compression
        # "auto": how fast this coordinator's answers arrive
        self._link = ReplyCompression("auto", AUTO_SAMPLE_BYTES) if compression == "auto" else None
        opts = [("grpc.max_receive_message_length", defaults.GRPC_MAX_MESSAGE_BYTES),
                # streaming calls (Query, Skim) are driven by the thread that reads them:
                # without this, grpc starts a thread per call whenever none is running
                # (about a third of a small cached query's client time)
                (grpc.experimental.ChannelOptions.SingleThreadedUnaryStream, 1)]
        if own_connection:
            opts.append(("grpc.use_local_subchannel_pool", 1))
        if tls_ca:
            roots = None if tls_ca is True else open(tls_ca, "rb").read()
            self._channel = grpc.secure_channel(address, grpc.ssl_channel_credentials(roots), options=opts)
        else:
            self._channel = grpc.insecure_channel(address, options=opts)
        self._stub = rpc.SkyhookStub(self._channel)
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self._server_has_whole = True
        self._large_answers: collections.OrderedDict = collections.OrderedDict()

    def close(self):
        self._channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _unary(self, method, request, timeout=None):
        try:
            return method(request, metadata=self._metadata, timeout=timeout or self.timeout)
        except grpc.RpcError as e:
            raise remote_error(e) from None

    # -- datasets ----------------------------------------------------------------------
    def datasets(self) -> dict[str, int]:
        """Dataset name -> current manifest version."""
        r = self._unary(self._stub.ListDatasets, pb.ListDatasetsRequest())
        return {d.name: d.version for d in r.datasets}

    def catalogue(self, patterns=None, where=None) -> list[dict]:
        """Datasets by name pattern (shell wildcards) and metadata filter, with their
        version, events, partitions and metadata (as ``Session.catalogue``)."""
        if isinstance(patterns, str):
            patterns = [patterns]
        r = self._unary(self._stub.ListDatasets,
                        pb.ListDatasetsRequest(patterns=list(patterns or ()), where=where or ""))
        return [wire.entry_from_proto(d) for d in r.datasets]

    def describe(self, name: str, *, max_partitions: int = 0, page_token: str = "",
                 max_sources: int = 0, source_page_token: str = "", stats_columns=()) -> wire.DatasetInfo:
        """The dataset's summary (schema, counts, sizes, versions); with ``max_partitions``
        / ``max_sources`` also one page of partitions / sources (the server caps a page;
        ``next_page_token`` / ``next_source_page_token`` continue).  ``stats_columns``:
        the columns whose statistics each partition carries."""
        return wire.description_from_proto(self._unary(self._stub.DescribeDataset, pb.DescribeDatasetRequest(
            name=name, max_partitions=max_partitions, page_token=page_token, max_sources=max_sources,
            source_page_token=source_page_token, stats_columns=list(stats_columns))))

    def partitions(self, name: str, *, page_size: int = 1000, stats_columns=()):
        """Every partition of the dataset (dicts), fetched page by page."""
        token = ""
        while True:
            d = self.describe(name, max_partitions=page_size, page_token=token, stats_columns=stats_columns)
            yield from d.partitions
            token = d.next_page_token
            if not token or not d.partitions:
                return

    def sources(self, name: str, *, page_size: int = 1000):
        """Every source file of the dataset (dicts), fetched page by page."""
        token = ""
        while True:
            d = self.describe(name, max_sources=page_size, source_page_token=token)
            yield from d.sources
            token = d.next_source_page_token
            if not token or not d.sources:
                return

    def cancel(self, query_id: str) -> bool:
        """Cancel a running query; False if no query of that id is running."""
        return self._unary(self._stub.Cancel, pb.CancelRequest(query_id=query_id)).found

    def health(self, timeout: float = 10) -> dict:
        r = self._unary(self._stub.Health, pb.HealthRequest(), timeout=timeout)
        return dict(status=pb.HealthResponse.Status.Name(r.status), message=r.message,
                    queries_running=r.queries_running, cache_entries=r.cache_entries,
                    cache_bytes=r.cache_bytes, cache_hits=r.cache_hits, cache_misses=r.cache_misses,
                    version=r.version,
                    # a server from before 2026-12-05 sends neither: one process
                    processes=r.processes or 1, processes_answered=r.processes_answered or 1)

    # -- tracked requests and skims ----------------------------------------------------
    def status(self, request_id: str) -> dict:
        """The status of a query or skim by id, running or finished (the keys of
        query.tracker.RequestStatus.as_dict(): state, partitions_done, events_processed,
        events_total, failures, unprocessed, complete, statement, ...); UnknownRequestError
        (NOT_FOUND) for an id the coordinator does not know."""
        from . import request_wire

        return request_wire.status_from_proto(
            self._unary(self._stub.GetRequest, pb.GetRequestRequest(request_id=request_id)))

    def skim(self, source: str, dataset: str, *, where=None, columns=None, progress=False,
             on_progress=None, timeout=None, **kwargs) -> dict:
        """Have the coordinator write the events of ``source`` that pass ``where`` as the
        new dataset ``dataset`` (no event comes to this client); returns its summary
        (dataset, version, num_events, num_partitions, bytes, provenance, request_id).
        kwargs: expressions, language, event_range, pushdown, partition_bytes,
        partition_events, format, compression, request_id."""
        from . import request_wire

        kwargs.setdefault("request_id", uuid.uuid4().hex)
        request = request_wire.skim_request_to_proto(source, dataset, where=where, columns=columns, **kwargs)
        bar = _ProgressBar() if progress else None
        call = self._stub.Skim(request, metadata=self._metadata, timeout=timeout or self.timeout)
        done = None
        try:
            for msg in call:
                kind = msg.WhichOneof("event")
                if kind == "progress":
                    p = Progress(msg.progress.partitions_done, msg.progress.partitions_total,
                                 msg.progress.events_done, msg.progress.events_total)
                    if bar:
                        bar.update(p)
                    if on_progress:
                        on_progress(p)
                elif kind == "done":
                    done = request_wire.skim_done_from_proto(msg.done)
        except grpc.RpcError as e:
            raise remote_error(e) from None
        finally:
            call.cancel()
            if bar:
                bar.close()
        if done is None:
            from ..errors import ProtocolError

            raise ProtocolError("the skim's answer ended without its outcome")
        done["request_id"] = request.request_id
        return done

    # -- queries -----------------------------------------------------------------------
    def stream(self, dataset: str, columns=None, where=None, *, expressions=None, language="cut",
               event_range=None, limit=None, pushdown="auto", aggregations=(), allow_partial=False,
               deadline=None, query_id=None, output_format="arrow", use_cache=True, timeout=None):
        """Yield Progress, ResultBatch and PartitionFailure events as they arrive, then the
        Summary.  Stopping the iteration early cancels the query on the server.

        deadline: seconds the server may spend (DEADLINE_EXCEEDED after);
        query_id: your id for ``cancel`` (default: a random one)."""
        request, call_timeout = self._request(
            dataset, columns=columns, where=where, expressions=expressions, language=language,
            event_range=event_range, limit=limit, pushdown=pushdown, aggregations=aggregations,
            allow_partial=allow_partial, deadline=deadline, query_id=query_id,
            output_format=output_format, use_cache=use_cache, timeout=timeout)
        return self._streamed(request, call_timeout)

    def _request(self, dataset, *, query_id=None, timeout=None, **kwargs):
        """The QueryRequest and the timeout of its call."""
        request = wire.request_to_proto(dataset, query_id=query_id or uuid.uuid4().hex,
                                        compression=self._codec(), **kwargs)
        self.last_query_id = request.query_id   # for status(): every query is tracked by its id
        # the call itself ends by deadline + DEADLINE_GRACE, whatever the server does: the
        # server's own DEADLINE_EXCEEDED (with its message) normally comes first
        call_timeout = timeout or self.timeout
        if kwargs.get("deadline") is not None:
            call_timeout = min(call_timeout or float("inf"), kwargs["deadline"] + DEADLINE_GRACE)
        return request, call_timeout

    def _codec(self) -> str | None:
        """The compression to ask of the coordinator now."""
        if self._link is None:
            return self.compression
        codec = self._link.for_osd(COORDINATOR_LINK)
        return None if codec == "none" else codec

    def _streamed(self, request, call_timeout):
        call = self._stub.Query(request, metadata=self._metadata, timeout=call_timeout)
        try:
            for msg in call:
                yield from wire.events_from_proto(msg)
        except grpc.RpcError as e:
            raise remote_error(e) from None
        finally:
            call.cancel()  # a no-op once the stream has ended

    def _whole(self, request, call_timeout):
        """The events of the whole answer, asked in one call (QueryWhole): a reply costs
        both ends less than a stream.  Answers over defaults.WHOLE_ANSWER_BYTES come as
        AnswerTooLargeError, and the query is asked again as a stream (the server cancels
        the first; about that many bytes of answer were computed twice, and the deadline
        starts again); this Client then streams that request from the start.  A server
        without QueryWhole: always streams."""
        key = wire.request_token(request) if self._large_answers else None   # none remembered: no key needed
        if not self._server_has_whole or (key is not None and key in self._large_answers):
            return self._streamed(request, call_timeout)
        try:
            started = time.perf_counter()
            answer = self._stub.QueryWhole(request, metadata=self._metadata, timeout=call_timeout)
            if self._link is not None:
                self._observe_link(answer, time.perf_counter() - started)
        except grpc.RpcError as e:
            err = remote_error(e)
            if isinstance(err, errors.AnswerTooLargeError):
                self._large_answers[key or wire.request_token(request)] = None
                while len(self._large_answers) > LARGE_ANSWERS_KEPT:
                    self._large_answers.popitem(last=False)
            elif e.code() == grpc.StatusCode.UNIMPLEMENTED and _error_kind(e) is None:
                self._server_has_whole = False   # gRPC's own: a server from before QueryWhole
            else:
                raise err from None
            return self._streamed(request, call_timeout)
        return (ev for msg in answer.events for ev in wire.events_from_proto(msg))

    def _observe_link(self, answer, wall: float):
        """Time one reply for compression="auto": its result bytes over the call's wall
        time less the coordinator's own (a reply goes out after its Summary is made)."""
        if not answer.events:
            return
        last = answer.events[-1]
        summary = last.final_summary if last.HasField("final_summary") else last.summary
        nbytes = sum(len(e.result.data) for e in answer.events if e.HasField("result"))
        self._link.observe(COORDINATOR_LINK, nbytes, wall, summary.server_seconds)

    def run(self, dataset: str, columns=None, where=None, *, progress=False, timeout=None,
            **kwargs) -> QueryResult:
        """The whole answer: a QueryResult (table, or aggregates, and the Summary)."""
        request, call_timeout = self._request(dataset, columns=columns, where=where, timeout=timeout, **kwargs)
        bar = _ProgressBar() if progress else None
        try:   # a progress bar needs the stream's progress events
            events = self._streamed(request, call_timeout) if bar else self._whole(request, call_timeout)
            return results.collect(events, aggregated=bool(kwargs.get("aggregations")),
                                   empty_table=lambda: pa.table({}),
                                   on_progress=bar.update if bar else None)
        finally:
            if bar:
                bar.close()

    def query(self, dataset: str, columns=None, where=None, **kwargs) -> pa.Table:
        """The selected events as a pyarrow Table; with ``allow_partial=True`` failed
        partitions raise PartialResultError (``.result`` holds what arrived)."""
        return results.require_complete(self.run(dataset, columns, where, **kwargs)).table

    def batches(self, dataset: str, columns=None, where=None, **kwargs):
        """Record batches as they arrive (in partition order)."""
        for ev in self.stream(dataset, columns, where, **kwargs):
            if isinstance(ev, ResultBatch):
                yield from ev.table.to_batches()

    def to_awkward(self, dataset: str, columns=None, where=None, *, records: bool = False, **kwargs):
        """The selected events as an awkward Array (``records=True``: NanoEvents-style
        collections, ``events.Muon.pt``)."""
        return self.run(dataset, columns, where, **kwargs).to_awkward(records=records)

    def to_parquet(self, path, dataset: str, columns=None, where=None, **kwargs) -> Summary:
        """Write the selected events to a Parquet file as they arrive from the stream (one
        batch in memory at a time, never the whole answer); returns the Summary."""
        from ..query.sinks import write_events

        summary, *_ = write_events(self.stream(dataset, columns, where, **kwargs), path, format="parquet")
        return summary


class _ProgressBar:
    """One line on stderr, rewritten in place: partitions and events done."""

    def __init__(self, stream=None, width: int = 30):
        self.stream = stream or sys.stderr
        self.width = width
        self.shown = False

    def update(self, p: Progress):
        frac = p.partitions_done / p.partitions_total if p.partitions_total else 1.0
        done = int(frac * self.width)
        self.stream.write(f"\r[{'#' * done}{'.' * (self.width - done)}] "
                          f"{p.partitions_done}/{p.partitions_total} partitions, "
                          f"{p.events_done:,}/{p.events_total:,} events")
        self.stream.flush()
        self.shown = True

    def close(self):
        if self.shown:
            self.stream.write("\n")
            self.stream.flush()
