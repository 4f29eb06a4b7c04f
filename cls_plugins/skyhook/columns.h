// Column conversion between the partition's Arrow arrays and the evaluator's
// Values: numbers, bools and lists of those (list, large_list,
// fixed_size_list); anything else is refused with EINVAL when the request
// names it.  Partitions never hold nulls; nulls come from the IR only.
#pragma once

#include <memory>
#include <vector>

#include <arrow/array.h>
#include <arrow/type.h>

#include "kernel_internal.h"

namespace skyhook {

// The element type and listness of a column of the partition, or EINVAL.
arrow::Result<NodeType> ColumnTypeOf(const arrow::Field& f);

// The Arrow type of an element type.
std::shared_ptr<arrow::DataType> ArrowTypeOf(VType t);

// A column of a record batch as a Value (zero copy for numbers).
arrow::Result<Value> ColumnValue(const arrow::Array& arr, const ColumnRef& col, CallContext* ctx);

// The rows `sel` of a value as an Arrow array of `type` (a list array for a collection).
arrow::Result<std::shared_ptr<arrow::Array>> ToArrow(const Value& v,
                                                     const std::vector<int64_t>& sel,
                                                     const std::shared_ptr<arrow::DataType>& type,
                                                     CallContext* ctx);

}  // namespace skyhook
