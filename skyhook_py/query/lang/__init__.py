"""Query languages compiled to Skyhook's IR (``skyhook_py.query.ir``).

- ``cutstring``: uproot-style cut strings and output expressions (Python syntax,
  parsed with ``ast``);
- ``qastle``: func_adl's text form as ``servicex``/``func_adl`` send it;
- ``uproot_raw``: servicex's uproot-raw JSON (a list of ``TTree.arrays()`` calls).

Every compiler checks the result against the dataset schema (a dict of column
name -> ``ir.ColumnType``) before any data is read: unknown columns raise
``UnknownColumnError`` with close matches, constructs outside the pushdown
subset raise ``UnsupportedError`` naming the construct and its position.
"""

from __future__ import annotations

from typing import Mapping

from ...errors import QueryError, closest_matches
from .. import ir
from .cutstring import compile_cut, compile_expression
from .qastle import compile_qastle
from .uproot_raw import compile_uproot_raw

__all__ = [
    "LANGUAGES", "compile_cut", "compile_expression", "compile_qastle", "compile_query",
    "compile_uproot_raw", "split_columns",
]

LANGUAGES = ("cut", "qastle", "uproot-raw")


def compile_query(language: str, text, schema: Mapping[str, ir.ColumnType]) -> ir.Query:
    """Compile ``text`` in ``language`` ("cut", "qastle" or "uproot-raw") into one Query.

    A cut selects events and returns no computed columns (the caller adds the
    columns it wants).  An uproot-raw query must hold exactly one tree query here;
    use ``compile_uproot_raw`` for several.
    """
    if language == "cut":
        return ir.Query(where=compile_cut(text, schema))
    if language == "qastle":
        return compile_qastle(text, schema)
    if language == "uproot-raw":
        queries = compile_uproot_raw(text, schema)
        if len(queries) != 1:
            trees = ", ".join(t for t, _ in queries)
            raise QueryError(
                f"this uproot-raw query asks for {len(queries)} trees ({trees}); a Skyhook dataset "
                "answers one tree query at a time"
            )
        return queries[0][1]
    close = closest_matches(str(language), LANGUAGES)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise QueryError(f"unknown query language {language!r}: expected one of {', '.join(LANGUAGES)}{hint}")


def split_columns(text: str) -> list[str]:
    """Split a comma-separated list of columns or expressions at the commas that are not
    inside brackets, parentheses, braces or quotes: ``"run, Muon_pt[:, 0], hypot(a, b)"``
    is three items.  Unbalanced brackets are left for the expression parser to report."""
    items, depth, quote, start = [], 0, None, 0
    for i, ch in enumerate(text):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth = max(0, depth - 1)
        elif ch == "," and depth == 0:
            items.append(text[start:i])
            start = i + 1
    items.append(text[start:])
    return [c.strip() for c in items if c.strip()]
