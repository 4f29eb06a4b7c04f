// Internal pieces of the scan kernel shared by its translation units:
// the decoded request (Plan), value types, the evaluator's Value and the
// per-call context (memory pool with a cap, CPU deadline).  The operators
// themselves are op_table.h.
//
// Nothing here is visible outside libcls_skyhook.so / skyhook_scan_local.
#pragma once

#include <cerrno>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <arrow/array.h>
#include <arrow/buffer.h>
#include <arrow/memory_pool.h>
#include <arrow/result.h>
#include <arrow/status.h>

#include "op_table.h"
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
  int literal_kind = 0;    // 0 bool, 1 int, 2 float, 3 uint (fb::LiteralKind)
  int64_t int_value = 0;   // Literal Int/Bool, UInt (the uint64's bits), Index position
  double float_value = 0;  // Literal Float
  int column = -1;         // Column: index into Plan::columns
  NodeType t;              // filled by TypeCheck
};

struct AxisSpec {
  uint32_t bins = 0;
  double low = 0, high = 0;
};

// The aggregation kinds of formats/skyhook_scan.fbs (flatc-generated, scoped).
using AggKind = fb::AggKind;

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
  int64_t deadline_ms = 0;  // the caller's wall-clock deadline (ms since the epoch), 0: none
  int64_t hist_bytes = 0;   // sumw + sumw2 of all histograms (16 bytes per cell)
  int64_t slice_ns = 0;     // the caller's time slice (0: the class's)
  // the aggregates of the previous slices (checked against `aggregations`), or null;
  // points into the request, which outlives the scan
  const flatbuffers::Vector<flatbuffers::Offset<fb::AggregateResult>>* resume = nullptr;
  std::vector<ColumnRef> columns;  // distinct columns named by Column nodes
  std::vector<bool> needed;        // nodes reachable from filter, outputs, aggregations
};

// request.cc: the flatbuffers Verifier, the version, structure and limits.
arrow::Status DecodeRequest(const uint8_t* data, size_t len, const Limits& limits, Plan* plan);

// errno_status.cc: a failure of the Arrow/Parquet readers on the stored bytes
// becomes EBADMSG (a corrupt partition), unless it already carries an errno
// (a failed cls_cxx_read) or is out of memory.
arrow::Status AsBadMessage(const arrow::Status& st, const std::string& what);

// Per-call state: the capped memory pool and the CPU deadline.
class CallContext {
 public:
  // `start_ns`: the thread CPU time (ThreadCpuNs) when the call began, so that
  // decoding the request counts too.
  CallContext(int64_t memory_cap, int64_t cpu_budget_ns, int64_t start_ns);
  arrow::MemoryPool* pool() { return &capped_; }
  // -ETIME once the thread's CPU time exceeds the budget, or the caller's
  // wall-clock deadline (ms since the epoch, 0: none) has passed; -EBUSY once the
  // busy cap is exceeded before any rows were scanned.  Called between nodes, so
  // the clocks (a syscall each) are read on every 8th call only.
  arrow::Status CheckDeadline();
  void set_caller_deadline_ms(int64_t ms) { caller_deadline_ms_ = ms; }
  // A call of a client that uses more than its share while others wait may spend
  // at most this before it has scanned a chunk (0: no cap; formats/README.md "Time slices").
  void set_busy_cap_ns(int64_t ns) { busy_cap_ns_ = ns; }
  void mark_progress() { progressed_ = true; }
  int64_t CpuNs() const;

 private:
  arrow::Status CheckClocks() const;
  arrow::ProxyMemoryPool proxy_;
  arrow::CappedMemoryPool capped_;
  int64_t start_ns_;
  int64_t budget_ns_;
  int64_t caller_deadline_ms_ = 0;
  int64_t busy_cap_ns_ = 0;
  bool progressed_ = false;
  unsigned checks_ = 0;
};

// Wall-clock milliseconds since the Unix epoch (the caller's deadline's clock).
int64_t WallMs();
// -ETIME when `deadline_ms` (0: none) has passed.
arrow::Status CheckCallerDeadline(int64_t deadline_ms);

int64_t ThreadCpuNs();

// A value of the evaluator: one value per event, or one list per event
// (offsets into the elements).  Weak literals are scalars.
struct Value {
  NodeType t;
  bool scalar = false;  // a literal: same value for every event
  int64_t ival = 0;     // scalar Bool/Int payload (a U64 scalar: the uint64's bits)
  double fval = 0;      // scalar Float payload
  int64_t n_events = 0;
  int64_t length = 0;   // elements: n_events, or offsets[n_events] for a list
  std::shared_ptr<arrow::Buffer> offsets;  // int64[n_events + 1], starting at 0
  std::shared_ptr<arrow::Buffer> data;     // `length` elements of t.type
  std::shared_ptr<arrow::Buffer> valid;    // uint8[length]; null pointer: all valid
  // A column of the partition as read: its Arrow array, which the reply passes
  // through as it is (ToArrow).  Only this is set when no operator reads the
  // column's elements (ColumnValue with values_needed false).
  std::shared_ptr<arrow::Array> arrow;

  const int64_t* offs() const { return reinterpret_cast<const int64_t*>(offsets->data()); }
  template <typename T>
  const T* values() const { return reinterpret_cast<const T*>(data->data()); }
  const uint8_t* validity() const { return valid ? valid->data() : nullptr; }
};

// Evaluates node `index` of the plan given the values of its arguments
// (already evaluated, event count `n_events`).  Column nodes are not handled here.
arrow::Result<Value> EvaluateNode(const Plan& plan, uint32_t index, const std::vector<Value>& values,
                                  int64_t n_events, CallContext* ctx);

// Static typing (typecheck.cc: the NumPy 2 rules of formats/README.md); columns'
// types must be set.
arrow::Status TypeCheck(Plan* plan, const Limits& limits);

// Buffers from the capped pool.
arrow::Result<std::shared_ptr<arrow::Buffer>> NewBuffer(int64_t bytes, CallContext* ctx);

// The value of `v` cast to `to` and broadcast to the shape `shape` (an
// event-level shape when shape is null): one contiguous array of elements.
arrow::Result<Value> Materialize(const Value& v, VType to, const Value* shape, int64_t n_events,
                                 CallContext* ctx);

}  // namespace skyhook
