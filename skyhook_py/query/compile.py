"""The one compile entry: a query as users give it -> one ``ir.Query``, checked against
the dataset's schema exactly once, before any partition is touched.

Every frontend goes through ``compile_query``: the Python API and the CLI
(``Session.build_query``) and the gRPC coordinator (``Coordinator.start``, with what
``service.wire`` decoded).  Cut strings and expressions are parsed without the schema
(``query.lang``) and the whole query is then checked once (``ir.check_query``); qastle
and uproot-raw queries are compiled by their language, whose translator needs the
schema anyway (``e.Muon.pt`` means ``Muon_pt``) and checks the query itself.

What it ignores: where the schema comes from (the manifest), planning and execution.
"""

from __future__ import annotations

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
