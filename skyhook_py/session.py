"""The in-process API: a Session on one pool of one cluster.

``Session.query`` compiles the user's query (cut strings, qastle, uproot-raw or
IR), checks it against the dataset's manifest before any partition is touched,
plans it, runs it through the executor and assembles the answer.  ``stream`` is
the same as a sequence of events (progress, batches, failures, summary), which
the gRPC coordinator forwards as they come.
"""

from __future__ import annotations

import os
import time

import pyarrow as pa

from . import defaults, errors
from .errors import SkyhookError
from .query import aggregates as agg
from .query import ir, planner, results
from .query.compile import CompiledQueries, arguments_token, compile_query
from .query.executor import Executor, PartitionDone, Retrying
from .query.results import PartitionFailure, Progress, QueryResult, ResultBatch, Summary
from .storage.pieces import PieceMissingError, reload_after_missing_piece
from .storage.rados_io import reads_bounded_by

DEFAULT_POOL = defaults.POOL
DEFAULT_NAMESPACE = defaults.NAMESPACE
# plans kept per session, and the largest kept (a plan holds a task per partition; a
# larger query's planning is small beside its execution)
PLANS_KEPT = 64
PLAN_TASKS_KEPT = 4096


class Session:
    def __init__(self, store, conf: str, reply_compression: str = defaults.REPLY_COMPRESSION):
        self.store = store
        self.conf = conf
        # reply_compression: none, lz4, zstd, or auto (query/reply_compression.py)
        self.executor = Executor(store, reply_compression=reply_compression)
        self._manifests = None
        # compiled queries by their arguments and plans by query, each against the
        # manifest object it was made for (a new version is a new object: made again)
        self._compiled = CompiledQueries()
        self._plans = CompiledQueries(PLANS_KEPT)

    @classmethod
    def open(cls, conf=None, pool=None, namespace=None, user="client.admin", keyring=None,
             op_timeout: float = defaults.OP_TIMEOUT, reply_compression: str = defaults.REPLY_COMPRESSION):
        from .paths import resolve_conf
        from .storage.rados_io import Store

        conf = resolve_conf(conf)
        store = Store(conf, defaults.pool(pool),
                      namespace or DEFAULT_NAMESPACE, name=user, keyring=keyring,
                      op_timeout=op_timeout)
        return cls(store, conf, reply_compression)

    def close(self):
        self.executor.close()
        self.store.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- datasets (the transcoder does the work) ------------------------------------
    def ingest(self, paths, dataset, tree=None, **kwargs):
        from . import transcode

        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        return transcode.ingest(self.store, [os.fspath(p) for p in paths], dataset, tree=tree, **kwargs)

    def append(self, paths, dataset, tree=None, **kwargs):
        from . import transcode

        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        return transcode.append(self.store, [os.fspath(p) for p in paths], dataset, tree=tree, **kwargs)

    def reshard(self, dataset, **kwargs):
        from . import transcode

        return transcode.reshard(self.store, dataset, **kwargs)

    def describe(self, dataset):
        from . import transcode

        return transcode.describe(self.store, dataset)

    def datasets(self):
        from . import transcode

        return transcode.list_datasets(self.store)

    def delete(self, dataset):
        from . import transcode

        return transcode.delete(self.store, dataset)

    # -- the catalogue (skyhook_py.catalogue) --------------------------------------------
    def catalogue(self, patterns=None, where=None) -> list[dict]:
        """Datasets whose name matches ``patterns`` (shell wildcards) and whose metadata
        satisfies ``where`` (e.g. ``"year == 2018 and is_mc"``), with their index entries."""
        from .catalogue import listing

        return listing.entries(self.store, patterns, where)

    def set_metadata(self, dataset, set=None, unset=()):
        """Set and remove metadata keys of ``dataset``: a new version (its manifest)."""
        from .transcode import operations

        return operations.set_metadata(self.store, dataset, set, unset)

    def versions(self, dataset) -> list:
        """The kept versions of ``dataset`` (storage.versions.VersionInfo), oldest first."""
        from .storage import versions

        return versions.history(self.store, dataset)

    def manifest(self, dataset, deadline: float | None = None):
        """The current manifest, from the session's cache when its version is still the
        committed one (one small omap read per call; storage.manifest.ManifestCache).
        ``deadline`` (a time.monotonic() value) bounds the read: one nearer than the op
        timeout reads the header directly, so that no read outlives it (the version check
        is an omap read that only the op timeout bounds)."""
        if self.store.outlives(deadline):
            from .storage.manifest import load_manifest

            return load_manifest(self.store, dataset, deadline=deadline)
        if self._manifests is None:
            from .storage.manifest import ManifestCache

            self._manifests = ManifestCache()
        return self._manifests.get(self.store, dataset)

    # -- queries ----------------------------------------------------------------------
    def build_query(self, dataset_or_manifest, columns=None, where=None, expressions=None,
                    event_range=None, limit=None, aggregations=(), language="cut",
                    deadline: float | None = None) -> tuple:
        """Compile and check a query; returns (manifest, ir.Query). Raises before any I/O
        on partitions when the query is invalid.  ``deadline`` (time.monotonic()) bounds
        the manifest read."""
        m = (self.manifest(dataset_or_manifest, deadline=deadline) if isinstance(dataset_or_manifest, str)
             else dataset_or_manifest)
        args = {"language": language, "where": where, "columns": columns, "expressions": expressions,
                "event_range": event_range, "limit": limit, "aggregations": aggregations}
        token = arguments_token(**args)
        hit = None if token is None else self._compiled.get(token, m)
        if hit is not None:   # these very arguments, compiled against this very manifest
            return m, hit[0]
        query = compile_query(m.column_types(), **args)
        if token is not None:
            self._compiled.put(token, m, query)
        return m, query

    def query(self, dataset, columns=None, where=None, *, expressions=None, event_range=None,
              limit=None, pushdown="auto", language="cut", deadline=None, fail_fast=True) -> pa.Table:
        """The selected events as a pyarrow Table (columns in the order asked).  With
        ``fail_fast=False`` a failed partition raises PartialResultError at the end (its
        ``result`` holds the rows that arrived): a bare table is always complete."""
        return results.require_complete(self.run(
            dataset, columns=columns, where=where, expressions=expressions,
            event_range=event_range, limit=limit, pushdown=pushdown,
            language=language, deadline=deadline, fail_fast=fail_fast)).table

    def aggregate(self, dataset, aggregations, where=None, *, event_range=None, pushdown="auto",
                  language="cut") -> dict:
        """Merged aggregates (count, sum, min, max, mean, histograms) by name.

        aggregations: plain dicts as the gRPC ``Client`` takes them (``{"kind": "hist1d",
        "name": "met", "x": "MET_pt", "bins": 50, "low": 0, "high": 200}``) or
        ``ir.Aggregation`` values.  Raises PartialResultError if a partition failed."""
        return results.require_complete(self.run(
            dataset, where=where, aggregations=aggregations, event_range=event_range,
            pushdown=pushdown, language=language, columns=[])).aggregates

    def run(self, dataset, *, pushdown="auto", deadline=None, fail_fast=True, on_progress=None,
            status=None, **query_args) -> QueryResult:
        """The whole answer as a QueryResult (a PartialQueryResult if partitions failed);
        ``deadline``: seconds for the whole query, the manifest read included;
        ``on_progress(Progress)`` sees each progress event.  The result's ``status`` is
        the tracked request (query.tracker.RequestStatus): pass ``status`` (e.g. from a
        RequestTracker's ``new``) to follow it from another thread while it runs.  A
        pattern or a list of datasets gives one table with a ``dataset`` column."""
        from .catalogue import multi

        if multi.is_multi(dataset):
            return multi.run(self, dataset, pushdown=pushdown, deadline=deadline, fail_fast=fail_fast,
                             on_progress=on_progress, **query_args)
        abs_deadline = None if deadline is None else time.monotonic() + deadline
        m, query = self.build_query(dataset, deadline=abs_deadline, **query_args)
        remaining = None if abs_deadline is None else abs_deadline - time.monotonic()
        if status is None:
            status = new_status(m.dataset)
        result = collect(self.stream_query(m, query, pushdown=pushdown, deadline=remaining,
                                           fail_fast=fail_fast, status=status),
                         query, m, on_progress=on_progress)
        result.status = status    # the tracked request (query.tracker.RequestStatus)
        return result

    def skim(self, source, dataset, *, where=None, columns=None, **kwargs):
        """Write the events of ``source`` that pass ``where`` (the ``columns`` asked, plus
        the event identity columns) as the new dataset ``dataset``; returns its manifest.
        See skyhook_py.transcode.skim.skim for the options."""
        from .transcode.skim import skim

        return skim(self, source, dataset, where=where, columns=columns, **kwargs)

    def to_parquet(self, path, dataset, *, pushdown="auto", deadline=None, fail_fast=True,
                   **query_args):
        """Write the selected events to a Parquet file as they arrive (one batch in memory
        at a time, never the whole answer); returns the Summary."""
        from .query.sinks import write_events

        m, query = self.build_query(dataset, **query_args)
        if query.aggregations:
            raise ValueError("to_parquet writes events; use aggregate() for aggregations")
        summary, *_ = write_events(
            self.stream_query(m, query, pushdown=pushdown, deadline=deadline, fail_fast=fail_fast),
            path, empty_table=lambda: empty_result(m, query), format="parquet")
        return summary

    def stream_query(self, manifest, query: ir.Query, *, pushdown="auto", deadline=None,
                     fail_fast=True, cancelled=None, status=None, idle_after=None):
        """Yield Progress, ResultBatch and PartitionFailure events, then the Summary.
        ``status`` (a query.tracker.RequestStatus) is kept up to date as they happen.
        ``idle_after`` (seconds): also an executor.Idle whenever nothing happened for
        that long (for a consumer that holds events back)."""
        if status is None:
            yield from self._stream_query(manifest, query, pushdown, deadline, fail_fast, cancelled, None,
                                          idle_after)
            return
        from .query import tracker

        try:
            yield from self._stream_query(manifest, query, pushdown, deadline, fail_fast, cancelled, status,
                                          idle_after)
        except GeneratorExit:
            status.finish(tracker.CANCELLED, "the consumer stopped reading the answer")
            raise
        except errors.QueryCancelled as e:
            status.finish(tracker.CANCELLED, str(e))
            raise
        except BaseException as e:
            status.finish(tracker.FAILED, f"{type(e).__name__}: {e}")
            raise
        status.finish(tracker.DONE)

    def _stream_query(self, manifest, query, pushdown, deadline, fail_fast, cancelled, status,
                      idle_after=None):
        t0 = time.perf_counter()
        abs_deadline = None if deadline is None else time.monotonic() + deadline
        # planning reads the manifest pieces it needs (partition table, statistics): they
        # count against the query's deadline like the partitions do
        plan_key = (query.key(), pushdown)
        planned = self._plans.get(plan_key, manifest)
        if planned is not None:   # the same query planned against this very manifest
            p = planned[0]
        else:
            with reads_bounded_by(abs_deadline):
                try:
                    p = planner.plan(manifest, query, pushdown)
                except PieceMissingError as e:
                    # the header read was older than a gc: replan once on the current version
                    manifest = reload_after_missing_piece(self.store, manifest, e)
                    p = planner.plan(manifest, query, pushdown)
            if len(p.tasks) <= PLAN_TASKS_KEPT:
                self._plans.put(plan_key, manifest, p)
        if status is not None:
            status.planned(manifest, query, p)
        s = Summary(dataset=manifest.dataset, manifest_version=manifest.version,
                    events_total=p.events_total, partitions_total=_num_partitions(manifest),
                    partitions_pruned=p.pruned)
        yield Progress(0, len(p.tasks), 0, p.events_total)
        partials = []
        for ev in self.executor.run(manifest, p, query, deadline=abs_deadline, fail_fast=fail_fast,
                                    limit=query.limit, cancelled=cancelled, idle_after=idle_after):
            if isinstance(ev, Retrying):
                s.retries += 1
                continue
            if isinstance(ev, PartitionDone):
                _account(s, ev.task, ev.mode, ev.figures or {})
                if status is not None:
                    status.partition_done(ev.task)
                if ev.aggregates:
                    partials.append(ev.aggregates)
                continue
            if isinstance(ev, ResultBatch):
                s.rows_returned += ev.table.num_rows
                if status is not None:
                    status.delivered(ev.table, ev.ipc)
            elif isinstance(ev, PartitionFailure):
                s.partitions_failed += 1
                if status is not None:
                    status.partition_failed(ev.partition, ev.object, ev.errno, ev.message)
                if fail_fast:
                    yield ev
                    raise partition_error(ev)
            yield ev
        if status is not None and cancelled is not None and cancelled():
            from .query import tracker

            status.finish(tracker.CANCELLED, "the request was cancelled")
        if query.aggregations:
            s.aggregates = agg.finalize(agg.merge(partials), query.aggregations)
        s.seconds = time.perf_counter() - t0
        if status is not None:   # done once the summary exists, whenever the consumer stops
            from .query import tracker

            status.finish(tracker.DONE)
        yield s


def new_status(dataset: str = "", kind: str = "query"):
    """A RequestStatus for an in-process request (id: a fresh uuid)."""
    import uuid

    from .query.tracker import RequestStatus

    return RequestStatus(uuid.uuid4().hex, kind=kind, dataset=dataset, started=time.time())


def _account(s: Summary, task, mode, fig):
    s.bytes_stored += task.bytes
    s.events_scanned += int(fig.get("rows_scanned", task.event_stop - task.event_start))
    s.events_matched += int(fig.get("rows_matched", 0))
    if mode == "pushdown":
        s.partitions_pushed_down += 1
        s.bytes_read_osd += int(fig.get("bytes_read", 0))
        s.bytes_returned += int(fig.get("reply_bytes", 0))
        s.osd_cpu_seconds += fig.get("cpu_ns", 0) / 1e9
    else:
        if mode == "fallback":
            s.partitions_fallen_back += 1
            s.fallen_back_objects.append(task.object)
        else:
            s.partitions_read += 1
        s.bytes_returned += int(fig.get("bytes_transferred", 0))


def partition_error(ev: PartitionFailure) -> SkyhookError:
    from . import errors

    return errors.partition_error(ev.errno, ev.object, ev.message)


def collect(events, query: ir.Query, manifest=None, on_progress=None) -> QueryResult:
    """Assemble a stream of events into a QueryResult (rows in dataset order)."""
    return results.collect(events, aggregated=bool(query.aggregations),
                           empty_table=lambda: empty_result(manifest, query), on_progress=on_progress)


def empty_result(manifest, query: ir.Query) -> pa.Table | None:
    """The zero-row answer, with the column types a non-empty one would have."""
    from .query import reference

    if manifest is None:
        return None
    empty = manifest.schema.empty_table()
    return reference.scan_table(empty, query.outputs, None).table


def _num_partitions(manifest) -> int:
    n = getattr(manifest, "num_partitions", None)   # a loaded manifest: no partition list built
    return len(manifest.partitions) if n is None else n
