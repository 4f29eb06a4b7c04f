// The scan: one `scan` call from request bytes to ScanReply bytes, in phases.
//
//   DecodeRequest (request.cc)  -> CheckObjectSize -> CallContext (memory cap,
//   CPU deadline) -> OpenPartition (IPC or Parquet by magic) -> ResolveColumns
//   + TypeCheck -> ReplyWriter (output schema, IPC stream) -> ScanBatches
//   (per batch: cut to the row range, FilterRows, limit, PickRows, evaluate,
//   WriteOutputs, aggregations) -> EncodeReply.
//
// Order of work, so that a bad request costs nothing: the request is checked
// whole before the object's size, its footer/schema before any buffer, and
// only then the buffers of the referenced columns, batch by batch.  Each
// record batch is checked by ValidateBatch (ValidateFull's checks) before use.
// RunScan is the catch-all.

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <new>

#include <arrow/util/align_util.h>
#include <arrow/util/bit_util.h>
#include <arrow/util/byte_size.h>
#include <arrow/type_traits.h>
#include <arrow/builder.h>
#include <arrow/compute/api_vector.h>
#include <arrow/compute/exec.h>
#include <arrow/compute/initialize.h>
#include <arrow/io/memory.h>
#include <arrow/ipc/writer.h>
#include <arrow/record_batch.h>
#include <arrow/util/compression.h>
#include <flatbuffers/flatbuffers.h>

#include "aggregate.h"
#include "cls_skyhook_ops.h"
#include "columns.h"
#include "partition.h"
#include "skyhook_scan_generated.h"

namespace skyhook {

arrow::Status InitializeKernel() { return arrow::compute::Initialize(); }

namespace {

struct EvalState {
  explicit EvalState(size_t n) : values(n), done(n, false) {}
  std::vector<Value> values;
  std::vector<bool> done;
};

// The nodes whose elements some operator, the cut or an aggregation reads.  A
// column outside it is only an output: its Arrow array goes to the reply as it is.
std::vector<bool> ElementNodes(const Plan& plan) {
  std::vector<bool> read(plan.nodes.size(), false);
  for (size_t i = 0; i < plan.nodes.size(); ++i)
    if (plan.needed[i])
      for (uint32_t a : plan.nodes[i].args) read[a] = true;
  if (plan.filter >= 0) read[static_cast<size_t>(plan.filter)] = true;
  for (const AggSpec& g : plan.aggregations)
    for (int32_t x : {g.x, g.y, g.weight})
      if (x >= 0) read[static_cast<size_t>(x)] = true;
  return read;
}

// Evaluates the nodes marked in `which` (and not done yet) over the rows of `batch`.
arrow::Status EvaluateBatch(const Plan& plan, const arrow::RecordBatch& batch,
                            const std::vector<bool>& which, const std::vector<bool>& elements,
                            EvalState* st, CallContext* ctx) {
  for (size_t i = 0; i < plan.nodes.size(); ++i) {
    if (!which[i] || st->done[i]) continue;
    const Node& n = plan.nodes[i];
    if (n.op == Op::Column) {
      const ColumnRef& c = plan.columns[n.column];
      auto arr = batch.GetColumnByName(c.name);
      if (!arr) return ErrnoStatus(EBADMSG, "column '" + c.name + "' missing from a batch");
      ARROW_ASSIGN_OR_RAISE(st->values[i], ColumnValue(arr, c, elements[i], ctx));
    } else {
      ARROW_RETURN_NOT_OK(ctx->CheckDeadline());
      ARROW_ASSIGN_OR_RAISE(st->values[i], EvaluateNode(plan, static_cast<uint32_t>(i), st->values,
                                                        batch.num_rows(), ctx));
      st->values[i].arrow.reset();  // computed: never a column passed through
    }
    st->done[i] = true;
  }
  return arrow::Status::OK();
}

// What a partition can legitimately need: cpu_base_ns plus cpu_ns_per_object_byte
// per byte of the object, at most max_cpu_ns.
int64_t CpuBudgetNs(int64_t object_size, const Limits& limits) {
  const int64_t scaled = limits.cpu_base_ns + limits.cpu_ns_per_object_byte * object_size;
  return std::min(limits.max_cpu_ns, scaled);
}

arrow::Status CheckObjectSize(int64_t object_size, const Limits& limits) {
  if (object_size > limits.max_object_bytes)
    return ErrnoStatus(EFBIG, "object of " + std::to_string(object_size) + " bytes, more than " +
                                  std::to_string(limits.max_object_bytes));
  return arrow::Status::OK();
}

// Which format: Arrow IPC files start with ARROW1, Parquet files with PAR1.
arrow::Result<std::unique_ptr<PartitionReader>> OpenPartition(
    const std::shared_ptr<PositionalFile>& object, int64_t object_size, CallContext* ctx) {
  uint8_t magic[6] = {0};
  if (object_size < 12) return ErrnoStatus(EBADMSG, "object of " + std::to_string(object_size) +
                                                        " bytes is neither Arrow IPC nor Parquet");
  // The format by the trailing magic, which both formats end with, read with the
  // tail the reader needs next (trailer and footer): one trip into the object
  // store fewer than reading the leading magic on its own, and verified.
  const int64_t tail = TailBytes(object_size);
  ARROW_RETURN_NOT_OK(object->Prefetch(object_size - tail, tail, /*keep=*/true));
  ARROW_ASSIGN_OR_RAISE(int64_t got, object->ReadAt(object_size - 6, 6, magic));
  if (got != 6) return ErrnoStatus(EBADMSG, "cannot read the object's trailing magic");
  if (std::memcmp(magic, "ARROW1", 6) == 0) return OpenIpcPartition(object, ctx);
  if (std::memcmp(magic + 2, "PAR1", 4) == 0) return OpenParquetPartition(object, ctx);
  return ErrnoStatus(EBADMSG, "object is neither an Arrow IPC file nor a Parquet file");
}

// Resolves the plan's columns against the schema (ESRCH for an unknown one,
// with similar names); returns their field indices, sorted.
arrow::Result<std::vector<int>> ResolveColumns(const arrow::Schema& schema, Plan* plan) {
  std::vector<int> fields;
  for (ColumnRef& c : plan->columns) {
    for (int i = 0; i < schema.num_fields(); ++i)
      if (schema.field(i)->name() == c.name) { c.field_index = i; break; }
    if (c.field_index < 0) {
      std::string close;
      for (const auto& f : schema.fields())
        if (f->name().find(c.name.substr(0, std::min<size_t>(c.name.size(), 4))) != std::string::npos &&
            close.size() < 200)
          close += (close.empty() ? "" : ", ") + f->name();
      return ErrnoStatus(ESRCH, "unknown column '" + c.name + "'" +
                                    (close.empty() ? "" : "; similar: " + close));
    }
    ARROW_ASSIGN_OR_RAISE(c.t, ColumnTypeOf(*schema.field(c.field_index)));
    fields.push_back(c.field_index);
  }
  std::sort(fields.begin(), fields.end());
  return fields;
}

// The reply's schema; nullability as the reference evaluator declares it
// (skyhook_py's may_be_null), from each operator's Nulls rule.
std::shared_ptr<arrow::Schema> OutputSchema(const Plan& plan) {
  std::vector<bool> may_be_null(plan.nodes.size(), false);
  for (size_t i = 0; i < plan.nodes.size(); ++i) {
    switch (InfoOf(plan.nodes[i].op).nulls) {
      case Nulls::Maybe: may_be_null[i] = true; break;
      case Nulls::Never: break;
      case Nulls::Propagate:
        for (uint32_t a : plan.nodes[i].args) may_be_null[i] = may_be_null[i] || may_be_null[a];
        break;
    }
  }
  arrow::FieldVector out_fields;
  for (auto& [name, node] : plan.outputs) {
    const NodeType& t = plan.nodes[node].t;
    const bool nullable = may_be_null[node];
    if (t.is_list)
      out_fields.push_back(arrow::field(name, arrow::list(arrow::field("item", ArrowTypeOf(t.type), nullable)), false));
    else
      out_fields.push_back(arrow::field(name, ArrowTypeOf(t.type), nullable));
  }
  return arrow::schema(out_fields);
}

// The reply's IPC stream as the list of pieces the IPC writer wrote: body
// buffers are kept by reference (zero copy: for a column passed through, a
// slice of the buffer read from the object), small writes (message metadata,
// padding) are copied into chunks.  EncodeReply copies the pieces once, into
// the ScanReply, except those it may lend (RunScan's `lend`).  Buffers kept
// come from the call's pool and live as long as this.
class GatherStream : public arrow::io::OutputStream {
 public:
  explicit GatherStream(arrow::MemoryPool* pool) : pool_(pool) {}
  arrow::Status Write(const void* data, int64_t nbytes) override {
    if (nbytes <= 0) return arrow::Status::OK();
    if (chunk_ == nullptr || chunk_used_ + nbytes > chunk_->size()) {
      ARROW_ASSIGN_OR_RAISE(auto buf, arrow::AllocateBuffer(std::max<int64_t>(nbytes, kChunk), pool_));
      chunk_ = std::shared_ptr<arrow::Buffer>(std::move(buf));
      chunk_used_ = 0;
    }
    std::memcpy(chunk_->mutable_data() + chunk_used_, data, static_cast<size_t>(nbytes));
    Append(arrow::SliceBuffer(chunk_, chunk_used_, nbytes));
    chunk_used_ += nbytes;
    return arrow::Status::OK();
  }
  arrow::Status Write(const std::shared_ptr<arrow::Buffer>& data) override {
    if (data->size() > 0) {
      if (!data->is_cpu()) return Write(data->data(), data->size());
      Append(data);
    }
    return arrow::Status::OK();
  }
  arrow::Status Close() override { closed_ = true; return arrow::Status::OK(); }
  bool closed() const override { return closed_; }
  arrow::Result<int64_t> Tell() const override { return size_; }
  int64_t size() const { return size_; }
  // Copies the stream to `out` (size() bytes), except the pieces `lend` takes:
  // those are added to `lent` with their offset in the stream, and their bytes
  // in `out` are left unwritten.
  template <typename Lend>
  void CopyTo(uint8_t* out, const Lend& lend, std::vector<ReplyBuffer::LentPiece>* lent) const {
    int64_t at = 0;
    for (const auto& p : pieces_) {
      if (lend(*p)) lent->push_back({at, p});
      else std::memcpy(out + at, p->data(), static_cast<size_t>(p->size()));
      at += p->size();
    }
  }

 private:
  static constexpr int64_t kChunk = 4096;
  void Append(std::shared_ptr<arrow::Buffer> b) {
    size_ += b->size();
    // adjacent slices of one chunk merge into one piece
    if (!pieces_.empty()) {
      auto& last = pieces_.back();
      const auto& parent = last->parent();
      if (parent && b->parent() == parent && last->data() + last->size() == b->data()) {
        last = arrow::SliceBuffer(parent, last->data() - parent->data(), last->size() + b->size());
        return;
      }
    }
    pieces_.push_back(std::move(b));
  }
  arrow::MemoryPool* pool_;
  std::vector<std::shared_ptr<arrow::Buffer>> pieces_;
  std::shared_ptr<arrow::Buffer> chunk_;
  int64_t chunk_used_ = 0;
  int64_t size_ = 0;
  bool closed_ = false;
};

// A reply whose first batch has fewer bytes than this is written plain even when
// compression is asked: each compressed buffer costs a codec context (~0.3 ms a
// reply of 10 columns with LZ4, ~0.6 ms with ZSTD), and a small reply's time is
// latency, not bytes on the wire.  Readers tell from the stream whether it is.
constexpr int64_t kCompressBytes = 64 * 1024;

// The Arrow IPC stream of the reply, in the call's pool, compressed as asked (when
// its first batch is large enough): the writer is made at the first batch.
struct ReplyWriter {
  const Plan* plan;
  CallContext* ctx;
  std::shared_ptr<arrow::Schema> schema;
  std::shared_ptr<GatherStream> sink;
  std::shared_ptr<arrow::ipc::RecordBatchWriter> writer;

  arrow::Status Write(const arrow::RecordBatch& batch) {
    if (writer == nullptr) {
      ARROW_ASSIGN_OR_RAISE(int64_t bytes, arrow::util::ReferencedBufferSize(batch));   // slices: their part
      ARROW_RETURN_NOT_OK(Open(bytes >= kCompressBytes));
    }
    return writer->WriteRecordBatch(batch);
  }
  arrow::Status Close() {
    if (writer == nullptr) ARROW_RETURN_NOT_OK(Open(false));  // no rows: the schema alone
    return writer->Close();
  }

 private:
  arrow::Status Open(bool large) {
    auto wopts = arrow::ipc::IpcWriteOptions::Defaults();
    wopts.memory_pool = ctx->pool();
    wopts.use_threads = false;
    if (plan->compression != 0 && large) {
      ARROW_ASSIGN_OR_RAISE(auto codec, arrow::util::Codec::Create(
                                            plan->compression == 1 ? arrow::Compression::LZ4_FRAME
                                                                   : arrow::Compression::ZSTD));
      wopts.codec = std::move(codec);
    }
    ARROW_ASSIGN_OR_RAISE(writer, arrow::ipc::MakeStreamWriter(sink, schema, wopts));
    return arrow::Status::OK();
  }
};

ReplyWriter MakeReplyWriter(const Plan& plan, CallContext* ctx) {
  return ReplyWriter{&plan, ctx, OutputSchema(plan), std::make_shared<GatherStream>(ctx->pool()), nullptr};
}

// Nodes needed for the filter alone: evaluated first, the rest only when rows pass.
std::vector<bool> FilterNodes(const Plan& plan) {
  std::vector<bool> for_filter(plan.nodes.size(), false);
  if (plan.filter >= 0) {
    for_filter[plan.filter] = true;
    for (size_t i = plan.nodes.size(); i-- > 0;)
      if (for_filter[i])
        for (uint32_t a : plan.nodes[i].args) for_filter[a] = true;
  }
  return for_filter;
}

// The rows of `batch` that pass the cut (a null cut drops the event).
arrow::Result<std::vector<int64_t>> FilterRows(const Plan& plan, const arrow::RecordBatch& batch,
                                               const std::vector<bool>& for_filter,
                                               const std::vector<bool>& elements, EvalState* all,
                                               CallContext* ctx) {
  std::vector<int64_t> sel;
  if (plan.filter >= 0) {
    ARROW_RETURN_NOT_OK(EvaluateBatch(plan, batch, for_filter, elements, all, ctx));
    const Value& f = all->values[plan.filter];
    const int64_t n = batch.num_rows();
    if (f.scalar) {
      if (f.ival != 0) sel.resize(static_cast<size_t>(n));
      for (int64_t e = 0; e < static_cast<int64_t>(sel.size()); ++e) sel[static_cast<size_t>(e)] = e;
      return sel;
    }
    // Eight rows at a time: a selective cut leaves most words of eight flags zero,
    // skipped whole; within a word, branch-free (write every row, advance past the
    // kept ones, into memory not zeroed first).
    std::unique_ptr<int64_t[]> rows(new int64_t[static_cast<size_t>(n) + 1]);
    const uint8_t* keep = f.values<uint8_t>();
    const uint8_t* valid = f.valid ? f.valid->data() : nullptr;
    int64_t k = 0, e = 0;
    auto one = [&](int64_t r) {
      rows[static_cast<size_t>(k)] = r;
      k += (keep[r] != 0) & (valid == nullptr || valid[r] != 0);
    };
    for (; e + 8 <= n; e += 8) {
      uint64_t word;
      std::memcpy(&word, keep + e, 8);
      if (word == 0) continue;
      for (int64_t j = 0; j < 8; ++j) one(e + j);
    }
    for (; e < n; ++e) one(e);
    sel.assign(rows.get(), rows.get() + k);
  } else {
    for (int64_t e = 0; e < batch.num_rows(); ++e) sel.push_back(e);
  }
  return sel;
}

// Gathers of the selected rows of one column without nulls (partitions hold
// none): numbers, bools and lists of numbers, the types of physics columns.
// A hand loop rather than Arrow's Take here: for a small query (62 rows of a
// 6,250-event partition, 10 columns) Take's per-call dispatch was 14 % of the
// OSD's CPU.  Anything else (nulls, other types) goes to Take.
template <typename T>
void GatherValues(const uint8_t* in, const std::vector<int64_t>& sel, uint8_t* out) {
  const T* src = reinterpret_cast<const T*>(in);
  T* dst = reinterpret_cast<T*>(out);
  for (size_t i = 0; i < sel.size(); ++i) dst[i] = src[sel[i]];
}

void GatherFixedWidth(const uint8_t* in, int width, const std::vector<int64_t>& sel, uint8_t* out) {
  switch (width) {
    case 1: return GatherValues<uint8_t>(in, sel, out);
    case 2: return GatherValues<uint16_t>(in, sel, out);
    case 4: return GatherValues<uint32_t>(in, sel, out);
    default: return GatherValues<uint64_t>(in, sel, out);
  }
}

// No nulls and a values buffer: what every branch of GatherColumn reads.
bool DenseValues(const arrow::ArrayData& d) {
  return d.GetNullCount() == 0 && d.buffers.size() == 2 && d.buffers[1];
}

// Numbers of 1, 2, 4 or 8 bytes (not bools, which are bits).
bool PlainNumber(const arrow::ArrayData& d) {
  if (d.type->id() == arrow::Type::BOOL || !arrow::is_primitive(d.type->id())) return false;
  const int w = d.type->byte_width();
  return (w == 1 || w == 2 || w == 4 || w == 8) && DenseValues(d);
}

arrow::Result<std::shared_ptr<arrow::Array>> GatherColumn(const std::shared_ptr<arrow::Array>& column,
                                                          const std::vector<int64_t>& sel,
                                                          CallContext* ctx) {
  const arrow::ArrayData& d = *column->data();
  const int64_t n = static_cast<int64_t>(sel.size());
  if (PlainNumber(d)) {
    const int w = d.type->byte_width();
    ARROW_ASSIGN_OR_RAISE(auto out, NewBuffer(std::max<int64_t>(1, n * w), ctx));
    GatherFixedWidth(d.buffers[1]->data() + d.offset * w, w, sel, out->mutable_data());
    return arrow::MakeArray(arrow::ArrayData::Make(d.type, n, {nullptr, std::move(out)}, 0));
  }
  if (d.type->id() == arrow::Type::BOOL && DenseValues(d)) {
    ARROW_ASSIGN_OR_RAISE(auto out, NewBuffer(std::max<int64_t>(1, (n + 7) / 8), ctx));
    uint8_t* bits = out->mutable_data();
    std::memset(bits, 0, static_cast<size_t>(out->size()));
    const uint8_t* in = d.buffers[1]->data();
    for (int64_t i = 0; i < n; ++i)
      if (arrow::bit_util::GetBit(in, d.offset + sel[static_cast<size_t>(i)])) arrow::bit_util::SetBit(bits, i);
    return arrow::MakeArray(arrow::ArrayData::Make(d.type, n, {nullptr, std::move(out)}, 0));
  }
  if (d.type->id() == arrow::Type::LIST && DenseValues(d) && d.child_data.size() == 1 &&
      PlainNumber(*d.child_data[0])) {
    const arrow::ArrayData& child = *d.child_data[0];
    const int w = child.type->byte_width();
    const int32_t* offsets = d.GetValues<int32_t>(1);  // applies d.offset; checked by ValidateBatch
    ARROW_ASSIGN_OR_RAISE(auto out_offsets, NewBuffer((n + 1) * 4, ctx));
    int32_t* o = reinterpret_cast<int32_t*>(out_offsets->mutable_data());
    int64_t total = 0;
    o[0] = 0;
    for (int64_t i = 0; i < n; ++i) {
      const int64_t r = sel[static_cast<size_t>(i)];
      total += offsets[r + 1] - offsets[r];
      o[i + 1] = static_cast<int32_t>(total);
    }
    ARROW_ASSIGN_OR_RAISE(auto values, NewBuffer(std::max<int64_t>(1, total * w), ctx));
    const uint8_t* src = child.buffers[1]->data() + child.offset * w;
    uint8_t* dst = values->mutable_data();
    for (int64_t i = 0; i < n; ++i) {
      const int64_t r = sel[static_cast<size_t>(i)];
      const size_t len = static_cast<size_t>(offsets[r + 1] - offsets[r]) * static_cast<size_t>(w);
      std::memcpy(dst, src + static_cast<int64_t>(offsets[r]) * w, len);
      dst += len;
    }
    auto child_out = arrow::ArrayData::Make(child.type, total, {nullptr, std::move(values)}, 0);
    auto list = arrow::ArrayData::Make(d.type, n, {nullptr, std::move(out_offsets)}, 0);
    list->child_data.push_back(std::move(child_out));
    return arrow::MakeArray(list);
  }
  arrow::Int64Builder idx(ctx->pool());
  ARROW_RETURN_NOT_OK(idx.AppendValues(sel));
  ARROW_ASSIGN_OR_RAISE(auto indices, idx.Finish());
  arrow::compute::ExecContext exec(ctx->pool());
  ARROW_ASSIGN_OR_RAISE(arrow::Datum taken,
                        arrow::compute::Take(column, indices, arrow::compute::TakeOptions::NoBoundsCheck(), &exec));
  return taken.make_array();
}

// The selected rows as their own batch: a zero-copy slice when they are
// contiguous (all rows, a row range), else a gather per column (GatherColumn).
// Row indices rather than a mask: they exist already (FilterRows), and Arrow's
// Filter with a mask built from them counted 4 % (1 % selected) and 13 % (10 %)
// more instructions per scan than Take.
arrow::Result<std::shared_ptr<arrow::RecordBatch>> PickRows(
    const std::shared_ptr<arrow::RecordBatch>& batch, const std::vector<int64_t>& sel,
    CallContext* ctx) {
  const int64_t n_sel = static_cast<int64_t>(sel.size());
  if (sel.back() - sel.front() + 1 == n_sel) return batch->Slice(sel.front(), n_sel);
  arrow::ArrayVector columns;
  for (const auto& column : batch->columns()) {
    ARROW_ASSIGN_OR_RAISE(auto picked, GatherColumn(column, sel, ctx));
    columns.push_back(std::move(picked));
  }
  return arrow::RecordBatch::Make(batch->schema(), n_sel, std::move(columns));
}

// The outputs of `n_sel` evaluated rows as one record batch of the reply; EMSGSIZE past the cap.
arrow::Status WriteOutputs(const Plan& plan, const EvalState& st, int64_t n_sel, ReplyWriter* w,
                           CallContext* ctx) {
  if (plan.outputs.empty()) return arrow::Status::OK();
  arrow::ArrayVector cols;
  for (size_t o = 0; o < plan.outputs.size(); ++o) {
    ARROW_ASSIGN_OR_RAISE(auto arr, ToArrow(st.values[plan.outputs[o].second], n_sel,
                                            w->schema->field(static_cast<int>(o))->type(), ctx));
    cols.push_back(std::move(arr));
  }
  ARROW_RETURN_NOT_OK(w->Write(*arrow::RecordBatch::Make(w->schema, n_sel, cols)));
  ARROW_ASSIGN_OR_RAISE(int64_t written, w->sink->Tell());
  if (written > plan.reply_cap)
    return ErrnoStatus(EMSGSIZE, "reply exceeds " + std::to_string(plan.reply_cap) + " bytes");
  return arrow::Status::OK();
}

// No rows selected (or none at all: an empty file has no batch): errors that
// depend only on types and literals are still raised (formats/README.md), so
// evaluate once over no rows and drop the values.
arrow::Status FinishScan(const Plan& plan, const PartitionReader& reader, bool evaluated,
                         const std::vector<bool>& elements, CallContext* ctx) {
  if (evaluated) return arrow::Status::OK();
  ARROW_ASSIGN_OR_RAISE(auto empty, arrow::RecordBatch::MakeEmpty(reader.schema, ctx->pool()));
  EvalState none(plan.nodes.size());
  return EvaluateBatch(plan, *empty, plan.needed, elements, &none, ctx);
}

// The rows of one chunk (a whole batch, or a slice of one): the cut on every row
// (so that its errors and rows_matched do not depend on the limit), then outputs
// and aggregations on the selected rows.  `remaining`: selected rows still wanted
// (-1: no limit).
arrow::Status ScanChunk(const Plan& plan, const std::shared_ptr<arrow::RecordBatch>& chunk,
                        const std::vector<bool>& for_filter, const std::vector<bool>& elements,
                        ReplyWriter* w, std::vector<AggState>* aggs, ScanStats* stats,
                        int64_t* remaining, bool* evaluated, CallContext* ctx) {
  stats->rows_scanned += chunk->num_rows();
  EvalState all(plan.nodes.size());
  ARROW_ASSIGN_OR_RAISE(std::vector<int64_t> sel, FilterRows(plan, *chunk, for_filter, elements, &all, ctx));
  stats->rows_matched += static_cast<int64_t>(sel.size());
  if (*remaining >= 0 && static_cast<int64_t>(sel.size()) > *remaining) sel.resize(static_cast<size_t>(*remaining));
  if (*remaining >= 0) *remaining -= static_cast<int64_t>(sel.size());
  if (sel.empty()) return arrow::Status::OK();
  const int64_t n_sel = static_cast<int64_t>(sel.size());
  stats->rows_returned += n_sel;

  // Every row selected: the same batch and values.
  EvalState picked(plan.nodes.size());
  EvalState* st = &all;
  std::shared_ptr<arrow::RecordBatch> rows = chunk;
  if (n_sel != chunk->num_rows()) {
    st = &picked;
    ARROW_ASSIGN_OR_RAISE(rows, PickRows(chunk, sel, ctx));
  }
  ARROW_RETURN_NOT_OK(EvaluateBatch(plan, *rows, plan.needed, elements, st, ctx));
  *evaluated = true;
  ARROW_RETURN_NOT_OK(WriteOutputs(plan, *st, n_sel, w, ctx));
  std::vector<int64_t> identity(aggs->empty() ? 0 : static_cast<size_t>(n_sel));
  for (size_t e = 0; e < identity.size(); ++e) identity[e] = static_cast<int64_t>(e);
  for (size_t a = 0; a < aggs->size(); ++a)
    ARROW_RETURN_NOT_OK(UpdateAggregate(plan, plan.aggregations[a], st->values, identity, n_sel,
                                        &(*aggs)[a], ctx));
  return arrow::Status::OK();
}

// Time slices (formats/README.md "Time slices").  With a quantum, a batch is
// scanned in chunks sized from the CPU time per row measured so far (the first
// one from the request's size, so that a request of thousands of nodes starts
// small); once the quantum is used up, the call stops before the next chunk and
// says where to resume.  Every call scans at least one chunk: a resumed scan
// always progresses.
class Slicer {
 public:
  Slicer(int64_t quantum_ns, int64_t first_chunk_node_rows, const Plan& plan, CallContext& ctx)
      : quantum_(quantum_ns), ctx_(ctx) {
    int64_t nodes = 0;
    for (bool n : plan.needed) nodes += n;
    first_rows_ = std::max<int64_t>(kMinRows, first_chunk_node_rows / std::max<int64_t>(1, nodes));
  }
  // Whether the call stops here (the quantum is spent and a chunk has been scanned).
  bool Expired() const { return quantum_ > 0 && chunks_ > 0 && ctx_.CpuNs() >= quantum_; }
  // Rows of the next chunk, at most `left`.
  int64_t NextRows(int64_t left) {
    if (quantum_ <= 0) return left;
    started_ns_ = ctx_.CpuNs();
    if (ns_per_row_ <= 0) return std::min(left, first_rows_);
    const double fit = static_cast<double>(quantum_ - started_ns_) / 2 / ns_per_row_;
    return std::min(left, std::max<int64_t>(kMinRows, static_cast<int64_t>(std::min(fit, 1e15))));
  }
  void Done(int64_t rows) {
    ++chunks_;
    ctx_.mark_progress();
    if (quantum_ > 0 && rows > 0)
      ns_per_row_ = std::max(1.0, static_cast<double>(ctx_.CpuNs() - started_ns_) / static_cast<double>(rows));
  }

 private:
  static constexpr int64_t kMinRows = 16;
  int64_t quantum_;
  CallContext& ctx_;
  int64_t first_rows_;
  int64_t chunks_ = 0;
  int64_t started_ns_ = 0;
  double ns_per_row_ = 0;
};

// The batch loop: each record batch cut to the row range, then scanned chunk by
// chunk (ScanChunk) until the range ends or the time slice does.
arrow::Status ScanBatches(const Plan& plan, PartitionReader* reader, ReplyWriter* w,
                          std::vector<AggState>* aggs, ScanStats* stats, CallContext* ctx,
                          int64_t quantum_ns, int64_t first_chunk_node_rows) {
  const std::vector<bool> for_filter = FilterNodes(plan);
  const std::vector<bool> elements = ElementNodes(plan);
  Slicer slicer(quantum_ns, first_chunk_node_rows, plan, *ctx);
  int64_t remaining = plan.limit;  // -1: no limit
  bool evaluated = false;          // have outputs and aggregations been evaluated on any rows?
  while (true) {
    ARROW_RETURN_NOT_OK(ctx->CheckDeadline());
    if (remaining == 0 && plan.filter < 0) {
      // nothing left to evaluate: count the rest of the range from metadata
      ARROW_ASSIGN_OR_RAISE(int64_t total, reader->TotalRows());
      int64_t stop = plan.row_stop >= 0 ? std::min(plan.row_stop, total) : total;
      int64_t in_range = std::max<int64_t>(0, stop - std::min(plan.row_start, stop));
      stats->rows_matched += in_range - stats->rows_scanned;
      stats->rows_scanned = in_range;
      break;
    }
    int64_t first_row = 0;
    ARROW_ASSIGN_OR_RAISE(auto batch, reader->Next(&first_row));
    if (!batch) break;
    const std::string where = "record batch at row " + std::to_string(first_row);
    // Buffers served zero-copy from the object's reads need not sit at addresses
    // aligned for their values (UBSan: misaligned loads); the misaligned ones are
    // copied into the call's pool.  The structure is checked first.
    ARROW_RETURN_NOT_OK(AsBadMessage(batch->Validate(), where));
    ARROW_ASSIGN_OR_RAISE(batch, arrow::util::EnsureAlignment(batch, arrow::util::kValueAlignment,
                                                              ctx->pool()));
    ARROW_RETURN_NOT_OK(AsBadMessage(ValidateBatch(*batch), where));
    // Cut to [row_start, row_stop).
    int64_t lo = std::max<int64_t>(0, plan.row_start - first_row);
    int64_t hi = batch->num_rows();
    if (plan.row_stop >= 0) hi = std::min(hi, plan.row_stop - first_row);
    if (hi <= lo) continue;
    for (int64_t at = lo; at < hi;) {
      if (remaining == 0 && plan.filter < 0) break;  // counted from metadata above
      if (slicer.Expired()) {
        stats->resume_row = first_row + at;
        return FinishScan(plan, *reader, evaluated, elements, ctx);
      }
      const int64_t rows = slicer.NextRows(hi - at);
      auto chunk = (at == 0 && rows == batch->num_rows()) ? batch : batch->Slice(at, rows);
      ARROW_RETURN_NOT_OK(ScanChunk(plan, chunk, for_filter, elements, w, aggs, stats, &remaining,
                                    &evaluated, ctx));
      slicer.Done(rows);
      at += rows;
    }
  }
  return FinishScan(plan, *reader, evaluated, elements, ctx);
}

// flatbuffers' memory from malloc, so that the finished reply can be handed
// over whole (ReplyBuffer::Release) instead of copied.
class MallocAllocator : public flatbuffers::Allocator {
 public:
  uint8_t* allocate(size_t size) override {
    void* p = std::malloc(size);
    if (p == nullptr) throw std::bad_alloc();
    return static_cast<uint8_t*>(p);
  }
  void deallocate(uint8_t* p, size_t) override { std::free(p); }
};

// Stream pieces smaller than this are copied even when they could be lent: each
// lent piece is one more buffer for the messenger to send.
constexpr int64_t kLendBytes = 16 * 1024;

// The ScanReply: figures, the IPC stream, the aggregates; EMSGSIZE past the
// cap.  The stream's pieces are copied once, into the reply's vector, except
// (with `lend`) the large ones the object store lent: the reply keeps those by
// reference and their place in its block is left unwritten (its pages untouched).
arrow::Result<std::shared_ptr<arrow::Buffer>> EncodeReply(const Plan& plan, const GatherStream& ipc,
                                                          const std::vector<AggState>& aggs,
                                                          const PositionalFile& object, bool lend,
                                                          ScanStats* stats, int64_t cpu_start) {
  MallocAllocator alloc;
  flatbuffers::FlatBufferBuilder fbb(static_cast<size_t>(ipc.size()) + 1024 + 64 * aggs.size(), &alloc);
  uint8_t* stream_bytes = nullptr;
  auto stream = fbb.CreateUninitializedVector(static_cast<size_t>(ipc.size()), &stream_bytes);
  // The builder grows downwards: the stream's distance from the buffer's end
  // survives its later reallocations, and locates the stream in the reply.
  const int64_t stream_from_end = fbb.GetCurrentBufferPointer() + fbb.GetSize() - stream_bytes;
  std::vector<ReplyBuffer::LentPiece> lent;
  // now: later calls may move the builder's memory
  ipc.CopyTo(stream_bytes, [&](const arrow::Buffer& b) { return lend && b.size() >= kLendBytes && object.Lent(b); },
             &lent);
  auto aggregates = EncodeAggregates(fbb, plan, aggs);
  stats->cpu_ns = ThreadCpuNs() - cpu_start;
  auto figures = fb::CreateFigures(fbb, stats->rows_scanned, stats->rows_matched,
                                   stats->rows_returned, stats->bytes_read, stats->object_bytes,
                                   stats->cpu_ns, stats->resume_row);
  fbb.Finish(fb::CreateScanReply(fbb, cls_ops::kScanVersion, figures, stream, aggregates), fb::ScanRequestIdentifier());
  if (static_cast<int64_t>(fbb.GetSize()) > plan.reply_cap)
    return ErrnoStatus(EMSGSIZE, "reply of " + std::to_string(fbb.GetSize()) + " bytes exceeds " +
                                     std::to_string(plan.reply_cap));
  size_t block_bytes = 0, offset = 0;
  uint8_t* block = fbb.ReleaseRaw(block_bytes, offset);
  auto reply = std::make_shared<ReplyBuffer>(block, block_bytes, offset);
  const int64_t stream_at = static_cast<int64_t>(block_bytes - offset) - stream_from_end;
  for (auto& l : lent) reply->AddLent(stream_at + l.at, std::move(l.data));
  return reply;
}

arrow::Result<std::shared_ptr<arrow::Buffer>> Scan(const uint8_t* request, size_t request_len,
                                                   const std::shared_ptr<PositionalFile>& object,
                                                   const Limits& limits, ScanStats* stats,
                                                   int64_t cpu_start, bool lend) {
  Plan plan;
  ARROW_RETURN_NOT_OK(DecodeRequest(request, request_len, limits, &plan));
  ARROW_RETURN_NOT_OK(CheckCallerDeadline(plan.deadline_ms));  // expired while queued
  ARROW_ASSIGN_OR_RAISE(int64_t object_size, object->GetSize());
  stats->object_bytes = object_size;
  ARROW_RETURN_NOT_OK(CheckObjectSize(object_size, limits));
  // One cap for the call: the pool gets what the histogram vectors (outside it) leave.
  const int64_t memory_cap = std::min(limits.max_call_memory,
                                      limits.memory_per_object_byte * object_size + limits.memory_base);
  if (plan.hist_bytes >= memory_cap)
    return ErrnoStatus(ENOMEM, "histograms of " + std::to_string(plan.hist_bytes) +
                                   " bytes exceed the call's memory cap of " + std::to_string(memory_cap));
  CallContext ctx(memory_cap - plan.hist_bytes, CpuBudgetNs(object_size, limits), cpu_start);
  ctx.set_busy_cap_ns(limits.busy_cap_ns);
  ctx.set_caller_deadline_ms(plan.deadline_ms);
  object->set_pool(ctx.pool());
  object->set_unpooled_cap(limits.memory_per_object_byte * object_size + limits.memory_base);
  // The object outlives this call; what it holds must not outlive the pool.
  struct Release {
    PositionalFile* file;
    ~Release() {
      file->ForgetPrefetched(/*all=*/true);
      file->set_pool(arrow::default_memory_pool());
      file->set_unpooled_cap(INT64_MAX);
    }
  } release{object.get()};

  ARROW_ASSIGN_OR_RAISE(std::unique_ptr<PartitionReader> reader, OpenPartition(object, object_size, &ctx));
  ARROW_ASSIGN_OR_RAISE(std::vector<int> fields, ResolveColumns(*reader->schema, &plan));
  ARROW_RETURN_NOT_OK(TypeCheck(&plan, limits));
  ARROW_RETURN_NOT_OK(reader->Select(fields, plan.row_start, plan.row_stop));

  ReplyWriter w = MakeReplyWriter(plan, &ctx);
  std::vector<AggState> aggs = NewAggregates(plan);
  ResumeAggregates(plan, &aggs);
  // the time slice: the class's (Limits::slice_ns), shortened by the caller's
  const int64_t quantum = limits.slice_ns <= 0 ? plan.slice_ns
                          : plan.slice_ns <= 0 ? limits.slice_ns
                                               : std::min(limits.slice_ns, plan.slice_ns);
  ARROW_RETURN_NOT_OK(ScanBatches(plan, reader.get(), &w, &aggs, stats, &ctx, quantum,
                                  limits.first_chunk_node_rows));
  ARROW_RETURN_NOT_OK(w.Close());
  if (w.sink->size() > plan.reply_cap)
    return ErrnoStatus(EMSGSIZE, "reply exceeds " + std::to_string(plan.reply_cap) + " bytes");
  // The reply flatbuffer and its copy are built outside the pool: count them first.
  const int64_t reply_estimate = w.sink->size() + plan.hist_bytes + 64 * 1024;
  if (ctx.pool()->bytes_allocated() + plan.hist_bytes + 2 * reply_estimate > memory_cap)
    return ErrnoStatus(ENOMEM, "the reply (about " + std::to_string(reply_estimate) +
                                   " bytes, built twice) exceeds the call's memory cap of " +
                                   std::to_string(memory_cap));
  stats->bytes_read = object->bytes_read();
  return EncodeReply(plan, *w.sink, aggs, *object, lend, stats, cpu_start);
}

}  // namespace

arrow::Result<std::shared_ptr<arrow::Buffer>> RunScan(const uint8_t* request, size_t request_len,
                                                      const std::shared_ptr<PositionalFile>& object,
                                                      const Limits& limits, ScanStats* stats, bool lend) {
  const int64_t start = ThreadCpuNs();
  arrow::Result<std::shared_ptr<arrow::Buffer>> result;
  try {
    result = Scan(request, request_len, object, limits, stats, start, lend);
  } catch (const std::bad_alloc&) {
    result = ErrnoStatus(ENOMEM, "allocation failed");
  } catch (const std::exception& e) {
    result = ErrnoStatus(EIO, std::string("unexpected exception: ") + e.what());
  } catch (...) {
    result = ErrnoStatus(EIO, "unexpected exception");
  }
  stats->bytes_read = object->bytes_read();
  stats->cpu_ns = ThreadCpuNs() - start;
  return result;
}

}  // namespace skyhook
