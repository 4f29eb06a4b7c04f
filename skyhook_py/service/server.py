"""The gRPC face of the coordinator: skyhook.v1.Skyhook over skyhook_py.service.coordinator.

Each RPC method only translates: request message -> coordinator call -> reply
messages (skyhook_py.service.wire does the conversions).  Errors are turned into gRPC
statuses by one table, skyhook_py.errors.STATUS_ROWS; the domain exception's class name also travels
in the trailing metadata key ``skyhook-error`` so the client can raise the same
kind.  A query is cancelled when its client goes away (``context.add_callback``)
or on Cancel(query_id).  ``skyhook serve`` (its arguments are the CLI's, in
skyhook_py/cli.py) calls ``serve``.  One of several coordinator processes on a port
(service/processes.py) asks its siblings about a query id it does not know (Cancel,
GetRequest).

What it ignores: query semantics, caching and Ceph (the coordinator's business).
"""

from __future__ import annotations

import logging
import signal
import threading
from concurrent import futures

import grpc

from .. import defaults
from ..errors import AnswerTooLargeError, SkyhookError, status_code_name
from . import coordinator as coord
from . import fastpath

log = logging.getLogger("skyhook.server")

DEFAULT_LISTEN = defaults.LISTEN
QUERY_USER = defaults.QUERY_USER
FORWARDED_KEY = "skyhook-forwarded"   # metadata of a call one coordinator process passes to another
PEER_TIMEOUT = 5.0                     # seconds a sibling process has to answer a forwarded call
HEALTH_PEER_TIMEOUT = 1.0              # the same for Health: a probe must not hang on one busy sibling
_HEALTH_SUMS = ("queries_running", "cache_entries", "cache_bytes", "cache_hits", "cache_misses")


def status_of(exc: BaseException):
    """(grpc.StatusCode, message) for an exception raised while serving; the table is
    skyhook_py.errors.STATUS_ROWS."""
    code = status_code_name(exc)
    if code is None:
        return grpc.StatusCode.INTERNAL, f"internal error in the coordinator: {type(exc).__name__}: {exc}"
    return grpc.StatusCode[code], str(exc)


def _abort(context, exc: BaseException):
    code, message = status_of(exc)
    if code == grpc.StatusCode.INTERNAL:
        log.error("internal error: %s", message, exc_info=exc)
    context.set_trailing_metadata((("skyhook-error", type(exc).__name__),))
    context.abort(code, message)


class SkyhookServicer:
    """skyhook.v1.Skyhook: translation only."""

    def __init__(self, coordinator: coord.Coordinator):
        from . import wire
        from ._grpc_stubs import pb

        self.c = coordinator
        self.pb = pb
        self.wire = wire
        self.pass_bytes = False   # Query may yield serialized messages (fastpath.add_servicer sets it)
        # with several coordinator processes on one port (service/processes.py): the
        # others' private addresses, asked about a query id this process does not know
        self.peers = ()
        self.label = ""            # which process this is, for Health
        self._peer_stubs = None

    def _auth(self, context):
        md = {k: v for k, v in context.invocation_metadata()}
        self.c.authenticate(md.get("authorization"))

    def ListDatasets(self, request, context):
        try:
            self._auth(context)
            rows = self.c.catalogue(list(request.patterns), request.where)
        except Exception as e:  # noqa: BLE001 - every error becomes a status
            _abort(context, e)
        return self.pb.ListDatasetsResponse(datasets=[self.wire.entry_to_proto(r) for r in rows])

    def DescribeDataset(self, request, context):
        try:
            self._auth(context)
            return self.wire.description_to_proto(self.c.describe(request.name), request,
                                                  self.c.versions(request.name))
        except Exception as e:  # noqa: BLE001
            _abort(context, e)

    def Query(self, request, context):
        run = self._start_query(request, context)
        yield from self._answer(run, request, context)

    def QueryWhole(self, request, context):
        """Query's messages as one reply (QueryAnswer's repeated field 1, each message
        framed as protobuf frames it), up to defaults.WHOLE_ANSWER_BYTES."""
        run = self._start_query(request, context)
        framed, size = [], 0
        messages = self._answer(run, request, context)   # it aborts the call on its errors
        try:
            for msg in messages:
                body = fastpath.serialize_event(msg)
                size += len(body)
                if size > defaults.WHOLE_ANSWER_BYTES:
                    run.cancel("its answer is larger than one reply: asked again as a stream")
                    _abort(context, AnswerTooLargeError(
                        f"the answer exceeds {defaults.WHOLE_ANSWER_BYTES >> 20} MiB, more than QueryWhole "
                        "sends in one reply: ask with Query, which streams"))
                framed.append(self.wire.framed_event(body))
        finally:
            messages.close()   # its clean-up (a cache hit's status) runs now, not at collection
        answer = b"".join(framed)
        return answer if self.pass_bytes else self.pb.QueryAnswer.FromString(answer)

    def _start_query(self, request, context):
        """The registered QueryRun of ``request``, cancelled when the call ends early."""
        try:
            self._auth(context)
            spec = self.wire.spec_from_proto(request, context.time_remaining())
            spec.client = context.peer() or ""   # admission control's unit (service/admission.py)
            spec.token = self.wire.request_token(request)   # a repeat skips compiling
            run = self.c.start(spec)   # compiles and checks: errors before any partition
        except Exception as e:  # noqa: BLE001
            _abort(context, e)
        if not context.add_callback(lambda: run.cancel("was abandoned by its client")):
            run.cancel("was abandoned by its client")
        return run

    def _answer(self, run, request, context):
        """The QueryEvents of ``run``: serialized bytes on the fast path, else messages."""
        try:
            fast = self.pass_bytes and request.output_format == self.pb.ARROW_IPC
            with_rows = request.options.summary_with_rows   # the client reads final_summary
            compression = self.wire.result_compression(request)
            cached = run.lookup() if fast else None
            answer = (fastpath.wire_answer(self.c.cache, run.cache_key, cached, compression)
                      if cached is not None else None)
            if answer is not None:   # a cache hit: ready-to-send messages
                yield from fastpath.send_hit(run, answer, with_rows)
                return
            events = run.events()
            window = getattr(self.c, "coalesce_seconds", 0)
            if window and fast:
                # a miss: the batches that arrive close together go out as one message
                run.idle_after = window
                events = fastpath.coalesced(events, window, summary_with_rows=with_rows)
            for ev in events:
                if isinstance(ev, fastpath.LastBatch):
                    yield from self.wire.last_chunk_to_protos(ev.batch, ev.summary, run.id, request.output_format,
                                                              server_seconds=run.elapsed(), compression=compression)
                    continue
                yield from self.wire.event_to_protos(ev, run.id, request.output_format,
                                                     server_seconds=run.elapsed(), compression=compression)
        except Exception as e:  # noqa: BLE001
            _abort(context, e)

    def Cancel(self, request, context):
        try:
            self._auth(context)
            found = self.c.cancel(request.query_id)
            if not found:   # maybe running in a sibling process
                found = any(r.found for r in self._ask_peers("Cancel", request, context))
            return self.pb.CancelResponse(found=found)
        except Exception as e:  # noqa: BLE001
            _abort(context, e)

    def _ask_peers(self, method: str, request, context, timeout: float = PEER_TIMEOUT):
        """The answers of the sibling processes to ``method(request)``, forwarded with the
        caller's credentials; none for a call that was forwarded itself.  A sibling that
        does not answer (stopping, or NOT_FOUND) is skipped."""
        md = dict(context.invocation_metadata())
        if not self.peers or md.get(FORWARDED_KEY):
            return
        if self._peer_stubs is None:
            from ._grpc_stubs import rpc

            self._peer_stubs = [rpc.SkyhookStub(grpc.insecure_channel(a)) for a in self.peers]
        metadata = [(FORWARDED_KEY, "1")]
        if "authorization" in md:
            metadata.append(("authorization", md["authorization"]))
        for stub in self._peer_stubs:
            try:
                yield getattr(stub, method)(request, metadata=metadata, timeout=timeout)
            except grpc.RpcError:
                continue

    def Skim(self, request, context):
        from . import request_wire, skims
        from ..query.results import Progress

        try:
            self._auth(context)
            run = skims.start_skim(self.c, request_wire.skim_spec_from_proto(request))
        except Exception as e:  # noqa: BLE001
            _abort(context, e)
        if not context.add_callback(lambda: run.cancel("was abandoned by its client")):
            run.cancel("was abandoned by its client")
        try:
            for ev in run.events():
                if isinstance(ev, Progress):
                    yield self.pb.SkimEvent(request_id=run.id, progress=self.pb.Progress(
                        partitions_done=ev.partitions_done, partitions_total=ev.partitions_total,
                        events_done=ev.events_done, events_total=ev.events_total))
                else:
                    yield self.pb.SkimEvent(request_id=run.id, done=request_wire.skim_done_to_proto(ev))
        except Exception as e:  # noqa: BLE001
            _abort(context, e)

    def GetRequest(self, request, context):
        from ..errors import UnknownRequestError
        from . import request_wire

        try:
            self._auth(context)
            try:
                return request_wire.status_to_proto(self.c.request_status(request.request_id))
            except UnknownRequestError:   # maybe a sibling process's request
                for answer in self._ask_peers("GetRequest", request, context):
                    return answer
                raise
        except Exception as e:  # noqa: BLE001
            _abort(context, e)

    def Health(self, request, context):
        """This process's health (no token needed: load balancers probe it); with sibling
        processes, its figures summed with theirs, and NOT_SERVING if one of those that
        answer cannot reach the cluster.  A sibling that does not answer within
        HEALTH_PEER_TIMEOUT is left out (``processes_answered``)."""
        h = self.c.health()
        r = self.pb.HealthResponse(
            status=self.pb.HealthResponse.SERVING if h["ok"] else self.pb.HealthResponse.NOT_SERVING,
            message=h["message"] + (f" ({self.label})" if self.label else ""), queries_running=h["queries_running"],
            cache_entries=h["cache_entries"], cache_bytes=h["cache_bytes"],
            cache_hits=h["cache_hits"], cache_misses=h["cache_misses"], version="skyhook.v1",
            processes=1 + len(self.peers), processes_answered=1)
        for peer in self._ask_peers("Health", request, context, timeout=HEALTH_PEER_TIMEOUT):
            r.processes_answered += 1
            for field in _HEALTH_SUMS:
                setattr(r, field, getattr(r, field) + getattr(peer, field))
            if peer.status != self.pb.HealthResponse.SERVING:
                r.status = peer.status
                r.message += f"; {peer.message}"
        return r


class RunningServer:
    """A started gRPC server: ``address`` is host:port with the real port (listen on :0)."""

    def __init__(self, server, coordinator, address: str, port: int, tls: bool):
        self.server, self.coordinator, self.address, self.port, self.tls = server, coordinator, address, port, tls

    def stop(self, grace: float = 2.0, close_session: bool = False):
        for qid in self.coordinator.running():
            self.coordinator.cancel(qid)
        self.server.stop(grace).wait()
        if close_session:
            self.coordinator.session.close()
            if self.coordinator.writer is not None:
                if self.coordinator.tracker.persist is not None:
                    self.coordinator.tracker.persist.flush(10)   # the last finished statuses
                self.coordinator.writer.close()

    def serve_until_signalled(self):
        """Block until SIGINT or SIGTERM, then stop gracefully (running queries are cancelled)."""
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        while not stop.wait(1.0):
            pass
        self.stop(grace=5.0, close_session=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def start_server(coordinator: coord.Coordinator, listen: str = "127.0.0.1:0", *,
                 tls_cert: str | None = None, tls_key: str | None = None,
                 max_workers: int = 64, share_port: bool = False, private_listen: str | None = None,
                 peers=(), label: str = "") -> RunningServer:
    """Serve ``coordinator`` on ``listen`` (port 0 picks a free port) and return at once.

    For one of several coordinator processes (service/processes.py): ``share_port``
    lets the others listen on the same port; ``private_listen`` is this process's own
    address for its siblings, ``peers`` theirs; ``label`` names it in Health."""
    from ._grpc_stubs import rpc

    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="skyhook-rpc"),
        # alone, a taken port is an error, not shared
        options=[("grpc.so_reuseport", int(share_port)),
                 ("grpc.max_send_message_length", defaults.GRPC_MAX_MESSAGE_BYTES),
                 ("grpc.max_receive_message_length", 16 << 20)])
    servicer = SkyhookServicer(coordinator)
    servicer.peers, servicer.label = tuple(peers), label
    servicer.pass_bytes = fastpath.add_servicer(server, servicer, rpc.add_SkyhookServicer_to_server)
    if private_listen and not server.add_insecure_port(private_listen):
        raise SkyhookError(f"cannot listen on {private_listen!r}")
    if tls_cert or tls_key:
        if not (tls_cert and tls_key):
            raise SkyhookError("TLS needs both --tls-cert and --tls-key")
        with open(tls_key, "rb") as k, open(tls_cert, "rb") as c:
            creds = grpc.ssl_server_credentials([(k.read(), c.read())])
        port = server.add_secure_port(listen, creds)
    else:
        port = server.add_insecure_port(listen)
    if not port:
        raise SkyhookError(f"cannot listen on {listen!r} (address in use or invalid)")
    server.start()
    host = listen.rsplit(":", 1)[0] or "127.0.0.1"
    return RunningServer(server, coordinator, f"{host}:{port}", port, bool(tls_cert))


def open_session(conf=None, pool=None, user: str = QUERY_USER, keyring=None, namespace=None,
                 reply_compression: str = defaults.REPLY_COMPRESSION):
    """A Session on the cluster of ``conf`` as ``user`` (Store wants the conf as a str)."""

    from ..paths import resolve_conf
    from ..session import Session
    from ..storage.rados_io import Store

    conf = str(resolve_conf(conf))
    store = Store(conf, defaults.pool(pool), namespace or defaults.NAMESPACE,
                  name=user, keyring=keyring)
    return Session(store, conf, reply_compression)


def open_writer(conf=None, pool=None, user: str = defaults.INGEST_USER, keyring=None, namespace=None):
    """A Store as the writer identity (the ingest key): the coordinator writes skims with it."""
    from ..paths import resolve_conf
    from ..storage.rados_io import Store

    return Store(str(resolve_conf(conf)), defaults.pool(pool), namespace or defaults.NAMESPACE,
                 name=user or defaults.INGEST_USER, keyring=keyring)


def serve(listen: str = DEFAULT_LISTEN, conf=None, pool=None, user: str = QUERY_USER, keyring=None,
          tokens=None, tls_cert=None, tls_key=None, *, namespace=None,
          cache_bytes: int = coord.DEFAULT_CACHE_BYTES, max_workers: int = 64,
          block: bool = True, writer_user: str | None = None, writer_keyring=None,
          reply_compression: str = defaults.REPLY_COMPRESSION, **process_kw) -> RunningServer:
    """Open a Session as ``user`` (by default the read-only query key, whose keyring
    ceph.conf names) and serve it.  ``block``: until SIGINT/SIGTERM.  With
    ``writer_user`` or ``writer_keyring`` the coordinator also holds a writer identity
    (the ingest key by default) and can run skims; without, it refuses them.
    ``process_kw``: start_server's for one of several processes (service/processes.py)."""
    session = open_session(conf, pool, user, keyring, namespace, reply_compression)
    writer = None
    if writer_user or writer_keyring:
        try:
            writer = open_writer(conf, pool, writer_user or defaults.INGEST_USER, writer_keyring, namespace)
        except BaseException:
            session.close()
            raise
    c = coord.Coordinator(session, cache_bytes=cache_bytes, tokens=tokens, writer=writer)
    try:
        running = start_server(c, listen, tls_cert=tls_cert, tls_key=tls_key, max_workers=max_workers,
                               **process_kw)
    except BaseException:
        session.close()
        raise
    if block:
        running.serve_until_signalled()
    return running
