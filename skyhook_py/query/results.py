"""What a scan and a running query report: one partition's answer (ScanResult with its
PartialAggregates, from the object class or the reference evaluator), progress, result
batches, per-partition failures and the final summary.  Plain data, shared by the
codec, the reference evaluator, the session, the gRPC servicer and the CLI; nothing
here talks to Ceph or gRPC or knows a wire format.
"""

from __future__ import annotations

import dataclasses

import pyarrow as pa

from . import ir


@dataclasses.dataclass
class PartialAggregate:
    """One aggregation's result over one partition, before merging (``AggregateResult``)."""

    name: str
    kind: ir.AggKind
    count: int = 0
    is_integer: bool = False
    int_value: int = 0         # exact; for is_unsigned in [0, 2**64), else in int64's range
    float_value: float = 0.0
    sumw: list | None = None   # Hist1D/2D: per bin, underflow first, overflow last
    sumw2: list | None = None
    is_unsigned: bool = False  # x is uint64: int_value is a uint64 (not wrapped through int64)


@dataclasses.dataclass
class ScanResult:
    """What one scan of one partition answered."""

    table: pa.Table
    figures: dict
    aggregates: list
    ipc: bytes | None = dataclasses.field(default=None, repr=False, compare=False)  # the OSD's own
    # -1: the scan covered its row range; else its time slice ended before this row
    # (formats/README.md "Time slices": the caller resumes there)
    resume_row: int = -1


def table_bytes(table: pa.Table) -> int:
    """The bytes of ``table``'s buffers, for sizing chunks and caches: pyarrow's
    ``Table.nbytes`` finds the byte ranges a table references (18 µs for a small 10-column
    table, a cost paid per batch); this sums whole buffers (0.5 µs), which can only
    overcount a table sliced from a larger one."""
    return table.get_total_buffer_size()


def delivered_bytes(table: pa.Table, ipc: bytes | None = None) -> int:
    """What a delivered batch counts as bytes: its IPC stream when it has one (what
    travels), else its buffers.  One rule for a miss and for the hit that replays it."""
    return len(ipc) if ipc is not None else table_bytes(table)


@dataclasses.dataclass
class Progress:
    partitions_done: int
    partitions_total: int
    events_done: int
    events_total: int


@dataclasses.dataclass
class ResultBatch:
    partition: int          # index of the partition in the manifest
    table: pa.Table
    # the OSD's Arrow IPC stream of exactly ``table``, when there is one: the service
    # forwards these bytes instead of encoding the table again
    ipc: bytes | None = dataclasses.field(default=None, repr=False, compare=False)


@dataclasses.dataclass
class PartitionFailure:
    partition: int
    object: str
    errno: int
    message: str


@dataclasses.dataclass
class Summary:
    dataset: str = ""
    manifest_version: int = 0
    events_total: int = 0          # events of the dataset in the query's event range
    events_scanned: int = 0
    events_matched: int = 0
    rows_returned: int = 0
    bytes_returned: int = 0        # bytes that crossed the network to the client
    bytes_read_osd: int = 0        # bytes the object class read from the object store
    bytes_stored: int = 0          # size of the partitions scanned
    partitions_total: int = 0
    partitions_pushed_down: int = 0
    partitions_read: int = 0       # plain reads (pushdown off or chosen by the planner)
    partitions_fallen_back: int = 0  # class missing on the OSD: plain read + reference evaluator
    partitions_pruned: int = 0
    partitions_failed: int = 0
    retries: int = 0
    osd_cpu_seconds: float = 0.0
    cache_hit: bool = False
    seconds: float = 0.0
    aggregates: dict = dataclasses.field(default_factory=dict)
    fallen_back_objects: list = dataclasses.field(default_factory=list)

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.pop("aggregates")
        return d

    def render(self) -> str:
        """A short human summary, as the CLI prints it."""
        mode = []
        if self.partitions_pushed_down:
            mode.append(f"{self.partitions_pushed_down} pushed down")
        if self.partitions_read:
            mode.append(f"{self.partitions_read} read plainly")
        if self.partitions_fallen_back:
            mode.append(f"{self.partitions_fallen_back} fell back (class missing)")
        if self.partitions_pruned:
            mode.append(f"{self.partitions_pruned} pruned")
        if self.partitions_failed:
            mode.append(f"{self.partitions_failed} FAILED")
        ratio = (self.bytes_stored / self.bytes_returned) if self.bytes_returned else float("inf")
        lines = [
            f"dataset {self.dataset!r} v{self.manifest_version}: "
            f"{self.events_matched:,} of {self.events_scanned:,} events matched",
            f"  rows returned   {self.rows_returned:,}",
            f"  bytes returned  {_mb(self.bytes_returned)}  (partitions scanned hold {_mb(self.bytes_stored)};"
            f" {ratio:,.1f}x less over the network)" if self.bytes_returned else
            f"  bytes returned  0  (partitions scanned hold {_mb(self.bytes_stored)})",
            f"  partitions      {self.partitions_total}: {', '.join(mode) or 'none'}",
            f"  time            {self.seconds * 1000:,.1f} ms"
            + (f"  (OSD CPU {self.osd_cpu_seconds * 1000:,.1f} ms)" if self.osd_cpu_seconds else "")
            + ("  [cache hit]" if self.cache_hit else ""),
        ]
        return "\n".join(lines)


def _mb(n: int) -> str:
    if n < 10_000:
        return f"{n:,} B"
    if n < 10_000_000:
        return f"{n / 1e3:,.1f} kB"
    return f"{n / 1e6:,.1f} MB"


@dataclasses.dataclass
class QueryResult:
    table: pa.Table | None
    summary: Summary
    failures: list = dataclasses.field(default_factory=list)
    # the tracked request (query.tracker.RequestStatus), when the API tracked it
    status: object = dataclasses.field(default=None, repr=False, compare=False)

    @property
    def aggregates(self) -> dict:
        return self.summary.aggregates

    @property
    def complete(self) -> bool:
        return not self.failures and not self.summary.partitions_failed

    def to_awkward(self, records: bool = False):
        """The rows as an awkward Array; ``records=True`` zips NanoAOD branches into
        collections as NanoEvents names them (``events.Muon.pt`` from ``Muon_pt``)."""
        import awkward as ak

        if records:
            from .records import zip_records

            return zip_records(self.table)
        return ak.from_arrow(self.table)


class PartialQueryResult(QueryResult):
    """An answer in which some partitions failed (``failures``): its rows and aggregates
    cover only the partitions that answered."""


def require_complete(result: QueryResult) -> QueryResult:
    """``result`` if complete, else PartialResultError (for APIs that return bare tables)."""
    from ..errors import PartialResultError

    if not result.complete:
        raise PartialResultError(result)
    return result


def concat_tables(tables: list) -> pa.Table:
    """Concatenate result batches of several partitions (a column can be null-typed in
    one partition and typed in another, hence the permissive promotion; when every
    schema is the same, as usual, the plain concatenation is the same table, without
    the promotion's cost)."""
    first = tables[0].schema if tables else None
    if first is not None and all(t.schema.equals(first, check_metadata=True) for t in tables):
        return pa.concat_tables(tables)
    try:
        return pa.concat_tables(tables, promote_options="permissive")
    except pa.ArrowInvalid:
        return pa.concat_tables([t.combine_chunks() for t in tables], promote_options="permissive")


def collect(events, *, aggregated: bool, empty_table=None, on_progress=None) -> QueryResult:
    """Assemble a stream of events (in-process or from gRPC) into a QueryResult, rows in
    partition order.  ``empty_table()`` gives the zero-row answer; ``on_progress`` sees
    every Progress event."""
    batches, failures, summary = [], [], None
    for ev in events:
        if isinstance(ev, ResultBatch):
            batches.append(ev.table)
        elif isinstance(ev, PartitionFailure):
            failures.append(ev)
        elif isinstance(ev, Progress):
            if on_progress is not None:
                on_progress(ev)
        elif isinstance(ev, Summary):
            summary = ev
    if summary is None:
        # the Summary comes last: without it the stream was cut short, rows may be missing
        from ..errors import ProtocolError

        raise ProtocolError("the answer ended without its summary: it is incomplete "
                            f"({len(batches)} batch(es) and {len(failures)} failure(s) received)")
    table = None
    if not aggregated:
        table = concat_tables(batches) if batches else (empty_table() if empty_table else None)
    partial = bool(failures) or summary.partitions_failed > 0
    return (PartialQueryResult if partial else QueryResult)(table, summary, failures)
