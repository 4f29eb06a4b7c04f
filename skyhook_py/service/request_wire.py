"""Translation of skims and tracked request statuses to and from proto/skyhook/v1.

The servicer encodes (``skim_spec_from_proto``, ``status_to_proto``, ``skim_done_to_proto``),
the client decodes (``status_from_proto``: the same dict as ``RequestStatus.as_dict()``).
Pure data conversion: no grpc import, no I/O.
"""

from __future__ import annotations

import json

from ..errors import QueryError
from ._grpc_stubs import pb
from .wire import LANGUAGE_NAMES, LANGUAGES, PUSHDOWN, PUSHDOWN_NAMES, expression_from_proto, fill_selection

_STATUS_FIELDS = ("request_id", "kind", "dataset", "manifest_version", "query", "state", "message",
                  "partitions_total", "partitions_planned", "partitions_done", "partitions_failed",
                  "events_total", "events_processed", "rows_delivered", "bytes_delivered", "started",
                  "output", "complete", "statement")
_UNPROCESSED_FIELDS = ("partition", "object", "event_start", "event_stop", "reason", "errno")


def skim_request_to_proto(source, dataset, *, where=None, columns=None, expressions=None,
                          language="cut", event_range=None, pushdown="auto", partition_bytes=None,
                          partition_events=None, format=None, compression=None,
                          request_id="") -> pb.SkimRequest:
    if language not in LANGUAGES:
        raise QueryError(f"language must be one of {sorted(LANGUAGES)}, got {language!r}")
    if pushdown not in PUSHDOWN:
        raise QueryError(f"pushdown must be one of {sorted(PUSHDOWN)}, got {pushdown!r}")
    if isinstance(columns, str):
        columns = [columns]
    msg = pb.SkimRequest(source=source, dataset=dataset, language=LANGUAGES[language],
                         selection=where or "", pushdown=PUSHDOWN[pushdown],
                         partition_bytes=int(partition_bytes or 0),
                         partition_events=int(partition_events or 0), format=format or "",
                         compression=compression or "", request_id=request_id or "")
    fill_selection(msg, columns, expressions, event_range)
    return msg


def skim_spec_from_proto(p):
    from .skims import SkimSpec

    language = LANGUAGE_NAMES.get(p.language)
    if language is None:
        raise QueryError(f"unknown query language {p.language} (known: {sorted(LANGUAGES)})")
    pushdown = PUSHDOWN_NAMES.get(p.pushdown)
    if pushdown is None:
        raise QueryError(f"unknown pushdown mode {p.pushdown} (known: {sorted(PUSHDOWN)})")
    event_range = None
    if p.HasField("event_range"):
        event_range = (p.event_range.start, p.event_range.stop if p.event_range.HasField("stop") else None)
    expressions = {x.name: (x.expression.text if x.expression.WhichOneof("form") == "text"
                            else expression_from_proto(x.expression, f"output column {x.name!r}"))
                   for x in p.expressions}
    return SkimSpec(source=p.source, dataset=p.dataset, where=p.selection or None,
                    columns=list(p.columns) or None, expressions=expressions or None,
                    language=language, event_range=event_range, pushdown=pushdown,
                    partition_bytes=p.partition_bytes or None,
                    partition_events=p.partition_events or None,
                    format=p.format or None, compression=p.compression or None,
                    request_id=p.request_id)


def skim_done_to_proto(m) -> pb.SkimDone:
    sizes = m.partition_table()["bytes"]
    return pb.SkimDone(dataset=m.dataset, version=m.version, num_events=m.num_events,
                       num_partitions=m.num_partitions, bytes=int(sum(int(b) for b in sizes)),
                       provenance_json=json.dumps(m.provenance, sort_keys=True, default=str))


def skim_done_from_proto(p) -> dict:
    return {"dataset": p.dataset, "version": p.version, "num_events": p.num_events,
            "num_partitions": p.num_partitions, "bytes": p.bytes,
            "provenance": json.loads(p.provenance_json) if p.provenance_json else None}


def _unprocessed(u: dict) -> pb.UnprocessedPartition:
    return pb.UnprocessedPartition(**{k: u[k] for k in _UNPROCESSED_FIELDS})


def status_to_proto(status) -> pb.RequestStatus:
    d = status.as_dict()
    msg = pb.RequestStatus(**{k: d[k] for k in _STATUS_FIELDS}, ended=d["ended"] or 0.0)
    msg.failures.extend(_unprocessed(u) for u in d["failures"])
    msg.unprocessed.extend(_unprocessed(u) for u in d["unprocessed"])
    return msg


def status_from_proto(p) -> dict:
    """The status as a dict with the keys of ``RequestStatus.as_dict()``."""
    d = {k: getattr(p, k) for k in _STATUS_FIELDS}
    d["ended"] = p.ended or None
    d["failures"] = [{k: getattr(u, k) for k in _UNPROCESSED_FIELDS} for u in p.failures]
    d["unprocessed"] = [{k: getattr(u, k) for k in _UNPROCESSED_FIELDS} for u in p.unprocessed]
    return d
