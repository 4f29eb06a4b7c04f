"""The reference evaluator: the IR of ``skyhook_py.query.ir`` evaluated in Python on an Arrow table.

It implements exactly the semantics written down in formats/README.md (the
object class's C++ evaluator implements the same document), so that it serves
as the fallback when a partition cannot be scanned in the OSD and as the
oracle of the differential tests.  Values are held as NumPy arrays: an
event-level value as (values, validity), a collection as (flat values,
validity, offsets starting at 0); a subexpression of literals only stays a
*weak* Python scalar, as NumPy 2 (NEP 50) treats Python scalars.

It ignores storage: it gets an Arrow table and returns a ``ScanResult``.
Figures that only the OSD knows (bytes read, object size) are 0.
"""

from __future__ import annotations

import dataclasses
import errno
import math
import time
import warnings

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import EvaluationError, QueryError, UnknownColumnError, closest_matches  # noqa: F401
from . import ir
from .results import PartialAggregate, ScanResult

Op = ir.Op


@dataclasses.dataclass
class _Val:
    """An evaluated expression: weak scalar, event-level array or collection."""

    values: object                 # np.ndarray, or a Python scalar when weak
    valid: np.ndarray | None = None  # None: no nulls
    offsets: np.ndarray | None = None  # int64, starting at 0: a collection
    weak: bool = False

    @property
    def is_list(self):
        return self.offsets is not None

    @property
    def dtype(self):
        return None if self.weak else self.values.dtype


def _kind(x) -> str:
    """bool / int / uint / float of a weak scalar or a dtype."""
    if isinstance(x, np.dtype):
        return {"b": "bool", "i": "int", "u": "uint", "f": "float"}[x.kind]
    if isinstance(x, bool):
        return "bool"
    return "int" if isinstance(x, int) else "float"


def _name(e) -> str:
    return repr(e)


# -- columns --------------------------------------------------------------------

def _column(table: pa.Table, name: str) -> _Val:
    if name not in table.column_names:
        raise UnknownColumnError(name, closest_matches(name, table.column_names), where="partition")
    arr = table.column(name)
    arr = arr.combine_chunks() if arr.num_chunks != 1 else arr.chunk(0)
    t = arr.type
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        if arr.null_count:
            raise EvaluationError(f"column {name!r} has null lists; partitions never hold nulls")
        lengths = pc.list_value_length(arr).to_numpy(zero_copy_only=False).astype(np.int64)
        offsets = np.zeros(len(arr) + 1, np.int64)
        np.cumsum(lengths, out=offsets[1:])
        flat = pc.list_flatten(arr)
        return _Val(_to_numpy(flat, name), None, offsets)
    return _Val(_to_numpy(arr, name))


def _to_numpy(arr: pa.Array, name: str) -> np.ndarray:
    t = arr.type
    if not (pa.types.is_boolean(t) or pa.types.is_integer(t) or pa.types.is_floating(t)) \
            or pa.types.is_float16(t):
        raise EvaluationError(f"column {name!r} has type {t}, not bool, integer or float32/64")
    if arr.null_count:
        raise EvaluationError(f"column {name!r} holds nulls; partitions never hold nulls")
    return arr.to_numpy(zero_copy_only=False)


# -- types ----------------------------------------------------------------------

def _promote(a: _Val, b: _Val, what: str):
    """The NumPy 2 result type of a binary operation (None: both weak, Python semantics)."""
    if a.weak and b.weak:
        return None
    if not a.weak and not b.weak:
        return np.result_type(a.values.dtype, b.values.dtype)
    strong, weak = (a, b) if b.weak else (b, a)
    return _weak_type(strong.values.dtype, weak.values)


def _weak_type(d: np.dtype, scalar) -> np.dtype:
    order = {"bool": 0, "int": 1, "uint": 1, "float": 2}
    k = _kind(scalar)
    if order[k] <= order[_kind(d)]:
        return d
    return np.dtype({"bool": np.bool_, "int": np.int64, "float": np.float64}[k])


def _as_array(v: _Val, dtype: np.dtype, what: str) -> np.ndarray | object:
    """v's values in dtype; a weak int out of the range of an integer dtype is an error."""
    if not v.weak:
        return v.values.astype(dtype, copy=False)
    x = v.values
    if dtype.kind in "iu" and isinstance(x, int) and not isinstance(x, bool):
        info = np.iinfo(dtype)
        if not info.min <= x <= info.max:
            raise EvaluationError(
                f"the literal {x} does not fit in {dtype} (the type of the other operand) in {what}; "
                "NumPy 2 raises OverflowError here"
            )
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return dtype.type(x)


def _literal_dtype(x) -> np.dtype:
    if _is_uint64_literal(x):
        return np.dtype(np.uint64)   # LiteralKind UInt, as the class types it
    return np.dtype({"bool": np.bool_, "int": np.int64, "float": np.float64}[_kind(x)])


def _is_uint64_literal(x) -> bool:
    """A weak int of [2^63, 2^64) (a uint64 literal on the wire)."""
    return type(x) is int and ir.INT64_MAX < x <= ir.UINT64_MAX


# -- shapes -----------------------------------------------------------------------

def _broadcast(vals: list[_Val], n: int, what: str):
    """Bring operands to one shape: (list of arrays-or-weak-scalars, valid, offsets)."""
    offsets = None
    for v in vals:
        if v.is_list:
            if offsets is None:
                offsets = v.offsets
            elif not np.array_equal(offsets, v.offsets):
                lens_a, lens_b = np.diff(offsets), np.diff(v.offsets)
                bad = int(np.flatnonzero(lens_a != lens_b)[0])
                raise EvaluationError(
                    f"collections of different lengths in {what}: {int(lens_a[bad])} and "
                    f"{int(lens_b[bad])} elements in event {bad}"
                )
    counts = None if offsets is None else np.diff(offsets)
    out, valid = [], None
    for v in vals:
        x, m = v.values, v.valid
        if not v.weak and offsets is not None and not v.is_list:
            x = np.repeat(x, counts)
            m = None if m is None else np.repeat(m, counts)
        out.append(x)
        if m is not None:
            valid = m if valid is None else valid & m
    return out, valid, offsets


def _length(offsets, n):
    return n if offsets is None else int(offsets[-1])


def _spread_valid(v: _Val, offsets, size) -> np.ndarray:
    """v's validity in the shape of the operation (all true when v has no nulls)."""
    if v.valid is None:
        return np.ones(size, bool)
    if offsets is not None and not v.is_list:
        return np.repeat(v.valid, np.diff(offsets))
    return v.valid


def _full(x, n):
    return np.full(n, x, dtype=_literal_dtype(x))


# -- evaluation ---------------------------------------------------------------------

def _quiet():
    return np.errstate(all="ignore")


# op -> kernel: a NumPy ufunc for the element-wise operators, the name of the
# evaluation step (_column, _reduce, ...) for the leaves and the structural ones.  Everything else about an operator
# (arity, kind) is in ir.OPS; tests/test_operator_table.py checks that every operator
# has a row here.
KERNELS = {
    Op.Column: "_column", Op.Literal: "_literal",
    Op.Add: np.add, Op.Sub: np.subtract, Op.Mul: np.multiply, Op.Div: np.true_divide,
    Op.FloorDiv: np.floor_divide, Op.Mod: np.remainder, Op.Pow: np.power, Op.Neg: np.negative,
    Op.Eq: np.equal, Op.Ne: np.not_equal, Op.Lt: np.less, Op.Le: np.less_equal,
    Op.Gt: np.greater, Op.Ge: np.greater_equal,
    Op.And: np.logical_and, Op.Or: np.logical_or, Op.Not: np.logical_not,
    Op.Abs: np.abs, Op.Sqrt: np.sqrt, Op.Exp: np.exp, Op.Log: np.log,
    Op.Sin: np.sin, Op.Cos: np.cos, Op.Tan: np.tan, Op.Sinh: np.sinh, Op.Cosh: np.cosh,
    Op.Arctan2: np.arctan2, Op.Hypot: np.hypot,
    Op.Where: "_where", Op.Mask: "_mask",
    **{op: "_reduce" for op in ir.REDUCTIONS | ir.ELEMENT_ACCESS},
    **{op: "_pairs" for op in ir.PAIRS},
    Op.InvMass: "_inv_mass",
}

def _libm(fn, overflow):
    """``fn`` of Python's math module (the C library's, as the object class calls it)
    element-wise: InvMass's E^2 - p^2 cancels, so NumPy's own SIMD cos/sin (a few ulps
    away) would show through; with the same libm both evaluators agree bit for bit.
    The C library's answers where Python raises: NaN for cos/sin(inf), +-inf on overflow."""
    def one(x):
        try:
            return fn(x)
        except ValueError:
            return math.nan
        except OverflowError:
            return math.copysign(math.inf, x) if overflow == "sign" else math.inf
    vec = np.frompyfunc(one, 1, 1)
    return lambda a: np.asarray(vec(np.asarray(a, np.float64)), dtype=np.float64)


_LIBM_COS, _LIBM_SIN, _LIBM_SINH = _libm(math.cos, None), _libm(math.sin, None), _libm(math.sinh, "sign")

# At most this many pairs in one evaluation (the object class has its memory cap):
# past it, an EvaluationError with ENOMEM instead of gigabytes of index arrays.
MAX_PAIRS = 1 << 24


class _Evaluator:
    def __init__(self, table: pa.Table):
        self.table = table
        self.n = table.num_rows
        self.cache: dict = {}

    def __call__(self, e: ir.Expr) -> _Val:
        k = e.key()
        hit = self.cache.get(k)
        if hit is None:
            hit = self.cache[k] = self._eval(e)
        return hit

    def _eval(self, e: ir.Expr) -> _Val:
        if isinstance(e, ir.Column):
            return _column(self.table, e.name)
        if isinstance(e, ir.Literal):
            return _Val(e.value, weak=True)
        args = [self(a) for a in e.args]
        op = e.op
        what = f"{e!r}"
        # a uint64 literal takes its type from an array operand; between literals only
        # it has none (the compiler folds or refuses those; the class refuses them too)
        typed = args[1:] if op == Op.Where else args
        if all(v.weak for v in typed) and any(_is_uint64_literal(v.values) for v in typed):
            raise EvaluationError(f"a uint64 literal needs an array operand, in {what} (an "
                                  "operation of literals only is computed by the compiler)")
        if op in (ir.ARITHMETIC | ir.COMPARISON | ir.BINARY_MATH | ir.UNARY_MATH | ir.MANY_MATH) \
                or op == Op.Neg:
            for a, v in zip(e.args, args):
                if _kind(v.values if v.weak else v.values.dtype) == "bool":
                    raise EvaluationError(f"{op.name.lower()} needs numbers, but {a!r} is bool in {what}")
        if op in (ir.LOGICAL | {Op.Not}):
            for a, v in zip(e.args, args):
                if _kind(v.values if v.weak else v.values.dtype) != "bool":
                    raise EvaluationError(f"{op.name.lower()} needs bools, but {a!r} is not in {what}")
        kernel = KERNELS[op]
        if kernel == "_pairs":
            return _pairs(op, args, what)
        if kernel == "_inv_mass":
            return self._inv_mass(args, what)
        if kernel == "_reduce":
            return self._reduce(op, args[0], e, what)
        if kernel == "_mask":
            return self._mask(args[0], args[1], what)
        if kernel == "_where":
            return self._where(args, what)
        if len(args) == 1:
            return self._unary(op, args[0], what)
        return self._binary(op, args[0], args[1], what)

    # elementwise
    def _unary(self, op, a: _Val, what) -> _Val:
        if a.weak:
            x = _literal_dtype(a.values).type(a.values)
            return _Val(self._apply_unary(op, np.asarray(x), what).item(), weak=True)
        return _Val(self._apply_unary(op, a.values, what, a.valid), a.valid, a.offsets)

    def _apply_unary(self, op, x, what, valid=None):
        if op in ir.UNARY_MATH and op != Op.Abs and x.dtype != np.float32:
            x = x.astype(np.float64)
        with _quiet():
            return KERNELS[op](x)

    def _binary(self, op, a: _Val, b: _Val, what) -> _Val:
        t = _promote(a, b, what)
        if t is None:  # two literals: NumPy on int64/float64, the result stays weak
            x = np.asarray(_literal_dtype(a.values).type(a.values))
            y = np.asarray(_literal_dtype(b.values).type(b.values))
            t = np.result_type(x, y)
            r = self._apply_binary(op, x.astype(t), y.astype(t), t, None, what)
            return _Val(r.item(), weak=True)
        (x, y), valid, offsets = _broadcast([a, b], self.n, what)
        if op in ir.COMPARISON:
            # NumPy 2 compares an out-of-range Python int exactly (uint8 > -1 is True)
            x = x if a.weak else x.astype(t, copy=False)
            y = y if b.weak else y.astype(t, copy=False)
        else:
            if op in ir.FLOAT_RESULT and t.kind in "iu":
                t = np.dtype(np.float64)  # NumPy's float64 loop: a literal is converted, never out of range
            x = _as_array(a, t, what) if a.weak else x.astype(t, copy=False)
            y = _as_array(b, t, what) if b.weak else y.astype(t, copy=False)
        return _Val(self._apply_binary(op, x, y, t, valid, what), valid, offsets)

    def _apply_binary(self, op, x, y, t, valid, what):
        if op in ir.FLOAT_RESULT and t.kind in "iu":
            x, y, t = np.asarray(x).astype(np.float64), np.asarray(y).astype(np.float64), np.dtype(np.float64)
        if op == Op.Pow and t.kind == "i":
            neg = np.broadcast_to(np.asarray(y) < 0, np.broadcast(np.asarray(x), np.asarray(y)).shape)
            if valid is not None:
                neg = neg & valid
            if np.any(neg):
                raise EvaluationError(
                    f"integers to negative integer powers are not allowed, in {what}", errno.EDOM)
        with _quiet(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r = KERNELS[op](x, y)
        if op not in ir.COMPARISON and op not in ir.LOGICAL:
            r = np.asarray(r).astype(t if op not in ir.FLOAT_RESULT else r.dtype, copy=False)
        return np.asarray(r)

    def _inv_mass(self, args, what) -> _Val:
        """The formula of cls_plugins/skyhook/kinematics.cc, operation for operation, in float64."""
        if all(a.weak for a in args):
            vals = [np.asarray([float(a.values)]) for a in args]
            valid, offsets = None, None
        else:
            arrays, valid, offsets = _broadcast(args, self.n, what)
            size = _length(offsets, self.n)
            vals = [np.broadcast_to(np.asarray(x, np.float64), (size,)) for x in arrays]
        pt1, eta1, phi1, m1, pt2, eta2, phi2, m2 = vals
        cos, sin, sinh = _LIBM_COS, _LIBM_SIN, _LIBM_SINH
        with _quiet():
            px1, py1, pz1 = pt1 * cos(phi1), pt1 * sin(phi1), pt1 * sinh(eta1)
            px2, py2, pz2 = pt2 * cos(phi2), pt2 * sin(phi2), pt2 * sinh(eta2)
            e1 = np.sqrt(px1 * px1 + py1 * py1 + pz1 * pz1 + m1 * m1)
            e2 = np.sqrt(px2 * px2 + py2 * py2 + pz2 * pz2 + m2 * m2)
            e, x, y, z = e1 + e2, px1 + px2, py1 + py2, pz1 + pz2
            mm = e * e - x * x - y * y - z * z
            r = np.copysign(np.sqrt(np.abs(mm)), mm)
        if all(a.weak for a in args):
            return _Val(float(r[0]), weak=True)
        return _Val(r, valid, offsets)

    def _where(self, args, what) -> _Val:
        c, a, b = args
        if _kind(c.values if c.weak else c.values.dtype) != "bool":
            raise EvaluationError(f"the condition of where() must be bool, in {what}")
        t = _promote(a, b, what)
        if t is None and c.weak:
            return _Val(a.values if c.values else b.values, weak=True)
        if t is None:
            t = np.result_type(_literal_dtype(a.values), _literal_dtype(b.values))
            if _kind(a.values) == "bool" and _kind(b.values) == "bool":
                t = np.dtype(np.bool_)
        (cx, x, y), _, offsets = _broadcast([c, a, b], self.n, what)
        size = _length(offsets, self.n)
        cx = np.broadcast_to(np.asarray(cx, dtype=bool), (size,))
        x = np.broadcast_to(_as_array(a, t, what) if a.weak else x.astype(t, copy=False), (size,))
        y = np.broadcast_to(_as_array(b, t, what) if b.weak else y.astype(t, copy=False), (size,))
        # null when the condition or the chosen value is null (Arrow if_else, ak.where)
        vc, va, vb = (_spread_valid(v, offsets, size) for v in (c, a, b))
        valid = vc & np.where(cx, va, vb)
        return _Val(np.where(cx, x, y), None if valid.all() else valid, offsets)

    def _mask(self, lst: _Val, mask: _Val, what) -> _Val:
        if not lst.is_list:
            raise EvaluationError(f"cannot mask a value that is not a collection, in {what}")
        if not mask.is_list:
            raise EvaluationError(f"the mask must be a bool collection, not one value per event, in {what}")
        if mask.values.dtype != np.bool_:
            raise EvaluationError(f"the mask must be bool, in {what}")
        (x, m), _, offsets = _broadcast([lst, mask], self.n, what)
        # a null mask element keeps the element as null (as awkward does)
        keep = m.copy() if mask.valid is None else (m | ~mask.valid)
        counts = _segment_sum_int(keep.astype(np.int64), offsets)
        new_offsets = np.zeros(self.n + 1, np.int64)
        np.cumsum(counts, out=new_offsets[1:])
        valid = None
        if lst.valid is not None or mask.valid is not None:
            valid = np.ones(len(x), bool)
            if lst.valid is not None:
                valid &= lst.valid
            if mask.valid is not None:
                valid &= mask.valid
            valid = valid[keep]
        return _Val(x[keep], valid, new_offsets)

    # reductions and element access
    def _reduce(self, op, v: _Val, e, what) -> _Val:
        if not v.is_list:
            raise EvaluationError(
                f"{op.name.lower()}() reduces a collection, but {e.args[0]!r} has one value per event")
        x, valid, offsets = v.values, v.valid, v.offsets
        counts = np.diff(offsets)
        if op in ir.ELEMENT_ACCESS:
            i = 0 if op == Op.First else (-1 if op == Op.Last else e.index)
            pos = np.where(i >= 0, i, counts + i)
            ok = (pos >= 0) & (pos < counts)
            idx = np.where(ok, offsets[:-1] + pos, 0)
            out = x[idx] if len(x) else np.zeros(len(counts), x.dtype)
            if valid is not None and len(x):
                ok = ok & valid[idx]
            return _Val(np.where(ok, out, out.dtype.type(0)), None if ok.all() else ok)
        if op == Op.Count:
            return _Val(counts.astype(np.int64))
        present = np.ones(len(x), bool) if valid is None else valid
        if op in (Op.CountNonzero, Op.Any, Op.All):
            nz = present & (x != 0)
            if op == Op.CountNonzero:
                return _Val(_segment_sum_int(nz.astype(np.int64), offsets))
            if op == Op.Any:
                return _Val(_segment_sum_int(nz.astype(np.int64), offsets) > 0)
            zero = present & (x == 0)
            return _Val(_segment_sum_int(zero.astype(np.int64), offsets) == 0)
        k = x.dtype.kind
        if op == Op.Sum:
            t = np.dtype(np.int64 if k in "bi" else np.uint64 if k == "u" else x.dtype)
            xs = np.where(present, x, 0).astype(t)
            return _Val(_segment_fold(xs, offsets, np.add, t.type(0), t))
        n_present = _segment_sum_int(present.astype(np.int64), offsets)
        nulls = n_present > 0
        if op == Op.Mean:
            xs = np.where(present, x, 0).astype(np.float64)
            s = _segment_fold(xs, offsets, np.add, 0.0, np.dtype(np.float64))
            with _quiet():
                mean = s / np.where(nulls, n_present, 1)
            return _Val(np.where(nulls, mean, 0.0), None if nulls.all() else nulls)
        # Min, Max: NumPy's np.minimum/np.maximum propagate NaN
        ufunc = np.minimum if op == Op.Min else np.maximum
        if k == "f":
            init = np.inf if op == Op.Min else -np.inf
        elif k == "b":
            init = op == Op.Min
        else:
            info = np.iinfo(x.dtype)
            init = info.max if op == Op.Min else info.min
        xs = np.where(present, x, x.dtype.type(init))
        r = _segment_fold(xs, offsets, ufunc, x.dtype.type(init), x.dtype)
        r = np.where(nulls, r, x.dtype.type(0))
        return _Val(r, None if nulls.all() else nulls)


def _pairs(op, args: list[_Val], what) -> _Val:
    """PairFirst/PairSecond: ak.combinations(x, 2) order; CrossFirst/CrossSecond:
    ak.cartesian([x, y]) order; both i-major.  Index arithmetic only (O(pairs))."""
    for v in args:
        if not v.is_list:
            raise EvaluationError(f"pairs are made of collections, not one value per event, in {what}")
    if op in ir.PER_FIRST:
        return _per_first(op, *args, what)
    x = args[0]
    nx = np.diff(x.offsets)
    ev = np.repeat(np.arange(len(nx)), nx)           # the event of each element of x
    local = np.arange(len(x.values)) - x.offsets[:-1][ev]   # its position in its list
    if op in (Op.PairFirst, Op.PairSecond):
        counts = nx * (nx - 1) // 2
        reps = nx[ev] - 1 - local                      # pairs (i, j > i) starting at element i
    else:
        y = args[1]
        ny = np.diff(y.offsets)
        counts = nx * ny
        reps = ny[ev]
    total = int(counts.sum())
    if total > MAX_PAIRS:
        raise EvaluationError(
            f"{total} pairs in {what}, more than {MAX_PAIRS} at once; select fewer objects first",
            errno.ENOMEM)
    offsets = np.zeros(len(nx) + 1, np.int64)
    np.cumsum(counts, out=offsets[1:])
    first = np.repeat(np.arange(len(x.values)), reps)
    run_start = np.cumsum(reps) - reps
    pos = np.arange(total) - np.repeat(run_start, reps)   # position within the run of element i
    if op == Op.PairFirst or op == Op.CrossFirst:
        idx, src = first, x
    elif op == Op.PairSecond:
        idx, src = first + 1 + pos, x
    else:
        idx, src = np.repeat(args[1].offsets[:-1][ev], reps) + pos, args[1]
    valid = None if src.valid is None else src.valid[idx]
    return _Val(src.values[idx], valid, offsets)


def _per_first(op, p: _Val, x: _Val, y: _Val, what) -> _Val:
    """CrossAny/CrossAll: per object of x, any/all of its run of ny pairs in p."""
    nx, ny = np.diff(x.offsets), np.diff(y.offsets)
    bad = np.flatnonzero(np.diff(p.offsets) != nx * ny)
    if len(bad):
        e = int(bad[0])
        raise EvaluationError(f"event {e} has {int(np.diff(p.offsets)[e])} pairs, not {int(nx[e])} x "
                              f"{int(ny[e])} (the cartesian product of its collections), in {what}")
    ev = np.repeat(np.arange(len(nx)), nx)
    reps = ny[ev]                                   # pairs of each object of x
    present = np.ones(len(p.values), bool) if p.valid is None else p.valid
    hit = present & ((p.values != 0) if op == Op.CrossAny else (p.values == 0))
    cs = np.zeros(len(hit) + 1, np.int64)
    np.cumsum(hit, out=cs[1:])
    start = np.cumsum(reps) - reps
    n_hit = cs[start + reps] - cs[start]
    return _Val(n_hit > 0 if op == Op.CrossAny else n_hit == 0, None, x.offsets)


def _segment_sum_int(x: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    cs = np.zeros(len(x) + 1, np.int64)
    np.cumsum(x, out=cs[1:])
    return cs[offsets[1:]] - cs[offsets[:-1]]


def _segment_fold(x, offsets, ufunc, init, dtype) -> np.ndarray:
    """Fold every list from its first element to its last, in ``dtype`` (sequential, not pairwise)."""
    counts = np.diff(offsets)
    n = len(counts)
    acc = np.full(n, init, dtype=dtype)
    starts = offsets[:-1]
    longest = int(counts.max()) if n else 0
    with _quiet():
        for j in range(longest):
            rows = np.flatnonzero(counts > j)
            acc[rows] = ufunc(acc[rows], x[starts[rows] + j]).astype(dtype, copy=False)
    return acc


# -- nullability of results ------------------------------------------------------------

_MAY_BE_NULL = {Op.First, Op.Last, Op.Index, Op.Min, Op.Max, Op.Mean}
_NEVER_NULL = {Op.Count, Op.CountNonzero, Op.Sum, Op.Any, Op.All, Op.CrossAny, Op.CrossAll}


def may_be_null(e: ir.Expr) -> bool:
    """Whether ``e`` can give nulls; decides the ``nullable`` flag of a result field."""
    if not isinstance(e, ir.Call):
        return False
    if e.op in _MAY_BE_NULL:
        return True
    if e.op in _NEVER_NULL:
        return False
    return any(may_be_null(a) for a in e.args)


def _to_arrow(v: _Val, n: int, nullable: bool) -> tuple[pa.Array, pa.DataType]:
    if v.weak:
        v = _Val(_full(v.values, n))
    t = pa.from_numpy_dtype(v.values.dtype)
    mask = None if v.valid is None else ~v.valid
    flat = pa.array(v.values, type=t, mask=mask)
    if not v.is_list:
        return flat, t
    lt = pa.list_(pa.field("item", t, nullable=nullable))
    arr = pa.ListArray.from_arrays(pa.array(v.offsets.astype(np.int32)), flat, type=lt)
    return arr, lt


def evaluate(table: pa.Table, expr) -> pa.Array:
    """One expression over every row of ``table``, as an Arrow array."""
    expr = ir.as_expr(expr)
    arr, _ = _to_arrow(_Evaluator(table)(expr), table.num_rows, may_be_null(expr))
    return arr


# -- the scan ---------------------------------------------------------------------------

def scan_table(table: pa.Table, outputs=(), where=None, row_start=0, row_stop=-1, limit=-1,
               aggregations=()) -> ScanResult:
    """What the object class's ``scan`` answers for this partition ``table`` (formats/README.md)."""
    t0 = time.thread_time_ns()
    n = table.num_rows
    stop = n if row_stop is None or row_stop < 0 else min(row_stop, n)
    start = min(max(row_start, 0), stop)
    part = table.slice(start, stop - start)
    rows_scanned = part.num_rows
    if where is not None:
        cut = _Evaluator(part)(ir.as_expr(where))
        if cut.is_list:
            raise EvaluationError(f"the cut {where!r} gives one value per object, not per event")
        if _kind(cut.values if cut.weak else cut.values.dtype) != "bool":
            raise EvaluationError(f"the cut {where!r} must be bool")
        if cut.weak:
            sel = np.arange(rows_scanned) if cut.values else np.zeros(0, np.int64)
        else:
            keep = cut.values if cut.valid is None else cut.values & cut.valid
            sel = np.flatnonzero(keep)
    else:
        sel = np.arange(rows_scanned)
    rows_matched = len(sel)
    if limit is not None and limit >= 0:
        sel = sel[:limit]
    selected = part.take(pa.array(sel, pa.int64())) if len(sel) != rows_scanned else part
    ev = _Evaluator(selected)
    cols, fields = [], []
    for name, e in outputs:
        e = ir.as_expr(e)
        nullable = may_be_null(e)
        arr, t = _to_arrow(ev(e), selected.num_rows, nullable)
        cols.append(arr)
        fields.append(pa.field(name, t, nullable=nullable and not pa.types.is_list(t)))
    out = pa.Table.from_arrays(cols, schema=pa.schema(fields))
    partials = [_aggregate(ev, a, selected.num_rows) for a in aggregations]
    figures = {"rows_scanned": rows_scanned, "rows_matched": rows_matched,
               "rows_returned": selected.num_rows, "bytes_read": 0, "object_bytes": 0,
               "cpu_ns": time.thread_time_ns() - t0}
    return ScanResult(table=out, figures=figures, aggregates=partials)


def _flat(v: _Val, n: int):
    """Values and validity of v with one entry per value (every element of a collection)."""
    if v.weak:
        v = _Val(_full(v.values, n))
    present = np.ones(len(v.values), bool) if v.valid is None else v.valid
    return v.values, present


def _aggregate(ev: _Evaluator, a: ir.Aggregation, n: int) -> PartialAggregate:
    p = PartialAggregate(name=a.name, kind=a.kind)
    if a.kind == ir.AggKind.Count:
        if a.x is None:
            p.count = n
        else:
            x, present = _flat(ev(a.x), n)
            p.count = int(present.sum())
        return p
    if a.kind in (ir.AggKind.Hist1D, ir.AggKind.Hist2D):
        return _histogram(ev, a, n, p)
    x, present = _flat(ev(a.x), n)
    if x.dtype.kind in "biu":
        # uint64 stays uint64 (values >= 2**63 must not wrap); other integers in int64
        acc = np.uint64 if x.dtype == np.uint64 else np.int64
        vals = x[present].astype(acc)
        p.is_integer = True
        p.is_unsigned = acc is np.uint64
        p.count = len(vals)
        if a.kind in (ir.AggKind.Sum, ir.AggKind.Mean):
            with _quiet():
                p.int_value = int(np.sum(vals, dtype=acc)) if len(vals) else 0
        elif len(vals):
            p.int_value = int(vals.min() if a.kind == ir.AggKind.Min else vals.max())
        return p
    vals = x[present].astype(np.float64)
    vals = vals[~np.isnan(vals)]
    p.count = len(vals)
    if a.kind in (ir.AggKind.Sum, ir.AggKind.Mean):
        p.float_value = float(np.cumsum(vals)[-1]) if len(vals) else 0.0  # cumsum is sequential
    elif len(vals):
        p.float_value = float(vals.min() if a.kind == ir.AggKind.Min else vals.max())
    return p


def bin_index(v: np.ndarray, axis: ir.Axis) -> np.ndarray:
    """The documented bin formula: 0 underflow, bins+1 overflow, computed in float64."""
    v = np.asarray(v, np.float64)
    with _quiet():
        inner = np.floor((v - axis.low) / (axis.high - axis.low) * axis.bins)
        inner = np.where(np.isfinite(inner), inner, 0)
        idx = 1 + np.minimum(axis.bins - 1, inner.astype(np.int64))
    return np.where(v < axis.low, 0, np.where(v >= axis.high, axis.bins + 1, idx))


def _histogram(ev: _Evaluator, a: ir.Aggregation, n: int, p: PartialAggregate) -> PartialAggregate:
    exprs = [a.x] + ([a.y] if a.kind == ir.AggKind.Hist2D else [])
    vals = [ev(e) for e in exprs]
    w = ev(a.weight) if a.weight is not None else _Val(1.0, weak=True)
    if w.is_list and not any(v.is_list for v in vals):
        raise EvaluationError(f"the weight of histogram {a.name!r} is a collection but its value is not")
    arrays, valid, offsets = _broadcast(vals + [w], n, f"histogram {a.name!r}")
    size = _length(offsets, n)
    arrays = [np.broadcast_to(np.asarray(x, np.float64), (size,)) for x in arrays]
    ok = np.ones(size, bool) if valid is None else valid.copy()
    for x in arrays:
        ok &= ~np.isnan(x)
    *coords, weights = [x[ok] for x in arrays]
    ix = bin_index(coords[0], a.x_axis)
    nbins = a.x_axis.bins + 2
    if a.kind == ir.AggKind.Hist2D:
        ny = a.y_axis.bins + 2
        ix = ix * ny + bin_index(coords[1], a.y_axis)
        nbins *= ny
    sumw = np.zeros(nbins)
    sumw2 = np.zeros(nbins)
    np.add.at(sumw, ix, weights)       # unbuffered, in row order: the same sums as a loop
    np.add.at(sumw2, ix, weights * weights)
    p.count = int(ok.sum())
    p.sumw, p.sumw2 = sumw.tolist(), sumw2.tolist()
    return p
