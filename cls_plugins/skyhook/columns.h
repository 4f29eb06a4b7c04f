// Column conversion between the partition's Arrow arrays and the evaluator's
// Values: numbers, bools and lists of those (list, large_list,
// fixed_size_list); anything else is refused with EINVAL when the request
// names it.  Partitions never hold nulls; nulls come from the IR only.
#pragma once

#include <memory>
#include <vector>

#include <arrow/array.h>
#include <arrow/record_batch.h>
#include <arrow/type.h>

#include "kernel_internal.h"

namespace skyhook {

// The element type and listness of a column of the partition, or EINVAL.
arrow::Result<NodeType> ColumnTypeOf(const arrow::Field& f);

// ValidateFull of a record batch of the partition's columns, the fast way for
// the types a request may read (numbers, bools, lists of those): Arrow's
// structural Validate(), then, with the same checks as ValidateFull, list
// offsets (non-negative, non-decreasing, within the elements; one branch-free
// pass) and null counts against validity bitmaps.  Any other type: Arrow's
// ValidateFull.
arrow::Status ValidateBatch(const arrow::RecordBatch& batch);

// The Arrow type of an element type.
std::shared_ptr<arrow::DataType> ArrowTypeOf(VType t);

// A column of a record batch as a Value (zero copy for numbers), with the
// array itself in Value::arrow.  `values_needed` false: no operator reads its
// elements (an output column passed through to the reply), so only Value::arrow
// is set.  Either way a column holding nulls is EINVAL.
arrow::Result<Value> ColumnValue(const std::shared_ptr<arrow::Array>& arr, const ColumnRef& col,
                                 bool values_needed, CallContext* ctx);

// The `n_rows` rows of a value as an Arrow array of `type` (a list array for a
// collection), for the reply.  A column of the partition passes through (its
// buffers, zero copy; large_list and fixed_size_list get int32 offsets); a
// computed value gives its data buffer as it is and converts only offsets
// (int64 -> int32), bools and validity (bytes -> bits).
arrow::Result<std::shared_ptr<arrow::Array>> ToArrow(const Value& v, int64_t n_rows,
                                                     const std::shared_ptr<arrow::DataType>& type,
                                                     CallContext* ctx);

}  // namespace skyhook
