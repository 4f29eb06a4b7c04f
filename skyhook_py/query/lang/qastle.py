"""qastle, the text form of func_adl queries, compiled to an IR ``Query``.

qastle is what ``servicex`` and ``func_adl`` send to a backend, e.g. (servicex 3,
``query.FuncADL_Uproot().FromTree("Events").Where(...).Select(...)``):

    (call Select (call Where (call EventDataset 'bogus.root' 'Events')
        (lambda (list e) (>= (attr e 'nMuon') 2)))
        (lambda (list e) (dict (list 'pt') (list (attr e 'Muon_pt')))))

The text is parsed with qastle's own grammar (``qastle/syntax.lark``, with
positions kept for error messages) into the Python AST that qastle defines, and
that AST is translated here.  The three spellings of a LINQ operator are one
thing: the LINQ node ``(Where src f)``, the function call
``(call Where src f)`` and the method call ``(call (attr src 'Where') f)``.

Mapping (``e`` is the event, ``m`` an object of a collection):

- event level: ``Where`` -> the cut (several are and-ed); ``Select`` with a
  dict -> output columns by key; with a list/tuple -> columns ``"0"``, ``"1"``,
  ... (the field names func_adl_uproot's awkward tuple gets); a single value ->
  one column ``"col1"``.  A later ``Where``/``Select`` may use the fields of an
  earlier ``Select`` (``r.pt``, ``r[0]``).
- ``e.Muon_pt`` and ``e['Muon_pt']`` are columns; ``e.Muon`` is the collection
  whose fields are the ``Muon_*`` columns, and ``m.pt`` of one of its objects is
  ``Muon_pt``.
- collections: ``.Where(lambda m: ...)`` keeps the objects passing it (a mask
  applied to every field selected afterwards, so ``e.Muon.Where(lambda m: m.pt >
  20).Select(lambda m: m.eta)`` is ``Muon_eta[Muon_pt > 20]``); ``.Select(lambda
  m: ...)`` computes per object; ``.Count() .Sum() .Min() .Max() .First() .Last()
  .ElementAt(i)`` and ``.Any(pred) .All(pred)`` are the IR's per-event
  reductions and element access.  ``First``/``ElementAt`` of an empty list give a
  missing value (the event is dropped by a cut on it); func_adl_uproot raises.
- inside lambdas: arithmetic, comparisons, ``and``/``or``/``not``, ``x if c else
  y`` (``where``), ``abs`` and the math functions of cut strings (``np.sqrt`` ...).
- pairs (``lang/pairs.py``), as function calls: ``pairs(e.Muon)`` (every pair i < j,
  of the objects kept by a ``.Where`` on the collection) and ``cross(e.Muon, e.Jet)``
  are collections of pairs: ``.Where(lambda p: ...)``, ``.Count()``, ``.Any(...)``,
  ``.Select(lambda p: p.mass).First()`` ..., with ``p.pt1``, ``p.charge2``,
  ``p.mass``, ``p.delta_r``, ``p.delta_phi``, ``p.delta_eta``; ``pairs(e.Muon).mass``
  is the collection of masses.  ``delta_phi``, ``delta_r``, ``inv_mass`` as in cut strings.

Rejected by name (``UnsupportedError``): ``SelectMany``, ``OrderBy``,
``Choose``, ``Zip``, ``Concat``, ``Contains``, ``Aggregate``, LINQ operators over
the events themselves (``Count`` of events), per-object records (a dict inside a
collection ``Select``), nested loops over two collections (a cartesian product),
method calls such as ``m.pt()``.  Nested lambdas over two collections (func_adl's own
spelling of a cartesian product) are understood in one form: an inner ``.Any(pred)`` /
``.All(pred)`` over a second collection whose ``pred`` uses the outer object, e.g.
``e.Jet.Where(lambda j: e.Muon.All(lambda m: delta_r(j.eta, j.phi, m.eta, m.phi) > 0.4))``
(CrossAny/CrossAll); other nested loops are refused: write ``pairs(...)``/``cross(...)``.  The tree and file names in ``EventDataset``
are ignored: the dataset is chosen by the request.  Event ranges and limits are
not part of qastle.
"""

from __future__ import annotations

import ast
import dataclasses
import os
from typing import Mapping

from ...errors import QueryError, UnknownColumnError, UnsupportedError, closest_matches
from .. import ir
from . import pairs
from .cutstring import _Source, _Translator

__all__ = ["compile_qastle"]

_LINQ_OPERATORS = (
    "Where", "Select", "SelectMany", "First", "Last", "ElementAt", "Contains", "Aggregate",
    "Count", "Max", "Min", "Sum", "All", "Any", "Concat", "Zip", "OrderBy",
    "OrderByDescending", "Choose",
)
# the argument fields of qastle's LINQ node classes, after ``source``
_LINQ_FIELDS = {
    "Where": ("predicate",), "Select": ("selector",), "SelectMany": ("selector",),
    "ElementAt": ("index",), "All": ("predicate",), "Any": ("predicate",),
    "First": (), "Last": (), "Count": (), "Max": (), "Min": (), "Sum": (),
}
# func_adl methods that are one IR operator each (ir.OPS ``qastle``)
_REDUCE = {name: op for op, spec in ir.OPS.items() for name in spec.qastle}


# -- the values a qastle expression can have besides an IR expression ----------------

@dataclasses.dataclass(frozen=True)
class _Event:
    """The lambda argument of an event-level operator before any Select."""


@dataclasses.dataclass(frozen=True)
class _Stream:
    """The sequence of events: what the selected rows look like, and the cut so far."""

    row: object
    where: ir.Expr | None = None


@dataclasses.dataclass(frozen=True)
class _Record:
    """A dict/list/tuple built by a Select: named values."""

    fields: dict
    is_tuple: bool = False


@dataclasses.dataclass(frozen=True)
class _Collection:
    """A NanoAOD collection (``e.Muon``: the ``Muon_*`` columns) and the objects kept so far."""

    name: str
    mask: ir.Expr | None = None


@dataclasses.dataclass(frozen=True)
class _Object:
    """The lambda argument of an operator over a collection's objects."""

    collection: str


@dataclasses.dataclass(frozen=True)
class _Seq:
    """A per-object value (one list per event) and the objects kept so far (a pending mask)."""

    element: ir.Expr
    mask: ir.Expr | None = None


def _and(a, b):
    return b if a is None else ir.Call(ir.Op.And, (a, b))


class _QastleTranslator(_Translator):
    def __init__(self, source: _Source, schema: Mapping[str, ir.ColumnType]):
        super().__init__(source)
        self.schema = schema
        self.scopes: list[dict] = []   # lambda variables: name -> (value, element depth)
        self.depth = 0                 # how many lambdas over objects enclose us
        # inside the lambda of an inner .Any/.All over a second collection: the outer
        # objects referenced (a cartesian product, see _nested_any_all); None: refused
        self.outer_refs: set | None = None

    # -- dispatch: LINQ operators in any of their three spellings ---------------------
    def visit(self, node):
        linq = _as_linq(node)
        if linq is not None:
            return self.linq(node, *linq)
        return super().visit(node)

    def expr(self, node) -> ir.Expr:
        return self.materialize(self.visit(node), node)

    def materialize(self, value, node) -> ir.Expr:
        """The IR expression of a value used as an operand or an output column."""
        if isinstance(value, ir.Expr):
            return value
        if isinstance(value, _Seq):
            return value.element if value.mask is None else ir.Call(ir.Op.Mask, (value.element, value.mask))
        if isinstance(value, _Collection):
            raise self.src.error(
                QueryError, f"the collection {value.name!r} is used as a value; select one of its fields "
                f"(e.g. .Select(lambda m: m.pt))", node)
        if isinstance(value, _Object):
            raise self.src.error(
                QueryError, f"an object of {value.collection!r} is used as a value; use one of its fields "
                "(m.pt)", node)
        if isinstance(value, _Record):
            raise self.unsupported("a record (dict/tuple) used as a value", node)
        if isinstance(value, pairs.PairView):
            raise self.pair_view_as_value(value, node)
        raise self.src.error(QueryError, "the events themselves are used as a value", node)

    # -- names, attributes, subscripts ----------------------------------------------------
    def visit_Name(self, node: ast.Name):
        for scope in reversed(self.scopes):
            if node.id in scope:
                value, depth = scope[node.id]
                if 1 <= depth < self.depth and self.outer_refs is not None and isinstance(value, _Object) \
                        and depth == self.depth - 1:
                    self.outer_refs.add(value.collection)
                elif 1 <= depth < self.depth:
                    raise self.unsupported(
                        f"using {node.id!r} inside a lambda over another collection (a nested loop, "
                        "i.e. a cartesian product of two collections)", node)
                return value
        known = sorted({n for s in self.scopes for n in s})
        raise self.src.error(
            QueryError, f"unknown name {node.id!r} (lambda variables here: {', '.join(known) or 'none'})", node)

    def visit_Attribute(self, node: ast.Attribute):
        base = self.visit(node.value)
        return self.member(base, node.attr, node)

    def member(self, base, name: str, node):
        if isinstance(base, _Event):
            if name in self.schema:
                return ir.Column(name)
            if any(c.startswith(name + "_") and t.is_list for c, t in self.schema.items()):
                return _Collection(name)
            raise self._unknown(name, self.schema, node)
        if isinstance(base, (_Object, _Collection)):
            collection = base.collection if isinstance(base, _Object) else base.name
            column = f"{collection}_{name}"
            if column not in self.schema:
                fields = [c for c in self.schema if c.startswith(collection + "_")]
                raise self._unknown(column, fields or self.schema, node)
            if isinstance(base, _Collection):  # e.Muon.pt: every object's pt
                return _Seq(ir.Column(column), base.mask)
            return ir.Column(column)
        if isinstance(base, pairs.PairView):   # pairs(e.Muon).mass, p.charge1 of a lambda over pairs
            try:
                value = base.attribute(name)
            except QueryError as exc:
                raise self.src.error(QueryError, str(exc), node) from None
            return value if base.mask is None else _Seq(value, base.mask)
        if isinstance(base, _Record):
            if name not in base.fields:
                raise self.src.error(
                    QueryError, f"no field {name!r} in the record selected earlier; fields: "
                    f"{', '.join(base.fields)}", node)
            return base.fields[name]
        raise self.unsupported(f"the attribute {name!r} of a computed value", node)

    def _unknown(self, name, candidates, node):
        pos = getattr(node, "col_offset", None)
        where = "qastle query" + (f", at position {pos}" if pos is not None else "")
        return UnknownColumnError(name, closest_matches(name, candidates), where=where)

    def visit_Subscript(self, node: ast.Subscript):
        key = node.slice
        if isinstance(key, ast.Constant) and isinstance(key.value, str):
            return self.member(self.visit(node.value), key.value, node)
        base = self.visit(node.value)
        if isinstance(base, _Record) and isinstance(key, ast.Constant) and isinstance(key.value, int):
            if not base.is_tuple or not 0 <= key.value < len(base.fields):
                raise self.src.error(QueryError, f"no element [{key.value}] in the record selected earlier", node)
            return list(base.fields.values())[key.value]
        return super().visit_Subscript(node)

    # -- literals that build records ----------------------------------------------------------
    def visit_Dict(self, node: ast.Dict):
        fields = {}
        for k, v in zip(node.keys, node.values):
            if not (isinstance(k, ast.Constant) and isinstance(k.value, str)):
                raise self.unsupported("a dict key that is not a string", k or node)
            if k.value in fields:
                raise self.src.error(QueryError, f"the output name {k.value!r} is repeated", k)
            fields[k.value] = self.visit(v)
        return _Record(fields)

    def visit_List(self, node):
        return _Record({str(i): self.visit(v) for i, v in enumerate(node.elts)}, is_tuple=True)

    visit_Tuple = visit_List

    def visit_IfExp(self, node: ast.IfExp):
        return ir.Call(ir.Op.Where, (self.expr(node.test), self.expr(node.body), self.expr(node.orelse)))

    def visit_Lambda(self, node):
        raise self.unsupported("a lambda outside a LINQ operator", node)

    # -- calls ------------------------------------------------------------------------------------
    def visit_Call(self, node: ast.Call):
        if isinstance(node.func, ast.Name) and node.func.id == "EventDataset":
            return _Stream(_Event())
        if isinstance(node.func, ast.Attribute) and not (
            isinstance(node.func.value, ast.Name) and node.func.value.id in ("np", "numpy")
        ):
            raise self.unsupported(
                f"the method call .{node.func.attr}()", node,
                "fields are attributes (m.pt, not m.pt()); LINQ operators are "
                + ", ".join(n for n in _LINQ_FIELDS if n != "SelectMany"),
            )
        return super().visit_Call(node)

    def pair_member(self, node, function: str, mask: ir.Expr | None) -> pairs.Member:
        """One collection of pairs()/cross(): ``e.Muon``, or ``e.Muon.Where(lambda m: ...)``."""
        value = self.visit(node)
        if not isinstance(value, _Collection):
            raise self.src.error(
                QueryError, f"{function}() takes collections such as e.Muon (optionally with a "
                f".Where), got {_describe(value)}", node)
        keep = value.mask if mask is None else _and(value.mask, mask)
        return pairs.Member(value.name, keep)

    def call_lambda(self, lam, value, over_objects: bool, what: str, node):
        if not isinstance(lam, ast.Lambda) or len(lam.args.args) != 1:
            raise self.src.error(QueryError, f"{what} needs a lambda of one argument", lam if lam is not None else node)
        if over_objects:
            self.depth += 1
        self.scopes.append({lam.args.args[0].arg: (value, self.depth if over_objects else 0)})
        try:
            return self.visit(lam.body)
        finally:
            self.scopes.pop()
            if over_objects:
                self.depth -= 1

    def linq(self, node, name: str, source_node, args: list):
        if name not in _LINQ_FIELDS or name == "SelectMany":
            raise self.unsupported(f"the LINQ operator {name}", node)
        want = len(_LINQ_FIELDS[name])
        if len(args) != want:
            raise self.src.error(QueryError, f"{name} takes {want} argument(s), got {len(args)}", node)
        source = self.visit(source_node)
        if isinstance(source, _Stream):
            return self.event_level(node, name, source, args)
        return self.object_level(node, name, source, args)

    def event_level(self, node, name, stream: _Stream, args):
        if name == "Where":
            cut = self.materialize(self.call_lambda(args[0], stream.row, False, "Where", node), args[0])
            return _Stream(stream.row, _and(stream.where, cut))
        if name == "Select":
            return _Stream(self.call_lambda(args[0], stream.row, False, "Select", node), stream.where)
        raise self.unsupported(f"{name} over the events (an aggregation across events)", node)

    def object_level(self, node, name, source, args):
        if isinstance(source, ir.Expr):
            source = _Seq(source)
        if isinstance(source, _Collection):
            item, mask = _Object(source.name), source.mask
        elif isinstance(source, _Seq):
            item, mask = source.element, source.mask
        elif isinstance(source, pairs.PairView):   # a lambda over pairs: p.mass, p.charge1
            item, mask = dataclasses.replace(source, mask=None), source.mask
        else:
            raise self.src.error(QueryError, f"{name} needs a collection, got {_describe(source)}", node)

        if name == "Where":
            keep = self.materialize(self.call_lambda(args[0], item, True, "Where", node), args[0])
            return dataclasses.replace(source, mask=_and(mask, keep))
        if name == "Select":
            out = self.call_lambda(args[0], item, True, "Select", node)
            if isinstance(out, _Object):
                return source
            if isinstance(out, _Record):
                raise self.unsupported("a record per object (a dict or tuple inside a collection's Select)", args[0])
            if isinstance(out, (_Collection, _Seq)):
                raise self.unsupported("a collection per object (nested lists)", args[0])
            return _Seq(self.materialize(out, args[0]), mask)
        if name in ("Any", "All") and self.depth >= 1 and isinstance(source, _Collection):
            nested = self._nested_any_all(node, name, source, args[0])
            if nested is not None:
                return nested
        if name in ("Any", "All"):
            test = self.materialize(self.call_lambda(args[0], item, True, name, node), args[0])
            if mask is not None:
                test = ir.Call(ir.Op.Mask, (test, mask))
            return ir.Call(ir.Op.Any if name == "Any" else ir.Op.All, (test,))
        if name == "Count":
            if mask is not None:
                return ir.Call(ir.Op.CountNonzero, (mask,))
            if isinstance(source, _Collection):
                return ir.Call(ir.Op.Count, (ir.Column(self._some_field(source.name)),))
            if isinstance(source, pairs.PairView):
                return ir.Call(ir.Op.Count, (source.side(pairs.COUNT_FIELD, 1),))
            return ir.Call(ir.Op.Count, (source.element,))
        values = self.materialize(source, node)
        if name == "ElementAt":
            index = self.visit(args[0])
            if not (isinstance(index, ir.Literal) and index.kind == "int"):
                raise self.unsupported("ElementAt with an index that is not a constant integer", args[0])
            return ir.Call(ir.Op.Index, (values,), index.value)
        return ir.Call(_REDUCE[name], (values,))

    def _nested_any_all(self, node, name, inner: _Collection, lam):
        """``e.Jet.Where(lambda j: e.Muon.All(lambda m: delta_r(j.eta, j.phi, m.eta, m.phi) > 0.4))``:
        func_adl's nested lambdas over two collections.  The inner predicate is evaluated
        over the cartesian product (outer object, inner object) and reduced per outer
        object (CrossAny/CrossAll): a bool collection aligned with the outer collection.
        None when the predicate does not use the outer object (the plain path applies)."""
        saved = self.outer_refs
        self.outer_refs = set()
        try:
            test = self.materialize(self.call_lambda(lam, _Object(inner.name), True, name, node), lam)
            outer = self.outer_refs
        finally:
            self.outer_refs = saved
        if not outer:
            return None
        if len(outer) > 1 or inner.name in outer:
            raise self.unsupported(
                "a nested lambda over the same collection or over three collections", node,
                "use pairs(e.Muon) for pairs of one collection")
        (outer_name,) = outer
        x = ir.Column(self._some_field(outer_name))
        y_col = ir.Column(self._some_field(inner.name))
        y = y_col if inner.mask is None else ir.Call(ir.Op.Mask, (y_col, inner.mask))

        def cross(e):
            if isinstance(e, ir.Column):
                t = self.schema.get(e.name)
                if t is None or not t.is_list:
                    return e
                prefix = e.name.partition("_")[0]
                if prefix == outer_name:
                    return ir.Call(ir.Op.CrossFirst, (e, y))
                if prefix == inner.name:
                    side = e if inner.mask is None else ir.Call(ir.Op.Mask, (e, inner.mask))
                    return ir.Call(ir.Op.CrossSecond, (x, side))
                raise self.unsupported(f"the collection {prefix!r} inside a nested lambda over "
                                       f"{outer_name!r} and {inner.name!r}", node)
            if isinstance(e, ir.Call):
                return ir.Call(e.op, tuple(cross(a) for a in e.args), e.index)
            return e

        op = ir.Op.CrossAny if name == "Any" else ir.Op.CrossAll
        return ir.Call(op, (cross(test), x, y))

    def _some_field(self, collection: str) -> str:
        # Count of a collection is the length of any of its fields (all have the same lengths)
        return min(c for c, t in self.schema.items() if c.startswith(collection + "_") and t.is_list)

    # -- the whole query ----------------------------------------------------------------------------
    def query(self, root) -> ir.Query:
        stream = self.visit(root)
        if not isinstance(stream, _Stream):
            raise QueryError(
                "a qastle query must start from EventDataset and select columns, e.g. "
                "(call Select (call EventDataset) (lambda (list e) (attr e 'MET_pt')))"
            )
        row = stream.row
        if isinstance(row, _Event):
            raise UnsupportedError(
                "a qastle query without Select (all columns of every event) is not supported; "
                "Select the columns you need"
            )
        if isinstance(row, _Record):
            outputs = [(n, self.materialize(v, root)) for n, v in row.fields.items()]
        else:
            outputs = [("col1", self.materialize(row, root))]
        return ir.Query(outputs=tuple(outputs), where=stream.where)


def _describe(value) -> str:
    if isinstance(value, _Record):
        return "a record"
    if isinstance(value, _Object):
        return f"one object of {value.collection!r}"
    return "the events" if isinstance(value, (_Stream, _Event)) else type(value).__name__


def _as_linq(node):
    """(operator name, source node, argument nodes) if ``node`` is a LINQ operator, else None."""
    name = type(node).__name__
    if name in _LINQ_OPERATORS and type(node).__module__.startswith("qastle"):
        fields = _LINQ_FIELDS.get(name, tuple(f for f in node._fields if f != "source"))
        source = getattr(node, "source", None) or getattr(node, "first", None)
        return name, source, [getattr(node, f, None) for f in fields]
    if isinstance(node, ast.Call):
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr in _LINQ_OPERATORS:
            return func.attr, func.value, list(node.args)
        if isinstance(func, ast.Name) and func.id in _LINQ_OPERATORS and node.args:
            return func.id, node.args[0], list(node.args[1:])
    return None


# -- parsing: qastle's grammar, with positions ---------------------------------------------------

_PARSER = None


def _parser():
    global _PARSER
    if _PARSER is None:
        import lark
        import qastle

        grammar = os.path.join(os.path.dirname(qastle.__file__), "syntax.lark")
        with open(grammar) as f:
            _PARSER = lark.Lark(f.read(), start="record", maybe_placeholders=False, propagate_positions=True)
    return _PARSER


def _transformer():
    import lark
    from qastle.transform import TextASTToPythonASTTransformer

    class Positioned(TextASTToPythonASTTransformer):
        """qastle's transformer, stamping each node with its line and column in the text."""

        def _call_userfunc(self, tree, new_children=None):
            out = super()._call_userfunc(tree, new_children)
            meta = getattr(tree, "meta", None)
            if isinstance(out, ast.AST) and meta is not None and not getattr(meta, "empty", True):
                out.lineno, out.col_offset = meta.line, meta.column - 1
            return out

    return Positioned(), lark


def parse_qastle(text: str):
    """The Python AST (qastle's node classes included) of a qastle text."""
    if not isinstance(text, str):
        raise QueryError(f"a qastle query must be a string, got {type(text).__name__}")
    if not text.strip():
        raise QueryError("the qastle query is empty")
    source = _Source(text, "qastle query", offsets_in_chars=True)
    transformer, lark = _transformer()
    try:
        tree = _parser().parse(text)
    except lark.exceptions.UnexpectedInput as exc:
        if isinstance(exc, lark.exceptions.UnexpectedEOF) or getattr(exc, "line", -1) < 1:
            lines = text.split("\n")  # the text ended too early: point after its end
            raise source.error(QueryError, "invalid qastle: unexpected end (unbalanced parentheses?)",
                               lineno=len(lines), col=len(lines[-1])) from None
        raise source.error(
            QueryError, f"invalid qastle: unexpected {type(exc).__name__[10:].lower() or 'input'}",
            lineno=exc.line, col=max(0, exc.column - 1),
        ) from None
    try:
        module = transformer.transform(tree)
    except lark.exceptions.VisitError as exc:
        cause = exc.orig_exc
        meta = getattr(exc.obj, "meta", None)
        line = getattr(meta, "line", None)
        raise source.error(
            QueryError, f"invalid qastle: {cause}", lineno=line,
            col=(meta.column - 1) if line is not None else None,
        ) from None
    if not module.body:
        raise QueryError("the qastle query is empty")
    return module.body[0].value, source


def compile_qastle(text: str, schema: Mapping[str, ir.ColumnType]) -> ir.Query:
    """Compile qastle text into a Query checked against ``schema`` (no data is read)."""
    root, source = parse_qastle(text)
    query = _QastleTranslator(source, dict(schema)).query(root)
    ir.check_query(query, dict(schema))
    return query
