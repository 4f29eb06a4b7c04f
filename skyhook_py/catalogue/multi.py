"""One query over several datasets: the answers side by side in one table, with the
dataset as a dictionary-encoded string column ``dataset`` (first).

Every dataset's query is compiled and checked before any partition is read, and the
answers' schemas must agree (same output columns and types): otherwise a clear error
names the dataset and the column.  The datasets are then scanned one after the other,
in the order given (patterns in name order).  Aggregations are per dataset: ask each
dataset for them.
"""

from __future__ import annotations

import dataclasses

import pyarrow as pa

from ..errors import QueryError, UnknownColumnError
from ..query.results import QueryResult, ResultBatch, Summary
from . import listing

DATASET_COLUMN = "dataset"


def is_multi(spec) -> bool:
    """True for a pattern or a list of datasets (a single name, ``ds@vN`` or a loaded
    Manifest is not)."""
    if isinstance(spec, str):
        return listing.has_wildcard(spec)
    return isinstance(spec, (list, tuple))


def check_compatible(built: list[tuple[str, pa.Schema]]) -> pa.Schema:
    """The common output schema of the datasets' answers, or SkyhookError naming the
    first dataset and column that differ from the first dataset's."""
    first_name, first = built[0]
    for name, schema in built:
        if DATASET_COLUMN in schema.names:
            raise QueryError(f"dataset {name!r} has a column {DATASET_COLUMN!r}, which a query over "
                             "several datasets adds itself; select other columns")
        if name == first_name:
            continue
        for f in first:
            if f.name not in schema.names:
                raise QueryError(f"dataset {name!r} has no column {f.name!r} in its answer "
                                 f"(dataset {first_name!r} has); query the datasets separately")
            g = schema.field(f.name)
            if not g.type.equals(f.type):
                raise QueryError(f"column {f.name!r} is {g.type} in dataset {name!r} but {f.type} in "
                                 f"dataset {first_name!r}; the datasets' answers cannot be combined")
        extra = [n for n in schema.names if n not in first.names]
        if extra:
            raise QueryError(f"dataset {name!r} answers with column {extra[0]!r}, which dataset "
                             f"{first_name!r} does not have; query the datasets separately")
    return pa.schema([pa.field(DATASET_COLUMN, pa.dictionary(pa.int32(), pa.string()))] + list(first))


def with_dataset(table: pa.Table, index: int, names: list[str]) -> pa.Table:
    """``table`` with the column ``dataset`` (dictionary of every dataset name) first."""
    col = pa.DictionaryArray.from_arrays(pa.array([index] * table.num_rows, pa.int32()),
                                         pa.array(names, pa.string()))
    return table.add_column(0, DATASET_COLUMN, col)


def merge_summaries(summaries: list[Summary], names: list[str]) -> Summary:
    out = Summary(dataset=",".join(names), manifest_version=0)
    for s in summaries:
        for f in dataclasses.fields(Summary):
            v = getattr(s, f.name)
            if f.name in ("dataset", "manifest_version", "aggregates", "cache_hit"):
                continue
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                setattr(out, f.name, getattr(out, f.name) + v)
            elif isinstance(v, list):
                getattr(out, f.name).extend(v)
    return out


def prepare(session, spec, query_args: dict):
    """(names, [(name, manifest, ir.Query)], output schema): everything checked, nothing read."""
    if query_args.get("aggregations"):
        raise QueryError("aggregations over several datasets at once are not supported; "
                         "aggregate each dataset (the histograms add up)")
    names = listing.resolve(session.store, spec)
    from ..session import empty_result

    built = []
    for name in names:
        try:
            m, q = session.build_query(name, **query_args)
        except UnknownColumnError as e:
            raise UnknownColumnError(e.name, e.suggestions, dataset=name) from e
        except QueryError as e:
            raise QueryError(f"dataset {name!r}: {e}") from e
        built.append((name, m, q))
    schema = check_compatible([(n, empty_result(m, q).schema) for n, m, q in built])
    return names, built, schema


def merged(names: list[str], schema: pa.Schema, streams):
    """One event stream from the datasets' streams (``streams`` yields each dataset's
    events in turn; it may look at the rows sent so far, e.g. for a limit):
    ResultBatches get the ``dataset`` column, partition numbers count across the
    datasets, the first dataset's plan opens the stream, one merged Summary ends it."""
    from ..query.results import PartitionFailure, Progress

    summaries, offset = [], 0
    for i, events in enumerate(streams):
        total = 0
        for ev in events:
            if isinstance(ev, ResultBatch):
                ev = ResultBatch(offset + ev.partition, with_dataset(ev.table, i, names).cast(schema))
            elif isinstance(ev, PartitionFailure):
                ev = dataclasses.replace(ev, partition=offset + ev.partition)
            elif isinstance(ev, Summary):
                summaries.append(ev)
                total = ev.partitions_total
                continue
            elif isinstance(ev, Progress) and i:
                continue   # later datasets' plans are counted in the merged Summary
            yield ev
        offset += total
    yield merge_summaries(summaries, names)


def stream(session, spec, *, pushdown="auto", deadline=None, fail_fast=True, **query_args):
    """Session.stream_query's form over several datasets: everything is compiled and
    checked first (``prepare``), then the datasets are scanned one after the other;
    returns (output schema, events)."""
    names, built, schema = prepare(session, spec, query_args)
    limit = query_args.get("limit")
    sent = [0]

    def streams():
        for name, m, q in built:
            if limit is not None:
                if limit - sent[0] <= 0:
                    return
                q = dataclasses.replace(q, limit=limit - sent[0])
            yield _counting(session.stream_query(m, q, pushdown=pushdown, deadline=deadline,
                                                 fail_fast=fail_fast), sent)

    return schema, merged(names, schema, streams())


def _counting(events, sent: list):
    for ev in events:
        if isinstance(ev, ResultBatch):
            sent[0] += ev.table.num_rows
        yield ev


def run(session, spec, *, pushdown="auto", deadline=None, fail_fast=True, on_progress=None,
        **query_args) -> QueryResult:
    """The answer of a query over several datasets (Session.run's multi-dataset form)."""
    from ..query.results import collect

    schema, events = stream(session, spec, pushdown=pushdown, deadline=deadline, fail_fast=fail_fast,
                            **query_args)
    return collect(events, aggregated=False, empty_table=schema.empty_table, on_progress=on_progress)


class MultiRun:
    """The coordinator's form: one registered query id over several datasets' QueryRuns,
    their events in one stream (ResultBatches get the ``dataset`` column and partition
    numbers counted across the datasets; one merged Summary at the end)."""

    def __init__(self, coordinator, runs: list, names: list[str], schema: pa.Schema, query_id: str):
        self.coordinator = coordinator
        self.runs, self.names, self.schema, self.id = runs, names, schema, query_id
        self.started = runs[0].started

    cache_key = None   # answered by its datasets' runs (each with its own result cache entry)

    def lookup(self):
        return None   # never a whole-answer cache hit (the gRPC fast path)

    def cancel(self, reason: str = "cancelled"):
        for r in self.runs:
            r.cancel(reason)

    def cancelled(self) -> bool:
        return any(r.cancelled() for r in self.runs)

    def elapsed(self) -> float:
        return self.runs[0].elapsed()

    def events(self):
        try:
            yield from self._events()
        finally:
            self.coordinator._finished(self)

    def _events(self):
        return merged(self.names, self.schema, (r.events() for r in self.runs))
