"""A dataset's description in bounded pieces: a summary, then partitions and sources by page.

A manifest of 10^5 partitions x 3,000 columns holds gigabytes of statistics; a
description must not read or send them whole.  ``summary`` reads the header (and the
partition table, the bytes per partition: 56 B per partition, the same table a query
reads) and never the statistics; ``partition_page`` and ``source_page`` return one
bounded slice, with the statistics of the asked columns only (each column read is one
contiguous range per segment).  Page tokens name the version they page through, so a
page of another version is refused instead of mixing two versions.

Used by ``skyhook describe`` (transcode/cli.py) and the gRPC DescribeDataset
(service/server.py).
"""

from __future__ import annotations

import json
import math

import numpy as np

from ..errors import ConcurrentUpdateError, ProtocolError

MAX_PAGE_PARTITIONS = 10_000   # per page, without statistics
MAX_PAGE_STAT_VALUES = 200_000  # partitions x stats columns per page
MAX_PAGE_SOURCES = 10_000


def summary(m) -> dict:
    """Counts, sizes, schema facts and versions of a loaded manifest (no statistics read)."""
    sizes = m.partition_table()["bytes"]
    cb = m.column_bytes()
    pieces = getattr(m, "pieces", None)
    out = {
        "dataset": m.dataset, "version": m.version, "created": m.created,
        "previous_version": m.previous_version, "encoding": dict(m.encoding),
        "num_events": int(m.num_events), "num_partitions": int(m.num_partitions),
        "num_sources": int(m.num_sources), "num_columns": len(m.schema),
        "bytes": int(sizes.sum()) if len(sizes) else 0,
        "partition_bytes": {"min": int(sizes.min()) if len(sizes) else 0,
                            "max": int(sizes.max()) if len(sizes) else 0},
        "uncompressed_bytes": None if cb is None else int(sum(cb.values())),
        "manifest_layout": {"format_version": 2 if pieces is not None else 1,
                            "segments": len(pieces.segments) if pieces is not None else None},
        "metadata": dict(getattr(m, "metadata", None) or {}),   # the catalogue's
        "change": getattr(m, "change", "") or "",
    }
    if getattr(m, "provenance", None) is not None:
        out["provenance"] = m.provenance
    return out


def make_token(m, offset: int) -> str:
    return f"{m.version}:{m.identity()[2]}:{offset}"


def parse_token(m, token: str, what: str = "page_token") -> int:
    """The offset a token names; ConcurrentUpdateError if it pages another version."""
    if not token:
        return 0
    try:
        version, ident, offset = token.rsplit(":", 2)
        version, offset = int(version), int(offset)
    except ValueError:
        raise ProtocolError(f"invalid {what} {token!r} (pass a reply's token unchanged)") from None
    if version != m.version or ident != str(m.identity()[2]) or offset < 0:
        raise ConcurrentUpdateError(
            f"{what} pages version {version} of dataset {m.dataset!r}, which is now at version "
            f"{m.version}: start again from the first page")
    return offset


def page_size(asked: int, stats_columns: int) -> int:
    cap = MAX_PAGE_PARTITIONS
    if stats_columns:
        cap = min(cap, max(1, MAX_PAGE_STAT_VALUES // stats_columns))
    return max(0, min(int(asked), cap))


def _stat_dict(col: np.ndarray, j: int, kind: str) -> dict:
    from . import pieces

    s = {}
    if not math.isnan(col[0, j]):
        lo, hi = float(col[0, j]), float(col[1, j])
        s["min"], s["max"] = (lo, hi) if kind == "float" else (int(lo), int(hi))
    for k in range(2, pieces.NF):
        v = col[k, j]
        if not math.isnan(v):
            s[pieces.STAT_FIELDS[k]] = int(v)
    return s


def partition_page(m, offset: int, limit: int, stats_columns=()) -> list[dict]:
    """Partitions [offset, offset + limit) as dicts (object, event_start, event_stop, bytes,
    source, stats with the ``stats_columns`` only)."""
    types = m.column_types()
    unknown = [c for c in stats_columns if c not in types]
    if unknown:
        import difflib

        from ..errors import UnknownColumnError

        raise UnknownColumnError(unknown[0], difflib.get_close_matches(unknown[0], list(types)),
                                 dataset=m.dataset)
    t = m.partition_table()
    stop = min(len(t["event_start"]), offset + limit)
    cols = {c: m.column_stats(c) for c in stats_columns}
    out = []
    for j in range(offset, stop):
        stats = {"version": 1, "rows": int(t["event_stop"][j] - t["event_start"][j]),
                 "columns": {c: _stat_dict(s, j, types[c].kind) for c, s in cols.items()}}
        out.append({"object": str(t["object"][j]), "event_start": int(t["event_start"][j]),
                    "event_stop": int(t["event_stop"][j]), "bytes": int(t["bytes"][j]),
                    "source": int(t["source"][j]), "stats": stats})
    return out


def source_page(m, offset: int, limit: int) -> list[dict]:
    import dataclasses

    if getattr(m, "pieces", None) is not None and m.base is None and m._sources is None:
        t = m.pieces.source_table()
        return t.slice(offset, max(0, min(limit, t.num_rows - offset))).to_pylist()
    return [dataclasses.asdict(s) for s in m.sources[offset:offset + limit]]


def history_lines(d: dict) -> list[str]:
    """Where a description's dataset comes from: skim provenance, catalogue metadata and
    the kept versions, as lines of text (shared by the bounded and the --full describe)."""
    lines = []
    prov = d.get("provenance") or {}
    if prov.get("kind") == "skim":
        q, src = prov.get("query") or {}, prov.get("source") or {}
        lines.append(f"  skim of {src.get('dataset')!r} v{src.get('version')} where {q.get('where')!r} "
                     f"({prov.get('events_selected', 0):,} of {prov.get('events_scanned', 0):,} events "
                     f"scanned; made {prov.get('created')})")
    if d.get("metadata"):
        lines.append("  metadata:")
        for k in sorted(d["metadata"]):
            lines.append(f"    {k:<20} {json.dumps(d['metadata'][k])}")
    if d.get("versions"):
        lines.append(f"  versions kept ({len(d['versions'])}):")
        for v in d["versions"]:
            lines.append(f"    v{v['version']:<4} {v['created']}  {v['num_events']:>12,} events  "
                         f"{v['num_partitions']:>6} partitions  {v['change'] or '-'}"
                         f"{'  (current)' if v['current'] else ''}")
    return lines


def render(d: dict, sources: list | None = None) -> str:
    """The summary as a few lines of text (bounded: no per-partition or per-column lines)."""
    enc = d["encoding"]
    lines = [
        f"dataset {d['dataset']}  version {d['version']}  created {d['created']}",
        f"  {d['num_events']:,} events in {d['num_partitions']:,} partitions, {d['bytes'] / 1e6:.2f} MB "
        f"({enc.get('format')}{', ' + enc['compression'] if enc.get('compression') else ''}); "
        f"partitions {d['partition_bytes']['min'] / 1e6:.2f}..{d['partition_bytes']['max'] / 1e6:.2f} MB",
        f"  {d['num_columns']:,} columns, {d['num_sources']:,} sources",
    ]
    lines += history_lines(d)
    if sources:
        lines.append("  sources:")
        for s in sources:
            lines.append(f"    {s['name']}  tree {s['tree']}  {s['entries']:,} entries  "
                         f"{s['size'] / 1e6:.2f} MB  sha256 {s['sha256'][:12]}")
        if d["num_sources"] > len(sources):
            lines.append(f"    ... {d['num_sources'] - len(sources):,} more (--full lists all)")
    return "\n".join(lines)
