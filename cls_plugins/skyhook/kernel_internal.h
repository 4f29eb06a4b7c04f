// Internal pieces of the scan kernel shared by its translation units:
// the decoded request (Plan), value types, the evaluator's Value and the
// per-call context (memory pool with a cap, CPU deadline).
//
// Nothing here is visible outside libcls_skyhook.so / skyhook_scan_local.
#pragma once

#include <cerrno>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <arrow/buffer.h>
#include <arrow/memory_pool.h>
#include <arrow/result.h>
#include <arrow/status.h>

#include "scan_kernel.h"

namespace skyhook {

// Element types of values (formats/README.md "Columns").  Bool is stored as
// one byte per value, 0 or 1.
enum class VType : uint8_t { Bool, I8, I16, I32, I64, U8, U16, U32, U64, F32, F64 };

const char* VTypeName(VType t);
inline bool IsFloat(VType t) { return t == VType::F32 || t == VType::F64; }
inline bool IsSigned(VType t) { return t >= VType::I8 && t <= VType::I64; }
inline bool IsUnsigned(VType t) { return t >= VType::U8 && t <= VType::U64; }
inline bool IsInteger(VType t) { return IsSigned(t) || IsUnsigned(t); }
int VTypeBytes(VType t);

// IR operations: the numbers of `enum Op` in formats/skyhook_scan.fbs.
enum class Op : uint8_t {
  Column = 0, Literal = 1, Add = 2, Sub = 3, Mul = 4, Div = 5, FloorDiv = 6, Mod = 7, Pow = 8,
  Neg = 9, Eq = 10, Ne = 11, Lt = 12, Le = 13, Gt = 14, Ge = 15, And = 16, Or = 17, Not = 18,
  Abs = 19, Sqrt = 20, Exp = 21, Log = 22, Sin = 23, Cos = 24, Tan = 25, Sinh = 26, Cosh = 27,
  Arctan2 = 28, Hypot = 29, Where = 30, Mask = 31, Count = 32, CountNonzero = 33, Sum = 34,
  Min = 35, Max = 36, Mean = 37, Any = 38, All = 39, First = 40, Last = 41, Index = 42,
};
constexpr int kMaxOp = 42;
const char* OpName(Op op);

// The static type of a node: element type, collection or not, and whether it
// is a weak (literal-only) value in the sense of NumPy's NEP 50.
struct NodeType {
  VType type = VType::I64;
  bool is_list = false;
  bool weak = false;
};

struct Node {
  Op op = Op::Literal;
  std::vector<uint32_t> args;
  std::string name;        // Column
  int literal_kind = 0;    // 0 bool, 1 int, 2 float
  int64_t int_value = 0;   // Literal Int/Bool, Index position
  double float_value = 0;  // Literal Float
  int column = -1;         // Column: index into Plan::columns
  NodeType t;              // filled by TypeCheck
};

struct AxisSpec {
  uint32_t bins = 0;
  double low = 0, high = 0;
};

enum class AggKind : uint8_t { Count = 0, Sum = 1, Min = 2, Max = 3, Mean = 4, Hist1D = 5, Hist2D = 6 };

struct AggSpec {
  AggKind kind = AggKind::Count;
  std::string name;
  int32_t x = -1, y = -1, weight = -1;
  AxisSpec x_axis, y_axis;
};

// A column of the partition that the request reads.
struct ColumnRef {
  std::string name;
  int field_index = -1;  // in the partition's schema
  NodeType t;            // element type and listness, from the schema
};

// The request, decoded and structurally validated (before the object is read).
struct Plan {
  std::vector<Node> nodes;
  std::vector<std::pair<std::string, uint32_t>> outputs;
  int32_t filter = -1;
  int64_t row_start = 0, row_stop = -1, limit = -1;
  std::vector<AggSpec> aggregations;
  int compression = 0;  // 0 none, 1 LZ4, 2 ZSTD
  int64_t reply_cap = 0;  // min(max_reply_bytes, Limits::max_reply_bytes)
  std::vector<ColumnRef> columns;  // distinct columns named by Column nodes
  std::vector<bool> needed;        // nodes reachable from filter, outputs, aggregations
};

arrow::Status DecodeRequest(const uint8_t* data, size_t len, const Limits& limits, Plan* plan);

// Per-call state: the capped memory pool and the CPU deadline.
class CallContext {
 public:
  CallContext(int64_t memory_cap, int64_t cpu_budget_ns);
  arrow::MemoryPool* pool() { return &capped_; }
  // -ETIME once the thread's CPU time exceeds the budget.
  arrow::Status CheckDeadline() const;
  int64_t CpuNs() const;

 private:
  arrow::ProxyMemoryPool proxy_;
  arrow::CappedMemoryPool capped_;
  int64_t start_ns_;
  int64_t budget_ns_;
};

int64_t ThreadCpuNs();

// A value of the evaluator: one value per event, or one list per event
// (offsets into the elements).  Weak literals are scalars.
struct Value {
  NodeType t;
  bool scalar = false;  // a literal: same value for every event
  int64_t ival = 0;     // scalar Bool/Int payload
  double fval = 0;      // scalar Float payload
  int64_t n_events = 0;
  int64_t length = 0;   // elements: n_events, or offsets[n_events] for a list
  std::shared_ptr<arrow::Buffer> offsets;  // int64[n_events + 1], starting at 0
  std::shared_ptr<arrow::Buffer> data;     // `length` elements of t.type
  std::shared_ptr<arrow::Buffer> valid;    // uint8[length]; null pointer: all valid

  const int64_t* offs() const { return reinterpret_cast<const int64_t*>(offsets->data()); }
  template <typename T>
  const T* values() const { return reinterpret_cast<const T*>(data->data()); }
  const uint8_t* validity() const { return valid ? valid->data() : nullptr; }
};

// Evaluates node `index` of the plan given the values of its arguments
// (already evaluated, event count `n_events`).  Column nodes are not handled here.
arrow::Result<Value> EvaluateNode(const Plan& plan, uint32_t index, const std::vector<Value>& values,
                                  int64_t n_events, CallContext* ctx);

// Static typing (the NumPy 2 rules of formats/README.md); columns' types must be set.
arrow::Status TypeCheck(Plan* plan, const Limits& limits);

// Buffers from the capped pool.
arrow::Result<std::shared_ptr<arrow::Buffer>> NewBuffer(int64_t bytes, CallContext* ctx);

// The value of `v` cast to `to` and broadcast to the shape `shape` (an
// event-level shape when shape is null): one contiguous array of elements.
arrow::Result<Value> Materialize(const Value& v, VType to, const Value* shape, int64_t n_events,
                                 CallContext* ctx);

}  // namespace skyhook
