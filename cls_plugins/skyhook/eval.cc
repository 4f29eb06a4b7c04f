// The IR evaluator: static typing (NumPy 2 promotion with weak literals) and
// element-wise evaluation with NanoAOD jagged semantics (formats/README.md).
//
// Every operand is first "materialized": cast to the operation's type and
// broadcast to the operation's shape, so that each operation is one loop over
// contiguous arrays.  Loops are written by hand (not Arrow compute kernels) so
// that integer wrapping, NumPy's floor_divide/remainder and sequential float
// sums are reproduced exactly.  Memory comes from the call's capped pool.
// Ignored on purpose: nested lists, strings, null lists (read as empty lists).

#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>

#include "kernel_internal.h"

namespace skyhook {

namespace {

template <typename T>
struct Tag {
  using type = T;
};

// Calls f(Tag<C type>) for a VType; Bool is stored as uint8_t.
template <typename F>
auto Dispatch(VType t, F&& f) {
  switch (t) {
    case VType::Bool: return f(Tag<uint8_t>{});
    case VType::I8: return f(Tag<int8_t>{});
    case VType::I16: return f(Tag<int16_t>{});
    case VType::I32: return f(Tag<int32_t>{});
    case VType::I64: return f(Tag<int64_t>{});
    case VType::U8: return f(Tag<uint8_t>{});
    case VType::U16: return f(Tag<uint16_t>{});
    case VType::U32: return f(Tag<uint32_t>{});
    case VType::U64: return f(Tag<uint64_t>{});
    case VType::F32: return f(Tag<float>{});
    case VType::F64: break;
  }
  return f(Tag<double>{});
}

arrow::Status Invalid(std::string msg) { return ErrnoStatus(EINVAL, std::move(msg)); }

int IntBits(VType t) { return VTypeBytes(t) * 8; }

VType SignedOfBits(int bits) {
  switch (bits) {
    case 8: return VType::I8;
    case 16: return VType::I16;
    case 32: return VType::I32;
    default: return VType::I64;
  }
}

// np.result_type of two (strong) array types.
VType PromoteStrong(VType a, VType b) {
  if (a == b) return a;
  if (a == VType::Bool) return b;
  if (b == VType::Bool) return a;
  if (IsFloat(a) || IsFloat(b)) {
    if (a == VType::F64 || b == VType::F64) return VType::F64;
    VType other = IsFloat(a) ? b : a;  // float32 with an integer
    return IntBits(other) <= 16 ? VType::F32 : VType::F64;
  }
  if (IsSigned(a) == IsSigned(b)) return VTypeBytes(a) >= VTypeBytes(b) ? a : b;
  VType s = IsSigned(a) ? a : b, u = IsSigned(a) ? b : a;
  if (IntBits(s) > IntBits(u)) return s;
  if (IntBits(u) < 64) return SignedOfBits(2 * IntBits(u));
  return VType::F64;
}

// NEP 50: a weak literal takes the kind-compatible type of the array operand.
VType PromoteWeak(VType weak, VType strong) {
  if (weak == VType::F64) return IsFloat(strong) ? strong : VType::F64;
  if (weak == VType::I64) return strong == VType::Bool ? VType::I64 : strong;
  return strong;  // a bool literal
}

VType Promote(const NodeType& a, const NodeType& b) {
  if (a.weak && b.weak) {
    if (a.type == VType::Bool && b.type == VType::Bool) return VType::Bool;
    if (IsFloat(a.type) || IsFloat(b.type)) return VType::F64;
    return VType::I64;
  }
  if (a.weak) return PromoteWeak(a.type, b.type);
  if (b.weak) return PromoteWeak(b.type, a.type);
  return PromoteStrong(a.type, b.type);
}

bool IsArithmetic(Op op) { return op >= Op::Add && op <= Op::Neg; }
bool IsComparison(Op op) { return op >= Op::Eq && op <= Op::Ge; }
bool IsUnaryMath(Op op) { return op >= Op::Sqrt && op <= Op::Cosh; }
bool IsReduction(Op op) { return op >= Op::Count && op <= Op::All; }
bool IsElementAccess(Op op) { return op >= Op::First && op <= Op::Index; }

std::string Describe(const Plan& plan, uint32_t i) {
  const Node& n = plan.nodes[i];
  std::string s = "node " + std::to_string(i) + " (" + OpName(n.op);
  if (n.op == Op::Column) s += " " + n.name;
  return s + ")";
}

}  // namespace

const char* VTypeName(VType t) {
  static const char* names[] = {"bool",  "int8",   "int16",  "int32",   "int64",  "uint8",
                                "uint16", "uint32", "uint64", "float32", "float64"};
  return names[static_cast<int>(t)];
}

int VTypeBytes(VType t) {
  switch (t) {
    case VType::Bool: case VType::I8: case VType::U8: return 1;
    case VType::I16: case VType::U16: return 2;
    case VType::I32: case VType::U32: case VType::F32: return 4;
    default: return 8;
  }
}

const char* OpName(Op op) {
  static const char* names[] = {
      "Column", "Literal", "Add", "Sub", "Mul", "Div", "FloorDiv", "Mod", "Pow", "Neg", "Eq",
      "Ne", "Lt", "Le", "Gt", "Ge", "And", "Or", "Not", "Abs", "Sqrt", "Exp", "Log", "Sin",
      "Cos", "Tan", "Sinh", "Cosh", "Arctan2", "Hypot", "Where", "Mask", "Count",
      "CountNonzero", "Sum", "Min", "Max", "Mean", "Any", "All", "First", "Last", "Index"};
  int i = static_cast<int>(op);
  return i <= kMaxOp ? names[i] : "?";
}

// ---------------------------------------------------------------- static typing

arrow::Status TypeCheck(Plan* plan, const Limits&) {
  for (uint32_t i = 0; i < plan->nodes.size(); ++i) {
    Node& n = plan->nodes[i];
    std::vector<NodeType> a;
    for (uint32_t j : n.args) a.push_back(plan->nodes[j].t);
    auto no_bool = [&]() -> arrow::Status {
      for (size_t k = 0; k < a.size(); ++k)
        if (a[k].type == VType::Bool)
          return Invalid(Describe(*plan, i) + ": needs numbers, but argument " +
                         std::to_string(n.args[k]) + " is bool");
      return arrow::Status::OK();
    };
    bool any_list = false, all_weak = true;
    for (auto& t : a) {
      any_list |= t.is_list;
      all_weak &= t.weak;
    }
    NodeType out;
    out.is_list = any_list;
    out.weak = all_weak && !a.empty();
    if (n.op == Op::Column) {
      out = plan->columns[n.column].t;
    } else if (n.op == Op::Literal) {
      out.weak = true;
      out.type = n.literal_kind == 0 ? VType::Bool : n.literal_kind == 1 ? VType::I64 : VType::F64;
    } else if (IsArithmetic(n.op) || n.op == Op::Abs || n.op == Op::Arctan2 ||
               n.op == Op::Hypot) {
      ARROW_RETURN_NOT_OK(no_bool());
      out.type = a.size() == 2 ? Promote(a[0], a[1]) : a[0].type;
      if ((n.op == Op::Div || n.op == Op::Arctan2 || n.op == Op::Hypot) && !IsFloat(out.type))
        out.type = VType::F64;
    } else if (IsUnaryMath(n.op)) {
      ARROW_RETURN_NOT_OK(no_bool());
      out.type = (a[0].type == VType::F32 && !a[0].weak) ? VType::F32 : VType::F64;
    } else if (IsComparison(n.op)) {
      ARROW_RETURN_NOT_OK(no_bool());
      out.type = VType::Bool;
    } else if (n.op == Op::And || n.op == Op::Or || n.op == Op::Not) {
      for (size_t k = 0; k < a.size(); ++k)
        if (a[k].type != VType::Bool)
          return Invalid(Describe(*plan, i) + ": needs bool operands, but argument " +
                         std::to_string(n.args[k]) + " is " + VTypeName(a[k].type));
      out.type = VType::Bool;
    } else if (n.op == Op::Where) {
      if (a[0].type != VType::Bool)
        return Invalid(Describe(*plan, i) + ": the condition must be bool, got " +
                       VTypeName(a[0].type));
      out.type = Promote(a[1], a[2]);
    } else if (n.op == Op::Mask) {
      if (!a[0].is_list) return Invalid(Describe(*plan, i) + ": cannot mask an event-level value");
      if (!a[1].is_list || a[1].type != VType::Bool)
        return Invalid(Describe(*plan, i) + ": the mask must be a bool collection");
      out = a[0];
      out.weak = false;
    } else if (IsReduction(n.op) || IsElementAccess(n.op)) {
      if (!a[0].is_list)
        return Invalid(Describe(*plan, i) + ": reduces a collection, but argument " +
                       std::to_string(n.args[0]) + " has one value per event");
      out.is_list = false;
      out.weak = false;
      VType e = a[0].type;
      switch (n.op) {
        case Op::Count: case Op::CountNonzero: out.type = VType::I64; break;
        case Op::Any: case Op::All: out.type = VType::Bool; break;
        case Op::Sum:
          out.type = IsFloat(e) ? e : IsUnsigned(e) ? VType::U64 : VType::I64;
          break;
        case Op::Mean: out.type = VType::F64; break;  // np.mean of bools works too
        case Op::Min: case Op::Max: out.type = e; break;
        default: out.type = e; break;  // element access
      }
    } else {
      return Invalid(Describe(*plan, i) + ": unsupported operation");
    }
    n.t = out;
  }
  if (plan->filter >= 0) {
    const NodeType& f = plan->nodes[plan->filter].t;
    if (f.type != VType::Bool || f.is_list)
      return Invalid("the filter (node " + std::to_string(plan->filter) +
                     ") must be an event-level bool, got " + (f.is_list ? "a collection of " : "") +
                     VTypeName(f.type));
  }
  for (const AggSpec& g : plan->aggregations) {
    if (g.weight >= 0 && plan->nodes[g.weight].t.is_list && !plan->nodes[g.x].t.is_list)
      return Invalid("aggregation '" + g.name + "': a collection weight for an event-level value");
  }
  return arrow::Status::OK();
}

// ---------------------------------------------------------------- values

arrow::Result<std::shared_ptr<arrow::Buffer>> NewBuffer(int64_t bytes, CallContext* ctx) {
  ARROW_ASSIGN_OR_RAISE(auto buf, arrow::AllocateBuffer(bytes, ctx->pool()));
  return std::shared_ptr<arrow::Buffer>(std::move(buf));
}

namespace {

bool SameOffsets(const Value& a, const Value& b) {
  if (a.n_events != b.n_events) return false;
  if (a.offsets == b.offsets) return true;
  return std::memcmp(a.offsets->data(), b.offsets->data(),
                     sizeof(int64_t) * static_cast<size_t>(a.n_events + 1)) == 0;
}

// The shape operands are broadcast to: the first collection, after checking
// that every collection operand has the same list lengths.
arrow::Result<const Value*> CommonShape(const std::vector<const Value*>& vs, const char* what) {
  const Value* shape = nullptr;
  for (const Value* v : vs) {
    if (!v->t.is_list || v->scalar) continue;
    if (shape == nullptr) {
      shape = v;
    } else if (!SameOffsets(*shape, *v)) {
      return Invalid(std::string(what) + ": two collections with different list lengths");
    }
  }
  return shape;
}

template <typename T>
bool FitsIn(int64_t v) {
  if constexpr (std::is_same_v<T, uint64_t>) return v >= 0;
  else return v >= static_cast<int64_t>(std::numeric_limits<T>::lowest()) &&
              v <= static_cast<int64_t>(std::numeric_limits<T>::max());
}

}  // namespace

arrow::Result<Value> Materialize(const Value& v, VType to, const Value* shape, int64_t n_events,
                                 CallContext* ctx) {
  Value out;
  out.t = {to, shape != nullptr, false};
  out.n_events = n_events;
  out.length = shape ? shape->length : n_events;
  if (shape) out.offsets = shape->offsets;
  if (!v.scalar && v.t.type == to && v.t.is_list == (shape != nullptr)) {
    out.data = v.data;  // same type, same shape: no copy
    out.valid = v.valid;
    return out;
  }
  const int64_t len = out.length;
  ARROW_ASSIGN_OR_RAISE(out.data, NewBuffer(std::max<int64_t>(len, 1) * VTypeBytes(to), ctx));
  arrow::Status st = arrow::Status::OK();
  Dispatch(to, [&](auto to_tag) {
    using To = typename decltype(to_tag)::type;
    To* o = reinterpret_cast<To*>(out.data->mutable_data());
    if (v.scalar) {
      To c;
      if (v.t.type == VType::F64 || v.t.type == VType::F32) {
        c = static_cast<To>(v.fval);
      } else {
        if constexpr (std::is_integral_v<To>) {
          if (IsInteger(to) && !FitsIn<To>(v.ival)) {
            st = Invalid("the literal " + std::to_string(v.ival) + " is out of bounds for " +
                         VTypeName(to) + " (NumPy raises OverflowError)");
            return;
          }
        }
        c = static_cast<To>(v.ival);
      }
      for (int64_t i = 0; i < len; ++i) o[i] = c;
      return;
    }
    Dispatch(v.t.type, [&](auto from_tag) {
      using From = typename decltype(from_tag)::type;
      const From* x = v.values<From>();
      if (v.t.is_list || shape == nullptr) {  // same shape: cast
        for (int64_t i = 0; i < len; ++i) o[i] = static_cast<To>(x[i]);
      } else {  // an event-level value broadcast into the lists of `shape`
        const int64_t* off = shape->offs();
        for (int64_t e = 0; e < n_events; ++e)
          for (int64_t j = off[e]; j < off[e + 1]; ++j) o[j] = static_cast<To>(x[e]);
      }
    });
  });
  ARROW_RETURN_NOT_OK(st);
  if (!v.scalar && v.valid) {
    if (v.t.is_list || shape == nullptr) {
      out.valid = v.valid;
    } else {
      ARROW_ASSIGN_OR_RAISE(out.valid, NewBuffer(std::max<int64_t>(len, 1), ctx));
      uint8_t* ov = out.valid->mutable_data();
      const uint8_t* iv = v.valid->data();
      const int64_t* off = shape->offs();
      for (int64_t e = 0; e < n_events; ++e)
        for (int64_t j = off[e]; j < off[e + 1]; ++j) ov[j] = iv[e];
    }
  }
  return out;
}

namespace {

// AND of the validity of several same-shape values (null pointer: all valid).
arrow::Result<std::shared_ptr<arrow::Buffer>> AndValid(const std::vector<const Value*>& vs,
                                                       int64_t len, CallContext* ctx) {
  std::vector<const uint8_t*> ps;
  for (const Value* v : vs)
    if (v->valid) ps.push_back(v->valid->data());
  if (ps.empty()) return std::shared_ptr<arrow::Buffer>();
  if (ps.size() == 1) {
    for (const Value* v : vs)
      if (v->valid) return v->valid;
  }
  ARROW_ASSIGN_OR_RAISE(auto buf, NewBuffer(std::max<int64_t>(len, 1), ctx));
  uint8_t* o = buf->mutable_data();
  for (int64_t i = 0; i < len; ++i) {
    uint8_t ok = 1;
    for (const uint8_t* p : ps) ok &= p[i];
    o[i] = ok;
  }
  return buf;
}

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
// null elements are skipped, as awkward's reducers skip None.
template <typename T>
arrow::Status Reduce(Op op, VType out_type, const Value& a, Value* out, CallContext* ctx) {
  const int64_t ne = a.n_events;
  const int64_t* off = a.offs();
  const T* x = a.values<T>();
  const uint8_t* va = a.validity();
  ARROW_ASSIGN_OR_RAISE(out->data, NewBuffer(std::max<int64_t>(ne, 1) * 8, ctx));
  std::shared_ptr<arrow::Buffer> valid;
  uint8_t* ov = nullptr;
  if (op == Op::Min || op == Op::Max || op == Op::Mean) {
    ARROW_ASSIGN_OR_RAISE(valid, NewBuffer(std::max<int64_t>(ne, 1), ctx));
    ov = valid->mutable_data();
  }
  uint8_t* raw = out->data->mutable_data();
  for (int64_t e = 0; e < ne; ++e) {
    const int64_t b = off[e], end = off[e + 1];
    switch (op) {
      case Op::Count: case Op::CountNonzero: {
        int64_t c = 0;
        for (int64_t j = b; j < end; ++j)
          if (op == Op::Count || !va || va[j]) c += op == Op::Count ? 1 : (x[j] != 0 ? 1 : 0);  // NaN != 0
        reinterpret_cast<int64_t*>(raw)[e] = c;
        break;
      }
      case Op::Any: case Op::All: {
        bool r = op == Op::All;
        for (int64_t j = b; j < end; ++j) {
          if (va && !va[j]) continue;
          bool nz = x[j] != 0;
          if (op == Op::Any && nz) { r = true; break; }
          if (op == Op::All && !nz) { r = false; break; }
        }
        raw[e] = r;
        break;
      }
      case Op::Sum: {
        if (out_type == VType::F32) {
          float s = 0;
          for (int64_t j = b; j < end; ++j)
            if (!va || va[j]) s += static_cast<float>(x[j]);
          reinterpret_cast<float*>(raw)[e] = s;
        } else if (out_type == VType::F64) {
          double s = 0;
          for (int64_t j = b; j < end; ++j)
            if (!va || va[j]) s += static_cast<double>(x[j]);
          reinterpret_cast<double*>(raw)[e] = s;
        } else {  // int64 or uint64, wrapping
          uint64_t s = 0;
          if constexpr (std::is_integral_v<T>) {
            for (int64_t j = b; j < end; ++j)
              if (!va || va[j]) s += static_cast<uint64_t>(static_cast<int64_t>(x[j]));
          }
          reinterpret_cast<uint64_t*>(raw)[e] = s;
        }
        break;
      }
      case Op::Mean: {
        double s = 0;
        int64_t c = 0;
        for (int64_t j = b; j < end; ++j)
          if (!va || va[j]) { s += static_cast<double>(x[j]); ++c; }
        reinterpret_cast<double*>(raw)[e] = c ? s / static_cast<double>(c) : 0.0;
        ov[e] = c > 0;
        break;
      }
      default: {  // Min, Max; NaN propagates like np.minimum
        T m{};
        bool any = false, nan = false;
        for (int64_t j = b; j < end; ++j) {
          if (va && !va[j]) continue;
          if constexpr (std::is_floating_point_v<T>) {
            if (std::isnan(x[j])) nan = true;
          }
          if (!any || (op == Op::Min ? x[j] < m : x[j] > m)) m = x[j];
          any = true;
        }
        if constexpr (std::is_floating_point_v<T>) {
          if (nan) m = std::numeric_limits<T>::quiet_NaN();
        }
        reinterpret_cast<T*>(raw)[e] = m;
        ov[e] = any;
        break;
      }
    }
  }
  out->valid = valid;
  return arrow::Status::OK();
}

template <typename T>
arrow::Status Access(const Node& n, const Value& a, Value* out, CallContext* ctx) {
  const int64_t ne = a.n_events;
  const int64_t* off = a.offs();
  const T* x = a.values<T>();
  const uint8_t* va = a.validity();
  ARROW_ASSIGN_OR_RAISE(out->data, NewBuffer(std::max<int64_t>(ne, 1) * sizeof(T), ctx));
  ARROW_ASSIGN_OR_RAISE(out->valid, NewBuffer(std::max<int64_t>(ne, 1), ctx));
  T* o = reinterpret_cast<T*>(out->data->mutable_data());
  uint8_t* ov = out->valid->mutable_data();
  for (int64_t e = 0; e < ne; ++e) {
    const int64_t len = off[e + 1] - off[e];
    int64_t pos = n.op == Op::First ? 0 : n.op == Op::Last ? len - 1 : n.int_value;
    if (pos < 0) pos += len;
    if (pos >= 0 && pos < len) {
      o[e] = x[off[e] + pos];
      ov[e] = va ? va[off[e] + pos] : 1;
    } else {
      o[e] = T{};
      ov[e] = 0;
    }
  }
  return arrow::Status::OK();
}

template <typename T>
arrow::Status DoMask(const Value& l, const Value& m, Value* out, CallContext* ctx) {
  const int64_t ne = l.n_events;
  const int64_t* off = l.offs();
  const T* x = l.values<T>();
  const uint8_t* mk = m.values<uint8_t>();
  const uint8_t* vl = l.validity();
  const uint8_t* vm = m.validity();
  int64_t kept = 0;
  for (int64_t j = 0; j < l.length; ++j) kept += (vm && !vm[j]) || mk[j];
  ARROW_ASSIGN_OR_RAISE(out->offsets, NewBuffer((ne + 1) * 8, ctx));
  ARROW_ASSIGN_OR_RAISE(out->data, NewBuffer(std::max<int64_t>(kept, 1) * sizeof(T), ctx));
  const bool nulls = vl || vm;
  if (nulls) {
    ARROW_ASSIGN_OR_RAISE(out->valid, NewBuffer(std::max<int64_t>(kept, 1), ctx));
  }
  int64_t* oo = reinterpret_cast<int64_t*>(out->offsets->mutable_data());
  T* o = reinterpret_cast<T*>(out->data->mutable_data());
  uint8_t* ov = nulls ? out->valid->mutable_data() : nullptr;
  int64_t k = 0;
  oo[0] = 0;
  for (int64_t e = 0; e < ne; ++e) {
    for (int64_t j = off[e]; j < off[e + 1]; ++j) {
      const bool mask_null = vm && !vm[j];
      if (!mask_null && !mk[j]) continue;
      o[k] = x[j];
      if (ov) ov[k] = !mask_null && (!vl || vl[j]);  // awkward: a None mask gives None
      ++k;
    }
    oo[e + 1] = k;
  }
  out->length = k;
  return arrow::Status::OK();
}

}  // namespace

arrow::Result<Value> EvaluateNode(const Plan& plan, uint32_t index, const std::vector<Value>& values,
                                  int64_t n_events, CallContext* ctx) {
  const Node& n = plan.nodes[index];
  if (n.op == Op::Literal) {
    Value v;
    v.t = n.t;
    v.scalar = true;
    v.n_events = n_events;
    if (n.literal_kind == 2) v.fval = n.float_value;
    else v.ival = n.literal_kind == 0 ? (n.int_value != 0) : n.int_value;
    return v;
  }
  std::vector<const Value*> args;
  bool all_scalar = true;
  for (uint32_t j : n.args) {
    args.push_back(&values[j]);
    all_scalar &= values[j].scalar;
  }
  // Literal-only operations are computed on one element and stay scalars.
  const int64_t ne = all_scalar ? 1 : n_events;
  ARROW_ASSIGN_OR_RAISE(const Value* shape, CommonShape(args, OpName(n.op)));
  const std::string where = "node " + std::to_string(index) + " (" + OpName(n.op) + ")";

  Value out;
  out.t = n.t;
  out.n_events = ne;
  out.length = shape ? shape->length : ne;
  if (shape) out.offsets = shape->offsets;

  auto finish = [&](Value v) -> arrow::Result<Value> {
    if (!all_scalar) return v;
    Value s;
    s.t = n.t;
    s.scalar = true;
    s.n_events = n_events;
    if (v.valid && !v.valid->data()[0])
      return Invalid(where + ": a literal-only expression has no value");
    Dispatch(n.t.type, [&](auto tag) {
      using T = typename decltype(tag)::type;
      T x = v.values<T>()[0];
      if constexpr (std::is_floating_point_v<T>) s.fval = x;
      else s.ival = static_cast<int64_t>(x);
    });
    return s;
  };

  if (IsComparison(n.op)) {
    const Value& a = *args[0];
    const Value& b = *args[1];
    // A weak int literal out of the integer operand's range: a constant result.
    for (int k = 0; k < 2; ++k) {
      const Value& lit = k == 0 ? a : b;
      const Value& arr = k == 0 ? b : a;
      if (!(lit.scalar && lit.t.weak && lit.t.type == VType::I64) || arr.t.weak ||
          !IsInteger(arr.t.type))
        continue;
      bool fits = true, above = false;
      Dispatch(arr.t.type, [&](auto tag) {
        using T = typename decltype(tag)::type;
        fits = FitsIn<T>(lit.ival);
        above = lit.ival > 0;
      });
      if (fits) continue;
      ARROW_ASSIGN_OR_RAISE(Value m, Materialize(arr, arr.t.type, shape, ne, ctx));
      ARROW_ASSIGN_OR_RAISE(out.data, NewBuffer(std::max<int64_t>(out.length, 1), ctx));
      std::memset(out.data->mutable_data(), OutOfRangeComparison(n.op, above, k == 0) ? 1 : 0,
                  static_cast<size_t>(out.length));
      out.valid = m.valid;
      return finish(out);
    }
    VType ct = Promote(a.t, b.t);
    if (ct == VType::F64 && IsInteger(a.t.type) && IsInteger(b.t.type) && !a.t.weak && !b.t.weak) {
      // int64-like vs uint64: exact, as NumPy 2 compares them
      bool a_signed = IsSigned(a.t.type);
      ARROW_ASSIGN_OR_RAISE(Value sa, Materialize(a_signed ? a : b, VType::I64, shape, ne, ctx));
      ARROW_ASSIGN_OR_RAISE(Value ub, Materialize(a_signed ? b : a, VType::U64, shape, ne, ctx));
      ARROW_RETURN_NOT_OK(CompareMixed(n.op, sa, ub, a_signed, &out, ctx));
      ARROW_ASSIGN_OR_RAISE(out.valid, AndValid({&sa, &ub}, out.length, ctx));
      return finish(out);
    }
    ARROW_ASSIGN_OR_RAISE(Value ma, Materialize(a, ct, shape, ne, ctx));
    ARROW_ASSIGN_OR_RAISE(Value mb, Materialize(b, ct, shape, ne, ctx));
    arrow::Status st = Dispatch(ct, [&](auto tag) {
      return Binary<typename decltype(tag)::type>(n.op, ma, mb, &out, ctx);
    });
    ARROW_RETURN_NOT_OK(st);
    ARROW_ASSIGN_OR_RAISE(out.valid, AndValid({&ma, &mb}, out.length, ctx));
    return finish(out);
  }

  switch (n.op) {
    case Op::Add: case Op::Sub: case Op::Mul: case Op::Div: case Op::FloorDiv: case Op::Mod:
    case Op::Pow: case Op::Arctan2: case Op::Hypot: {
      ARROW_ASSIGN_OR_RAISE(Value ma, Materialize(*args[0], n.t.type, shape, ne, ctx));
      ARROW_ASSIGN_OR_RAISE(Value mb, Materialize(*args[1], n.t.type, shape, ne, ctx));
      arrow::Status st = Dispatch(n.t.type, [&](auto tag) {
        return Binary<typename decltype(tag)::type>(n.op, ma, mb, &out, ctx);
      });
      if (!st.ok()) {
        if (StatusToErrno(st) == -EDOM) return ErrnoStatus(EDOM, where + ": " + st.message());
        return st;
      }
      ARROW_ASSIGN_OR_RAISE(out.valid, AndValid({&ma, &mb}, out.length, ctx));
      return finish(out);
    }
    case Op::Neg: case Op::Abs: case Op::Sqrt: case Op::Exp: case Op::Log: case Op::Sin:
    case Op::Cos: case Op::Tan: case Op::Sinh: case Op::Cosh: {
      ARROW_ASSIGN_OR_RAISE(Value ma, Materialize(*args[0], n.t.type, shape, ne, ctx));
      ARROW_RETURN_NOT_OK(Dispatch(n.t.type, [&](auto tag) {
        return UnaryMath<typename decltype(tag)::type>(n.op, ma, &out, ctx);
      }));
      out.valid = ma.valid;
      return finish(out);
    }
    case Op::And: case Op::Or: case Op::Not: {
      std::vector<Value> m;
      for (const Value* a : args) {
        ARROW_ASSIGN_OR_RAISE(Value v, Materialize(*a, VType::Bool, shape, ne, ctx));
        m.push_back(std::move(v));
      }
      ARROW_ASSIGN_OR_RAISE(out.data, NewBuffer(std::max<int64_t>(out.length, 1), ctx));
      uint8_t* o = out.data->mutable_data();
      const uint8_t* x = m[0].values<uint8_t>();
      if (n.op == Op::Not) {
        for (int64_t i = 0; i < out.length; ++i) o[i] = !x[i];
      } else {
        const uint8_t* y = m[1].values<uint8_t>();
        if (n.op == Op::And) for (int64_t i = 0; i < out.length; ++i) o[i] = x[i] && y[i];
        else for (int64_t i = 0; i < out.length; ++i) o[i] = x[i] || y[i];
      }
      std::vector<const Value*> vs;
      for (auto& v : m) vs.push_back(&v);
      ARROW_ASSIGN_OR_RAISE(out.valid, AndValid(vs, out.length, ctx));
      return finish(out);
    }
    case Op::Where: {
      ARROW_ASSIGN_OR_RAISE(Value c, Materialize(*args[0], VType::Bool, shape, ne, ctx));
      ARROW_ASSIGN_OR_RAISE(Value a, Materialize(*args[1], n.t.type, shape, ne, ctx));
      ARROW_ASSIGN_OR_RAISE(Value b, Materialize(*args[2], n.t.type, shape, ne, ctx));
      ARROW_ASSIGN_OR_RAISE(out.data,
                            NewBuffer(std::max<int64_t>(out.length, 1) * VTypeBytes(n.t.type), ctx));
      Dispatch(n.t.type, [&](auto tag) {
        using T = typename decltype(tag)::type;
        T* o = reinterpret_cast<T*>(out.data->mutable_data());
        const uint8_t* cc = c.values<uint8_t>();
        const T* x = a.values<T>();
        const T* y = b.values<T>();
        for (int64_t i = 0; i < out.length; ++i) o[i] = cc[i] ? x[i] : y[i];
      });
      // null when the condition or the chosen value is null (Arrow if_else, ak.where)
      if (c.valid || a.valid || b.valid) {
        ARROW_ASSIGN_OR_RAISE(out.valid, NewBuffer(std::max<int64_t>(out.length, 1), ctx));
        uint8_t* ov = out.valid->mutable_data();
        const uint8_t* cc = c.values<uint8_t>();
        const uint8_t *vc = c.validity(), *va = a.validity(), *vb = b.validity();
        for (int64_t i = 0; i < out.length; ++i)
          ov[i] = (!vc || vc[i]) && (cc[i] ? (!va || va[i]) : (!vb || vb[i]));
      }
      return finish(out);
    }
    case Op::Mask: {
      ARROW_RETURN_NOT_OK(Dispatch(n.t.type, [&](auto tag) {
        return DoMask<typename decltype(tag)::type>(*args[0], *args[1], &out, ctx);
      }));
      return out;
    }
    default: break;
  }
  if (IsReduction(n.op) || IsElementAccess(n.op)) {
    const Value& a = *args[0];
    out.length = ne;
    out.offsets.reset();
    if (IsReduction(n.op)) {
      ARROW_RETURN_NOT_OK(Dispatch(a.t.type, [&](auto tag) {
        return Reduce<typename decltype(tag)::type>(n.op, n.t.type, a, &out, ctx);
      }));
    } else {
      ARROW_RETURN_NOT_OK(Dispatch(a.t.type, [&](auto tag) {
        return Access<typename decltype(tag)::type>(n, a, &out, ctx);
      }));
    }
    return out;
  }
  return Invalid(where + ": cannot be evaluated here");
}

}  // namespace skyhook
