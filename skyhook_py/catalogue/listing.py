"""Listing datasets by name pattern and metadata filter, from the listing index alone.

``manifest._datasets`` holds, per dataset, the committed version's index entry
(storage/manifest.py ``index_entry``: version, created, events, partitions, metadata),
so a filtered listing reads one object whatever the number of datasets.  The index is
updated right after each commit: for that moment it may still show the previous
version's entry (see formats/layout.md).
"""

from __future__ import annotations

import fnmatch

from ..errors import SkyhookError, UnknownDatasetError
from ..storage import manifest as mf
from .where import Filter

WILDCARDS = "*?["


def has_wildcard(text: str) -> bool:
    return any(c in text for c in WILDCARDS)


def filter_fields(name: str, entry: dict) -> dict:
    """What a ``--where`` filter sees of one dataset: its metadata and its own fields."""
    return {**(entry.get("metadata") or {}), "name": name, "dataset": name,
            "version": entry.get("version"), "events": entry.get("events"),
            "partitions": entry.get("partitions"), "created": entry.get("created")}


def entries(store, patterns=None, where: str | None = None) -> list[dict]:
    """``[{"name", "version", "created", "events", "partitions", "metadata"}]`` of the
    datasets whose name matches one of ``patterns`` (shell wildcards, case-sensitive;
    None: all) and whose metadata satisfies ``where`` (catalogue/where.py), by name."""
    if isinstance(patterns, str):
        patterns = [patterns]
    flt = Filter(where) if where else None
    out = []
    for name, entry in sorted(mf.read_index(store).items()):
        if patterns and not any(fnmatch.fnmatchcase(name, p) for p in patterns):
            continue
        if flt is not None and not flt.matches(filter_fields(name, entry)):
            continue
        out.append({"name": name, "version": entry.get("version"), "created": entry.get("created"),
                    "events": entry.get("events"), "partitions": entry.get("partitions"),
                    "metadata": dict(entry.get("metadata") or {})})
    return out


def resolve(store, spec) -> list[str]:
    """The dataset references a query names: a name (``ds`` or ``ds@v3``), a pattern
    (``DY*``) or a list of them; patterns expand to the matching names, in name order.
    Duplicates are dropped; an empty result is an error."""
    items = [spec] if isinstance(spec, str) else list(spec)
    if not items:
        raise SkyhookError("no dataset given")
    known = None
    out: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise SkyhookError(f"a dataset name or pattern must be text, not {type(item).__name__}")
        if has_wildcard(item):
            if "@" in item:
                raise SkyhookError(f"{item!r}: a version (@vN) names one dataset, not a pattern")
            if known is None:
                known = mf.list_datasets(store)
            hits = [n for n in known if fnmatch.fnmatchcase(n, item)]
            if not hits:
                raise UnknownDatasetError(item, known)
            out.extend(h for h in hits if h not in out)
        elif item not in out:
            out.append(item)
    return out
