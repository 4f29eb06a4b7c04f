"""Skims kept in storage: the events of a dataset that pass a cut, as a new dataset.

A skim is a transcode operation whose source is a query stream: the selected events
arrive as the pushed-down answers of the source's partitions (in dataset order, with
the executor's back-pressure), are cut into partitions like ingest's (size target,
one partition plus one batch in memory), written with their statistics and block
checksums under a fresh writer id, and committed last in the one guarded manifest
operation of every transcode operation (operations._commit).  So a failed or
cancelled skim leaves no dataset and removes its partitions; a killed one leaves
only unnamed partitions, which ``gc`` of the skim's name removes.

The manifest records the provenance: the source dataset, its version and creation
time (and its own provenance, for a skim of a skim), the query as given and in
canonical form (the IR's text and JSON), the number of events scanned and selected,
and the time.  The skim's one "source" entry names the source dataset
(``skyhook:SOURCE@vVERSION``).  The event identity columns of the source (``run``,
``luminosityBlock``, ``event``) are kept even when not asked for, so that rows of the
skim can be joined back to the source.

Reading and writing may use two cephx identities: the query runs on ``session`` (the
query key suffices: pushdown), partitions and the manifest are written through
``write_store`` (the ingest key).  The gRPC coordinator runs skims this way.
"""

from __future__ import annotations

import datetime
import hashlib
import json

import pyarrow as pa

from .. import defaults
from ..errors import DatasetExistsError, QueryCancelled, QueryError, SkyhookError
from ..progress import Progress
from ..query import tracker
from ..query.results import PartitionFailure, ResultBatch, Summary
from ..storage import manifest as mf
from ..storage.manifest import Manifest, Source
from . import encoder, partitioner
from .operations import _commit, _Writer

IDENTITY_COLUMNS = ("run", "luminosityBlock", "event")
SOURCE_SCHEME = "skyhook:"


def skim(session, source: str, dataset: str, *, where=None, columns=None, expressions=None,
         language: str = "cut", event_range=None, pushdown: str = "auto", write_store=None,
         partition_bytes: int | None = None, partition_events: int | None = None,
         format: str | None = None, compression: str | None = None, progress=None,
         status=None, cancelled=None, keep_identity: bool = True) -> Manifest:
    """Write the events of dataset ``source`` that pass ``where`` as the new dataset
    ``dataset`` (version 1) and return its manifest.

    columns: source columns to keep (None: all); the identity columns are added when
    the source has them (``keep_identity``).  expressions: computed columns, name ->
    cut-language text (names must be identifiers, to be queryable later).  language,
    event_range, pushdown: as for ``Session.query``.  partition_bytes/events, format,
    compression: the new partitions (default: 64 MiB, the source's encoding).
    write_store: where to write (default: the session's store).  status: a
    query.tracker.RequestStatus kept up to date (kind "skim"); cancelled: a callable
    polled between partitions.  Raises before anything is written when the query or
    the name is invalid; a failure later removes what was written.
    """
    if status is None:
        from ..session import new_status

        status = new_status(source, kind="skim")
    status.kind, status.output = "skim", dataset
    status.hold = True    # "done" only once the skim is committed, not when the scan ends
    try:
        m = _skim(session, source, dataset, where, columns, expressions, language, event_range,
                  pushdown, write_store, partition_bytes, partition_events, format, compression,
                  progress, status, cancelled, keep_identity)
    except BaseException as e:
        status.release(tracker.CANCELLED if isinstance(e, (QueryCancelled, KeyboardInterrupt))
                       else tracker.FAILED, f"{type(e).__name__}: {e}")
        raise
    status.release(tracker.DONE)
    return m


def _skim(session, source, dataset, where, columns, expressions, language, event_range, pushdown,
          write_store, partition_bytes, partition_events, format, compression, progress, status,
          cancelled, keep_identity) -> Manifest:
    store = write_store if write_store is not None else session.store
    mf.check_dataset_name(dataset)
    if dataset == source:
        raise SkyhookError(f"a skim cannot overwrite its source: give a new dataset name, not {source!r}")
    src = session.manifest(source)
    if mf.current_version(store, dataset) is not None:
        raise DatasetExistsError(f"dataset {dataset!r} exists already: choose another name for the "
                                 "skim, or delete it first")
    if partition_bytes is None and partition_events is None:
        partition_bytes = defaults.PARTITION_BYTES
    try:
        encoding = encoder.check_encoding(format or src.encoding.get("format", "arrow"),
                                          compression if compression is not None
                                          else src.encoding.get("compression"))
        partitioner.check_targets(partition_bytes, partition_events)
    except ValueError as e:
        raise QueryError(f"skim into {dataset!r}: {e}") from e
    if columns is not None and not isinstance(columns, str):
        columns = list(columns)
    elif isinstance(columns, str):
        columns = [columns]
    if columns == [] and not expressions:
        raise QueryError("a skim needs at least one column (columns=None keeps them all)")
    if keep_identity and language == "cut" and columns is not None:
        taken = set(columns) | set(expressions or {})
        columns = [c for c in IDENTITY_COLUMNS if c in src.column_types() and c not in taken] + columns
    src, query = session.build_query(src, columns=columns, where=where, expressions=expressions,
                                     event_range=event_range, language=language)
    if query.aggregations or query.limit is not None:
        raise QueryError("a skim writes events: aggregations and limits are not part of one")
    from ..session import empty_result

    schema = _storable_schema(empty_result(src, query), dataset)
    provenance = _provenance(src, query, where=where, columns=columns, expressions=expressions,
                             language=language, event_range=event_range, pushdown=pushdown)
    with Progress(f"skim {source} -> {dataset}", 1, src.num_events, enabled=progress) as prog:
        writer = _Writer(store, dataset, schema, encoding, partition_bytes, partition_events, 1, prog)
        stream = session.stream_query(src, query, pushdown=pushdown, fail_fast=True,
                                      cancelled=cancelled, status=status)
        summary: list[Summary] = []
        parts, entry = [], 0
        try:
            for table in partitioner.partitions(_batches(stream, schema, summary), schema,
                                                partition_bytes, partition_events):
                parts.append(writer.write_partition(table, 0, entry, entry))
                entry += table.num_rows
                if cancelled is not None and cancelled():
                    break
            if cancelled is not None and cancelled():
                raise QueryCancelled(f"the skim of {source!r} into {dataset!r} was cancelled; "
                                     "nothing was committed")
            if not summary or status.state not in (tracker.RUNNING, tracker.DONE) \
                    or status.unprocessed():
                raise SkyhookError(f"the skim of {source!r} is incomplete ({status.statement()}); "
                                   "nothing was committed")
        except BaseException as e:
            if isinstance(e, QueryCancelled):
                status.finish(tracker.CANCELLED, str(e))
            stream.close()
            writer.discard()
            raise
    s = summary[0]
    provenance["events_scanned"] = s.events_scanned
    provenance["events_selected"] = entry
    provenance["partitions_pruned"] = s.partitions_pruned
    canonical = json.dumps(provenance, sort_keys=True, separators=(",", ":"), default=str)
    origin = Source(path=f"{SOURCE_SCHEME}{src.dataset}@v{src.version}", name=src.dataset,
                    size=int(s.bytes_stored), sha256=hashlib.sha256(canonical.encode()).hexdigest(),
                    tree="", entries=entry, event_start=0)
    m = Manifest(dataset=dataset, version=1, schema=schema, partitions=parts, sources=[origin],
                 encoding=encoding, previous_version=None, provenance=provenance)
    _commit(store, writer, m, None)
    return m


def _batches(stream, schema: pa.Schema, summary: list):
    """The record batches of a query stream, cast to the skim's schema (a column can
    be null-typed in one partition's answer); the Summary goes into ``summary``."""
    for ev in stream:
        if isinstance(ev, ResultBatch):
            t = ev.table
            if t.schema != schema:
                try:
                    t = t.select(schema.names).cast(schema)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError, KeyError) as e:
                    raise SkyhookError(f"partition {ev.partition} answered columns "
                                       f"{t.schema} that do not fit the skim's {schema}: {e}") from e
            yield from t.to_batches()
        elif isinstance(ev, PartitionFailure):
            pass   # fail_fast: the stream raises right after
        elif isinstance(ev, Summary):
            summary.append(ev)


def _storable_schema(empty: pa.Table, dataset: str) -> pa.Schema:
    """The skim's schema: every output must be a queryable column under a name a cut
    can use."""
    for f in empty.schema:
        if not f.name.isidentifier():
            raise QueryError(f"the skim's column {f.name!r} would not be queryable by name: keep "
                             "source columns, or name computed ones (expressions={'name': 'expr'}, "
                             "--expr NAME=EXPR)")
        mf.column_type(f.type, f.name)
    return empty.schema.remove_metadata()


def _provenance(src: Manifest, query, *, where, columns, expressions, language, event_range,
                pushdown) -> dict:
    return {
        "kind": "skim",
        "created": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "source": {"dataset": src.dataset, "version": src.version, "created": src.created,
                   "num_events": src.num_events, "provenance": src.provenance},
        "query": {
            "language": language,
            "where": where,
            "columns": columns,
            "expressions": None if not expressions else {k: str(v) for k, v in dict(expressions).items()},
            "event_range": None if event_range is None else list(event_range),
            "pushdown": pushdown,
            "canonical": {"where": None if query.where is None else repr(query.where),
                          "outputs": [[n, repr(e)] for n, e in query.outputs],
                          "event_start": query.event_start, "event_stop": query.event_stop},
            "ir": json.loads(json.dumps(query.key(), default=str)),
        },
    }


def is_skim(m: Manifest) -> bool:
    return bool(m.provenance) and m.provenance.get("kind") == "skim"
