"""The expression IR: one language for every query, whatever the frontend.

Every frontend (cut strings, qastle, uproot-raw JSON, the Python API) compiles
to these immutable nodes; the codec (``skyhook_py.query.codec``) turns them into the
flatbuffers request of ``formats/skyhook_scan.fbs``; the object class (C++)
and the reference evaluator (``skyhook_py.query.reference``) evaluate them with the
same semantics.  An expression is either *event-level* (one value per event)
or a *collection* (one list per event, like NanoAOD's ``Muon_pt``).

This module knows nothing about storage, Ceph or Arrow; ``infer`` checks an
expression against a schema described by plain ``ColumnType`` values.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from typing import Union

from ..errors import QueryError, UnknownColumnError, closest_matches

# The integers a request can carry: int64 literals (LiteralKind Int) and, appended
# 2026-12, uint64 literals of [2^63, 2^64) (LiteralKind UInt: int_value holds the bits).
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
UINT64_MAX = (1 << 64) - 1


class Op(enum.IntEnum):
    """Mirrors ``enum Op`` of formats/skyhook_scan.fbs: same names, same numbers."""

    Column = 0
    Literal = 1
    Add = 2
    Sub = 3
    Mul = 4
    Div = 5
    FloorDiv = 6
    Mod = 7
    Pow = 8
    Neg = 9
    Eq = 10
    Ne = 11
    Lt = 12
    Le = 13
    Gt = 14
    Ge = 15
    And = 16
    Or = 17
    Not = 18
    Abs = 19
    Sqrt = 20
    Exp = 21
    Log = 22
    Sin = 23
    Cos = 24
    Tan = 25
    Sinh = 26
    Cosh = 27
    Arctan2 = 28
    Hypot = 29
    Where = 30
    Mask = 31
    Count = 32
    CountNonzero = 33
    Sum = 34
    Min = 35
    Max = 36
    Mean = 37
    Any = 38
    All = 39
    First = 40
    Last = 41
    Index = 42
    PairFirst = 43
    PairSecond = 44
    CrossFirst = 45
    CrossSecond = 46
    InvMass = 47
    CrossAny = 48
    CrossAll = 49


# -- the operator table -------------------------------------------------------------
# One row per operator: everything the Python side knows about it.  ARITY, the kind
# sets, the readable symbols and the spellings of the query languages are derived
# from it; the reference evaluator keeps only op -> kernel, and
# tests/test_operator_table.py checks this table against the flatc-generated enum and
# the C++ runner's own table (``skyhook_scan_local --list-ops``).

KINDS = ("leaf", "arithmetic", "comparison", "logical", "math", "choice", "mask",
         "reduction", "element_access", "pairs")

# module prefixes a cut-string function may carry (``np.sqrt``, ``ak.sum``)
MATH_PREFIXES = (None, "np", "numpy")
REDUCTION_PREFIXES = (None, "ak", "awkward")
BOTH_PREFIXES = (None, "ak", "awkward", "np", "numpy")


@dataclasses.dataclass(frozen=True)
class OpSpec:
    """What one IR operator is: its arity, its kind, and how the languages spell it.

    ``symbol`` is the infix spelling (repr, error messages, cut strings); ``cut`` the
    cut-string function names with their allowed module prefixes; ``qastle`` the
    func_adl method names that map to it one to one; ``float_result`` marks the
    operators whose result is floating point even for integer operands."""

    arity: int
    kind: str
    symbol: str | None = None
    cut: tuple[str, ...] = ()
    cut_prefixes: tuple = ()
    qastle: tuple[str, ...] = ()
    float_result: bool = False

    def __post_init__(self):
        assert self.kind in KINDS, self.kind


def _math(name, arity=1, **kw):
    return OpSpec(arity, "math", cut=(name,) + kw.pop("also", ()), cut_prefixes=MATH_PREFIXES, **kw)


def _red(*names, prefixes=BOTH_PREFIXES, qastle=(), kind="reduction"):
    return OpSpec(1, kind, cut=names, cut_prefixes=prefixes, qastle=qastle)


OPS: dict[Op, OpSpec] = {
    Op.Column: OpSpec(0, "leaf"),
    Op.Literal: OpSpec(0, "leaf"),
    Op.Add: OpSpec(2, "arithmetic", "+"),
    Op.Sub: OpSpec(2, "arithmetic", "-"),
    Op.Mul: OpSpec(2, "arithmetic", "*"),
    Op.Div: OpSpec(2, "arithmetic", "/", float_result=True),
    Op.FloorDiv: OpSpec(2, "arithmetic", "//"),
    Op.Mod: OpSpec(2, "arithmetic", "%"),
    Op.Pow: OpSpec(2, "arithmetic", "**"),
    Op.Neg: OpSpec(1, "arithmetic"),
    Op.Eq: OpSpec(2, "comparison", "=="),
    Op.Ne: OpSpec(2, "comparison", "!="),
    Op.Lt: OpSpec(2, "comparison", "<"),
    Op.Le: OpSpec(2, "comparison", "<="),
    Op.Gt: OpSpec(2, "comparison", ">"),
    Op.Ge: OpSpec(2, "comparison", ">="),
    Op.And: OpSpec(2, "logical", "&"),
    Op.Or: OpSpec(2, "logical", "|"),
    Op.Not: OpSpec(1, "logical"),
    Op.Abs: _math("abs", also=("absolute",)),
    Op.Sqrt: _math("sqrt"),
    Op.Exp: _math("exp"),
    Op.Log: _math("log"),
    Op.Sin: _math("sin"),
    Op.Cos: _math("cos"),
    Op.Tan: _math("tan"),
    Op.Sinh: _math("sinh"),
    Op.Cosh: _math("cosh"),
    Op.Arctan2: _math("arctan2", 2, float_result=True),
    Op.Hypot: _math("hypot", 2, float_result=True),
    Op.Where: OpSpec(3, "choice", cut=("where",), cut_prefixes=BOTH_PREFIXES),
    Op.Mask: OpSpec(2, "mask"),
    # ak.num defaults to axis=1 itself (lang/cutstring.py: no axis needed)
    Op.Count: _red("count", "num", prefixes=REDUCTION_PREFIXES),
    Op.CountNonzero: _red("count_nonzero"),
    Op.Sum: _red("sum", qastle=("Sum",)),
    Op.Min: _red("min", qastle=("Min",)),
    Op.Max: _red("max", qastle=("Max",)),
    Op.Mean: _red("mean"),
    Op.Any: _red("any"),
    Op.All: _red("all"),
    # ak.firsts defaults to axis=1 itself
    Op.First: _red("firsts", prefixes=REDUCTION_PREFIXES, qastle=("First",), kind="element_access"),
    Op.Last: OpSpec(1, "element_access", qastle=("Last",)),
    Op.Index: OpSpec(1, "element_access"),
    # pairs of objects (formats/README.md "Pairs"): collections of one element per pair
    Op.PairFirst: OpSpec(1, "pairs", cut=("pair_first",), cut_prefixes=(None,)),
    Op.PairSecond: OpSpec(1, "pairs", cut=("pair_second",), cut_prefixes=(None,)),
    Op.CrossFirst: OpSpec(2, "pairs", cut=("cross_first",), cut_prefixes=(None,)),
    Op.CrossSecond: OpSpec(2, "pairs", cut=("cross_second",), cut_prefixes=(None,)),
    # inv_mass(pt1, eta1, phi1, m1, pt2, eta2, phi2, m2), in float64
    Op.InvMass: OpSpec(8, "math", cut=("inv_mass",), cut_prefixes=(None,), float_result=True),
    # CrossAny(p, x, y) / CrossAll(p, x, y): per object of x, any/all of the pairs p of
    # CrossFirst(x, y); cut syntax cross_any(p) / cross_all(p) (lang/pairs.py finds x and y)
    Op.CrossAny: OpSpec(3, "pairs"),
    Op.CrossAll: OpSpec(3, "pairs"),
}
assert set(OPS) == set(Op), "every Op needs a row in OPS"


def ops_of(*kinds: str) -> frozenset:
    """The operators of the given kinds."""
    return frozenset(op for op, spec in OPS.items() if spec.kind in kinds)


ARITY = {op: spec.arity for op, spec in OPS.items() if spec.kind != "leaf"}
ARITHMETIC = ops_of("arithmetic") - {Op.Neg}  # the binary ones; Neg is unary arithmetic
COMPARISON = ops_of("comparison")
LOGICAL = ops_of("logical") - {Op.Not}        # the binary ones
UNARY_MATH = frozenset(op for op in ops_of("math") if OPS[op].arity == 1)
BINARY_MATH = frozenset(op for op in ops_of("math") if OPS[op].arity == 2)
MANY_MATH = frozenset(op for op in ops_of("math") if OPS[op].arity > 2)   # InvMass
REDUCTIONS = ops_of("reduction")
ELEMENT_ACCESS = ops_of("element_access")
PAIRS = ops_of("pairs")
PER_FIRST = frozenset({Op.CrossAny, Op.CrossAll})   # reductions of pairs per first object
FLOAT_RESULT = frozenset(op for op, spec in OPS.items() if spec.float_result)

# Readable names for repr and error messages, as users write them in cut strings.
SYMBOL = {op: spec.symbol for op, spec in OPS.items() if spec.symbol}


class Expr:
    """Base of the IR nodes.  Python operators build nodes, like pyarrow.compute.Expression.

    ``==`` builds a comparison node; use ``same(a, b)`` (or ``a.key() == b.key()``)
    to compare two expressions structurally.
    """

    __slots__ = ()

    # -- building with operators -------------------------------------------------
    def _bin(self, op, other, reflected=False):
        other = as_expr(other)
        return Call(op, (other, self) if reflected else (self, other))

    def __add__(self, o): return self._bin(Op.Add, o)
    def __radd__(self, o): return self._bin(Op.Add, o, True)
    def __sub__(self, o): return self._bin(Op.Sub, o)
    def __rsub__(self, o): return self._bin(Op.Sub, o, True)
    def __mul__(self, o): return self._bin(Op.Mul, o)
    def __rmul__(self, o): return self._bin(Op.Mul, o, True)
    def __truediv__(self, o): return self._bin(Op.Div, o)
    def __rtruediv__(self, o): return self._bin(Op.Div, o, True)
    def __floordiv__(self, o): return self._bin(Op.FloorDiv, o)
    def __rfloordiv__(self, o): return self._bin(Op.FloorDiv, o, True)
    def __mod__(self, o): return self._bin(Op.Mod, o)
    def __rmod__(self, o): return self._bin(Op.Mod, o, True)
    def __pow__(self, o): return self._bin(Op.Pow, o)
    def __rpow__(self, o): return self._bin(Op.Pow, o, True)
    def __neg__(self): return Call(Op.Neg, (self,))
    def __abs__(self): return Call(Op.Abs, (self,))
    def __eq__(self, o): return self._bin(Op.Eq, o)  # type: ignore[override]
    def __ne__(self, o): return self._bin(Op.Ne, o)  # type: ignore[override]
    def __lt__(self, o): return self._bin(Op.Lt, o)
    def __le__(self, o): return self._bin(Op.Le, o)
    def __gt__(self, o): return self._bin(Op.Gt, o)
    def __ge__(self, o): return self._bin(Op.Ge, o)
    def __and__(self, o): return self._bin(Op.And, o)
    def __rand__(self, o): return self._bin(Op.And, o, True)
    def __or__(self, o): return self._bin(Op.Or, o)
    def __ror__(self, o): return self._bin(Op.Or, o, True)
    def __invert__(self): return Call(Op.Not, (self,))
    def __getitem__(self, mask): return Call(Op.Mask, (self, as_expr(mask)))

    def __bool__(self):
        raise TypeError(
            "an IR expression has no truth value; use & | ~ instead of and/or/not, "
            "and skyhook_py.query.ir.same(a, b) to compare expressions"
        )

    def __hash__(self):
        return hash(self.key())

    def key(self):
        """A hashable structural identity (used for caching and deduplication)."""
        raise NotImplementedError

    def columns(self) -> frozenset[str]:
        """Names of the columns this expression reads."""
        raise NotImplementedError


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class Column(Expr):
    name: str

    def key(self):
        return ("col", self.name)

    def columns(self):
        return frozenset({self.name})

    def __repr__(self):
        return self.name


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class Literal(Expr):
    value: Union[bool, int, float]

    def __post_init__(self):
        if not isinstance(self.value, (bool, int, float)):
            raise QueryError(f"literal must be a bool, int or float, got {self.value!r}")

    @property
    def kind(self) -> str:
        if isinstance(self.value, bool):
            return "bool"
        return "int" if isinstance(self.value, int) else "float"

    @property
    def is_uint64(self) -> bool:
        """An int of [2^63, 2^64): no int64 holds it, it travels as a uint64 literal
        (LiteralKind UInt).  Still a weak int (kind "int"), as NumPy 2 sees ``2**63``: it
        takes the type of the array beside it, where only uint64 holds it."""
        return self.kind == "int" and INT64_MAX < self.value <= UINT64_MAX

    def key(self):
        # bool/int/float kept apart (True == 1 == 1.0 in Python); NaN equal to itself
        v = self.value
        if isinstance(v, float) and math.isnan(v):
            v = "nan"
        return ("lit", self.kind, v)

    def columns(self):
        return frozenset()

    def __repr__(self):
        return repr(self.value)


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class Call(Expr):
    op: Op
    args: tuple
    index: int = 0  # the position of Op.Index

    def __post_init__(self):
        object.__setattr__(self, "op", Op(self.op))
        object.__setattr__(self, "args", tuple(as_expr(a) for a in self.args))
        want = ARITY.get(self.op)
        if want is None:
            raise QueryError(f"{self.op.name} is not an operation node")
        if len(self.args) != want:
            raise QueryError(
                f"{self.op.name.lower()} takes {want} argument(s), got {len(self.args)}"
            )

    def key(self):
        return ("call", int(self.op), self.index, tuple(a.key() for a in self.args))

    def columns(self):
        out = frozenset()
        for a in self.args:
            out |= a.columns()
        return out

    def __repr__(self):
        if self.op in SYMBOL:
            return f"({self.args[0]!r} {SYMBOL[self.op]} {self.args[1]!r})"
        if self.op == Op.Neg:
            return f"-{self.args[0]!r}"
        if self.op == Op.Not:
            return f"~{self.args[0]!r}"
        if self.op == Op.Mask:
            return f"{self.args[0]!r}[{self.args[1]!r}]"
        if self.op == Op.Index:
            return f"index({self.args[0]!r}, {self.index})"
        return f"{self.op.name.lower()}({', '.join(repr(a) for a in self.args)})"


def as_expr(x) -> Expr:
    if isinstance(x, Expr):
        return x
    if isinstance(x, (bool, int, float)):
        return Literal(x)
    # numpy scalars
    if hasattr(x, "item") and hasattr(x, "dtype"):
        return Literal(x.item())
    raise QueryError(f"cannot use {x!r} ({type(x).__name__}) in an expression")


def col(name: str) -> Column:
    return Column(name)


def lit(value) -> Literal:
    return Literal(value)


def call(op: Op, *args, index: int = 0) -> Call:
    return Call(op, args, index)


def same(a: Expr | None, b: Expr | None) -> bool:
    """Structural equality of two expressions (``==`` builds a node instead)."""
    if a is None or b is None:
        return a is b
    return a.key() == b.key()


# -- aggregations and the whole query -------------------------------------------

class AggKind(enum.IntEnum):
    """Mirrors ``enum AggKind`` of formats/skyhook_scan.fbs."""

    Count = 0
    Sum = 1
    Min = 2
    Max = 3
    Mean = 4
    Hist1D = 5
    Hist2D = 6


@dataclasses.dataclass(frozen=True)
class Axis:
    bins: int
    low: float
    high: float

    def __post_init__(self):
        if not (isinstance(self.bins, int) and 1 <= self.bins <= 1_000_000):
            raise QueryError(f"histogram bins must be an integer in 1..1000000, got {self.bins!r}")
        if not (math.isfinite(self.low) and math.isfinite(self.high) and self.low < self.high):
            raise QueryError(f"histogram range must be finite with low < high, got [{self.low}, {self.high})")
        if not math.isfinite(self.high - self.low):
            raise QueryError(f"histogram width high - low overflows, got [{self.low}, {self.high})")


@dataclasses.dataclass(frozen=True, eq=False)
class Aggregation:
    kind: AggKind
    name: str
    x: Expr | None = None
    y: Expr | None = None
    weight: Expr | None = None
    x_axis: Axis | None = None
    y_axis: Axis | None = None

    def __post_init__(self):
        object.__setattr__(self, "kind", AggKind(self.kind))
        need_x = self.kind != AggKind.Count
        if need_x and self.x is None:
            raise QueryError(f"aggregation {self.name!r} ({self.kind.name}) needs a value expression")
        if self.kind in (AggKind.Hist1D, AggKind.Hist2D) and self.x_axis is None:
            raise QueryError(f"histogram {self.name!r} needs an x axis (bins, low, high)")
        if self.kind == AggKind.Hist2D and (self.y is None or self.y_axis is None):
            raise QueryError(f"2-D histogram {self.name!r} needs y and a y axis")

    def key(self):
        k = lambda e: None if e is None else e.key()  # noqa: E731
        return (int(self.kind), self.name, k(self.x), k(self.y), k(self.weight), self.x_axis, self.y_axis)

    def columns(self) -> frozenset[str]:
        out = frozenset()
        for e in (self.x, self.y, self.weight):
            if e is not None:
                out |= e.columns()
        return out


@dataclasses.dataclass(frozen=True, eq=False)
class Query:
    """What to compute over a dataset.

    outputs: (name, expression) pairs, the columns of the result table.
    where: an event-level bool expression; events where it is true are kept.
    event_start/event_stop: a dataset-wide event range [start, stop).
    limit: at most this many selected events.
    aggregations: if given, the result is the merged aggregates instead of rows.
    """

    outputs: tuple = ()
    where: Expr | None = None
    event_start: int = 0
    event_stop: int | None = None
    limit: int | None = None
    aggregations: tuple = ()

    def __post_init__(self):
        object.__setattr__(self, "outputs", tuple((str(n), as_expr(e)) for n, e in self.outputs))
        object.__setattr__(self, "aggregations", tuple(self.aggregations))
        seen, dup = set(), set()
        for n, _ in self.outputs:   # linear: 40,000 names took 20 s with list.count
            (dup if n in seen else seen).add(n)
        if dup:
            shown = sorted(dup)
            raise QueryError(f"output names must be unique, repeated: {shown[:10]}"
                             + (f" and {len(shown) - 10} more" if len(shown) > 10 else ""))
        if self.event_start < 0 or (self.event_stop is not None and self.event_stop < self.event_start):
            raise QueryError(f"bad event range [{self.event_start}, {self.event_stop})")
        if self.limit is not None and self.limit < 0:
            raise QueryError(f"limit must be >= 0, got {self.limit}")

    def key(self):
        return (
            tuple((n, e.key()) for n, e in self.outputs),
            None if self.where is None else self.where.key(),
            self.event_start, self.event_stop, self.limit,
            tuple(a.key() for a in self.aggregations),
        )

    def columns(self) -> frozenset[str]:
        out = frozenset()
        for _, e in self.outputs:
            out |= e.columns()
        if self.where is not None:
            out |= self.where.columns()
        for a in self.aggregations:
            out |= a.columns()
        return out


# -- static checking against a schema ---------------------------------------------

@dataclasses.dataclass(frozen=True)
class ColumnType:
    """What ``infer`` needs to know of a column: its value kind and whether it is a list.

    kind: "bool", "int", "uint" or "float" (the kind of the values, or of the list elements).
    bits: an integer's width (8, 16, 32, 64) when known (the manifest's Arrow schema);
    ``literals`` refuses ``uint8_col + 2**63`` with it before any partition is read.
    """

    kind: str
    is_list: bool
    bits: int | None = dataclasses.field(default=None, compare=False)


@dataclasses.dataclass(frozen=True)
class Shape:
    kind: str      # "bool", "int", "uint", "float"
    is_list: bool
    # the NanoAOD collection a per-object value belongs to ("Muon" for Muon_pt), when known
    collection: str | None = dataclasses.field(default=None, compare=False)
    # an integer's width when the schema gives the columns' (ColumnType.bits), else None
    bits: int | None = dataclasses.field(default=None, compare=False)


def _collection_of(shapes) -> str | None:
    names = {s.collection for s in shapes if s.is_list and s.collection}
    return names.pop() if len(names) == 1 else None


_NUMERIC_ORDER = {"bool": 0, "uint": 1, "int": 1, "float": 2}


def infer(expr: Expr, schema: dict[str, ColumnType], where: str = "expression") -> Shape:
    """Check ``expr`` against ``schema`` and return its shape; raise a clear error if invalid.

    Checks column names (with close matches), arity, list/event shapes and bool operands.
    Runtime-only conditions (two lists of different lengths) are checked by the evaluators.
    """
    if isinstance(expr, Column):
        t = schema.get(expr.name)
        if t is None:
            raise UnknownColumnError(expr.name, closest_matches(expr.name, schema), where=where)
        return Shape(t.kind, t.is_list, expr.name.partition("_")[0] if t.is_list else None, t.bits)
    if isinstance(expr, Literal):
        return Shape(expr.kind, False)
    assert isinstance(expr, Call)
    shapes = [infer(a, schema, where) for a in expr.args]
    op = expr.op
    any_list = any(s.is_list for s in shapes)
    if op in ARITHMETIC or op == Op.Neg or op in BINARY_MATH or op == Op.Abs or op in UNARY_MATH \
            or op in MANY_MATH:
        for a, s in zip(expr.args, shapes):
            if s.kind == "bool":
                raise QueryError(
                    f"{op.name.lower()} needs numbers, but {a!r} is bool in the {where}"
                )
    if op in PAIRS:
        for a, s in zip(expr.args, shapes):
            if not s.is_list:
                raise QueryError(
                    f"{op.name.lower()}() makes pairs of the objects of collections, but {a!r} has one "
                    f"value per event, in the {where}")
        if op in PER_FIRST:
            want = f"cross({length_source(expr.args[1])}, {length_source(expr.args[2])})"
            if shapes[0].collection != want:
                raise QueryError(
                    f"{op.name.lower()}() reduces the pairs of {want} per first object, but "
                    f"{expr.args[0]!r} is {shapes[0].collection or 'not a collection of pairs'}, in the {where}")
            return Shape("bool", True, shapes[1].collection)
        src = shapes[1] if op == Op.CrossSecond else shapes[0]
        return Shape(src.kind, True, pair_collection(expr), src.bits)
    _check_pairs_align(expr, shapes, where)
    coll = _collection_of(shapes)
    if op in UNARY_MATH or op in MANY_MATH:
        return Shape("float", any_list, coll)
    if op in ARITHMETIC or op == Op.Neg or op in BINARY_MATH or op == Op.Abs:
        kinds = _weak_kinds(expr.args, shapes)
        if op in FLOAT_RESULT or op == Op.Pow or "float" in kinds:
            kind = "float" if op in FLOAT_RESULT or "float" in kinds else _int_kind(kinds)
        else:
            kind = _int_kind(kinds)
        kind, bits = _int_width(kind, expr.args, shapes)
        return Shape(kind, any_list, coll, bits)
    if op in COMPARISON:
        return Shape("bool", any_list, coll)
    if op in LOGICAL or op == Op.Not:
        for a, s in zip(expr.args, shapes):
            if s.kind != "bool":
                raise QueryError(
                    f"{op.name.lower()} needs bool operands, but {a!r} is {s.kind} in the {where}; "
                    "compare it first (e.g. x > 0)"
                )
        return Shape("bool", any_list, coll)
    if op == Op.Where:
        if shapes[0].kind != "bool":
            raise QueryError(f"the condition of where() must be bool, got {shapes[0].kind} in the {where}")
        kinds = [shapes[1].kind, shapes[2].kind]
        kind = "float" if "float" in kinds else ("bool" if kinds == ["bool", "bool"] else _int_kind(kinds))
        kind, bits = _int_width(kind, expr.args[1:], shapes[1:])
        return Shape(kind, any_list, coll, bits)
    if op == Op.Mask:
        if not shapes[0].is_list:
            raise QueryError(f"cannot mask {expr.args[0]!r}: it is not a collection, in the {where}")
        if shapes[1].kind != "bool":
            raise QueryError(f"the mask {expr.args[1]!r} must be bool, in the {where}")
        value_coll, mask_coll = shapes[0].collection, shapes[1].collection
        if shapes[1].is_list and value_coll and mask_coll and value_coll != mask_coll:
            raise QueryError(
                f"cannot mask {expr.args[0]!r} (collection {value_coll}) with {expr.args[1]!r} (collection "
                f"{mask_coll}): a mask selects objects of its own collection, in the {where}; "
                f"reduce the other collection per event instead (e.g. any({expr.args[1]!r}, axis=1))")
        return Shape(shapes[0].kind, True, value_coll, shapes[0].bits)
    if op in REDUCTIONS or op in ELEMENT_ACCESS:
        if not shapes[0].is_list:
            raise QueryError(
                f"{op.name.lower()}() reduces a collection, but {expr.args[0]!r} has one value per event, "
                f"in the {where}"
            )
        if op in (Op.Count, Op.CountNonzero):
            return Shape("int", False, bits=64)
        if op in (Op.Any, Op.All):
            return Shape("bool", False)
        if op == Op.Mean:
            return Shape("float", False)
        if op == Op.Sum and shapes[0].kind in ("bool", "int", "uint"):
            return Shape("int" if shapes[0].kind == "bool" else shapes[0].kind, False, bits=64)
        return Shape(shapes[0].kind, False, bits=shapes[0].bits)
    raise QueryError(f"unsupported operation {op.name}")  # pragma: no cover


def length_source(expr: Expr) -> str | None:
    """What decides the list lengths of a collection-valued ``expr``, as text: the
    collection of a column ("Muon"), a mask ("Muon[(Muon_pt > 20)]"), pairs of those
    ("pairs(Muon)"); None for an event-level value.  Two pair collections with different
    sources have different lengths in general (a static error, ``_check_pairs_align``)."""
    if isinstance(expr, Column):
        return expr.name.partition("_")[0]
    if isinstance(expr, Literal):
        return None
    if expr.op in REDUCTIONS or expr.op in ELEMENT_ACCESS:
        return None
    if expr.op == Op.Mask:
        inner = length_source(expr.args[0])
        return None if inner is None else f"{inner}[{expr.args[1]!r}]"
    if expr.op in PER_FIRST:
        return length_source(expr.args[1])
    if expr.op in PAIRS:
        return pair_collection(expr)
    for a in expr.args:
        s = length_source(a)
        if s is not None:
            return s
    return None


def pair_collection(expr: Call) -> str:
    """The collection tag of a pair operator's result: "pairs(Muon)", "cross(Muon, Jet)"."""
    if expr.op in (Op.PairFirst, Op.PairSecond):
        return f"pairs({length_source(expr.args[0])})"
    return f"cross({length_source(expr.args[0])}, {length_source(expr.args[1])})"


def _is_pairs(shape: Shape) -> bool:
    return bool(shape.is_list and shape.collection and shape.collection.startswith(("pairs(", "cross(")))


def _check_pairs_align(expr: Call, shapes, where: str) -> None:
    """Two pair collections of different sources in one element-wise operation: a
    QueryError (the evaluators would find lists of different lengths)."""
    tags = {s.collection for s in shapes if s.is_list and s.collection}
    if len(tags) > 1 and any(_is_pairs(s) for s in shapes):
        shown = " and ".join(sorted(tags))
        raise QueryError(
            f"{expr.op.name.lower()} combines pairs with objects of another collection ({shown}), whose lists "
            f"differ in length, in the {where}; take every member from the same (masked) collection")


def _weak_kinds(args, shapes) -> list[str]:
    """Operand kinds with NEP 50's weak literals: an int literal beside an array takes
    the array's integer kind (uint32 + 1 is uint32); a float literal stays float."""
    arrays = [s.kind for a, s in zip(args, shapes) if not isinstance(a, Literal)]
    if not arrays:
        return [s.kind for s in shapes]
    kinds = list(arrays)
    for a, s in zip(args, shapes):
        if isinstance(a, Literal) and s.kind == "float":
            kinds.append("float")
    return kinds


def _int_width(kind: str, args, shapes) -> tuple[str, int | None]:
    """NumPy's promotion of integer arrays with their widths (weak literals take the
    arrays' type): unsigned with signed gives the signed type wide enough for both, and
    float64 next to uint64 (``uint64 + int64``); (kind, None) when a width is unknown."""
    if kind not in ("int", "uint"):
        return kind, None
    strong = [s for a, s in zip(args, shapes) if not isinstance(a, Literal) and s.kind != "bool"]
    if not strong or any(s.bits is None for s in strong):
        return kind, None
    u = max((s.bits for s in strong if s.kind == "uint"), default=0)
    i = max((s.bits for s in strong if s.kind == "int"), default=0)
    if not i:
        return "uint", u
    if u < i:
        return "int", i
    return ("int", 2 * u) if u < 64 else ("float", None)


def _int_kind(kinds) -> str:
    if all(k == "bool" for k in kinds):
        return "int"  # bool + bool is an integer, as in NumPy
    return "uint" if all(k in ("uint", "bool") for k in kinds) else "int"


def check_query(query: Query, schema: dict[str, ColumnType], labels: dict[str, str] | None = None) -> None:
    """Validate a whole query before any partition is touched.

    labels: output name -> how to name it in a message (e.g. the expression's text);
    by default "output column 'name'"."""
    labels = labels or {}
    if query.where is not None:
        s = infer(query.where, schema, "cut")
        if s.is_list:
            raise QueryError(
                f"the cut {query.where!r} gives one value per object, not per event; "
                "reduce it with any(), all() or count_nonzero(...) >= n"
            )
        if s.kind != "bool":
            raise QueryError(f"the cut {query.where!r} must be bool, got {s.kind}")
    for name, e in query.outputs:
        infer(e, schema, labels.get(name, f"output column {name!r}"))
    for a in query.aggregations:
        for role, e in (("value", a.x), ("y", a.y), ("weight", a.weight)):
            if e is not None:
                infer(e, schema, f"{role} of aggregation {a.name!r}")
