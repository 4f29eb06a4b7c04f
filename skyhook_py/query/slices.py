"""Time slices of one partition's scan (formats/README.md "Time slices").

The class may stop a scan when its slice of CPU time is used up and answer for
the rows ``[row_start, resume_row)`` only.  The caller then sends the same
request again from ``resume_row``, with the limit reduced by the rows already
returned and the aggregates so far (the class goes on accumulating from them,
so a sliced scan's sums are bit-identical to an unsliced one's), and joins the
slices' answers.  The executor does this asynchronously for every partition;
``scan_to_end`` does it synchronously for one call (tests, benchmarks).
"""

from __future__ import annotations

import dataclasses

import pyarrow as pa

from . import codec
from .results import ScanResult

_SUMMED = ("rows_scanned", "rows_matched", "rows_returned", "bytes_read", "cpu_ns", "reply_bytes")


@dataclasses.dataclass
class Slices:
    """The slices of one partition's scan answered so far."""

    limit: int                  # the limit the first call sent (-1: none)
    results: list = dataclasses.field(default_factory=list)

    @property
    def next_row(self) -> int:
        return self.results[-1].resume_row

    @property
    def returned(self) -> int:
        return sum(int(r.figures.get("rows_returned", 0)) for r in self.results)

    def resume_args(self) -> dict:
        """What changes in the request for the next slice."""
        return {"row_start": self.next_row,
                "limit": -1 if self.limit < 0 else max(0, self.limit - self.returned),
                "resume": self.results[-1].aggregates}

    def joined(self, last: ScanResult) -> ScanResult:
        """One answer for the partition: the slices' rows in order, their figures
        summed, the last slice's aggregates (the class carried them on)."""
        parts = self.results + [last]
        tables = [r.table for r in parts if r.table.num_columns]
        table = pa.concat_tables(tables) if tables else last.table
        figures = dict(last.figures)
        for k in _SUMMED:
            figures[k] = sum(int(r.figures.get(k, 0)) for r in parts)
        figures["slices"] = len(parts)
        return dataclasses.replace(last, table=table, figures=figures, ipc=None)


def scan_to_end(call, request: bytes, max_slices: int = 100_000) -> ScanResult:
    """The whole answer of one scan request, following its time slices:
    ``call(request_bytes) -> reply bytes`` (e.g. a Store.execute of the class)."""
    result = codec.decode_scan_reply(call(request))
    if result.resume_row < 0:
        return result
    sent = codec.decode_scan_request(request)
    sliced = Slices(limit=sent.limit)
    while result.resume_row >= 0:
        if len(sliced.results) >= max_slices:
            raise RuntimeError(f"scan not done after {max_slices} slices")
        sliced.results.append(result)
        args = {f.name: getattr(sent, f.name) for f in dataclasses.fields(sent) if f.name != "version"}
        args |= sliced.resume_args()
        result = codec.decode_scan_reply(call(codec.encode_scan_request(**args)))
    return sliced.joined(result)
