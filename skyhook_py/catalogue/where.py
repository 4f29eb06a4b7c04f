"""The ``--where`` language of ``skyhook list``: a small, safe filter over dataset metadata.

Grammar (keywords are lower case; nothing is evaluated as Python)::

    expr    := or
    or      := and ("or" and)*
    and     := not ("and" not)*
    not     := "not" not | cmp
    cmp     := value [("==" | "!=" | "<" | "<=" | ">" | ">=" | "in" | "not in") value]
    value   := NUMBER | STRING | "true" | "false" | "null" | KEY | "[" [value ("," value)*] "]"
             | "(" expr ")"

``KEY`` is a metadata key (``year``, ``is_mc``, ``process``...) or one of the
dataset's own fields (``name``, ``version``, ``events``, ``partitions``).  A key the
dataset does not have is null.  A bare key is true when its value is true, a non-zero
number or a non-empty string or list.  A comparison between values of different kinds
(a string with a number, anything with null but ``==``/``!=``) is false, so datasets
without a key never match a condition on it.  ``x in [..]`` tests membership; ``x in
KEY`` with a list-valued key (``runs``: ``[[first, last], ...]`` ranges) tests whether a
run number falls in one of the ranges.  Errors (QueryError) name the position.
"""

from __future__ import annotations

import re

from ..errors import QueryError

_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<num>[-+]?(\d+\.\d*|\.\d+|\d+)([eE][-+]?\d+)?)
  | (?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
  | (?P<op>==|!=|<=|>=|<|>|\(|\)|\[|\]|,)
  | (?P<name>[A-Za-z_][A-Za-z0-9_.]*)
""", re.VERBOSE)
_KEYWORDS = {"and", "or", "not", "in", "true", "false", "null"}


def _tokens(text: str):
    pos, out = 0, []
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise QueryError(f"unexpected character {text[pos]!r} in the filter", pos, text)
        kind = m.lastgroup
        if kind != "ws":
            out.append((kind, m.group(), pos))
        pos = m.end()
    out.append(("end", "", len(text)))
    return out


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.toks = _tokens(text)
        self.i = 0

    def peek(self, k: int = 0):
        return self.toks[min(self.i + k, len(self.toks) - 1)]

    def take(self):
        t = self.toks[self.i]
        self.i += 1
        return t

    def error(self, msg, tok=None):
        tok = tok or self.peek()
        return QueryError(msg, tok[2], self.text)

    def is_word(self, word, k=0):
        t = self.peek(k)
        return t[0] == "name" and t[1] == word

    def expect_op(self, op):
        t = self.take()
        if t[0] != "op" or t[1] != op:
            raise self.error(f"expected {op!r}, found {t[1] or 'the end'!r}", t)

    def parse(self):
        if self.peek()[0] == "end":
            raise self.error("the filter is empty")
        node = self.or_()
        if self.peek()[0] != "end":
            raise self.error(f"unexpected {self.peek()[1]!r} (missing 'and'/'or'?)")
        return node

    def or_(self):
        node = self.and_()
        while self.is_word("or"):
            self.take()
            node = ("or", node, self.and_())
        return node

    def and_(self):
        node = self.not_()
        while self.is_word("and"):
            self.take()
            node = ("and", node, self.not_())
        return node

    def not_(self):
        if self.is_word("not"):
            self.take()
            return ("not", self.not_())
        return self.cmp()

    def cmp(self):
        left = self.value()
        t = self.peek()
        if t[0] == "op" and t[1] in ("==", "!=", "<", "<=", ">", ">="):
            self.take()
            return ("cmp", t[1], left, self.value(), t[2])
        if self.is_word("in"):
            self.take()
            return ("in", left, self.value())
        if self.is_word("not") and self.is_word("in", 1):
            self.take()
            self.take()
            return ("not", ("in", left, self.value()))
        return ("truth", left)

    def value(self):
        t = self.take()
        kind, text, pos = t
        if kind == "num":
            return ("lit", float(text) if any(c in text for c in ".eE") else int(text))
        if kind == "str":
            return ("lit", _unquote(text[1:-1]))
        if kind == "name":
            if text == "true":
                return ("lit", True)
            if text == "false":
                return ("lit", False)
            if text == "null":
                return ("lit", None)
            if text in _KEYWORDS:
                raise self.error(f"expected a value, found the keyword {text!r}", t)
            return ("key", text, pos)
        if kind == "op" and text == "(":
            node = self.or_()
            self.expect_op(")")
            return ("group", node)
        if kind == "op" and text == "[":
            items = []
            if not (self.peek()[0] == "op" and self.peek()[1] == "]"):
                items.append(self.value())
                while self.peek()[0] == "op" and self.peek()[1] == ",":
                    self.take()
                    items.append(self.value())
            self.expect_op("]")
            return ("list", items)
        raise self.error(f"expected a value, found {text or 'the end'!r}", t)


def _unquote(s: str) -> str:
    return re.sub(r"\\(.)", r"\1", s)


class Filter:
    """A compiled filter: ``Filter(text).matches(fields)`` with ``fields`` a dict."""

    def __init__(self, text: str):
        if not isinstance(text, str):
            raise QueryError(f"the filter must be text, not {type(text).__name__}")
        self.text = text
        self.tree = _Parser(text).parse()

    def keys(self) -> set[str]:
        out = set()

        def walk(n):
            if isinstance(n, tuple):
                if n[0] == "key":
                    out.add(n[1])
                else:
                    for x in n[1:]:
                        if isinstance(x, (tuple, list)):
                            walk(x) if isinstance(x, tuple) else [walk(y) for y in x]
        walk(self.tree)
        return out

    def matches(self, fields: dict) -> bool:
        return _truth(_eval(self.tree, fields))


def _value(n, fields):
    kind = n[0]
    if kind == "lit":
        return n[1]
    if kind == "key":
        return fields.get(n[1])
    if kind == "list":
        return [_value(x, fields) for x in n[1]]
    if kind == "group":
        return _eval(n[1], fields)
    raise AssertionError(n)


def _is_num(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _comparable(a, b) -> bool:
    if _is_num(a) and _is_num(b):
        return True
    return type(a) is type(b) and isinstance(a, (str, bool))


def _eval(n, fields):
    kind = n[0]
    if kind == "or":
        return _truth(_eval(n[1], fields)) or _truth(_eval(n[2], fields))
    if kind == "and":
        return _truth(_eval(n[1], fields)) and _truth(_eval(n[2], fields))
    if kind == "not":
        return not _truth(_eval(n[1], fields))
    if kind == "truth":
        return _truth(_value(n[1], fields))
    if kind == "cmp":
        op, a, b = n[1], _value(n[2], fields), _value(n[3], fields)
        if op in ("==", "!="):
            eq = (a == b) if (_comparable(a, b) or a is None or b is None
                              or isinstance(a, list) and isinstance(b, list)) else False
            return eq if op == "==" else not eq
        if not _comparable(a, b) or isinstance(a, bool):
            return False
        return {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op]
    if kind == "in":
        a, b = _value(n[1], fields), _value(n[2], fields)
        if isinstance(b, str):
            return isinstance(a, str) and a in b
        if not isinstance(b, list):
            return False
        for item in b:
            if isinstance(item, list) and len(item) == 2 and _is_num(a) \
                    and all(_is_num(x) for x in item):
                if item[0] <= a <= item[1]:    # a range [first, last] (run ranges)
                    return True
            elif _comparable(a, item) and a == item:
                return True
        return False
    return _value(n, fields)


def _truth(v) -> bool:
    if v is None:
        return False
    if isinstance(v, (bool, int, float, str, list)):
        return bool(v)
    return bool(v)
