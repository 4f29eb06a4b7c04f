"""servicex's uproot-raw queries compiled to IR ``Query`` objects, one per tree.

The JSON is what ``servicex.query.UprootRaw([...]).generate_selection_string()``
(servicex 3) sends: a list of dicts such as

    [{"treename": "Events", "expressions": null, "cut": "nMuon >= 2",
      "filter_name": ["Muon_pt", "nMuon"], "filter_typename": null, "aliases": null,
      "fail_on_missing_trees": null, "use_standard_awkward_axis": null}]

Each key means what the argument of the same name means for uproot's
``TTree.arrays()``, which is what the ServiceX transformer calls:

- ``treename``: a name, a list of names, or a dict ``{input: output}`` (one
  query per input tree);
- ``expressions``: output expressions (cut-string syntax, named by their text
  or by their alias); when absent, the outputs are the columns that
  ``filter_name`` selects (all columns when that is absent too);
- ``filter_name``: names, globs (``Muon_*``) or ``/regex/`` patterns; like
  uproot, it is ignored when ``expressions`` is given;
- ``cut``: a cut string; ``aliases``: names for expressions, usable in
  ``expressions``, ``cut`` and other aliases;
- ``use_standard_awkward_axis``: the ServiceX transformer lets ``ak.sum(x)``
  mean ``axis=1`` unless this is true; then an ``ak.`` reduction must name its
  axis (see ``cutstring``);
- ``fail_on_missing_trees`` is accepted and ignored (a dataset has one tree).

Refused: ``copy_histograms`` sub-queries (a dataset holds events, not
histograms) and ``filter_typename`` (ROOT type names are gone after ingest).
"""

from __future__ import annotations

import ast
import fnmatch
import json
import re
from typing import Mapping

from ...errors import QueryError, UnsupportedError, closest_matches
from .. import ir
from .cutstring import compile_cut, parse_expression

__all__ = ["compile_uproot_raw"]

_KEYS = (
    "treename", "expressions", "cut", "filter_name", "filter_typename", "aliases",
    "fail_on_missing_trees", "use_standard_awkward_axis",
)


def compile_uproot_raw(query, schema: Mapping[str, ir.ColumnType]) -> list[tuple[str, ir.Query]]:
    """Compile an uproot-raw query (JSON text, a list of dicts, or one dict)."""
    items = _load(query)
    out = []
    for i, item in enumerate(items):
        where = f"sub-query {i} of the uproot-raw query"
        if not isinstance(item, dict):
            raise QueryError(f"{where} must be a JSON object, got {type(item).__name__}")
        if "copy_histograms" in item:
            raise UnsupportedError(
                f"copy_histograms ({where}) is not supported: a Skyhook dataset holds events, not histograms"
            )
        for key in item:
            if key not in _KEYS:
                close = closest_matches(key, _KEYS)
                hint = f"; did you mean {', '.join(map(repr, close))}?" if close else f"; known keys: {', '.join(_KEYS)}"
                raise QueryError(f"unknown key {key!r} in {where}{hint}")
        query_ir = _compile_one(item, dict(schema), where)
        out.extend((tree, query_ir) for tree in _trees(item.get("treename"), where))
    return out


def _load(query):
    if isinstance(query, (bytes, bytearray)):
        query = query.decode("utf-8")
    if isinstance(query, str):
        try:
            query = json.loads(query)
        except json.JSONDecodeError as exc:
            raise QueryError(f"the uproot-raw query is not valid JSON: {exc.msg}", exc.pos, None) from None
    if isinstance(query, dict):
        query = [query]
    if not isinstance(query, list) or not query:
        raise QueryError("an uproot-raw query is a non-empty list of JSON objects")
    return query


def _trees(treename, where) -> list[str]:
    if isinstance(treename, str):
        return [treename]
    if isinstance(treename, list) and treename and all(isinstance(t, str) for t in treename):
        return list(treename)
    if isinstance(treename, dict) and treename and all(isinstance(t, str) for t in treename):
        return list(treename)  # {input tree: output tree}: the input names the data
    raise QueryError(f"{where} needs a treename (a string, a list or a dict of strings), got {treename!r}")


def _strings(value, key, where) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    raise QueryError(f"{key} in {where} must be a string or a list of strings, got {value!r}")


def _compile_one(item: dict, schema: dict, where: str) -> ir.Query:
    if item.get("filter_typename") is not None:
        raise UnsupportedError(f"filter_typename ({where}) is not supported; select columns by filter_name")
    default_axis = None if item.get("use_standard_awkward_axis") else 1
    aliases = _compile_aliases(item.get("aliases"), schema, where, default_axis)

    expressions = _strings(item.get("expressions"), "expressions", where)
    if expressions is not None:
        outputs = [(text, _output(text, aliases, default_axis)) for text in expressions]
    else:
        names = _filter(_strings(item.get("filter_name"), "filter_name", where), schema, where)
        outputs = [(name, ir.Column(name)) for name in names]

    cut = item.get("cut")
    where_expr = None
    if cut is not None:
        if not isinstance(cut, str):
            raise QueryError(f"cut in {where} must be a string, got {cut!r}")
        where_expr = compile_cut(cut, aliases=aliases, default_axis=default_axis)
    query = ir.Query(outputs=tuple(outputs), where=where_expr)
    ir.check_query(query, schema)
    return query


def _output(text: str, aliases, default_axis) -> ir.Expr:
    # an alias name as an expression is the alias (uproot names the field after it)
    return parse_expression(text, "expression", aliases, default_axis)


def _compile_aliases(aliases, schema, where, default_axis) -> dict[str, ir.Expr]:
    if aliases is None:
        return {}
    if not isinstance(aliases, dict) or not all(isinstance(v, str) for v in aliases.values()):
        raise QueryError(f"aliases in {where} must map names to expression strings, got {aliases!r}")
    done: dict[str, ir.Expr] = {}

    def resolve(name, chain):
        if name in done:
            return
        if name in chain:
            raise QueryError(f"the aliases in {where} refer to each other in a cycle: {' -> '.join(chain + [name])}")
        text = aliases[name]
        try:
            used = {n.id for n in ast.walk(ast.parse(text.strip(), mode="eval")) if isinstance(n, ast.Name)}
        except SyntaxError:
            used = set()  # parse_expression below reports the syntax error with its position
        for other in sorted(used & set(aliases)):
            if other != name or name not in schema:
                resolve(other, chain + [name])
        done[name] = parse_expression(text, f"alias {name!r}", done, default_axis)

    for name in aliases:
        resolve(name, [])
    return done


def _filter(patterns, schema, where) -> list[str]:
    if patterns is None:
        return list(schema)
    chosen = []
    for pattern in patterns:
        if len(pattern) >= 2 and pattern.startswith("/") and pattern.rfind("/") > 0:
            # uproot's /regex/flags form
            end = pattern.rfind("/")
            flags = re.IGNORECASE if "i" in pattern[end + 1:] else 0
            rx = re.compile(pattern[1:end], flags)
            hits = [c for c in schema if rx.fullmatch(c)]
        else:
            hits = [c for c in schema if fnmatch.fnmatchcase(c, pattern)]
        if not hits:
            close = closest_matches(pattern.strip("*/"), schema)
            hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
            raise QueryError(f"filter_name {pattern!r} in {where} matches no column{hint}")
        chosen.extend(h for h in hits if h not in chosen)
    # keep the dataset's column order, as uproot keeps the tree's branch order
    return [c for c in schema if c in chosen]
