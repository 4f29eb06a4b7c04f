// Partitions: the readers of one partition object, an Arrow IPC file
// (ipc_partition.cc, with read coalescing) or a Parquet file
// (parquet_partition.cc).  Both read only the selected columns and rows,
// through the call's PositionalFile and memory pool, on this thread only; a
// failure on the stored bytes is EBADMSG (AsBadMessage).
#pragma once

#include <memory>
#include <vector>

#include <arrow/record_batch.h>
#include <arrow/type.h>

#include "kernel_internal.h"

namespace skyhook {

// Yields record batches of the needed columns, with the partition row of
// their first row.
class PartitionReader {
 public:
  virtual ~PartitionReader() = default;
  std::shared_ptr<arrow::Schema> schema;  // the full schema of the partition
  // Restrict reading to these top-level fields and rows [start, stop).
  virtual arrow::Status Select(const std::vector<int>& fields, int64_t start, int64_t stop) = 0;
  // nullptr at the end.
  virtual arrow::Result<std::shared_ptr<arrow::RecordBatch>> Next(int64_t* first_row) = 0;
  // Rows of the whole partition, from metadata.
  virtual arrow::Result<int64_t> TotalRows() = 0;
};


// The bytes at the end of an object of `object_size` that one read fetches for the
// format's trailing magic, the trailer and the footer (a 148-column IPC footer is
// about 20 KB): 64 KiB, never more than a quarter of a small object.
int64_t TailBytes(int64_t object_size);

// The readers, opened (footer and schema read); EBADMSG when the bytes are not one.
arrow::Result<std::unique_ptr<PartitionReader>> OpenIpcPartition(std::shared_ptr<PositionalFile> file,
                                                                 CallContext* ctx);
arrow::Result<std::unique_ptr<PartitionReader>> OpenParquetPartition(
    std::shared_ptr<PositionalFile> file, CallContext* ctx);

}  // namespace skyhook
