"""The one compile entry: a query as users give it -> one ``ir.Query``, checked against
the dataset's schema exactly once, before any partition is touched.

Every frontend goes through ``compile_query``: the Python API and the CLI
(``Session.build_query``) and the gRPC coordinator (``Coordinator.start``, with what
``service.wire`` decoded).  Cut strings and expressions are parsed without the schema
(``query.lang``) and the whole query is then checked once (``ir.check_query``); qastle
and uproot-raw queries are compiled by their language, whose translator needs the
schema anyway (``e.Muon.pt`` means ``Muon_pt``) and checks the query itself.

``CompiledQueries`` keeps compiled queries (and what is derived from them, e.g. a plan)
by a caller's key and by the manifest object they were made against: the Session keys
them by its arguments, the gRPC coordinator by request token.

What it ignores: where the schema comes from (the manifest), planning and execution.
"""

from __future__ import annotations

import collections
import threading
import weakref
from typing import Mapping

from ..errors import QueryError
from . import codec, ir, lang, literals


def compile_query(schema: Mapping[str, ir.ColumnType], *, language: str = "cut", where=None,
                  columns=None, expressions=None, event_range=None, limit=None,
                  aggregations=()) -> ir.Query:
    """Build and check an ``ir.Query``.

    language: "cut" (``where`` is a cut string or an IR expression), "qastle" or
    "uproot-raw" (``where`` is the whole query text; no ``columns``/``expressions``).
    columns: names or IR expressions (default: every column when nothing else is asked).
    expressions: name -> cut-string text or IR expression (computed output columns).
    aggregations: ``ir.Aggregation`` values, or plain dicts as the gRPC ``Client`` takes
    them (``{"kind": "hist1d", "name": "met", "x": "MET_pt", "bins": 50, "low": 0,
    "high": 200}``).
    """
    check_sizes(where=where, columns=columns, expressions=expressions, aggregations=aggregations)
    schema = dict(schema)
    aggregations = [as_aggregation(a) for a in aggregations or ()]
    seen = set()
    for a in aggregations:
        if a.name in seen:
            raise QueryError(f"two aggregations are named {a.name!r}; give each its own name")
        seen.add(a.name)
    if language != "cut":
        if columns or expressions:
            raise QueryError(f"with language={language!r} the query text holds the columns; "
                             "do not pass columns= or expressions=")
        q = literals.normalize_query(lang.compile_query(language, where, schema), schema)
        return _with_range(q, event_range, limit)
    outputs, labels = [], {}
    if columns is None and not expressions and not aggregations:
        columns = list(schema)
    for c in columns or []:
        if isinstance(c, ir.Expr):
            outputs.append((repr(c), c))
        else:
            outputs.append((c, lang.compile_expression(c)))
            labels[c] = f"output expression {c.strip()!r}"
    for name, text in (expressions or {}).items():
        if isinstance(text, ir.Expr):
            outputs.append((name, text))
        else:
            outputs.append((name, lang.compile_expression(text)))
            labels[name] = f"output expression {text.strip()!r}"
    cut = None
    if where is not None:
        cut = where if isinstance(where, ir.Expr) else lang.compile_cut(where)
    q = ir.Query(outputs=tuple(outputs), where=cut, aggregations=tuple(aggregations))
    ir.check_query(q, schema, labels)
    q = literals.normalize_query(q, schema)   # ints outside int64, as NumPy 2 does
    codec.check_histogram_cells(q.aggregations)  # what the class would refuse (E2BIG)
    return _with_range(q, event_range, limit)


def check_sizes(*, where=None, columns=None, expressions=None, aggregations=()):
    """Refuse a query too large to be legitimate before any work proportional to it
    (QueryError, INVALID_ARGUMENT over gRPC)."""
    from .. import defaults

    n_out = len(columns or ()) + len(expressions or ())
    if n_out > defaults.MAX_QUERY_OUTPUTS:
        raise QueryError(f"the query asks for {n_out:,} output columns; at most "
                         f"{defaults.MAX_QUERY_OUTPUTS:,} are allowed")
    if len(aggregations or ()) > defaults.MAX_QUERY_AGGREGATIONS:
        raise QueryError(f"the query has {len(aggregations):,} aggregations; at most "
                         f"{defaults.MAX_QUERY_AGGREGATIONS:,} are allowed")
    texts = [("cut", where)] + [(f"column {c!r}"[:60], c) for c in (columns or ())]
    texts += [(f"expression {n!r}"[:60], t) for n, t in (expressions or {}).items()]
    for what, t in texts:
        if isinstance(t, str) and len(t) > defaults.MAX_QUERY_TEXT:
            raise QueryError(f"the {what} is {len(t):,} characters long; at most "
                             f"{defaults.MAX_QUERY_TEXT:,} are allowed")


def _with_range(q: ir.Query, event_range, limit) -> ir.Query:
    start, stop = (event_range or (0, None))
    return ir.Query(outputs=q.outputs, where=q.where, aggregations=q.aggregations,
                    event_start=start or 0, event_stop=stop,
                    limit=limit if limit is not None else q.limit)


def as_aggregation(a) -> ir.Aggregation:
    """An ``ir.Aggregation`` from itself or from a plain dict (the ``Client``'s form):
    kind (count, sum, min, max, mean, hist1d, hist2d), name (default: the kind), x, y,
    weight (expression text or IR), bins/low/high, y_bins/y_low/y_high."""
    if isinstance(a, ir.Aggregation):
        return a
    if not isinstance(a, dict):
        raise QueryError(f"an aggregation must be an ir.Aggregation or a dict, got {a!r}")
    d = dict(a)
    kinds = {k.name.lower(): k for k in ir.AggKind}
    kind = str(d.pop("kind", "")).lower()
    if kind not in kinds:
        raise QueryError(f"aggregation kind must be one of {sorted(kinds)}, got {kind!r}")
    name = str(d.pop("name", kind))
    exprs = {}
    for role in ("x", "y", "weight"):
        e = d.pop(role, None)
        exprs[role] = e if e is None or isinstance(e, ir.Expr) else lang.compile_expression(str(e))
    try:
        x_axis = ir.Axis(int(d.pop("bins")), float(d.pop("low")), float(d.pop("high"))) if "bins" in d else None
        y_axis = (ir.Axis(int(d.pop("y_bins")), float(d.pop("y_low")), float(d.pop("y_high")))
                  if "y_bins" in d else None)
    except (KeyError, TypeError, ValueError) as e:
        raise QueryError(f"aggregation {name!r}: an axis needs bins, low and high as numbers ({e})") from None
    if d:
        raise QueryError(f"unknown keys in aggregation {name!r}: {sorted(d)}")
    return ir.Aggregation(kinds[kind], name, x=exprs["x"], y=exprs["y"], weight=exprs["weight"],
                          x_axis=x_axis, y_axis=y_axis)


COMPILED_ENTRIES = 512   # compiled queries kept (each is a few kB of IR)


class CompiledQueries:
    """token -> values made against one manifest object (e.g. the ``ir.Query`` and its
    cache key), least recently used dropped first.

    The manifest comes from a ManifestCache, which hands out the same object while the
    committed version is unchanged (its one omap read per query decides that) and a new
    object after any commit, so an entry made against another manifest object is never
    used: a hit skips the work, never the version check.  Entries hold their manifest by
    weak reference, so they never keep an old one alive."""

    def __init__(self, size: int = COMPILED_ENTRIES):
        self.size = size
        self._entries: collections.OrderedDict = collections.OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, token, manifest):
        """The values put for ``token`` against this very manifest object, or None."""
        with self._lock:
            e = self._entries.get(token)
            if e is None or e[0]() is not manifest:
                self.misses += 1
                return None
            self._entries.move_to_end(token)
            self.hits += 1
            return e[1]

    def put(self, token, manifest, *values):
        try:   # a weak reference: an entry never keeps an old manifest alive
            ref = weakref.ref(manifest)
        except TypeError:
            ref = lambda: manifest
        with self._lock:
            self._entries[token] = (ref, values)
            self._entries.move_to_end(token)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def __len__(self):
        return len(self._entries)


def arguments_token(**args):
    """A hashable key of compile_query's arguments when they are plain text and numbers
    (names, cut strings, ranges), None otherwise (IR values, aggregations as dicts):
    such a query is compiled every time.  Every value carries its type, so that ``1``,
    ``1.0`` and ``True`` never share a key."""
    try:
        return tuple((name, _frozen(v)) for name, v in sorted(args.items()))
    except TypeError:
        return None


def _frozen(v):
    if v is None or type(v) in (str, int, float):
        return (type(v).__name__, v)
    if type(v) in (list, tuple):
        return ("seq", tuple(_frozen(x) for x in v))
    if type(v) is dict:
        return ("map", tuple((_frozen(k), _frozen(x)) for k, x in v.items()))
    raise TypeError(type(v).__name__)
