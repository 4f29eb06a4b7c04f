"""The exceptions users see.  Each is a SkyhookError and a builtin kind, so that
``except KeyError`` works for an unknown column and ``except SkyhookError`` for all.

Messages say what was expected, what was given, and where (dataset, partition,
file, position in the query); unknown names come with the closest valid ones.
"""

from __future__ import annotations

import difflib


class SkyhookError(Exception):
    """Base of every error Skyhook raises on purpose."""


class QueryError(SkyhookError, ValueError):
    """The query is invalid or outside what Skyhook can evaluate."""

    def __init__(self, message: str, position: int | None = None, source: str | None = None):
        self.position = position
        self.source = source
        if position is not None and source is not None:
            caret = " " * position + "^"
            message = f"{message}\n  {source}\n  {caret}"
        elif position is not None:
            message = f"{message} (at position {position} of the query)"
        super().__init__(message)


class UnsupportedError(QueryError):
    """A construct of the query language that Skyhook does not push down or evaluate."""


class UnknownColumnError(SkyhookError, KeyError):
    def __init__(self, name: str, suggestions=(), where: str | None = None, dataset: str | None = None):
        self.name = name
        self.suggestions = list(suggestions)
        msg = f"unknown column {name!r}"
        if dataset:
            msg += f" in dataset {dataset!r}"
        if where:
            msg += f" (in the {where})"
        if self.suggestions:
            msg += "; did you mean " + ", ".join(repr(s) for s in self.suggestions) + "?"
        self.message = msg
        super().__init__(msg)

    def __str__(self):  # KeyError would quote the message
        return self.message


class UnknownDatasetError(SkyhookError, KeyError):
    def __init__(self, name: str, known=()):
        self.name = name
        msg = f"no dataset {name!r}"
        close = closest_matches(name, known)
        if close:
            msg += "; did you mean " + ", ".join(repr(s) for s in close) + "?"
        elif known:
            msg += f"; datasets: {', '.join(sorted(known)[:20])}"
        else:
            msg += " (the pool holds no datasets yet)"
        self.message = msg
        super().__init__(msg)

    def __str__(self):
        return self.message


class DatasetExistsError(SkyhookError, FileExistsError):
    """A dataset of that name exists already (use append, or delete it first)."""


class InputFileError(SkyhookError, ValueError):
    """A source file cannot be ingested: missing, corrupt, wrong tree, inconsistent."""


class ClusterError(SkyhookError, ConnectionError):
    """The Ceph cluster cannot be reached or refused an operation."""


class ObjectClassError(SkyhookError, RuntimeError):
    """The object class answered a call with a negative errno (see formats/README.md)."""

    def __init__(self, errno_: int, obj: str, message: str):
        self.errno = errno_
        self.object = obj
        super().__init__(f"{message} (errno {errno_}, object {obj!r})")


class CorruptObjectError(ObjectClassError):
    """A stored partition is not valid Arrow data (DATA_LOSS)."""


class ReplyTooLargeError(ObjectClassError):
    """The answer of one partition is larger than the reply limit."""


class ConcurrentUpdateError(SkyhookError, RuntimeError):
    """Another writer committed a new version of the dataset first."""


def closest_matches(name: str, candidates, n: int = 3) -> list[str]:
    """The candidates closest to ``name`` (case-insensitive), best first."""
    candidates = list(candidates)
    lower = {c.lower(): c for c in candidates}
    hits = difflib.get_close_matches(name.lower(), list(lower), n=n, cutoff=0.6)
    out = [lower[h] for h in hits]
    # a column that contains the name as a part (pt -> Muon_pt) helps too
    if len(out) < n:
        for c in sorted(candidates):
            if c not in out and name.lower() in c.lower() and len(name) >= 2:
                out.append(c)
                if len(out) == n:
                    break
    return out
