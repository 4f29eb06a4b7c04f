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
from . import codec, ir, lang


def compile_query(schema: Mapping[str, ir.ColumnType], *, language: str = "cut", where=None,
                  columns=None, expressions=None, event_range=None, limit=None,
                  aggregations=()) -> ir.Query:
    """Build and check an ``ir.Query``.

    language: "cut" (``where`` is a cut string or an IR expression), "qastle" or
    "uproot-raw" (``where`` is the whole query text; no ``columns``/``expressions``).
    columns: names or IR expressions (default: every column when nothing else is asked).
    expressions: name -> cut-string text or IR expression (computed output columns).
    aggregations: ``ir.Aggregation`` values (their expressions already IR).
    """
    schema = dict(schema)
    if language != "cut":
        if columns or expressions:
            raise QueryError(f"with language={language!r} the query text holds the columns; "
                             "do not pass columns= or expressions=")
        return _with_range(lang.compile_query(language, where, schema), event_range, limit)
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
    codec.check_histogram_cells(q.aggregations)  # what the class would refuse (E2BIG)
    return _with_range(q, event_range, limit)


def _with_range(q: ir.Query, event_range, limit) -> ir.Query:
    start, stop = (event_range or (0, None))
    return ir.Query(outputs=q.outputs, where=q.where, aggregations=q.aggregations,
                    event_start=start or 0, event_stop=stop,
                    limit=limit if limit is not None else q.limit)
