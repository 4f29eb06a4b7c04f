// The Parquet partition reader: the row groups overlapping the row range, the
// leaf columns of the selected fields, no pre-buffering and no threads.
// Parquet's exceptions are caught here and become EBADMSG.

#include <stdexcept>

#include <parquet/arrow/reader.h>
#include <parquet/arrow/schema.h>
#include <parquet/exception.h>
#include <parquet/file_reader.h>

#include "partition.h"

namespace skyhook {

namespace {

class ParquetPartition : public PartitionReader {
 public:
  ParquetPartition(std::shared_ptr<PositionalFile> file, CallContext* ctx)
      : file_(std::move(file)), ctx_(ctx) {}

  arrow::Status Open() {
    try {
      parquet::ReaderProperties props(ctx_->pool());
      parquet::ArrowReaderProperties aprops;
      aprops.set_use_threads(false);
      aprops.set_pre_buffer(false);  // pre-buffering reads through a thread pool
      aprops.set_batch_size(64 * 1024);
      auto pf = parquet::ParquetFileReader::Open(file_, props);
      auto r = parquet::arrow::FileReader::Make(ctx_->pool(), std::move(pf), aprops);
      ARROW_RETURN_NOT_OK(AsBadMessage(r.status(), "not a valid Parquet file"));
      reader_ = std::move(*r);
      std::shared_ptr<arrow::Schema> s;
      ARROW_RETURN_NOT_OK(AsBadMessage(reader_->GetSchema(&s), "Parquet schema"));
      schema = s;
    } catch (const parquet::ParquetException& e) {
      return ErrnoStatus(EBADMSG, std::string("not a valid Parquet file: ") + e.what());
    }
    return arrow::Status::OK();
  }

  arrow::Status Select(const std::vector<int>& fields, int64_t start, int64_t stop) override {
    try {
      std::vector<int> leaves;
      const auto& manifest = reader_->manifest();
      for (int f : fields) CollectLeaves(manifest.schema_fields.at(static_cast<size_t>(f)), &leaves);
      auto md = reader_->parquet_reader()->metadata();
      std::vector<int> groups;
      int64_t row = 0;
      for (int g = 0; g < md->num_row_groups(); ++g) {
        int64_t rows = md->RowGroup(g)->num_rows();
        bool overlaps = row + rows > start && (stop < 0 || row < stop);
        if (overlaps) {
          if (groups.empty()) row_ = row;
          groups.push_back(g);
        }
        row += rows;
      }
      if (groups.empty() || leaves.empty()) {
        done_ = true;  // nothing to read; with no columns the rows are counted below
        no_column_rows_ = leaves.empty() ? row : 0;
        return arrow::Status::OK();
      }
      auto r = reader_->GetRecordBatchReader(groups, leaves);
      ARROW_RETURN_NOT_OK(AsBadMessage(r.status(), "Parquet row groups"));
      batches_ = std::move(*r);
    } catch (const parquet::ParquetException& e) {
      return ErrnoStatus(EBADMSG, std::string("Parquet: ") + e.what());
    } catch (const std::out_of_range&) {
      return ErrnoStatus(EBADMSG, "Parquet schema and manifest disagree");
    }
    return arrow::Status::OK();
  }

  arrow::Result<int64_t> TotalRows() override {
    return reader_->parquet_reader()->metadata()->num_rows();
  }

  arrow::Result<std::shared_ptr<arrow::RecordBatch>> Next(int64_t* first_row) override {
    if (done_) {
      if (no_column_rows_ > 0) {  // a query of literals only: rows without columns
        auto b = arrow::RecordBatch::Make(arrow::schema({}), no_column_rows_,
                                          std::vector<std::shared_ptr<arrow::Array>>{});
        no_column_rows_ = 0;
        *first_row = 0;
        return b;
      }
      return nullptr;
    }
    try {
      std::shared_ptr<arrow::RecordBatch> batch;
      ARROW_RETURN_NOT_OK(AsBadMessage(batches_->ReadNext(&batch), "Parquet data"));
      if (!batch) return nullptr;
      *first_row = row_;
      row_ += batch->num_rows();
      return batch;
    } catch (const parquet::ParquetException& e) {
      return ErrnoStatus(EBADMSG, std::string("Parquet data: ") + e.what());
    }
  }

 private:
  static void CollectLeaves(const parquet::arrow::SchemaField& f, std::vector<int>* out) {
    if (f.is_leaf()) out->push_back(f.column_index);
    for (const auto& c : f.children) CollectLeaves(c, out);
  }
  std::shared_ptr<arrow::io::RandomAccessFile> file_;
  CallContext* ctx_;
  std::unique_ptr<parquet::arrow::FileReader> reader_;
  std::unique_ptr<arrow::RecordBatchReader> batches_;
  int64_t row_ = 0;
  bool done_ = false;
  int64_t no_column_rows_ = 0;
};

}  // namespace

arrow::Result<std::unique_ptr<PartitionReader>> OpenParquetPartition(
    std::shared_ptr<PositionalFile> file, CallContext* ctx) {
  auto r = std::make_unique<ParquetPartition>(std::move(file), ctx);
  ARROW_RETURN_NOT_OK(r->Open());
  return std::unique_ptr<PartitionReader>(std::move(r));
}

}  // namespace skyhook
