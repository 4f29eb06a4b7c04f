// Element-wise kernels: arithmetic, math functions and comparisons on
// operands already materialized to one type and shape (eval.cc).  Loops are
// written by hand (not Arrow compute kernels) so that integer wrapping,
// NumPy's floor_divide/remainder and its float divmod are reproduced exactly.

#include <cmath>
#include <limits>
#include <type_traits>

#include "eval_internal.h"

namespace skyhook {

namespace {

template <typename T>
using Wide = std::conditional_t<(sizeof(T) < 4), uint32_t, std::make_unsigned_t<T>>;

// Integer arithmetic with wrapping, through unsigned types (no UB).
template <typename T>
T WrapAdd(T a, T b) { return static_cast<T>(static_cast<Wide<T>>(a) + static_cast<Wide<T>>(b)); }
template <typename T>
T WrapSub(T a, T b) { return static_cast<T>(static_cast<Wide<T>>(a) - static_cast<Wide<T>>(b)); }
template <typename T>
T WrapMul(T a, T b) { return static_cast<T>(static_cast<Wide<T>>(a) * static_cast<Wide<T>>(b)); }

template <typename T>
T IntFloorDiv(T a, T b) {
  if (b == 0) return 0;
  if constexpr (std::is_signed_v<T>) {
    if (a == std::numeric_limits<T>::min() && b == -1) return a;  // NumPy wraps
    T q = static_cast<T>(a / b);
    if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
    return q;
  } else {
    return static_cast<T>(a / b);
  }
}

template <typename T>
T IntMod(T a, T b) {
  if (b == 0) return 0;
  if constexpr (std::is_signed_v<T>) {
    if (b == -1) return 0;
    T r = static_cast<T>(a % b);
    if (r != 0 && ((r < 0) != (b < 0))) r = static_cast<T>(r + b);
    return r;
  } else {
    return static_cast<T>(a % b);
  }
}

// NumPy's npy_divmod (npy_math_internal.h.src), in the float type T.
template <typename T>
T FloatDivmod(T a, T b, T* modulus) {
  T mod = std::fmod(a, b);
  if (b == 0) {
    *modulus = mod;
    return a / b;
  }
  T div = (a - mod) / b;
  if (mod != 0) {
    if ((b < 0) != (mod < 0)) {
      mod += b;
      div -= T(1);
    }
  } else {
    mod = std::copysign(T(0), b);
  }
  T floordiv;
  if (div != 0) {
    floordiv = std::floor(div);
    if (div - floordiv > T(0.5)) floordiv += T(1);
  } else {
    floordiv = std::copysign(T(0), a / b);
  }
  *modulus = mod;
  return floordiv;
}

template <typename T>
T FloatFloorDiv(T a, T b) {
  if (b == 0) return a / b;
  T mod;
  return FloatDivmod(a, b, &mod);
}

template <typename T>
T FloatMod(T a, T b) {
  if (b == 0) return std::fmod(a, b);
  T mod;
  FloatDivmod(a, b, &mod);
  return mod;
}

template <typename T>
T IntPow(T base, T exp) {
  using U = Wide<T>;
  U result = 1, b = static_cast<U>(base);
  auto e = static_cast<std::make_unsigned_t<T>>(exp);
  while (e) {
    if (e & 1) result = static_cast<U>(result * b);
    b = static_cast<U>(b * b);
    e >>= 1;
  }
  return static_cast<T>(result);
}

template <typename T>
T IntAbs(T a) {
  if constexpr (std::is_signed_v<T>) return a < 0 ? WrapSub<T>(0, a) : a;
  else return a;
}

// Element-wise binary operations on operands materialized to type T.
template <typename T>
arrow::Status Binary(Op op, const Value& a, const Value& b, Value* out, CallContext* ctx) {
  const int64_t n = a.length;
  const T* x = a.values<T>();
  const T* y = b.values<T>();
  const uint8_t* va = a.validity();
  const uint8_t* vb = b.validity();
  auto valid = [&](int64_t i) { return (!va || va[i]) && (!vb || vb[i]); };
  if (IsComparison(op)) {
    ARROW_ASSIGN_OR_RAISE(out->data, NewBuffer(std::max<int64_t>(n, 1), ctx));
    uint8_t* o = out->data->mutable_data();
    switch (op) {
      case Op::Eq: for (int64_t i = 0; i < n; ++i) o[i] = x[i] == y[i]; break;
      case Op::Ne: for (int64_t i = 0; i < n; ++i) o[i] = x[i] != y[i]; break;
      case Op::Lt: for (int64_t i = 0; i < n; ++i) o[i] = x[i] < y[i]; break;
      case Op::Le: for (int64_t i = 0; i < n; ++i) o[i] = x[i] <= y[i]; break;
      case Op::Gt: for (int64_t i = 0; i < n; ++i) o[i] = x[i] > y[i]; break;
      default: for (int64_t i = 0; i < n; ++i) o[i] = x[i] >= y[i]; break;
    }
    return arrow::Status::OK();
  }
  ARROW_ASSIGN_OR_RAISE(out->data, NewBuffer(std::max<int64_t>(n, 1) * sizeof(T), ctx));
  T* o = reinterpret_cast<T*>(out->data->mutable_data());
  if constexpr (std::is_floating_point_v<T>) {
    switch (op) {
      case Op::Add: for (int64_t i = 0; i < n; ++i) o[i] = x[i] + y[i]; break;
      case Op::Sub: for (int64_t i = 0; i < n; ++i) o[i] = x[i] - y[i]; break;
      case Op::Mul: for (int64_t i = 0; i < n; ++i) o[i] = x[i] * y[i]; break;
      case Op::Div: for (int64_t i = 0; i < n; ++i) o[i] = x[i] / y[i]; break;
      case Op::FloorDiv: for (int64_t i = 0; i < n; ++i) o[i] = FloatFloorDiv<T>(x[i], y[i]); break;
      case Op::Mod: for (int64_t i = 0; i < n; ++i) o[i] = FloatMod<T>(x[i], y[i]); break;
      case Op::Pow: for (int64_t i = 0; i < n; ++i) o[i] = std::pow(x[i], y[i]); break;
      case Op::Arctan2: for (int64_t i = 0; i < n; ++i) o[i] = std::atan2(x[i], y[i]); break;
      case Op::Hypot: for (int64_t i = 0; i < n; ++i) o[i] = std::hypot(x[i], y[i]); break;
      default: return arrow::Status::Invalid("not a binary operation");
    }
  } else {
    switch (op) {
      case Op::Add: for (int64_t i = 0; i < n; ++i) o[i] = WrapAdd<T>(x[i], y[i]); break;
      case Op::Sub: for (int64_t i = 0; i < n; ++i) o[i] = WrapSub<T>(x[i], y[i]); break;
      case Op::Mul: for (int64_t i = 0; i < n; ++i) o[i] = WrapMul<T>(x[i], y[i]); break;
      case Op::FloorDiv: for (int64_t i = 0; i < n; ++i) o[i] = IntFloorDiv<T>(x[i], y[i]); break;
      case Op::Mod: for (int64_t i = 0; i < n; ++i) o[i] = IntMod<T>(x[i], y[i]); break;
      case Op::Pow:
        if constexpr (std::is_signed_v<T>) {
          for (int64_t i = 0; i < n; ++i)
            if (y[i] < 0 && valid(i))
              return ErrnoStatus(EDOM, "integers to negative integer powers are not allowed");
        }
        for (int64_t i = 0; i < n; ++i) o[i] = IntPow<T>(x[i], y[i]);
        break;
      default: return arrow::Status::Invalid("not an integer operation");
    }
  }
  return arrow::Status::OK();
}

// Comparison of a signed integer array with a uint64 array, exact like NumPy 2.
arrow::Status CompareMixed(Op op, const Value& s, const Value& u, bool s_first, Value* out,
                           CallContext* ctx) {
  const int64_t n = s.length;
  ARROW_ASSIGN_OR_RAISE(out->data, NewBuffer(std::max<int64_t>(n, 1), ctx));
  uint8_t* o = out->data->mutable_data();
  const int64_t* x = s.values<int64_t>();
  const uint64_t* y = u.values<uint64_t>();
  for (int64_t i = 0; i < n; ++i) {
    // -1: s < u, 0: equal, 1: s > u
    int c = x[i] < 0 ? -1 : (static_cast<uint64_t>(x[i]) < y[i] ? -1 : static_cast<uint64_t>(x[i]) > y[i]);
    if (!s_first) c = -c;
    bool r;
    switch (op) {
      case Op::Eq: r = c == 0; break;
      case Op::Ne: r = c != 0; break;
      case Op::Lt: r = c < 0; break;
      case Op::Le: r = c <= 0; break;
      case Op::Gt: r = c > 0; break;
      default: r = c >= 0; break;
    }
    o[i] = r;
  }
  return arrow::Status::OK();
}


template <typename T>
arrow::Status UnaryMath(Op op, const Value& a, Value* out, CallContext* ctx) {
  const int64_t n = a.length;
  const T* x = a.values<T>();
  ARROW_ASSIGN_OR_RAISE(out->data, NewBuffer(std::max<int64_t>(n, 1) * sizeof(T), ctx));
  T* o = reinterpret_cast<T*>(out->data->mutable_data());
  switch (op) {
    case Op::Sqrt: for (int64_t i = 0; i < n; ++i) o[i] = std::sqrt(x[i]); break;
    case Op::Exp: for (int64_t i = 0; i < n; ++i) o[i] = std::exp(x[i]); break;
    case Op::Log: for (int64_t i = 0; i < n; ++i) o[i] = std::log(x[i]); break;
    case Op::Sin: for (int64_t i = 0; i < n; ++i) o[i] = std::sin(x[i]); break;
    case Op::Cos: for (int64_t i = 0; i < n; ++i) o[i] = std::cos(x[i]); break;
    case Op::Tan: for (int64_t i = 0; i < n; ++i) o[i] = std::tan(x[i]); break;
    case Op::Sinh: for (int64_t i = 0; i < n; ++i) o[i] = std::sinh(x[i]); break;
    case Op::Cosh: for (int64_t i = 0; i < n; ++i) o[i] = std::cosh(x[i]); break;
    case Op::Abs:
      if constexpr (std::is_floating_point_v<T>) {
        for (int64_t i = 0; i < n; ++i) o[i] = std::fabs(x[i]);
      } else {
        for (int64_t i = 0; i < n; ++i) o[i] = IntAbs<T>(x[i]);
      }
      break;
    case Op::Neg:
      if constexpr (std::is_floating_point_v<T>) {
        for (int64_t i = 0; i < n; ++i) o[i] = -x[i];
      } else {
        for (int64_t i = 0; i < n; ++i) o[i] = WrapSub<T>(0, x[i]);
      }
      break;
    default: return arrow::Status::Invalid("not a unary operation");
  }
  return arrow::Status::OK();
}

// Per-event reductions of a collection (formats/README.md "Reductions");

}  // namespace

// A weak int literal compared with an integer array it does not fit: a constant.
bool OutOfRangeComparison(Op op, bool literal_above, bool literal_first) {
  // "array < literal" is true when the literal is above every value of the type.
  bool array_less = literal_above;
  if (literal_first) {  // "literal OP array": mirror
    switch (op) {
      case Op::Lt: op = Op::Gt; break;
      case Op::Le: op = Op::Ge; break;
      case Op::Gt: op = Op::Lt; break;
      case Op::Ge: op = Op::Le; break;
      default: break;
    }
  }
  switch (op) {
    case Op::Eq: return false;
    case Op::Ne: return true;
    case Op::Lt: case Op::Le: return array_less;
    default: return !array_less;
  }
}

arrow::Status EvalBinary(Op op, VType t, const Value& a, const Value& b, Value* out, CallContext* ctx) {
  return Dispatch(t, [&](auto tag) { return Binary<typename decltype(tag)::type>(op, a, b, out, ctx); });
}

arrow::Status EvalUnary(Op op, VType t, const Value& a, Value* out, CallContext* ctx) {
  return Dispatch(t, [&](auto tag) { return UnaryMath<typename decltype(tag)::type>(op, a, out, ctx); });
}

arrow::Status EvalCompareMixed(Op op, const Value& s, const Value& u, bool s_first, Value* out,
                               CallContext* ctx) {
  return CompareMixed(op, s, u, s_first, out, ctx);
}

}  // namespace skyhook
