"""Integer literals as NumPy 2 types them, before a query leaves the compiler.

A cut string is Python: ``2**64`` is computed by Python (exactly, no wrap) before
NumPy sees it, and NumPy 2 then treats the Python int as a *weak* scalar (NEP 50):

- compared with an integer array, an int outside the array's range compares
  exactly (``int64 > 2**64`` is False everywhere, ``uint > -1`` True);
- beside a float array it becomes a float (OverflowError past float64);
- in integer arithmetic with an array it is an OverflowError.

The request format carries int64 literals and uint64 literals of [2^63, 2^64)
(LiteralKind UInt), so this pass (run once by ``compile.compile_query``, so that the
class and the reference see the same IR) folds integer-only arithmetic exactly, then
rewrites or refuses every literal that does not fit in int64, as NumPy 2 would treat
it beside the operand that types it (the other operand of a binary operation, the
other branch of ``where``):

- a float operand, or an integer one in ``/``, ``arctan2``, ``hypot`` (NumPy's float64
  loops): the literal becomes that float (OverflowError past float64);
- an unsigned integer operand and a literal of [2^63, 2^64): sent as it is (a uint64
  literal); the evaluators compare it exactly and compute in uint64 (wrapping, as
  NumPy's uint64 arithmetic does) beside uint64.  Beside a narrower unsigned type
  (``ColumnType.bits`` from the manifest) it is out of range: a comparison's constant
  answer, arithmetic refused here (OverflowError); when the schema gives no width the
  evaluators refuse that arithmetic themselves (-EINVAL);
- a comparison with a literal outside the operand's kind's range (any signed integer
  and 2**63, uint and -1 - 2**64): the comparison's constant answer;
- anything else (signed arithmetic with 2**63, ``2**64`` anywhere but a comparison or
  a float): refused, as NumPy raises OverflowError.

Nothing out of range reaches the wire as a wrapped integer.  What it ignores: floats
(folded nowhere; IEEE arithmetic is the same on both sides) and literals that fit
(left to the evaluators).
"""

from __future__ import annotations

import operator

from ..errors import QueryError
from . import ir

INT64_MIN, INT64_MAX, UINT64_MAX = ir.INT64_MIN, ir.INT64_MAX, ir.UINT64_MAX
MAX_BITS = 4096   # an integer literal longer than this is refused (10**10**10 would take GBs)

_FOLD = {ir.Op.Add: operator.add, ir.Op.Sub: operator.sub, ir.Op.Mul: operator.mul}
_COMPARE = {ir.Op.Eq: operator.eq, ir.Op.Ne: operator.ne, ir.Op.Lt: operator.lt,
            ir.Op.Le: operator.le, ir.Op.Gt: operator.gt, ir.Op.Ge: operator.ge}


def _is_int(e) -> bool:
    return isinstance(e, ir.Literal) and type(e.value) is int


def _wide(e) -> bool:
    return _is_int(e) and not INT64_MIN <= e.value <= INT64_MAX


def _too_long(what: str):
    return QueryError(f"the integer {what} has more than {MAX_BITS} bits: beyond any 64-bit "
                      "integer and float64 (NumPy raises OverflowError)")


def _fold_int(op, a: int, b: int | None):
    """Python's exact result of a folded integer operation, or None to leave it."""
    if op == ir.Op.Neg:
        return -a
    if op in _FOLD:
        if op == ir.Op.Mul and a.bit_length() + b.bit_length() > MAX_BITS:
            raise _too_long(f"{a} * {b}")
        return _FOLD[op](a, b)
    if op == ir.Op.Pow and b >= 0:
        if abs(a) > 1 and (abs(a).bit_length() - 1) * b > MAX_BITS:
            raise _too_long(f"{a}**{b}")
        return a ** b
    if op in _COMPARE:
        return _COMPARE[op](a, b)
    return None


def normalize_query(q: ir.Query, schema) -> ir.Query:
    """``q`` with integer literals resolved as NumPy 2 would (see the module docstring)."""
    memo: dict[int, ir.Expr] = {}

    def norm(e, where):
        return None if e is None else _resolve(_fold(e, memo), schema, where)

    outputs = tuple((n, norm(e, f"output column {n!r}")) for n, e in q.outputs)
    where = norm(q.where, "cut")
    aggs = []
    for a in q.aggregations:
        import dataclasses

        aggs.append(dataclasses.replace(
            a, x=norm(a.x, f"aggregation {a.name!r}"), y=norm(a.y, f"aggregation {a.name!r}"),
            weight=norm(a.weight, f"aggregation {a.name!r}")))
    if all(x is y for x, y in zip([e for _, e in outputs] + [where] + aggs,
                                  [e for _, e in q.outputs] + [q.where] + list(q.aggregations))):
        return q
    return ir.Query(outputs=outputs, where=where, event_start=q.event_start,
                    event_stop=q.event_stop, limit=q.limit, aggregations=tuple(aggs))


def _fold(e, memo):
    """Fold integer-only arithmetic and comparisons exactly (Python ints)."""
    if not isinstance(e, ir.Call):
        return e
    got = memo.get(id(e))
    if got is not None:
        return got
    args = tuple(_fold(a, memo) for a in e.args)
    out = e if all(a is b for a, b in zip(args, e.args)) else ir.Call(e.op, args, e.index)
    if args and all(_is_int(a) for a in args):
        v = _fold_int(e.op, args[0].value, args[1].value if len(args) > 1 else None)
        if v is not None:
            out = ir.Literal(v)
    memo[id(e)] = out
    return out


def _typing_partner(e: ir.Call, args, i: int):
    """The operand that gives the weak literal ``args[i]`` its type (NEP 50), or None:
    the other operand of a binary operation, the other branch of ``where``."""
    if len(args) == 2:
        other = args[1 - i]
    elif e.op == ir.Op.Where and i in (1, 2):
        other = args[3 - i]
    else:
        return None
    return None if isinstance(other, ir.Literal) else other


def _resolve(e, schema, where):
    """Rewrite or refuse every int literal outside int64 in ``e`` (the module docstring)."""
    if _wide(e):
        raise QueryError(f"the integer {e.value} does not fit in 64 bits, in the {where}")
    if not isinstance(e, ir.Call):
        return e
    args = [a if _wide(a) else _resolve(a, schema, where) for a in e.args]
    wide = [i for i, a in enumerate(args) if _wide(a)]
    if wide:
        other = _typing_partner(e, args, wide[0]) if len(wide) == 1 else None
        if other is None:
            raise QueryError(f"the integer {args[wide[0]].value} does not fit in 64 bits, in {e!r} "
                             f"(the {where})")
        i = wide[0]
        v = args[i].value
        shape = ir.infer(other, schema, where)   # with the widths the schema gives
        kind = shape.kind
        if kind == "float" or (e.op in ir.FLOAT_RESULT and kind in ("int", "uint")):
            try:
                args[i] = ir.Literal(float(v))   # NumPy: the weak int becomes the float
            except OverflowError:
                raise QueryError(f"the integer {v} is too large to convert to float (NumPy: "
                                 f"OverflowError), in {e!r} (the {where})") from None
        elif kind == "uint" and 0 <= v <= UINT64_MAX and shape.bits in (64, None):
            pass   # a uint64 literal (LiteralKind UInt): the evaluators type it exactly
        elif e.op in _COMPARE and kind in ("int", "uint"):
            # beyond every value of the operand's type: the comparison has one answer
            # (NumPy 2 compares exactly); written without any literal
            x = 0
            answer = _COMPARE[e.op](v, x) if i == 0 else _COMPARE[e.op](x, v)
            return ir.Call(ir.Op.Eq if answer else ir.Op.Ne, (other, other))
        else:
            width = f"{kind}{shape.bits or 64}" if kind in ("int", "uint") else "int64"   # bool + int: int64
            raise QueryError(f"the integer {v} does not fit in {width}: NumPy raises "
                             f"OverflowError for {e!r} (the {where})")
    if all(a is b for a, b in zip(args, e.args)):
        return e
    return ir.Call(e.op, tuple(args), e.index)
