"""Tracked requests: what a query (or a skim) has done so far, by request id.

A ``RequestStatus`` is filled in by ``Session.stream_query`` as events happen (the
plan, each partition answered or failed, each batch delivered, the end) and can be
read at any moment, while the request runs and after it ends.  A finished request
says either "complete: all N events of M partitions processed" or lists exactly the
partitions (object and dataset-wide event range) that were not processed, and why.

A ``RequestTracker`` keeps the statuses of one process by id: every running request
plus a bounded history of finished ones (oldest dropped first).  The gRPC
coordinator has one (``GetRequest``, ``skyhook status ID --server``), and so can any
other front end (the ServiceX-style REST front end: ``tracker.get(id).as_dict()``).
The history lives in memory; given a ``persist`` object (storage.requests.PersistedRequests,
which the coordinator has when it holds a writer identity) finished statuses are also
written to the pool and read back from there when no longer in memory, after a
restart too.

Plain data and a lock; nothing here talks to Ceph or gRPC.
"""

from __future__ import annotations

import collections
import dataclasses
import threading
import time

from ..errors import UnknownRequestError
from ..query.results import delivered_bytes

RUNNING, DONE, FAILED, CANCELLED = "running", "done", "failed", "cancelled"
DEFAULT_HISTORY = 1000
MAX_QUERY_TEXT = 4096     # characters of the query text kept per request


def _short(text: str) -> str:
    return text if len(text) <= MAX_QUERY_TEXT else text[:MAX_QUERY_TEXT] + " ..."


@dataclasses.dataclass
class Unprocessed:
    """A planned partition whose events were not (all) processed."""

    partition: int
    object: str
    event_start: int
    event_stop: int
    reason: str          # "failed: <message> (errno N)", "not reached: <why>"
    errno: int = 0


@dataclasses.dataclass
class RequestStatus:
    request_id: str
    kind: str = "query"                 # "query" or "skim"
    dataset: str = ""
    manifest_version: int = 0
    query: str = ""                     # the query, as canonical text (ir.Query repr)
    state: str = RUNNING                # running, done, failed, cancelled
    message: str = ""                   # why it failed or was cancelled
    partitions_total: int = 0           # partitions of the dataset in the query's event range
    partitions_planned: int = 0         # of which scanned (the others skipped by statistics)
    partitions_done: int = 0
    partitions_failed: int = 0
    events_total: int = 0               # events in the query's event range
    events_processed: int = 0           # events of partitions done or skipped by statistics
    rows_delivered: int = 0
    bytes_delivered: int = 0            # Arrow bytes of the result batches handed over
    started: float = 0.0                # seconds since the epoch
    ended: float | None = None
    output: str = ""                    # a skim: the dataset written
    failures: list = dataclasses.field(default_factory=list)   # [Unprocessed] of failed partitions
    hold: bool = dataclasses.field(default=False, repr=False)   # "done" waits for release() (a skim's commit)
    _tasks: dict = dataclasses.field(default_factory=dict, repr=False)   # partition -> task
    _done: set = dataclasses.field(default_factory=set, repr=False)
    _lock: object = dataclasses.field(default_factory=threading.Lock, repr=False, compare=False)
    _on_end: object = dataclasses.field(default=None, repr=False, compare=False)   # the tracker's trim
    _final: object = dataclasses.field(default=None, repr=False, compare=False)    # unprocessed, once ended

    # -- updates (Session.stream_query) ---------------------------------------------
    def planned(self, manifest, query, plan):
        import numpy as np

        t = manifest.partition_table()
        es, ee = t["event_start"], t["event_stop"]
        stop = np.inf if query.event_stop is None else query.event_stop
        in_range = np.maximum(es, query.event_start) < np.minimum(ee, stop)
        with self._lock:
            self.dataset, self.manifest_version = manifest.dataset, manifest.version
            self.query = self.query or _short(repr(query))
            self.partitions_total = int(in_range.sum())
            self.partitions_planned = len(plan.tasks)
            self.events_total = int(plan.events_total)
            self._tasks = {t.partition: t for t in plan.tasks}
            # events of partitions the statistics excluded are decided without a scan
            self.events_processed = self.events_total - sum(t.event_stop - t.event_start
                                                            for t in plan.tasks)

    def partition_done(self, task):
        with self._lock:
            if task.partition not in self._done:
                self._done.add(task.partition)
                self.partitions_done += 1
                self.events_processed += task.event_stop - task.event_start

    def partition_failed(self, partition: int, obj: str, errno_: int, message: str):
        with self._lock:
            t = self._tasks.get(partition)
            self.partitions_failed += 1
            self.failures.append(Unprocessed(
                partition, obj, t.event_start if t else -1, t.event_stop if t else -1,
                f"failed: {message} (errno {errno_})", errno_))

    def delivered(self, table, ipc: bytes | None = None):
        with self._lock:
            self.rows_delivered += table.num_rows
            self.bytes_delivered += delivered_bytes(table, ipc)

    def delivered_totals(self, rows: int, nbytes: int):
        """Like ``delivered`` for several batches at once (a cached answer's)."""
        with self._lock:
            self.rows_delivered += rows
            self.bytes_delivered += nbytes

    def finish(self, state: str, message: str = ""):
        """The request ended (the first end recorded wins)."""
        with self._lock:
            if self.state != RUNNING or (self.hold and state == DONE):
                return
            self.state, self.message, self.ended = state, message, time.time()
        # the history keeps what was not processed, not the plan (bounded memory)
        final = self._compute_unprocessed()
        with self._lock:
            self._final, self._tasks, self._done = final, {}, set()
        if self._on_end is not None:
            self._on_end()

    def release(self, state: str, message: str = ""):
        """End a held request (a skim: after its commit, or its failure)."""
        with self._lock:
            self.hold = False
        self.finish(state, message)

    def completed_from_cache(self, summary):
        """A coordinator answered from its result cache (only complete answers are kept)."""
        with self._lock:
            self.dataset, self.manifest_version = summary.dataset, summary.manifest_version
            self.partitions_total = self.partitions_planned = self.partitions_done = int(
                summary.partitions_total)
            self.events_total = self.events_processed = int(summary.events_total)
            self.rows_delivered = int(summary.rows_returned)
            self.message = "answered from the coordinator's result cache"
        self.finish(DONE, "answered from the coordinator's result cache")

    # -- reading ------------------------------------------------------------------------
    @property
    def complete(self) -> bool:
        """Finished, and every event of every partition in range was processed."""
        return self.state == DONE and not self.unprocessed() and self.events_processed == self.events_total

    def unprocessed(self) -> list[Unprocessed]:
        """Failed partitions, then the planned ones never answered (a request that
        ended early: failed, cancelled, stopped by its limit), in partition order."""
        with self._lock:
            if self._final is not None:
                return list(self._final)
        return self._compute_unprocessed()

    def _compute_unprocessed(self) -> list[Unprocessed]:
        with self._lock:
            failed = {u.partition for u in self.failures}
            out = list(self.failures)
            if self.state != RUNNING:
                why = {FAILED: "the request failed", CANCELLED: "the request was cancelled"}.get(
                    self.state, "the request ended before it (a limit reached)")
                for p, t in sorted(self._tasks.items()):
                    if p not in self._done and p not in failed:
                        out.append(Unprocessed(p, t.object, t.event_start, t.event_stop,
                                               f"not reached: {why}"))
        return sorted(out, key=lambda u: u.partition)

    def statement(self) -> str:
        """One line on the outcome (or the progress so far)."""
        if self.state == RUNNING:
            return (f"running: {self.partitions_done} of {self.partitions_planned} partitions done, "
                    f"{self.events_processed:,} of {self.events_total:,} events processed")
        if self.complete:
            skipped = self.partitions_total - self.partitions_planned
            return (f"complete: all {self.events_total:,} events of {self.partitions_total} partitions "
                    f"processed" + (f" ({skipped} skipped by their statistics)" if skipped else ""))
        missing = self.unprocessed()
        n = sum(u.event_stop - u.event_start for u in missing if u.event_start >= 0)
        head = {FAILED: "failed", CANCELLED: "cancelled"}.get(self.state, "incomplete")
        return (f"{head}: {len(missing)} partition(s) not processed ({n:,} events of "
                f"{self.events_total:,})" + (f"; {self.message}" if self.message else ""))

    @classmethod
    def from_dict(cls, d: dict) -> RequestStatus:
        """A finished status as ``as_dict`` gave it (read back from the pool)."""
        names = {f.name for f in dataclasses.fields(cls) if not f.name.startswith("_")} - {"failures", "hold"}
        s = cls(**{k: d[k] for k in names if k in d})
        s.failures = [Unprocessed(**u) for u in d.get("failures", [])]
        s._final = [Unprocessed(**u) for u in d.get("unprocessed", [])]
        return s

    def as_dict(self) -> dict:
        with self._lock:
            d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                 if not f.name.startswith("_") and f.name not in ("failures", "hold")}
        d["failures"] = [dataclasses.asdict(u) for u in self.failures]
        d["complete"] = self.complete
        d["unprocessed"] = [dataclasses.asdict(u) for u in self.unprocessed()]
        d["statement"] = self.statement()
        return d

    def render(self) -> str:
        return render(self.as_dict())


def render(d: dict) -> str:
    """A status (``RequestStatus.as_dict()``, or a client's copy) as a few lines of text."""
    lines = [f"request {d['request_id']}  {d['kind']} of dataset {d['dataset']!r} "
             f"v{d['manifest_version']}  {d['state']}",
             f"  {d['statement']}",
             f"  partitions {d['partitions_done']} done, {d['partitions_failed']} failed, "
             f"{d['partitions_planned']} planned of {d['partitions_total']} in range",
             f"  events     {d['events_processed']:,} of {d['events_total']:,} processed",
             f"  delivered  {d['rows_delivered']:,} rows, {d['bytes_delivered']:,} bytes"]
    if d.get("output"):
        lines.append(f"  output     dataset {d['output']!r}")
    for u in d["unprocessed"]:
        lines.append(f"  not processed: partition {u['partition']} ({u['object']}) events "
                     f"{u['event_start']}:{u['event_stop']}: {u['reason']}")
    return "\n".join(lines)


class RequestTracker:
    """Request statuses by id: the running ones and the last ``history`` finished ones."""

    def __init__(self, history: int = DEFAULT_HISTORY, persist=None):
        self.history = history
        self.persist = persist     # save(dict) / load(id) -> dict | None, or None
        self._by_id: collections.OrderedDict[str, RequestStatus] = collections.OrderedDict()
        self._finished: collections.OrderedDict[str, None] = collections.OrderedDict()  # ids, oldest end first
        self._lock = threading.Lock()

    def new(self, request_id: str, kind: str = "query", dataset: str = "", query: str = "") -> RequestStatus:
        """Register a request (an id in the history is replaced: ids are the caller's)."""
        s = RequestStatus(request_id, kind=kind, dataset=dataset, query=_short(query), started=time.time())
        s._on_end = lambda: self._ended(s)
        with self._lock:
            self._by_id.pop(request_id, None)
            self._finished.pop(request_id, None)
            self._by_id[request_id] = s
        return s

    def _ended(self, s: RequestStatus):
        with self._lock:
            if self._by_id.get(s.request_id) is s:   # not replaced by a newer one of that id
                self._finished[s.request_id] = None
                self._trim()
        if self.persist is not None:
            self.persist.save(s.as_dict())

    def _trim(self):
        # O(1) per ended request: the finished ids are kept in the order they ended
        while len(self._finished) > self.history:
            k, _ = self._finished.popitem(last=False)
            self._by_id.pop(k, None)

    def get(self, request_id: str) -> RequestStatus:
        with self._lock:
            s = self._by_id.get(request_id)
        if s is None and self.persist is not None:
            d = self.persist.load(request_id)
            if d is not None:
                return RequestStatus.from_dict(d)
        if s is None:
            raise UnknownRequestError(request_id, self.history)
        return s

    def ids(self) -> list[str]:
        with self._lock:
            return list(self._by_id)

    def __len__(self):
        return len(self._by_id)
