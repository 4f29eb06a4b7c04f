"""The query coordinator's logic, independent of gRPC.

One Coordinator serves many clients on one Session (one cephx identity: the
coordinator holds the only Ceph credentials; clients never see them).  It
lists and describes datasets, checks bearer tokens, validates a query before
any partition is touched (``Session.build_query`` raises first), runs it
through ``Session.stream_query`` lazily (the caller pulls events one by one, so
a slow client slows the scan instead of filling memory), keeps a registry of
running queries for cancellation, and a result cache.

The result cache is keyed by (dataset, manifest identity, ``ir.Query.key()``,
pushdown mode).  The manifest identity is read at query time (version plus the
partition objects, so a dataset deleted and re-ingested at the same version
number is not confused with the old one): a new version never serves stale
results.  It is bounded in bytes with least-recently-used eviction; only
complete answers without failures are kept, and a result larger than a quarter
of the cache is never recorded (recording stops as soon as it is too big).

What it ignores: wire formats and status codes (skyhook_py.service.server and
skyhook_py.service.wire), planning and execution (planner, executor).
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import hmac
import threading
import time
import uuid

from .. import defaults
from ..errors import AuthenticationError, DuplicateQueryError, QueryCancelled, SkyhookError  # noqa: F401
from ..query.executor import Idle
from ..query.results import PartitionFailure, Progress, ResultBatch, Summary, delivered_bytes

DEFAULT_CACHE_BYTES = defaults.CACHE_BYTES


@dataclasses.dataclass
class QuerySpec:
    """A query as a frontend sends it, before compilation.

    expressions: name -> cut-string text or IR; aggregations: ``ir.Aggregation`` values.
    Both are checked against the dataset's schema by the one compile entry
    (``query.compile.compile_query``) when the query starts.
    deadline: seconds from now, or None.
    """

    dataset: str
    language: str = "cut"
    selection: str | None = None
    columns: list | None = None
    expressions: object = None      # dict name -> text or IR
    event_range: tuple | None = None
    limit: int | None = None
    aggregations: object = ()
    pushdown: str = "auto"
    allow_partial: bool = False
    deadline: float | None = None
    query_id: str = ""
    use_cache: bool = True
    client: str = ""                # who asks (the gRPC peer): admission.py's unit of fairness
    # what the query asks, as bytes the frontend derives from its request (gRPC:
    # wire.request_token): a repeat with the same token on the same manifest object
    # skips compiling; None: always compiled
    token: bytes | None = None


class CachedEvents(list):
    """A cached answer's events; ``wires`` holds its ready-to-send forms once built, by
    result compression (skyhook_py.service.fastpath)."""

    def __init__(self, *args):
        super().__init__(*args)
        self.wires = {}


class ResultCache:
    """Complete query answers by key, bounded in bytes, least recently used evicted first."""

    def __init__(self, max_bytes: int = DEFAULT_CACHE_BYTES):
        self.max_bytes = max_bytes
        self.max_entry_bytes = max_bytes // 4
        self._entries: collections.OrderedDict = collections.OrderedDict()
        self._lock = threading.Lock()
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    def get(self, key):
        with self._lock:
            hit = self._entries.get(key)
            if hit is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return hit[0]

    def grow(self, key, nbytes: int, events=None):
        """Count ``nbytes`` more for the entry ``key`` (a form of its ``events`` kept beside them)."""
        with self._lock:
            e = self._entries.get(key)
            if e is None or (events is not None and e[0] is not events):
                return
            e[1] += nbytes
            self.bytes += nbytes
            self._evict()

    def put(self, key, events: list, nbytes: int):
        if nbytes > self.max_entry_bytes:
            return
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self.bytes -= old[1]
            self._entries[key] = [CachedEvents(events), nbytes]
            self.bytes += nbytes
            self._evict()

    def _evict(self):
        while self.bytes > self.max_bytes and self._entries:
            _, (_, n) = self._entries.popitem(last=False)
            self.bytes -= n
            self.evictions += 1

    def clear(self):
        with self._lock:
            self._entries.clear()
            self.bytes = 0

    def __len__(self):
        return len(self._entries)


def _event_bytes(ev) -> int:
    if isinstance(ev, ResultBatch):
        # the table of an OSD's IPC stream is a view of those bytes (codec.decode_scan_reply)
        return delivered_bytes(ev.table, ev.ipc) + 64
    return 256


def manifest_identity(m) -> tuple:
    """What tells two committed states of a dataset apart (no per-partition work for a
    loaded manifest: its version, creation time and committing writer)."""
    return m.identity()


class Cancellable:
    """A request registered among the coordinator's running ones: its start time and a
    cancellation flag with the reason (``cancel`` by the client, by Cancel, by going away)."""

    def _init_cancellable(self, started: float | None = None):
        self.started = time.monotonic() if started is None else started
        self._cancelled = threading.Event()
        self.cancel_reason = ""

    def cancel(self, reason: str = "cancelled"):
        if not self._cancelled.is_set():
            self.cancel_reason = reason
            self._cancelled.set()

    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def elapsed(self) -> float:
        return time.monotonic() - self.started


class QueryRun(Cancellable):
    """One running query: its compiled form, cancellation flag and event stream."""

    def __init__(self, coordinator, spec: QuerySpec, manifest, query, query_id: str,
                 started: float | None = None, query_key=None):
        self.coordinator = coordinator
        self.spec = spec
        self.manifest = manifest
        self.query = query
        self.id = query_id
        self._init_cancellable(started)
        self.deadline = None if spec.deadline is None else self.started + spec.deadline
        self.cache_key = (manifest.dataset, manifest_identity(manifest),
                          query.key() if query_key is None else query_key, spec.pushdown)
        self._looked_up, self._cached = False, None
        self.status = None   # its query.tracker.RequestStatus (Coordinator.start sets it)
        # seconds: events() also yields an executor.Idle whenever nothing happened for
        # that long (the servicer, which holds result batches back to send them together)
        self.idle_after = None

    def events(self):
        """Progress, ResultBatch and PartitionFailure events, then the Summary; pulled lazily.

        Raises QueryCancelled, executor.DeadlineExceeded, or the partition's error
        when the query fails fast."""
        try:
            cache = self.coordinator.cache if self.spec.use_cache else None
            cached = self.lookup()
            events = self._replay(cached) if cached is not None else self._execute(cache)
            last_progress = None
            for ev in events:
                if isinstance(ev, Progress):
                    # the first Progress (the plan's totals) always goes out, later ones at most
                    # every progress_interval: each is a message (~0.5 ms on the wire), a bar
                    # needs few, and the Summary says when all is done
                    now = time.monotonic()
                    if last_progress is not None and now - last_progress < self.coordinator.progress_interval:
                        continue
                    last_progress = now
                yield ev
        finally:
            if self.status is not None:   # never left "running" (the first end recorded wins)
                from ..query import tracker

                self.status.finish(tracker.CANCELLED, "the request ended before its answer")
            self.coordinator._finished(self)

    def lookup(self):
        """The cached answer's events (counted as a hit or a miss once), or None."""
        if not self._looked_up:
            self._looked_up = True
            if self.spec.use_cache:
                self._cached = self.coordinator.cache.get(self.cache_key)
        return self._cached

    def _check(self):
        if self._cancelled.is_set():
            raise QueryCancelled(f"query {self.id!r} {self.cancel_reason}")
        if self.deadline is not None and time.monotonic() > self.deadline:
            from ..errors import DeadlineExceeded

            raise DeadlineExceeded(f"query {self.id!r} exceeded its deadline of {self.spec.deadline:.3f} s")

    def _replay(self, cached):
        t0 = time.perf_counter()
        for ev in cached:
            self._check()
            if isinstance(ev, Summary):
                ev = copy.deepcopy(ev)
                ev.cache_hit = True
                ev.seconds = time.perf_counter() - t0
                if self.status is not None:
                    self.status.completed_from_cache(ev)
            elif isinstance(ev, ResultBatch) and self.status is not None:
                self.status.delivered(ev.table, ev.ipc)
            yield ev

    def _execute(self, cache):
        # one client cannot starve the others: a slot, given round-robin by client
        admission = self.coordinator.admission
        ticket = admission.admit(self.spec.client)
        try:
            admission.wait(ticket, self.deadline, self.cancelled)
            yield from self._execute_admitted(cache)
        finally:
            admission.release(ticket)

    def _execute_admitted(self, cache):
        from .. import session as session_mod

        session = self.coordinator.session
        remaining = None if self.deadline is None else max(0.0, self.deadline - time.monotonic())
        recorded, size, failed, any_rows = ([] if cache is not None else None), 0, False, False
        stream = session.stream_query(self.manifest, self.query, pushdown=self.spec.pushdown,
                                      deadline=remaining, fail_fast=not self.spec.allow_partial,
                                      cancelled=self.cancelled, status=self.status,
                                      idle_after=self.idle_after)
        try:
            for ev in stream:
                self._check()
                if isinstance(ev, Idle):   # not part of the answer: never recorded
                    yield ev
                    continue
                if isinstance(ev, ResultBatch):
                    any_rows = True
                elif isinstance(ev, PartitionFailure):
                    failed = True
                elif isinstance(ev, Summary) and not any_rows and not self.query.aggregations:
                    # an empty answer still has columns: send them, typed, before the summary
                    empty = ResultBatch(0, session_mod.empty_result(self.manifest, self.query))
                    if recorded is not None:
                        recorded.append(empty)
                    yield empty
                if recorded is not None:
                    recorded.append(ev)
                    size += _event_bytes(ev)
                    if size > cache.max_entry_bytes:
                        recorded = None  # too big to keep: stop holding on to it
                yield ev
        except BaseException as e:
            if self.status is not None:   # the first end recorded wins: say why, not "stopped"
                from ..query import tracker

                if isinstance(e, GeneratorExit):
                    self.status.finish(tracker.CANCELLED, "the client stopped reading the answer")
                else:
                    self.status.finish(tracker.CANCELLED if isinstance(e, QueryCancelled) else tracker.FAILED,
                                       f"{type(e).__name__}: {e}")
            raise
        finally:
            stream.close()
        if recorded is not None and not failed and not self._cancelled.is_set():
            cache.put(self.cache_key, recorded, size)


class Coordinator:
    """The service logic behind skyhook.v1.Skyhook, on one Session."""

    def __init__(self, session, *, cache_bytes: int = DEFAULT_CACHE_BYTES, tokens=None,
                 progress_interval: float = 0.1, writer=None, history: int | None = None,
                 admission=None, coalesce_seconds: float | None = None):
        from ..query.tracker import DEFAULT_HISTORY, RequestTracker
        from .admission import Admission

        self.session = session
        self.admission = admission or Admission()   # per-client limits, fair turns
        # the writer identity (a Store as the ingest key), for skims; None: read-only
        self.writer = writer
        persist = None
        if writer is not None:   # finished statuses outlive the coordinator (storage/requests.py)
            from ..storage.requests import PersistedRequests

            persist = PersistedRequests(writer, history or DEFAULT_HISTORY)
        self.tracker = RequestTracker(history or DEFAULT_HISTORY, persist=persist)
        self.progress_interval = progress_interval
        # a miss's result batches arriving within this many seconds go out as one message
        # (fastpath.coalesced; 0: one message per partition)
        if coalesce_seconds is None:
            from .fastpath import COALESCE_SECONDS as coalesce_seconds
        self.coalesce_seconds = coalesce_seconds
        self.cache = ResultCache(cache_bytes)
        from ..query.compile import CompiledQueries

        self.compiled = CompiledQueries()
        self.tokens = [t.encode() for t in (tokens or ()) if t]
        self._running: dict[str, QueryRun] = {}
        self._lock = threading.Lock()

    # -- access control --------------------------------------------------------------
    def authenticate(self, authorization: str | None) -> None:
        """Check an ``authorization`` metadata value ("Bearer <token>") when tokens are set."""
        if not self.tokens:
            return
        if not authorization:
            raise AuthenticationError("this coordinator requires a bearer token (metadata 'authorization: Bearer <token>')")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise AuthenticationError("the authorization metadata must be 'Bearer <token>'")
        given = token.strip().encode()
        # compare with every token in constant time, so timing does not reveal a prefix
        ok = False
        for t in self.tokens:
            ok |= hmac.compare_digest(given, t)
        if not ok:
            raise AuthenticationError("invalid bearer token")

    # -- datasets ----------------------------------------------------------------------
    def datasets(self) -> list[tuple[str, int]]:
        from ..storage.manifest import current_version, list_datasets

        store = self.session.store
        return [(name, current_version(store, name) or 0) for name in list_datasets(store)]

    def describe(self, name: str):
        """The current manifest of dataset ``name`` (``name@vN``: that kept version;
        UnknownDatasetError if none)."""
        return self.session.manifest(name)

    def catalogue(self, patterns=None, where=None) -> list[dict]:
        """Datasets by name pattern and metadata filter (catalogue.listing.entries)."""
        return self.session.catalogue(patterns or None, where or None)

    def versions(self, name: str) -> list:
        """The kept versions of dataset ``name`` (storage.versions.VersionInfo)."""
        from ..storage.manifest import parse_ref

        return self.session.versions(parse_ref(name)[0])

    # -- queries -----------------------------------------------------------------------
    def start(self, spec: QuerySpec) -> QueryRun:
        """Compile and check the query (raising before any partition is read) and register
        it under its id; iterate ``run.events()`` to execute it.  The deadline counts from
        here: the manifest read is bounded by it too."""
        from ..catalogue import multi

        if multi.is_multi(spec.dataset):
            return self._start_multi(spec)
        started = time.monotonic()
        deadline = None if spec.deadline is None else started + spec.deadline
        m = self.session.manifest(spec.dataset, deadline=deadline)
        compiled = self.compiled.get(spec.token, m) if spec.token is not None else None
        if compiled is not None:   # this very request compiled against this manifest before
            return self._register(spec, m, *compiled, started)
        aggs = list(spec.aggregations or ())
        columns = spec.columns
        if aggs and not columns:
            columns = []
        m, query = self.session.build_query(
            m, columns=columns, where=spec.selection, expressions=spec.expressions or None,
            event_range=spec.event_range, limit=spec.limit, aggregations=aggs, language=spec.language)
        from ..query import planner

        if spec.pushdown not in ("auto", "on", "off"):
            planner.plan(m, query, spec.pushdown)  # raises the planner's own message
        key, statement = query.key(), repr(query)
        if spec.token is not None:
            self.compiled.put(spec.token, m, query, key, statement)
        return self._register(spec, m, query, key, statement, started)

    def _register(self, spec, m, query, key, statement, started) -> QueryRun:
        query_id = spec.query_id or uuid.uuid4().hex
        run = QueryRun(self, spec, m, query, query_id, started=started, query_key=key)
        with self._lock:
            if query_id in self._running:
                raise DuplicateQueryError(f"a query with id {query_id!r} is running already")
            self._running[query_id] = run
        run.status = self.tracker.new(query_id, "query", m.dataset, statement)
        return run

    def request_status(self, request_id: str):
        """The tracked status of a query or skim (UnknownRequestError if none)."""
        return self.tracker.get(request_id)

    def _start_multi(self, spec: QuerySpec):
        """A query over several datasets (a pattern or a list): each dataset's query is
        compiled and checked, and the answers' schemas compared, before anything runs."""
        from ..catalogue import multi
        from ..query import planner

        started = time.monotonic()
        aggs = list(spec.aggregations or ())
        columns = [] if aggs and not spec.columns else spec.columns
        names, built, schema = multi.prepare(self.session, spec.dataset, {
            "columns": columns, "where": spec.selection, "expressions": spec.expressions or None,
            "event_range": spec.event_range, "limit": spec.limit, "aggregations": aggs,
            "language": spec.language})
        if spec.pushdown not in ("auto", "on", "off"):
            planner.plan(built[0][1], built[0][2], spec.pushdown)
        query_id = spec.query_id or uuid.uuid4().hex
        runs = [QueryRun(self, dataclasses.replace(spec, dataset=name), m, q, f"{query_id}/{i}",
                         started=started) for i, (name, m, q) in enumerate(built)]
        for r in runs:   # tracked per dataset, as <id>/<i>
            r.status = self.tracker.new(r.id, "query", r.manifest.dataset, repr(r.query))
        run = multi.MultiRun(self, runs, names, schema, query_id)
        with self._lock:
            if query_id in self._running:
                raise DuplicateQueryError(f"a query with id {query_id!r} is running already")
            self._running[query_id] = run
        return run

    def cancel(self, query_id: str) -> bool:
        with self._lock:
            run = self._running.get(query_id)
        if run is None:
            return False
        run.cancel("was cancelled by request")
        return True

    def _finished(self, run: QueryRun):
        with self._lock:
            if self._running.get(run.id) is run:
                del self._running[run.id]

    def running(self) -> list[str]:
        with self._lock:
            return list(self._running)

    # -- health ------------------------------------------------------------------------
    def health(self) -> dict:
        from ..storage.manifest import list_datasets

        try:
            list_datasets(self.session.store)
            ok, message = True, "serving"
        except SkyhookError as e:
            ok, message = False, str(e)
        return dict(ok=ok, message=message, queries_running=len(self.running()),
                    cache_entries=len(self.cache), cache_bytes=self.cache.bytes,
                    cache_hits=self.cache.hits, cache_misses=self.cache.misses)

    def close(self):
        for qid in self.running():
            self.cancel(qid)
        self.session.close()
        if self.writer is not None:
            if self.tracker.persist is not None:
                self.tracker.persist.flush(10)   # the last finished statuses
            self.writer.close()


def read_token_file(path) -> list[str]:
    """Tokens, one a line; blank lines and '#' comments ignored."""
    out = []
    with open(path) as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if line:
                out.append(line)
    return out
