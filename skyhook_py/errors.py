"""Every exception Skyhook raises on purpose, and the one errno table.

Each exception is a SkyhookError and a builtin kind, so that ``except KeyError``
works for an unknown column and ``except SkyhookError`` for all.  Messages say what
was expected, what was given, and where (dataset, partition, file, position in the
query); unknown names come with the closest valid ones.

``CLASS_ERRNOS`` is the one table of the object class's errnos (formats/README.md):
errno -> message, exception class, gRPC status code.  ``STATUS_ROWS`` maps every
exception to a gRPC status code (by name: this module imports no grpc; the service
turns names into ``grpc.StatusCode``), and ``EXCEPTION_OF_STATUS`` goes back on the
client side.  What it ignores: how errors travel (service/) and who raises them.
"""

from __future__ import annotations

import dataclasses
import difflib
import errno as E
import os


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


class UnknownVersionError(UnknownDatasetError):
    """A version of a dataset that was never committed, or that gc collected (NOT_FOUND)."""

    def __init__(self, message: str, name: str = ""):
        self.name = name
        self.suggestions = []
        self.message = message
        KeyError.__init__(self, message)


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


class AnswerTooLargeError(SkyhookError):
    """A query's whole answer is larger than one reply of QueryWhole carries (the
    client asks again with Query, which streams)."""


class ConcurrentUpdateError(SkyhookError, RuntimeError):
    """Another writer committed a new version of the dataset first."""


class EvaluationError(QueryError):
    """A query that cannot be evaluated on this data (reference evaluator); ``errno`` is
    what the object class returns for the same query."""

    def __init__(self, message: str, errno_: int = E.EINVAL):
        self.errno = errno_
        super().__init__(message)


class ProtocolError(SkyhookError, ValueError):
    """Bytes that are not a ScanRequest/ScanReply of the version we speak."""


class PartialResultError(SkyhookError, RuntimeError):
    """Some partitions failed: the answer is incomplete.  Raised where the API returns
    a bare table (``Session.query(fail_fast=False)``, ``Client.query(allow_partial=True)``);
    ``result`` is the PartialQueryResult (the rows that did arrive, the failures)."""

    def __init__(self, result):
        self.result = result
        failed = result.failures
        first = failed[0] if failed else None
        super().__init__(
            f"{len(failed)} partition(s) failed, the answer is incomplete"
            + (f" (first: {first.object!r}: {first.message})" if first else "")
            + "; the partial answer is this exception's .result")


class DeadlineExceeded(ClusterError, TimeoutError):
    """The query's deadline passed before every partition answered."""


class AuthenticationError(SkyhookError, PermissionError):
    """The request carries no valid bearer token (UNAUTHENTICATED)."""


class QueryCancelled(SkyhookError):
    """The query was cancelled (by Cancel(query_id), or because its client went away)."""


class AdmissionRefused(SkyhookError):
    """A client already has its share of queries admitted by the coordinator
    (service/admission.py); retry later."""


class DuplicateQueryError(SkyhookError, ValueError):
    """A query with this id is running already (ALREADY_EXISTS)."""


class NoWriterError(SkyhookError, PermissionError):
    """The coordinator has no writer identity, so it cannot write datasets (skims)
    (FAILED_PRECONDITION)."""


class UnknownRequestError(SkyhookError, KeyError):
    """No request with this id is running or in the tracker's history (NOT_FOUND)."""

    def __init__(self, request_id: str, history: int = 0):
        self.request_id = request_id
        super().__init__(request_id)
        self._msg = (f"no request with id {request_id!r} is running or among the last "
                     f"{history} finished ones" if history else f"no request with id {request_id!r}")

    def __str__(self):
        return getattr(self, "_msg", None) or Exception.__str__(self)


# -- the errno table ------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class ClassErrno:
    """What one negative errno of the object class means (formats/README.md)."""

    message: str
    exception: type = ObjectClassError
    grpc_code: str = "INTERNAL"


# errnos that mean "the request or the data is bad": resending cannot help
CLASS_ERRNOS: dict[int, ClassErrno] = {
    E.EINVAL: ClassErrno("the object class rejected the request as invalid"),
    E.EPROTONOSUPPORT: ClassErrno(
        "the OSD's skyhook class does not speak this request version (upgrade the class)"),
    E.ESRCH: ClassErrno("a column of the query is missing from the partition (stale manifest?)",
                        grpc_code="FAILED_PRECONDITION"),
    E.E2BIG: ClassErrno("the query is too large for the object class "
                        "(too many nodes, too deep, or too many bins)", grpc_code="INVALID_ARGUMENT"),
    E.EFBIG: ClassErrno("the partition is too large for pushdown; reshard the dataset into smaller partitions"),
    E.EMSGSIZE: ClassErrno("the answer of this partition exceeds the reply limit: narrow the query "
                           "(fewer columns, a tighter cut, a limit) or reshard into smaller partitions",
                           ReplyTooLargeError, "RESOURCE_EXHAUSTED"),
    E.EBADMSG: ClassErrno("the partition object is corrupt (not valid Arrow data)",
                          CorruptObjectError, "DATA_LOSS"),
    E.EDOM: ClassErrno("integers to negative integer powers are not allowed",
                       grpc_code="INVALID_ARGUMENT"),  # the query's fault
    E.ETIME: ClassErrno("the partition scan exceeded the OSD's time budget", grpc_code="DEADLINE_EXCEEDED"),
    E.ENOMEM: ClassErrno("the partition scan exceeded the OSD's memory budget",
                         grpc_code="RESOURCE_EXHAUSTED"),
    # the executor resends after a pause (formats/README.md "Time slices"); seen only
    # when that keeps failing
    E.EBUSY: ClassErrno("the OSD kept refusing this client's scans: it used more than its share of the "
                        "OSD while other clients were waiting", grpc_code="UNAVAILABLE"),
    E.EIO: ClassErrno("internal error in the object class (see the OSD log)"),
    E.ENOENT: ClassErrno("the partition object does not exist (dataset damaged or deleted during the query?)",
                         grpc_code="FAILED_PRECONDITION"),
}
# errnos of librados itself that a resend can cure
RETRYABLE_ERRNOS = frozenset({E.ETIMEDOUT, E.EAGAIN, E.ENOTCONN, E.ESHUTDOWN, E.ECONNRESET})


def class_errno_message(errno_: int) -> str:
    """The user-facing meaning of an object-class errno."""
    row = CLASS_ERRNOS.get(errno_)
    return row.message if row else os.strerror(errno_)


def partition_error(errno_: int, obj: str, message: str) -> SkyhookError:
    """The exception for a partition that failed with ``errno_``: a librados errno (a
    timeout, a lost connection, after the retries) is a ClusterError, not the class's."""
    if errno_ in RETRYABLE_ERRNOS:
        err = ClusterError(f"{message} ({os.strerror(errno_)}, errno {errno_}, object {obj!r}); "
                           "the cluster did not answer (an OSD down or stopped?)")
        err.errno = errno_
        return err
    row = CLASS_ERRNOS.get(errno_)
    return (row.exception if row else ObjectClassError)(errno_, obj, message)


# -- exceptions <-> gRPC status codes (by name) ---------------------------------------
# The first row whose class (and errno, for object-class errors) matches wins, so
# subclasses come first.
STATUS_ROWS: tuple = (
    (AuthenticationError, None, "UNAUTHENTICATED"),
    (QueryCancelled, None, "CANCELLED"),
    (DuplicateQueryError, None, "ALREADY_EXISTS"),
    (AdmissionRefused, None, "RESOURCE_EXHAUSTED"),
    (DeadlineExceeded, None, "DEADLINE_EXCEEDED"),
    (UnsupportedError, None, "UNIMPLEMENTED"),
    (UnknownColumnError, None, "INVALID_ARGUMENT"),   # names the column and close matches
    (UnknownDatasetError, None, "NOT_FOUND"),
    (UnknownRequestError, None, "NOT_FOUND"),
    (NoWriterError, None, "FAILED_PRECONDITION"),
    (DatasetExistsError, None, "ALREADY_EXISTS"),
    (QueryError, None, "INVALID_ARGUMENT"),
    (CorruptObjectError, None, "DATA_LOSS"),
    (ConcurrentUpdateError, None, "ABORTED"),         # e.g. a describe page token of an older version
    (ReplyTooLargeError, None, "RESOURCE_EXHAUSTED"),
    (AnswerTooLargeError, None, "RESOURCE_EXHAUSTED"),
    *((ObjectClassError, errno_, row.grpc_code) for errno_, row in CLASS_ERRNOS.items()
      if row.grpc_code != "INTERNAL"),
    (ObjectClassError, None, "INTERNAL"),
    (ClusterError, None, "UNAVAILABLE"),
    (ValueError, None, "INVALID_ARGUMENT"),           # e.g. the planner's bad pushdown mode
    (SkyhookError, None, "INTERNAL"),
)


def status_code_name(exc: BaseException) -> str | None:
    """The gRPC status code (its name) for an exception, or None if none matches."""
    for cls, errno_, code in STATUS_ROWS:
        if isinstance(exc, cls) and (errno_ is None or getattr(exc, "errno", None) == errno_):
            return code
    return None


# the client's way back, when the server named no exception class
EXCEPTION_OF_STATUS = {
    "INVALID_ARGUMENT": QueryError, "NOT_FOUND": UnknownDatasetError, "UNIMPLEMENTED": UnsupportedError,
    "DATA_LOSS": CorruptObjectError, "UNAVAILABLE": ClusterError, "DEADLINE_EXCEEDED": DeadlineExceeded,
    "CANCELLED": QueryCancelled, "UNAUTHENTICATED": AuthenticationError,
    "ALREADY_EXISTS": DuplicateQueryError,
}


# the classes the client rebuilds by the name the server sends (``skyhook-error``)
WIRE_EXCEPTIONS = {c.__name__: c for c in (
    QueryError, UnsupportedError, UnknownColumnError, UnknownDatasetError, ClusterError,
    ObjectClassError, CorruptObjectError, ReplyTooLargeError, SkyhookError,
    AuthenticationError, QueryCancelled, DuplicateQueryError, DeadlineExceeded, UnknownRequestError,
    NoWriterError, DatasetExistsError, ConcurrentUpdateError, AdmissionRefused, UnknownVersionError,
    AnswerTooLargeError)}


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
