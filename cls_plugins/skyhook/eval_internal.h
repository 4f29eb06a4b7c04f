// Helpers shared by the evaluator's files (values.cc, typecheck.cc,
// elementwise.cc, collections.cc, eval.cc): type dispatch, the operand
// shapes and validity, and the per-kind element loops.  Each loop family is
// one non-template entry point; the loops themselves stay templates inside
// their own file.
#pragma once

#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "kernel_internal.h"

namespace skyhook {

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

inline arrow::Status Invalid(std::string msg) { return ErrnoStatus(EINVAL, std::move(msg)); }

// Whether an int64 value fits the integer type T.
template <typename T>
bool FitsIn(int64_t v) {
  if constexpr (std::is_same_v<T, uint64_t>) return v >= 0;
  else return v >= static_cast<int64_t>(std::numeric_limits<T>::lowest()) &&
              v <= static_cast<int64_t>(std::numeric_limits<T>::max());
}

// Whether a uint64 value fits the integer type T.
template <typename T>
bool FitsInUnsigned(uint64_t v) {
  if constexpr (!std::is_integral_v<T>) return true;
  else return v <= static_cast<uint64_t>(std::numeric_limits<T>::max());
}

// np.result_type of two operands with NEP 50 weak literals (typecheck.cc).
VType Promote(const NodeType& a, const NodeType& b);

// values.cc: the shape operands are broadcast to (the first collection), after
// checking that every collection operand has the same list lengths; null: none.
arrow::Result<const Value*> CommonShape(const std::vector<const Value*>& vs, const char* what);
// values.cc: AND of the validity of several same-shape values (null pointer: all valid).
arrow::Result<std::shared_ptr<arrow::Buffer>> AndValid(const std::vector<const Value*>& vs,
                                                       int64_t len, CallContext* ctx);

// elementwise.cc: arithmetic, math and comparisons of operands materialized to `t`.
arrow::Status EvalBinary(Op op, VType t, const Value& a, const Value& b, Value* out, CallContext* ctx);
arrow::Status EvalUnary(Op op, VType t, const Value& a, Value* out, CallContext* ctx);
// A signed integer array (as int64) compared with a uint64 array, exact like NumPy 2.
arrow::Status EvalCompareMixed(Op op, const Value& s, const Value& u, bool s_first, Value* out,
                               CallContext* ctx);
// A weak int literal compared with an integer array it does not fit: a constant.
bool OutOfRangeComparison(Op op, bool literal_above, bool literal_first);

// collections.cc: per-event reductions, element access and masks of a collection.
arrow::Status EvalReduce(Op op, VType out_type, const Value& a, Value* out, CallContext* ctx);
arrow::Status EvalAccess(const Node& n, const Value& a, Value* out, CallContext* ctx);
arrow::Status EvalMask(VType t, const Value& list, const Value& mask, Value* out, CallContext* ctx);

// kinematics.cc: InvMass of eight float64 operands of one shape.
arrow::Status EvalInvMass(const std::vector<Value>& m, Value* out, CallContext* ctx);
// pairs.cc: PairFirst/PairSecond/CrossFirst/CrossSecond (a collection of one
// element per pair); E2BIG/ENOMEM before allocating more pairs than the call may hold.
arrow::Status EvalPairs(Op op, const std::vector<const Value*>& args, Value* out, CallContext* ctx);

}  // namespace skyhook
