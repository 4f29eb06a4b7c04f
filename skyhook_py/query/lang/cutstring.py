"""Cut strings and output expressions in the uproot style, compiled to the IR.

A cut string is a Python expression over column names, as users pass to
``uproot.TTree.arrays(cut=...)`` or write for coffea/awkward:

    (nMuon >= 2) & (ak.count_nonzero(Muon_pt > 20, axis=1) >= 1)

It is parsed with Python's own parser (``ast``), never pattern-matched, and
translated node by node.  What is understood:

- names are columns (``True``/``False`` are literals); int, float, bool literals;
- ``+ - * / // % **``, unary ``-`` and ``+``; comparisons, chained ones too
  (``a < b < c`` is ``(a < b) & (b < c)``);
- ``& | ~`` on bools, and ``and``/``or``/``not`` as the same thing (applied
  element-wise, unlike Python, which would ask an array for its truth value);
- math: ``abs sqrt exp log sin cos tan sinh cosh arctan2 hypot where``, bare or
  with an ``np.``/``numpy.`` prefix (``absolute`` is ``abs``);
- per-event reductions ``count count_nonzero sum min max mean any all``, bare or
  with an ``ak.``/``awkward.`` prefix (``np.`` for those NumPy has), with
  ``axis=1`` or ``axis=-1``.  Prefixed forms must name the axis: awkward's
  default (``axis=None``) reduces the whole dataset to one number, which a cut
  cannot mean.  Bare names default to one value per event;
- ``num(x, axis=1)`` (the default axis of ``ak.num``) is ``count``;
  ``ak.firsts(x)`` is ``first``;
- ``x[:, i]`` is the i-th element of each event's list (negative i from the end).
  **Unlike awkward, which raises when an event's list is too short, the IR gives
  a missing value there, and a cut that is missing drops the event**;
- ``Muon_pt[Muon_pt > 20]`` keeps the objects where the mask is true; the mask
  may come from another field of the same collection (``Muon_eta[Muon_pt > 20]``);
- pairs of objects (``lang/pairs.py``): ``pairs(Muon[, mask]).<field>1/2``,
  ``cross(Muon, Jet[, mask1[, mask2]]).<field>1/2`` and their ``mass``, ``delta_r``,
  ``delta_phi``, ``delta_eta``; the functions ``delta_phi delta_r inv_mass
  pair_first pair_second cross_first cross_second``.

Deliberately not understood (each is an ``UnsupportedError`` naming the
construct and pointing at it): attribute access other than the module prefix of a
known function (``Muon.pt``: use ``Muon_pt``), unknown functions, ``len()`` (it
counts events in awkward, not objects: use ``num(x, axis=1)``), lambdas,
strings, ``in``/``is``, ``^`` ``<<`` ``>>`` ``@``, slices other than ``[:, i]``,
event selection ``x[i]``, conditional expressions, comprehensions.

Validation against a dataset schema (unknown column with close matches, bool
operands, event-level cut) is done by ``skyhook_py.query.ir`` before any data is read.
"""

from __future__ import annotations

import ast
from typing import Mapping

from ...errors import QueryError, UnsupportedError, closest_matches
from .. import ir
from . import pairs

__all__ = ["compile_cut", "compile_expression", "parse_expression"]

# Python's syntax for the infix spellings of ir.OPS (``symbol``); `&`/`|` are the
# uproot spellings of and/or.
_PY_SYMBOL = {
    ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//", ast.Mod: "%",
    ast.Pow: "**", ast.BitAnd: "&", ast.BitOr: "|",
    ast.Eq: "==", ast.NotEq: "!=", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=",
}
_OP_OF_SYMBOL = {spec.symbol: op for op, spec in ir.OPS.items() if spec.symbol}
_BINARY = {node: _OP_OF_SYMBOL[sym] for node, sym in _PY_SYMBOL.items()
           if ir.OPS[_OP_OF_SYMBOL[sym]].kind != "comparison"}
_COMPARE = {node: _OP_OF_SYMBOL[sym] for node, sym in _PY_SYMBOL.items()
            if ir.OPS[_OP_OF_SYMBOL[sym]].kind == "comparison"}
# How users spell the constructs we refuse, for the error message.
_UNSUPPORTED_OPERATOR = {
    ast.BitXor: "the operator ^", ast.LShift: "the operator <<", ast.RShift: "the operator >>",
    ast.MatMult: "the operator @", ast.Is: "'is'", ast.IsNot: "'is not'", ast.In: "'in'",
    ast.NotIn: "'not in'",
}
_UNSUPPORTED_NODE = {
    ast.Lambda: "a lambda", ast.IfExp: "a conditional expression (x if c else y); use where(c, x, y)",
    ast.ListComp: "a list comprehension", ast.GeneratorExp: "a generator expression",
    ast.SetComp: "a set comprehension", ast.DictComp: "a dict comprehension",
    ast.List: "a list", ast.Tuple: "a tuple", ast.Dict: "a dict", ast.Set: "a set",
    ast.Starred: "a starred expression", ast.NamedExpr: "an assignment expression (:=)",
    ast.JoinedStr: "an f-string", ast.Await: "await", ast.Slice: "a slice",
}

# The function spellings come from ir.OPS (``cut``, ``cut_prefixes``).
# name -> (IR op, number of positional arguments, allowed module prefixes)
_ELEMENTWISE = {name: (op, spec.arity, spec.cut_prefixes) for op, spec in ir.OPS.items()
                if spec.kind in ("math", "choice", "pairs") for name in spec.cut}
# name -> (IR op, allowed prefixes)
_REDUCTIONS = {name: (op, spec.cut_prefixes) for op, spec in ir.OPS.items()
               if spec.kind in ("reduction", "element_access") for name in spec.cut}
# ak.num and ak.firsts default to axis=1 themselves, so no axis is needed.
_AXIS_OPTIONAL = {"num", "firsts"}
_KNOWN_PREFIXES = {"np", "numpy", "ak", "awkward"}


def _known_functions_hint(name: str) -> str:
    known = sorted(set(_ELEMENTWISE) | set(_REDUCTIONS) | set(pairs.FUNCTIONS) | set(pairs.VIEWS))
    close = closest_matches(name, known)
    if close:
        return "did you mean " + ", ".join(close) + "?"
    return "known functions: " + ", ".join(known)


class _Source:
    """The query text, to turn an ast node into a caret under the right character."""

    def __init__(self, text: str, language: str, offsets_in_chars: bool = False):
        self.text = text
        self.lines = text.split("\n")
        self.language = language
        self.offsets_in_chars = offsets_in_chars

    def error(self, cls, message: str, node=None, lineno=None, col=None, col_in_chars=None):
        if col_in_chars is None:
            col_in_chars = self.offsets_in_chars
        if node is not None:
            # nodes made up by a compiler (not parsed from the text) have no position
            lineno, col = getattr(node, "lineno", None), getattr(node, "col_offset", None)
        if lineno is None or col is None:
            return cls(f"{message}, in the {self.language}", None, None)
        line = self.lines[lineno - 1] if 0 < lineno <= len(self.lines) else self.text
        # ast offsets count UTF-8 bytes; the caret counts characters
        char = col if col_in_chars else len(line.encode("utf-8")[:col].decode("utf-8", "ignore"))
        where = f"position {char}" if len(self.lines) == 1 else f"line {lineno}, position {char}"
        return cls(f"{message}, at {where} of the {self.language}", char, line)


class _Translator:
    """Turns one parsed expression into IR nodes.

    ``aliases`` maps a name to an already compiled expression (uproot-raw's
    ``aliases``); ``language`` names the text in error messages.
    """

    def __init__(self, source: _Source, aliases: Mapping[str, ir.Expr] | None = None,
                 default_axis: int | None = None):
        self.src = source
        self.aliases = dict(aliases or {})
        # the axis of np./ak. reductions written without axis= (None: refuse them)
        self.default_axis = default_axis

    def expr(self, node) -> ir.Expr:
        """An operand: an IR expression (subclasses coerce their richer values here)."""
        value = self.visit(node)
        if isinstance(value, pairs.PairView):
            raise self.pair_view_as_value(value, node)
        return value

    def pair_view_as_value(self, view, node) -> QueryError:
        return self.src.error(
            QueryError, f"{view.describe()} is a collection of pairs, not a value; use one of its "
            f"fields: <field>1, <field>2 (e.g. .pt1, .charge2) or {', '.join(pairs.DERIVED)}", node)

    def unsupported(self, what: str, node, hint: str | None = None) -> UnsupportedError:
        message = f"{what} is not supported" + (f" ({hint})" if hint else "")
        return self.src.error(UnsupportedError, message, node)

    def visit(self, node) -> ir.Expr:
        method = getattr(self, "visit_" + type(node).__name__, None)
        if method is None:
            what = _UNSUPPORTED_NODE.get(type(node), f"the Python construct {type(node).__name__}")
            raise self.unsupported(what, node)
        return method(node)

    # -- leaves ------------------------------------------------------------------
    def visit_Name(self, node: ast.Name) -> ir.Expr:
        if node.id in self.aliases:
            return self.aliases[node.id]
        if node.id in _KNOWN_PREFIXES:
            raise self.unsupported(f"the module {node.id!r} used as a value", node)
        return ir.Column(node.id)

    def visit_Constant(self, node: ast.Constant) -> ir.Expr:
        v = node.value
        if isinstance(v, bool) or isinstance(v, float):
            return ir.Literal(v)
        if isinstance(v, int):
            # any size: query.literals resolves those outside int64 as NumPy 2 does
            if v.bit_length() > 4096:
                raise self.src.error(QueryError, f"the integer {v} is too long (over 4096 bits)", node)
            return ir.Literal(v)
        if isinstance(v, str):
            raise self.unsupported(f"the string {v!r}", node, "column names are written bare, without quotes")
        raise self.unsupported(f"the constant {v!r}", node)

    # -- operators -----------------------------------------------------------------
    def visit_BinOp(self, node: ast.BinOp) -> ir.Expr:
        op = _BINARY.get(type(node.op))
        if op is None:
            what = _UNSUPPORTED_OPERATOR.get(type(node.op), type(node.op).__name__)
            raise self.unsupported(what, node)
        return ir.Call(op, (self.expr(node.left), self.expr(node.right)))

    def visit_UnaryOp(self, node: ast.UnaryOp) -> ir.Expr:
        if isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant) and type(node.operand.value) is int:
            # -9223372036854775808 is in range although its digits alone are not
            return self.visit_Constant(ast.copy_location(ast.Constant(-node.operand.value), node))
        operand = self.expr(node.operand)
        if isinstance(node.op, ast.USub):
            # fold -literal so that x[:, -1] and the int64 minimum work
            if isinstance(operand, ir.Literal) and not isinstance(operand.value, bool):
                return ir.Literal(-operand.value)
            return ir.Call(ir.Op.Neg, (operand,))
        if isinstance(node.op, ast.UAdd):
            return operand
        # ~ and not: both element-wise logical negation (bools only, checked by ir.infer)
        return ir.Call(ir.Op.Not, (operand,))

    def visit_BoolOp(self, node: ast.BoolOp) -> ir.Expr:
        op = ir.Op.And if isinstance(node.op, ast.And) else ir.Op.Or
        out = self.expr(node.values[0])
        for value in node.values[1:]:
            out = ir.Call(op, (out, self.expr(value)))
        return out

    def visit_Compare(self, node: ast.Compare) -> ir.Expr:
        # a < b < c means (a < b) & (b < c), each operand compiled once
        left = self.expr(node.left)
        out = None
        for cmp_op, comparator in zip(node.ops, node.comparators):
            op = _COMPARE.get(type(cmp_op))
            if op is None:
                raise self.unsupported(_UNSUPPORTED_OPERATOR.get(type(cmp_op), type(cmp_op).__name__), comparator)
            right = self.expr(comparator)
            term = ir.Call(op, (left, right))
            out = term if out is None else ir.Call(ir.Op.And, (out, term))
            left = right
        return out

    # -- subscripts: masks and element access ---------------------------------------
    def visit_Subscript(self, node: ast.Subscript) -> ir.Expr:
        index = node.slice
        if isinstance(index, ast.Tuple):
            return self._element(node, index)
        if isinstance(index, ast.Slice):
            raise self.unsupported("a slice over events (x[a:b])", node, "use the event range of the query")
        if isinstance(index, ast.Constant) or (
            isinstance(index, ast.UnaryOp) and isinstance(index.operand, ast.Constant)
        ):
            raise self.unsupported(
                "selecting one event (x[i])", node, "to take the i-th object of every event write x[:, i]"
            )
        # anything else is a mask; ir.infer checks that it is a bool collection
        return ir.Call(ir.Op.Mask, (self.expr(node.value), self.expr(index)))

    def _element(self, node: ast.Subscript, index: ast.Tuple) -> ir.Expr:
        parts = index.elts
        whole = (
            len(parts) == 2
            and isinstance(parts[0], ast.Slice)
            and parts[0].lower is None and parts[0].upper is None and parts[0].step is None
        )
        if whole and not isinstance(parts[1], ast.Slice):
            i = self.visit(parts[1])
            if isinstance(i, ir.Literal) and i.kind == "int":
                return ir.Call(ir.Op.Index, (self.expr(node.value),), i.value)
        raise self.unsupported(
            f"the subscript {ast.unparse(node)!r}", node, "only x[mask] and x[:, i] with a constant integer i are"
        )

    # -- function calls --------------------------------------------------------------
    def _function_name(self, func) -> tuple[str | None, str]:
        if isinstance(func, ast.Name):
            return None, func.id
        if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
            if func.value.id in _KNOWN_PREFIXES:
                return func.value.id, func.attr
        raise self.unsupported(
            f"calling {ast.unparse(func)!r}", func, "only np./ak. functions and the built-in ones are known"
        )

    def visit_Call(self, node: ast.Call) -> ir.Expr:
        prefix, name = self._function_name(node.func)
        spelled = f"{prefix}.{name}" if prefix else name
        if name == "len" and prefix is None:
            raise self.unsupported(
                "len()", node, "in awkward it counts events, not objects: use num(x, axis=1)"
            )
        if any(isinstance(a, ast.Starred) for a in node.args) or any(k.arg is None for k in node.keywords):
            raise self.unsupported(f"*args/**kwargs in {spelled}()", node)
        if name in _ELEMENTWISE and prefix in _ELEMENTWISE[name][2]:
            op, nargs, _ = _ELEMENTWISE[name]
            if node.keywords:
                raise self.unsupported(f"the keyword argument {node.keywords[0].arg}= of {spelled}()", node.keywords[0].value)
            if len(node.args) != nargs:
                raise self.src.error(
                    QueryError, f"{spelled}() takes {nargs} argument(s), got {len(node.args)}", node
                )
            return ir.Call(op, tuple(self.expr(a) for a in node.args))
        if name in _REDUCTIONS and prefix in _REDUCTIONS[name][1]:
            return self._reduction(node, prefix, name, spelled)
        if name in pairs.FUNCTIONS and prefix is None:
            nargs, expand = pairs.FUNCTIONS[name]
            if node.keywords or len(node.args) != nargs:
                raise self.src.error(
                    QueryError, f"{spelled}() takes {nargs} positional argument(s), got {len(node.args)}"
                    + (" and keywords" if node.keywords else ""), node)
            return expand(*(self.expr(a) for a in node.args))
        if name in pairs.VIEWS and prefix is None:
            return self.pair_view(node)
        raise self.unsupported(f"the function {spelled}()", node.func, _known_functions_hint(name))

    def _reduction(self, node: ast.Call, prefix, name: str, spelled: str) -> ir.Expr:
        op = _REDUCTIONS[name][0]
        args = list(node.args)
        axis_node = None
        if len(args) == 2:
            axis_node = args.pop()
        for kw in node.keywords:
            if kw.arg == "axis" and axis_node is None:
                axis_node = kw.value
            else:
                raise self.unsupported(f"the keyword argument {kw.arg}= of {spelled}()", kw.value)
        if len(args) != 1:
            raise self.src.error(
                QueryError, f"{spelled}() reduces one collection, got {len(node.args)} arguments", node
            )
        if axis_node is None:
            if prefix is not None and name not in _AXIS_OPTIONAL and self.default_axis is None:
                raise self.src.error(
                    UnsupportedError,
                    f"{spelled}() without axis= reduces the whole dataset to one number; write "
                    f"{spelled}(..., axis=1) for one value per event (or use an aggregation)",
                    node,
                )
        else:
            axis = self.visit(axis_node)
            if not (isinstance(axis, ir.Literal) and axis.kind == "int" and axis.value in (1, -1)):
                raise self.unsupported(
                    f"axis={ast.unparse(axis_node)} in {spelled}()", axis_node,
                    "only axis=1 or axis=-1, one value per event, is",
                )
        return ir.Call(op, (self.expr(args[0]),))

    # -- pairs(Muon).mass, cross(Muon, Jet).delta_r ---------------------------------------
    def pair_view(self, node: ast.Call) -> pairs.PairView:
        """``pairs(A[, mask][, massless=...])`` or ``cross(A, B[, mask1[, mask2]][, massless=...])``."""
        name = node.func.id
        n_coll = 1 if name == "pairs" else 2
        args = list(node.args)
        if len(args) < n_coll or len(args) > 2 * n_coll:
            raise self.src.error(
                QueryError, f"{name}() takes {n_coll} collection name(s) and optionally "
                f"{'a mask' if n_coll == 1 else 'a mask for each'}, got {len(args)} arguments", node)
        masks = [None] * n_coll
        for k, a in enumerate(args[n_coll:]):
            masks[k] = a
        massless = False
        for kw in node.keywords:
            if kw.arg == "massless" and isinstance(kw.value, ast.Constant) and isinstance(kw.value.value, bool):
                massless = kw.value.value
            elif kw.arg in (("mask",) if n_coll == 1 else ("mask1", "mask2")) \
                    and masks[0 if kw.arg != "mask2" else 1] is None:
                masks[0 if kw.arg != "mask2" else 1] = kw.value
            else:
                raise self.unsupported(f"the keyword argument {kw.arg}= of {name}()", kw.value,
                                       "massless=True/False, mask= (pairs) or mask1=/mask2= (cross) are")
        members = tuple(self.pair_member(a, name, None if m is None else self.expr(m))
                        for a, m in zip(args[:n_coll], masks))
        return pairs.PairView(members, massless)

    def pair_member(self, node, function: str, mask: ir.Expr | None) -> pairs.Member:
        """One collection of pairs()/cross(): a bare collection name here."""
        if not isinstance(node, ast.Name):
            raise self.src.error(
                QueryError, f"{function}() takes collection names such as Muon or Jet (the prefix of "
                f"Muon_pt), not {ast.unparse(node)!r}; a selection is a mask argument: "
                f"{function}(Muon, Muon_pt > 20)", node)
        return pairs.Member(node.id, mask)

    def visit_pair_attribute(self, node: ast.Attribute):
        """The attribute of ``pairs(...)``/``cross(...)``, or None when ``node`` is not one."""
        base = node.value
        if isinstance(base, ast.Call) and isinstance(base.func, ast.Name) and base.func.id in pairs.VIEWS:
            view = self.pair_view(base)
            try:
                return view.attribute(node.attr)
            except QueryError as exc:
                raise self.src.error(QueryError, str(exc), node) from None
        return None

    def visit_Attribute(self, node: ast.Attribute) -> ir.Expr:
        attr = self.visit_pair_attribute(node)
        if attr is not None:
            return attr
        raise self.unsupported(
            f"the attribute access {ast.unparse(node)!r}", node, "write flat NanoAOD names such as Muon_pt"
        )


def parse_expression(text: str, language: str = "cut", aliases: Mapping[str, ir.Expr] | None = None,
                     default_axis: int | None = None) -> ir.Expr:
    """Parse ``text`` into an IR expression without checking it against a schema."""
    if not isinstance(text, str):
        raise QueryError(f"a {language} must be a string, got {type(text).__name__}")
    if not text.strip():
        raise QueryError(f"the {language} is empty")
    # Python's parser refuses leading indentation; positions are then counted in
    # the stripped text, which is also what the error message shows.
    body = text.strip()
    source = _Source(body, language)
    try:
        tree = ast.parse(body, mode="eval")
    except SyntaxError as exc:
        raise source.error(
            QueryError, f"invalid {language}: {exc.msg}", lineno=exc.lineno or 1,
            col=max(0, (exc.offset or 1) - 1), col_in_chars=True,
        ) from None
    except (RecursionError, MemoryError):
        raise QueryError(f"the {language} is nested too deeply to parse") from None
    # depth bounded before any recursive walk (a 5,001-term chain was a RecursionError);
    # the object class refuses more than MAX_DEPTH levels anyway
    if _depth(tree.body, ast.iter_child_nodes) > MAX_DEPTH:
        raise QueryError(f"the {language} is nested more than {MAX_DEPTH} levels deep")
    expr = _Translator(source, aliases, default_axis).expr(tree.body)
    if _depth(expr, lambda e: getattr(e, "args", ())) > MAX_DEPTH:
        raise QueryError(f"the {language} is nested more than {MAX_DEPTH} levels deep "
                         "(a chain of and/or or comparisons counts one level per term)")
    return expr


MAX_DEPTH = 256   # levels of one expression (the object class's own limit)


def _depth(root, children) -> int:
    """The depth of a tree, without recursion."""
    deepest, stack = 0, [(root, 1)]
    while stack:
        node, d = stack.pop()
        if d > deepest:
            deepest = d
            if d > MAX_DEPTH:
                return d
        stack.extend((c, d + 1) for c in children(node))
    return deepest


def compile_cut(text: str, schema: Mapping[str, ir.ColumnType] | None = None, *, aliases=None,
                default_axis: int | None = None) -> ir.Expr:
    """Compile a cut string to an event-level bool IR expression.

    With a ``schema`` the cut is checked (unknown columns name close matches; a
    cut must give one bool per event) before any data is read.
    """
    expr = parse_expression(text, "cut", aliases, default_axis)
    if schema is not None:
        from .. import literals

        ir.check_query(ir.Query(where=expr), dict(schema))
        expr = literals.normalize_query(ir.Query(where=expr), dict(schema)).where
    return expr


def compile_expression(text: str, schema: Mapping[str, ir.ColumnType] | None = None, *, aliases=None,
                       default_axis: int | None = None) -> ir.Expr:
    """Compile an output expression (``Muon_pt[Muon_pt > 20]``, ``MET_pt * 2``)."""
    expr = parse_expression(text, "expression", aliases, default_axis)
    if schema is not None:
        ir.infer(expr, dict(schema), f"output expression {text.strip()!r}")
    return expr
