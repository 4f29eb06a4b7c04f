// Values of the evaluator: element types, buffers from the call's capped
// pool, operand shapes and validity, and Materialize (cast + broadcast), which
// every operation applies to its operands first so that each operation is one
// loop over contiguous arrays.

#include <algorithm>
#include <cstring>

#include "eval_internal.h"

namespace skyhook {

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

}  // namespace

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
      } else if (v.t.type == VType::U64) {  // a uint64 literal: ival holds its bits
        const uint64_t u = static_cast<uint64_t>(v.ival);
        if constexpr (std::is_integral_v<To>) {
          if (IsInteger(to) && !FitsInUnsigned<To>(u)) {
            st = Invalid("the literal " + std::to_string(u) + " is out of bounds for " +
                         VTypeName(to) + " (NumPy raises OverflowError)");
            return;
          }
          c = static_cast<To>(u);
        } else {
          // NumPy converts the Python int to a C double, then to the array's float type
          c = static_cast<To>(static_cast<double>(u));
        }
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

}  // namespace skyhook
