// The scan driver: request decoding and validation, reading a partition
// (Arrow IPC file or Parquet) column-selectively, selection, limit, outputs,
// aggregations and the ScanReply.  The evaluator itself is eval.cc.
//
// Order of work, so that a bad request costs nothing: size and identifier,
// flatbuffers Verifier, version, structural checks and limits, then the
// object's size, then its footer/schema (types are checked against it), and
// only then the buffers of the referenced columns, batch by batch.

#include <time.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <exception>
#include <new>

#include <arrow/array.h>
#include <arrow/builder.h>
#include <arrow/compute/api_vector.h>
#include <arrow/compute/exec.h>
#include <arrow/compute/initialize.h>
#include <arrow/io/memory.h>
#include <arrow/ipc/reader.h>
#include <arrow/ipc/writer.h>
#include <arrow/record_batch.h>
#include <arrow/type.h>
#include <arrow/util/bit_util.h>
#include <arrow/util/compression.h>
#include <flatbuffers/flatbuffers.h>
#include <parquet/arrow/reader.h>
#include <parquet/arrow/schema.h>
#include <parquet/exception.h>
#include <parquet/file_reader.h>

#include "kernel_internal.h"
#include "skyhook_scan_generated.h"

namespace skyhook {

// ---------------------------------------------------------------- errors

namespace {

class ErrnoDetail : public arrow::StatusDetail {
 public:
  explicit ErrnoDetail(int err) : err_(err) {}
  const char* type_id() const override { return "skyhook::errno"; }
  std::string ToString() const override { return "errno " + std::to_string(err_); }
  int err() const { return err_; }

 private:
  int err_;
};

int CarriedErrno(const arrow::Status& st) {
  auto d = st.detail();
  if (d && std::strcmp(d->type_id(), "skyhook::errno") == 0)
    return static_cast<const ErrnoDetail&>(*d).err();
  return 0;
}

// A failure of the Arrow/Parquet readers on the stored bytes: a corrupt
// partition, unless it is already an errno (a failed cls_cxx_read) or OOM.
arrow::Status AsBadMessage(const arrow::Status& st, const std::string& what) {
  if (st.ok() || CarriedErrno(st) != 0 || st.IsOutOfMemory()) return st;
  return ErrnoStatus(EBADMSG, what + ": " + st.ToString());
}

}  // namespace

arrow::Status ErrnoStatus(int err, std::string message) {
  return arrow::Status(arrow::StatusCode::Invalid, std::move(message),
                       std::make_shared<ErrnoDetail>(err));
}

int StatusToErrno(const arrow::Status& status) {
  if (status.ok()) return 0;
  if (int e = CarriedErrno(status)) return -e;
  if (status.IsOutOfMemory()) return -ENOMEM;
  return -EIO;
}

arrow::Status InitializeKernel() { return arrow::compute::Initialize(); }

// ---------------------------------------------------------------- the object

arrow::Result<int64_t> PositionalFile::Clamp(int64_t position, int64_t nbytes,
                                             bool allow_short_read) const {
  if (closed_) return arrow::Status::IOError("read from a closed object");
  if (position < 0 || nbytes < 0 || position > size_)
    return ErrnoStatus(EBADMSG, "read of " + std::to_string(nbytes) + " bytes at " +
                                    std::to_string(position) + " outside the object of " +
                                    std::to_string(size_) + " bytes");
  int64_t n = std::min(nbytes, size_ - position);
  if (n < nbytes && !allow_short_read)
    return ErrnoStatus(EBADMSG, "object truncated: " + std::to_string(nbytes) + " bytes at " +
                                    std::to_string(position) + " past its end (" +
                                    std::to_string(size_) + " bytes)");
  return n;
}

arrow::Status PositionalFile::Seek(int64_t position) {
  if (position < 0 || position > size_) return ErrnoStatus(EBADMSG, "seek outside the object");
  position_ = position;
  return arrow::Status::OK();
}

const arrow::Buffer* PositionalFile::Held(int64_t position, int64_t n, int64_t* start) const {
  for (const Region& r : held_)
    if (position >= r.start && position + n <= r.start + r.data->size()) {
      *start = r.start;
      return r.data.get();
    }
  return nullptr;
}

arrow::Result<std::shared_ptr<arrow::Buffer>> PositionalFile::Prefetch(int64_t position,
                                                                       int64_t nbytes, bool keep) {
  ARROW_ASSIGN_OR_RAISE(auto buf, ReadAt(position, nbytes, /*allow_short_read=*/false));
  held_.push_back({position, buf, keep});
  return buf;
}

void PositionalFile::ForgetPrefetched(bool all) {
  held_.erase(std::remove_if(held_.begin(), held_.end(),
                             [all](const Region& r) { return all || !r.keep; }),
              held_.end());
}

arrow::Result<int64_t> PositionalFile::ReadAt(int64_t position, int64_t nbytes,
                                              bool allow_short_read, void* out) {
  ARROW_ASSIGN_OR_RAISE(int64_t n, Clamp(position, nbytes, allow_short_read));
  int64_t start = 0;
  if (const arrow::Buffer* h = n > 0 ? Held(position, n, &start) : nullptr) {
    std::memcpy(out, h->data() + (position - start), static_cast<size_t>(n));
    return n;
  }
  if (n > 0) {
    ARROW_RETURN_NOT_OK(DoReadAt(position, n, static_cast<uint8_t*>(out)));
    ++read_calls_;
  }
  bytes_read_ += n;
  return n;
}

arrow::Result<int64_t> PositionalFile::ReadAt(int64_t position, int64_t nbytes, void* out) {
  return ReadAt(position, nbytes, true, out);
}

arrow::Result<std::shared_ptr<arrow::Buffer>> PositionalFile::ReadAt(int64_t position,
                                                                     int64_t nbytes,
                                                                     bool allow_short_read) {
  ARROW_ASSIGN_OR_RAISE(int64_t n, Clamp(position, nbytes, allow_short_read));
  for (const Region& r : held_)  // a zero-copy slice of a prefetched range
    if (n > 0 && position >= r.start && position + n <= r.start + r.data->size())
      return arrow::SliceBuffer(r.data, position - r.start, n);
  ARROW_ASSIGN_OR_RAISE(auto buf, arrow::AllocateResizableBuffer(n, pool_));
  ARROW_ASSIGN_OR_RAISE(int64_t got, ReadAt(position, n, allow_short_read, buf->mutable_data()));
  ARROW_RETURN_NOT_OK(buf->Resize(got, false));
  return std::shared_ptr<arrow::Buffer>(std::move(buf));
}

arrow::Result<std::shared_ptr<arrow::Buffer>> PositionalFile::ReadAt(int64_t position,
                                                                     int64_t nbytes) {
  return ReadAt(position, nbytes, true);
}

arrow::Future<std::shared_ptr<arrow::Buffer>> PositionalFile::ReadAsync(
    const arrow::io::IOContext&, int64_t position, int64_t nbytes, bool allow_short_read) {
  return arrow::Future<std::shared_ptr<arrow::Buffer>>::MakeFinished(
      ReadAt(position, nbytes, allow_short_read));
}

arrow::Future<std::shared_ptr<arrow::Buffer>> PositionalFile::ReadAsync(
    const arrow::io::IOContext& ctx, int64_t position, int64_t nbytes) {
  return ReadAsync(ctx, position, nbytes, true);
}

arrow::Result<int64_t> PositionalFile::Read(int64_t nbytes, void* out) {
  ARROW_ASSIGN_OR_RAISE(int64_t n, ReadAt(position_, nbytes, true, out));
  position_ += n;
  return n;
}

arrow::Result<std::shared_ptr<arrow::Buffer>> PositionalFile::Read(int64_t nbytes) {
  ARROW_ASSIGN_OR_RAISE(auto buf, ReadAt(position_, nbytes, true));
  position_ += buf->size();
  return buf;
}

// ---------------------------------------------------------------- call context

int64_t ThreadCpuNs() {
  timespec ts{};
  if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) != 0) return 0;
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

CallContext::CallContext(int64_t memory_cap, int64_t cpu_budget_ns)
    : proxy_(arrow::system_memory_pool()),
      capped_(&proxy_, memory_cap),
      start_ns_(ThreadCpuNs()),
      budget_ns_(cpu_budget_ns) {}

int64_t CallContext::CpuNs() const { return ThreadCpuNs() - start_ns_; }

arrow::Status CallContext::CheckDeadline() const {
  if (CpuNs() > budget_ns_)
    return ErrnoStatus(ETIME, "CPU time budget of " + std::to_string(budget_ns_ / 1000000) +
                                      " ms exceeded");
  return arrow::Status::OK();
}

// ---------------------------------------------------------------- the request

namespace {

int Arity(Op op) {
  switch (op) {
    case Op::Column: case Op::Literal: return 0;
    case Op::Neg: case Op::Not: case Op::Abs: case Op::Sqrt: case Op::Exp: case Op::Log:
    case Op::Sin: case Op::Cos: case Op::Tan: case Op::Sinh: case Op::Cosh:
      return 1;
    case Op::Where: return 3;
    default:
      return static_cast<int>(op) >= static_cast<int>(Op::Count) ? 1 : 2;
  }
}

arrow::Status E2Big(std::string msg) { return ErrnoStatus(E2BIG, std::move(msg)); }
arrow::Status EInval(std::string msg) { return ErrnoStatus(EINVAL, std::move(msg)); }

arrow::Status CheckAxis(const fb::Axis* axis, const std::string& what, const Limits& limits,
                        AxisSpec* out) {
  if (axis == nullptr) return EInval(what + " is missing");
  if (axis->bins() == 0) return EInval(what + " has 0 bins");
  if (axis->bins() > static_cast<uint64_t>(limits.max_hist_bins))
    return E2Big(what + " has " + std::to_string(axis->bins()) + " bins, more than " +
                 std::to_string(limits.max_hist_bins));
  if (!std::isfinite(axis->low()) || !std::isfinite(axis->high()) || !(axis->low() < axis->high()))
    return EInval(what + ": range must be finite with low < high");
  *out = {axis->bins(), axis->low(), axis->high()};
  return arrow::Status::OK();
}

}  // namespace

arrow::Status DecodeRequest(const uint8_t* data, size_t len, const Limits& limits, Plan* plan) {
  if (len > static_cast<size_t>(limits.max_request_bytes))
    return E2Big("request of " + std::to_string(len) + " bytes, more than " +
                 std::to_string(limits.max_request_bytes));
  if (len < 8 || !fb::ScanRequestBufferHasIdentifier(data))
    return EInval("not a ScanRequest (identifier SKH1 missing)");
  flatbuffers::Verifier verifier(data, len, /*max_depth=*/16, /*max_tables=*/200000);
  if (!fb::VerifyScanRequestBuffer(verifier))
    return EInval("the request fails the flatbuffers verifier");
  const fb::ScanRequest* req = fb::GetScanRequest(data);
  if (req->version() != 1)
    return ErrnoStatus(EPROTONOSUPPORT,
                       "request version " + std::to_string(req->version()) + ", this class speaks 1");

  const auto* nodes = req->nodes();
  const size_t n_nodes = nodes ? nodes->size() : 0;
  if (n_nodes > static_cast<size_t>(limits.max_nodes))
    return E2Big(std::to_string(n_nodes) + " nodes, more than " + std::to_string(limits.max_nodes));
  plan->nodes.resize(n_nodes);
  std::vector<int64_t> depth(n_nodes, 1);
  for (size_t i = 0; i < n_nodes; ++i) {
    const fb::Node* fn = nodes->Get(static_cast<flatbuffers::uoffset_t>(i));
    Node& n = plan->nodes[i];
    const std::string at = "node " + std::to_string(i);
    if (static_cast<int>(fn->op()) > kMaxOp) return EInval(at + ": unknown op " + std::to_string(fn->op()));
    n.op = static_cast<Op>(fn->op());
    const size_t n_args = fn->args() ? fn->args()->size() : 0;
    if (static_cast<int>(n_args) != Arity(n.op))
      return EInval(at + " (" + OpName(n.op) + ") takes " + std::to_string(Arity(n.op)) +
                    " argument(s), got " + std::to_string(n_args));
    for (size_t k = 0; k < n_args; ++k) {
      uint32_t a = fn->args()->Get(static_cast<flatbuffers::uoffset_t>(k));
      if (a >= i) return EInval(at + ": argument " + std::to_string(a) + " is not an earlier node");
      n.args.push_back(a);
      depth[i] = std::max(depth[i], depth[a] + 1);
    }
    if (depth[i] > limits.max_depth)
      return E2Big("expression deeper than " + std::to_string(limits.max_depth) + " at " + at);
    if (n.op == Op::Column) {
      if (!fn->name() || fn->name()->size() == 0) return EInval(at + ": a column without a name");
      n.name = fn->name()->str();
    } else if (n.op == Op::Literal) {
      if (static_cast<int>(fn->literal_kind()) > 2) return EInval(at + ": unknown literal kind");
      n.literal_kind = static_cast<int>(fn->literal_kind());
    }
    n.int_value = fn->int_value();
    n.float_value = fn->float_value();
  }
  auto check_node = [&](int64_t idx, const std::string& what, bool optional) -> arrow::Status {
    if (optional && idx == -1) return arrow::Status::OK();
    if (idx < 0 || static_cast<size_t>(idx) >= n_nodes)
      return EInval(what + " refers to node " + std::to_string(idx) + " of " + std::to_string(n_nodes));
    return arrow::Status::OK();
  };
  if (req->outputs()) {
    for (const fb::Output* o : *req->outputs()) {
      if (!o->name()) return EInval("an output without a name");
      ARROW_RETURN_NOT_OK(check_node(o->node(), "output '" + o->name()->str() + "'", false));
      plan->outputs.emplace_back(o->name()->str(), o->node());
    }
  }
  plan->filter = req->filter();
  ARROW_RETURN_NOT_OK(check_node(plan->filter, "the filter", true));
  plan->row_start = req->row_start();
  plan->row_stop = req->row_stop();
  plan->limit = req->limit();
  if (plan->row_start < 0 || plan->row_stop < -1 ||
      (plan->row_stop >= 0 && plan->row_stop < plan->row_start))
    return EInval("bad row range [" + std::to_string(plan->row_start) + ", " +
                  std::to_string(plan->row_stop) + ")");
  if (plan->limit < -1) return EInval("bad limit " + std::to_string(plan->limit));
  if (static_cast<int>(req->compression()) > 2) return EInval("unknown compression");
  plan->compression = static_cast<int>(req->compression());
  if (req->max_reply_bytes() == 0) return EInval("max_reply_bytes is not set");
  plan->reply_cap = static_cast<int64_t>(
      std::min<uint64_t>(req->max_reply_bytes(), static_cast<uint64_t>(limits.max_reply_bytes)));

  int64_t hist_bytes = 0;
  if (req->aggregations()) {
    if (req->aggregations()->size() > static_cast<size_t>(limits.max_aggregations))
      return E2Big(std::to_string(req->aggregations()->size()) + " aggregations, more than " +
                   std::to_string(limits.max_aggregations));
    for (const fb::Aggregation* fa : *req->aggregations()) {
      AggSpec g;
      g.name = fa->name() ? fa->name()->str() : "";
      const std::string what = "aggregation '" + g.name + "'";
      if (static_cast<int>(fa->kind()) > 6) return EInval(what + ": unknown kind");
      g.kind = static_cast<AggKind>(fa->kind());
      g.x = fa->x();
      g.y = fa->y();
      g.weight = fa->weight();
      ARROW_RETURN_NOT_OK(check_node(g.x, what + " x", g.kind == AggKind::Count));
      ARROW_RETURN_NOT_OK(check_node(g.y, what + " y", g.kind != AggKind::Hist2D));
      ARROW_RETURN_NOT_OK(check_node(g.weight, what + " weight", true));
      if (g.kind == AggKind::Hist1D || g.kind == AggKind::Hist2D) {
        ARROW_RETURN_NOT_OK(CheckAxis(fa->x_axis(), what + " x axis", limits, &g.x_axis));
        int64_t cells = g.x_axis.bins + 2;
        if (g.kind == AggKind::Hist2D) {
          ARROW_RETURN_NOT_OK(CheckAxis(fa->y_axis(), what + " y axis", limits, &g.y_axis));
          if (static_cast<int64_t>(g.x_axis.bins) * g.y_axis.bins > limits.max_hist_bins)
            return E2Big(what + ": more than " + std::to_string(limits.max_hist_bins) + " bins");
          cells *= g.y_axis.bins + 2;
        }
        hist_bytes += cells * 16;  // sumw and sumw2
      }
      plan->aggregations.push_back(std::move(g));
    }
  }
  if (hist_bytes > plan->reply_cap)
    return ErrnoStatus(EMSGSIZE, "histograms of " + std::to_string(hist_bytes) +
                                     " bytes cannot fit a reply of " + std::to_string(plan->reply_cap));

  // Nodes that matter; Column nodes are resolved against the schema later.
  plan->needed.assign(n_nodes, false);
  for (auto& o : plan->outputs) plan->needed[o.second] = true;
  if (plan->filter >= 0) plan->needed[plan->filter] = true;
  for (auto& g : plan->aggregations)
    for (int32_t k : {g.x, g.y, g.weight})
      if (k >= 0) plan->needed[k] = true;
  for (size_t i = n_nodes; i-- > 0;)
    if (plan->needed[i])
      for (uint32_t a : plan->nodes[i].args) plan->needed[a] = true;
  for (size_t i = 0; i < n_nodes; ++i) {
    Node& n = plan->nodes[i];
    if (n.op != Op::Column) continue;
    for (size_t c = 0; c < plan->columns.size(); ++c)
      if (plan->columns[c].name == n.name) n.column = static_cast<int>(c);
    if (n.column < 0) {
      n.column = static_cast<int>(plan->columns.size());
      plan->columns.push_back({n.name, -1, {}});
    }
  }
  return arrow::Status::OK();
}

// ---------------------------------------------------------------- columns <-> values

namespace {

arrow::Result<VType> VTypeOf(const arrow::DataType& t) {
  switch (t.id()) {
    case arrow::Type::BOOL: return VType::Bool;
    case arrow::Type::INT8: return VType::I8;
    case arrow::Type::INT16: return VType::I16;
    case arrow::Type::INT32: return VType::I32;
    case arrow::Type::INT64: return VType::I64;
    case arrow::Type::UINT8: return VType::U8;
    case arrow::Type::UINT16: return VType::U16;
    case arrow::Type::UINT32: return VType::U32;
    case arrow::Type::UINT64: return VType::U64;
    case arrow::Type::FLOAT: return VType::F32;
    case arrow::Type::DOUBLE: return VType::F64;
    default: return arrow::Status::NotImplemented(t.ToString());
  }
}

arrow::Result<NodeType> ColumnTypeOf(const arrow::Field& f) {
  const arrow::DataType& t = *f.type();
  NodeType out;
  const arrow::DataType* elem = &t;
  if (t.id() == arrow::Type::LIST || t.id() == arrow::Type::LARGE_LIST ||
      t.id() == arrow::Type::FIXED_SIZE_LIST) {
    out.is_list = true;
    elem = t.field(0)->type().get();
  }
  auto vt = VTypeOf(*elem);
  if (!vt.ok())
    return EInval("column '" + f.name() + "' has type " + t.ToString() +
                  ", not a number, bool or a list of those");
  out.type = *vt;
  return out;
}

std::shared_ptr<arrow::DataType> ArrowTypeOf(VType t) {
  switch (t) {
    case VType::Bool: return arrow::boolean();
    case VType::I8: return arrow::int8();
    case VType::I16: return arrow::int16();
    case VType::I32: return arrow::int32();
    case VType::I64: return arrow::int64();
    case VType::U8: return arrow::uint8();
    case VType::U16: return arrow::uint16();
    case VType::U32: return arrow::uint32();
    case VType::U64: return arrow::uint64();
    case VType::F32: return arrow::float32();
    default: return arrow::float64();
  }
}

// The elements of a primitive array as a Value's data and validity (zero copy
// for numbers; bools and validity bitmaps are unpacked to bytes).
arrow::Status PrimitiveInto(const arrow::Array& arr, VType t, Value* v, CallContext* ctx) {
  const auto& d = *arr.data();
  const int64_t n = arr.length();
  v->length = n;
  if (t == VType::Bool) {
    ARROW_ASSIGN_OR_RAISE(v->data, NewBuffer(std::max<int64_t>(n, 1), ctx));
    uint8_t* o = v->data->mutable_data();
    const uint8_t* bits = d.buffers[1] ? d.buffers[1]->data() : nullptr;
    for (int64_t i = 0; i < n; ++i) o[i] = bits ? arrow::bit_util::GetBit(bits, d.offset + i) : 0;
  } else {
    const int w = VTypeBytes(t);
    if (n == 0 || !d.buffers[1]) {
      ARROW_ASSIGN_OR_RAISE(v->data, NewBuffer(std::max<int64_t>(n, 1) * w, ctx));
      std::memset(v->data->mutable_data(), 0, static_cast<size_t>(std::max<int64_t>(n, 1) * w));
    } else {
      v->data = arrow::SliceBuffer(d.buffers[1], d.offset * w, n * w);
    }
  }
  if (arr.null_count() > 0)  // partitions never hold nulls; nulls come from the IR only
    return EInval("a column holds nulls, which partitions never do");
  return arrow::Status::OK();
}

arrow::Result<Value> ColumnValue(const arrow::Array& arr, const ColumnRef& col, CallContext* ctx) {
  Value v;
  v.t = col.t;
  v.n_events = arr.length();
  if (!col.t.is_list) {
    ARROW_RETURN_NOT_OK(PrimitiveInto(arr, col.t.type, &v, ctx));
    return v;
  }
  if (arr.null_count() > 0)
    return EInval("column '" + col.name + "' holds null lists, which are not supported");
  const int64_t ne = arr.length();
  ARROW_ASSIGN_OR_RAISE(v.offsets, NewBuffer((ne + 1) * 8, ctx));
  int64_t* off = reinterpret_cast<int64_t*>(v.offsets->mutable_data());
  std::shared_ptr<arrow::Array> values;
  auto rebase = [&](auto* raw, const std::shared_ptr<arrow::Array>& child) {
    int64_t first = raw[0];
    for (int64_t e = 0; e <= ne; ++e) off[e] = static_cast<int64_t>(raw[e]) - first;
    values = child->Slice(first, off[ne]);
  };
  if (arr.type_id() == arrow::Type::LIST) {
    const auto& l = static_cast<const arrow::ListArray&>(arr);
    rebase(l.raw_value_offsets(), l.values());
  } else if (arr.type_id() == arrow::Type::LARGE_LIST) {
    const auto& l = static_cast<const arrow::LargeListArray&>(arr);
    rebase(l.raw_value_offsets(), l.values());
  } else {
    const auto& l = static_cast<const arrow::FixedSizeListArray&>(arr);
    const int64_t size = l.list_type()->list_size();
    for (int64_t e = 0; e <= ne; ++e) off[e] = e * size;
    values = l.values()->Slice((l.offset()) * size, ne * size);
  }
  ARROW_RETURN_NOT_OK(PrimitiveInto(*values, col.t.type, &v, ctx));
  return v;
}

// The rows `sel` of a value as an Arrow array (a list array for a collection).
arrow::Result<std::shared_ptr<arrow::Array>> ToArrow(const Value& v,
                                                     const std::vector<int64_t>& sel,
                                                     const std::shared_ptr<arrow::DataType>& type,
                                                     CallContext* ctx) {
  const VType t = v.t.type;
  const int w = VTypeBytes(t);
  // element indices to gather, and list offsets for a collection
  std::vector<int64_t> idx;
  std::shared_ptr<arrow::Buffer> offsets;
  if (v.t.is_list && !v.scalar) {
    ARROW_ASSIGN_OR_RAISE(offsets, NewBuffer((static_cast<int64_t>(sel.size()) + 1) * 4, ctx));
    int32_t* oo = reinterpret_cast<int32_t*>(offsets->mutable_data());
    const int64_t* off = v.offs();
    int64_t k = 0;
    oo[0] = 0;
    for (size_t i = 0; i < sel.size(); ++i) {
      for (int64_t j = off[sel[i]]; j < off[sel[i] + 1]; ++j) idx.push_back(j);
      k += off[sel[i] + 1] - off[sel[i]];
      if (k > INT32_MAX) return ErrnoStatus(EMSGSIZE, "output list of more than 2^31 elements");
      oo[i + 1] = static_cast<int32_t>(k);
    }
  } else {
    idx = sel;
  }
  const int64_t n = static_cast<int64_t>(idx.size());
  std::shared_ptr<arrow::Buffer> data, bitmap;
  int64_t nulls = 0;
  if (t == VType::Bool) {
    ARROW_ASSIGN_OR_RAISE(data, NewBuffer(arrow::bit_util::BytesForBits(n) + 1, ctx));
    std::memset(data->mutable_data(), 0, static_cast<size_t>(data->size()));
    for (int64_t i = 0; i < n; ++i) {
      bool b = v.scalar ? v.ival != 0 : v.values<uint8_t>()[idx[i]] != 0;
      if (b) arrow::bit_util::SetBit(data->mutable_data(), i);
    }
  } else {
    ARROW_ASSIGN_OR_RAISE(data, NewBuffer(std::max<int64_t>(n, 1) * w, ctx));
    if (v.scalar) {
      Value one;
      ARROW_ASSIGN_OR_RAISE(one, Materialize(v, t, nullptr, 1, ctx));
      for (int64_t i = 0; i < n; ++i) std::memcpy(data->mutable_data() + i * w, one.data->data(), w);
    } else {
      const uint8_t* src = v.data->data();
      for (int64_t i = 0; i < n; ++i) std::memcpy(data->mutable_data() + i * w, src + idx[i] * w, w);
    }
  }
  if (v.valid && !v.scalar) {
    ARROW_ASSIGN_OR_RAISE(bitmap, NewBuffer(arrow::bit_util::BytesForBits(n) + 1, ctx));
    std::memset(bitmap->mutable_data(), 0, static_cast<size_t>(bitmap->size()));
    const uint8_t* va = v.valid->data();
    for (int64_t i = 0; i < n; ++i) {
      if (va[idx[i]]) arrow::bit_util::SetBit(bitmap->mutable_data(), i);
      else ++nulls;
    }
    if (nulls == 0) bitmap.reset();
  }
  auto elems = arrow::ArrayData::Make(ArrowTypeOf(t), n, {bitmap, data}, nulls);
  if (!(v.t.is_list && !v.scalar)) return arrow::MakeArray(elems);
  auto list = arrow::ArrayData::Make(type, static_cast<int64_t>(sel.size()),
                                     {nullptr, offsets}, {elems}, 0);
  return arrow::MakeArray(list);
}

// ---------------------------------------------------------------- partition readers

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

// Coalesced reads of an IPC record batch.  Arrow's file reader asks for the
// needed buffers of a batch one ReadAt at a time; each is a cls_cxx_read in the
// OSD.  So the scan reads the footer's block list and the batch's message
// itself (the raw flatbuffers of Arrow's File.fbs/Message.fbs, verified), and
// prefetches the needed buffers in ranges merged across gaps of at most
// kCoalesceGap bytes; Arrow's reads are then served from memory.  This is only
// a plan: on anything unexpected (a type it does not know, dictionaries, a
// failed check) it prefetches nothing and Arrow reads, and validates, as before.
namespace ipc_layout {

constexpr int64_t kCoalesceGap = 64 * 1024;  // gap bytes read to save a positional read

struct Block {  // File.fbs struct Block
  int64_t offset;
  int32_t meta_length;
  int32_t pad;
  int64_t body_length;
};
struct BufferSpec {  // Schema.fbs struct Buffer
  int64_t offset;
  int64_t length;
};
static_assert(sizeof(Block) == 24 && sizeof(BufferSpec) == 16, "IPC struct layouts");

// Field ids of the tables read (vtable offsets: 4 + 2 * id).
constexpr flatbuffers::voffset_t kFooterDictionaries = 8, kFooterRecordBatches = 10;
constexpr flatbuffers::voffset_t kMessageHeaderType = 6, kMessageHeader = 8;
constexpr flatbuffers::voffset_t kRecordBatchBuffers = 8;
constexpr uint8_t kHeaderRecordBatch = 3;

// Buffers of one field and its children in IPC order; -1 for a type this plan does not know.
int BufferCount(const arrow::DataType& t) {
  int own;
  switch (t.id()) {
    case arrow::Type::NA: own = 0; break;
    case arrow::Type::STRING: case arrow::Type::BINARY:
    case arrow::Type::LARGE_STRING: case arrow::Type::LARGE_BINARY: own = 3; break;
    case arrow::Type::LIST: case arrow::Type::LARGE_LIST: case arrow::Type::MAP: own = 2; break;
    case arrow::Type::FIXED_SIZE_LIST: case arrow::Type::STRUCT: own = 1; break;
    default:
      if (!arrow::is_fixed_width(t.id()) || t.id() == arrow::Type::DICTIONARY ||
          t.id() == arrow::Type::EXTENSION)
        return -1;
      own = 2;
  }
  for (const auto& child : t.fields()) {
    int c = BufferCount(*child->type());
    if (c < 0) return -1;
    own += c;
  }
  return own;
}

// The root table of a flatbuffer, checked by `v`, or null.
const flatbuffers::Table* RootTable(flatbuffers::Verifier& v, const uint8_t* data) {
  flatbuffers::uoffset_t root = v.VerifyOffset(0);
  if (root == 0) return nullptr;
  auto* t = reinterpret_cast<const flatbuffers::Table*>(data + root);
  return t->VerifyTableStart(v) ? t : nullptr;
}

// The record batch blocks of the footer, or empty.
std::vector<Block> FooterBlocks(const arrow::Buffer& footer) {
  flatbuffers::Verifier v(footer.data(), static_cast<size_t>(footer.size()));
  auto* t = footer.size() < 8 ? nullptr : RootTable(v, footer.data());
  if (!t) return {};
  using Blocks = flatbuffers::Vector<const Block*>;
  if (!t->VerifyOffset(v, kFooterDictionaries) || !t->VerifyOffset(v, kFooterRecordBatches)) return {};
  auto* dicts = t->GetPointer<const Blocks*>(kFooterDictionaries);
  auto* batches = t->GetPointer<const Blocks*>(kFooterRecordBatches);
  if (!v.VerifyVector(dicts) || !v.VerifyVector(batches) || !batches) return {};
  if (dicts && dicts->size() > 0) return {};  // dictionary batches: leave it to Arrow
  std::vector<Block> out;
  for (const Block* b : *batches) out.push_back(*b);
  return out;
}

// The body buffers listed by a record batch message (prefix + flatbuffer), or false.
bool MessageBuffers(const arrow::Buffer& meta, std::vector<BufferSpec>* out) {
  int64_t at = 4;
  if (meta.size() < 8) return false;
  int32_t len;
  std::memcpy(&len, meta.data(), 4);
  if (len == -1) {  // continuation marker, then the length
    std::memcpy(&len, meta.data() + 4, 4);
    at = 8;
  }
  if (len <= 0 || at + len > meta.size()) return false;
  const uint8_t* fb = meta.data() + at;
  flatbuffers::Verifier v(fb, static_cast<size_t>(len));
  auto* m = RootTable(v, fb);
  if (!m || !m->VerifyField<uint8_t>(v, kMessageHeaderType, 1) || !m->VerifyOffset(v, kMessageHeader) ||
      m->GetField<uint8_t>(kMessageHeaderType, 0) != kHeaderRecordBatch)
    return false;
  auto* rb = m->GetPointer<const flatbuffers::Table*>(kMessageHeader);
  if (!rb || !rb->VerifyTableStart(v) || !rb->VerifyOffset(v, kRecordBatchBuffers)) return false;
  auto* bufs = rb->GetPointer<const flatbuffers::Vector<const BufferSpec*>*>(kRecordBatchBuffers);
  if (!bufs || !v.VerifyVector(bufs)) return false;
  for (const BufferSpec* b : *bufs) out->push_back(*b);
  return true;
}

}  // namespace ipc_layout

class IpcPartition : public PartitionReader {
 public:
  IpcPartition(std::shared_ptr<PositionalFile> file, CallContext* ctx)
      : file_(std::move(file)), ctx_(ctx) {}

  arrow::Status Open() {
    ARROW_RETURN_NOT_OK(ReadFooter());
    auto opts = Options();
    auto r = arrow::ipc::RecordBatchFileReader::Open(file_, opts);
    ARROW_RETURN_NOT_OK(AsBadMessage(r.status(), "not a valid Arrow IPC file"));
    schema = (*r)->schema();
    // The first buffer of each top-level field, in IPC order (empty: no plans).
    int first = 0;
    for (const auto& f : schema->fields()) {
      int n = ipc_layout::BufferCount(*f->type());
      if (n < 0) { field_buffers_.clear(); break; }
      field_buffers_.emplace_back(first, n);
      first += n;
    }
    return arrow::Status::OK();
  }

  arrow::Status Select(const std::vector<int>& fields, int64_t start, int64_t stop) override {
    auto opts = Options();
    opts.included_fields = fields;
    if (fields.empty()) opts.included_fields = {0};  // Arrow reads all for an empty list
    fields_ = opts.included_fields;
    auto r = arrow::ipc::RecordBatchFileReader::Open(file_, opts);
    ARROW_RETURN_NOT_OK(AsBadMessage(r.status(), "not a valid Arrow IPC file"));
    reader_ = *r;
    start_ = start;
    stop_ = stop;
    return arrow::Status::OK();
  }

  arrow::Result<int64_t> TotalRows() override {
    auto r = reader_->CountRows();  // reads each batch's metadata only
    ARROW_RETURN_NOT_OK(AsBadMessage(r.status(), "record batch metadata"));
    return *r;
  }

  arrow::Result<std::shared_ptr<arrow::RecordBatch>> Next(int64_t* first_row) override {
    // Batches are read one by one (their row counts are in their own metadata).
    while (next_ < reader_->num_record_batches()) {
      if (stop_ >= 0 && row_ >= stop_) return nullptr;
      ARROW_RETURN_NOT_OK(PrefetchBatch(next_));
      auto r = reader_->ReadRecordBatch(next_++);
      ARROW_RETURN_NOT_OK(AsBadMessage(r.status(), "record batch " + std::to_string(next_ - 1)));
      auto batch = *r;
      *first_row = row_;
      row_ += batch->num_rows();
      if (row_ <= start_) continue;
      return batch;
    }
    return nullptr;
  }

 private:
  arrow::ipc::IpcReadOptions Options() {
    auto opts = arrow::ipc::IpcReadOptions::Defaults();
    opts.memory_pool = ctx_->pool();
    opts.use_threads = false;  // never spawn work in the OSD's other threads
    return opts;
  }
  // Keeps the trailer and footer (both Arrow opens read them) and notes the
  // batch blocks.  Short or odd files are left to Arrow's own checks.
  arrow::Status ReadFooter() {
    ARROW_ASSIGN_OR_RAISE(int64_t size, file_->GetSize());
    if (size < 6 + 8 + 10) return arrow::Status::OK();
    uint8_t trailer[10];
    ARROW_RETURN_NOT_OK(file_->ReadAt(size - 10, 10, false, trailer).status());
    int32_t footer_len;
    std::memcpy(&footer_len, trailer, 4);
    if (std::memcmp(trailer + 4, "ARROW1", 6) != 0 || footer_len <= 0 || footer_len > size - 10 - 8)
      return arrow::Status::OK();
    ARROW_ASSIGN_OR_RAISE(auto tail, file_->Prefetch(size - 10 - footer_len, footer_len + 10, true));
    blocks_ = ipc_layout::FooterBlocks(*arrow::SliceBuffer(tail, 0, footer_len));
    return arrow::Status::OK();
  }

  // Reads the needed buffers of batch i in coalesced ranges (see ipc_layout).
  arrow::Status PrefetchBatch(int i) {
    file_->ForgetPrefetched();
    if (i >= static_cast<int>(blocks_.size()) || field_buffers_.empty()) return arrow::Status::OK();
    const ipc_layout::Block& b = blocks_[static_cast<size_t>(i)];
    ARROW_ASSIGN_OR_RAISE(int64_t size, file_->GetSize());
    if (b.offset < 8 || b.meta_length < 8 || b.body_length < 0 || b.offset > size ||
        b.meta_length > size - b.offset || b.body_length > size - b.offset - b.meta_length)
      return arrow::Status::OK();
    ARROW_ASSIGN_OR_RAISE(auto meta, file_->Prefetch(b.offset, b.meta_length, false));
    std::vector<ipc_layout::BufferSpec> buffers;
    if (!ipc_layout::MessageBuffers(*meta, &buffers)) return arrow::Status::OK();
    const int64_t body = b.offset + b.meta_length;
    std::vector<std::pair<int64_t, int64_t>> ranges;  // [start, end) in the object
    for (int f : fields_) {
      if (f < 0 || f >= static_cast<int>(field_buffers_.size())) return arrow::Status::OK();
      auto [first, count] = field_buffers_[static_cast<size_t>(f)];
      for (int k = first; k < first + count; ++k) {
        if (k >= static_cast<int>(buffers.size())) return arrow::Status::OK();
        const ipc_layout::BufferSpec& s = buffers[static_cast<size_t>(k)];
        if (s.length == 0) continue;
        if (s.offset < 0 || s.length < 0 || s.offset > b.body_length || s.length > b.body_length - s.offset)
          return arrow::Status::OK();
        ranges.emplace_back(body + s.offset, body + s.offset + s.length);
      }
    }
    std::sort(ranges.begin(), ranges.end());
    for (size_t g = 0; g < ranges.size();) {
      int64_t start = ranges[g].first, end = ranges[g].second;
      size_t h = g + 1;
      for (; h < ranges.size() && ranges[h].first - end <= ipc_layout::kCoalesceGap; ++h)
        end = std::max(end, ranges[h].second);
      ARROW_RETURN_NOT_OK(file_->Prefetch(start, end - start, false).status());
      g = h;
    }
    return arrow::Status::OK();
  }

  std::shared_ptr<PositionalFile> file_;
  CallContext* ctx_;
  std::shared_ptr<arrow::ipc::RecordBatchFileReader> reader_;
  std::vector<ipc_layout::Block> blocks_;            // from the footer; empty: no plans
  std::vector<std::pair<int, int>> field_buffers_;   // per top-level field: first buffer, count
  std::vector<int> fields_;                          // the included fields
  int next_ = 0;
  int64_t row_ = 0, start_ = 0, stop_ = -1;
};

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

// ---------------------------------------------------------------- aggregations

struct AggState {
  int64_t count = 0;
  bool is_integer = false;
  uint64_t isum = 0;  // wrapping int64 sum
  int64_t imin = INT64_MAX, imax = INT64_MIN;
  double fsum = 0, fmin = INFINITY, fmax = -INFINITY;
  std::vector<double> sumw, sumw2;
};

int64_t BinOf(double v, const AxisSpec& a) {
  if (v < a.low) return 0;
  if (v >= a.high) return static_cast<int64_t>(a.bins) + 1;
  double f = std::floor((v - a.low) / (a.high - a.low) * a.bins);
  return 1 + std::min<int64_t>(a.bins - 1, static_cast<int64_t>(f));
}

arrow::Status UpdateAggregate(const Plan& plan, const AggSpec& g, const std::vector<Value>& values,
                              const std::vector<int64_t>& sel, int64_t n_events, AggState* st,
                              CallContext* ctx) {
  if (g.kind == AggKind::Count && g.x < 0) {
    st->count += static_cast<int64_t>(sel.size());
    return arrow::Status::OK();
  }
  const Value& x = values[g.x];
  std::vector<const Value*> shapes = {&x};
  if (g.y >= 0) shapes.push_back(&values[g.y]);
  const Value* shape = nullptr;
  for (const Value* s : shapes) {
    if (!s->t.is_list || s->scalar) continue;
    if (shape && (shape->n_events != s->n_events ||
                  std::memcmp(shape->offsets->data(), s->offsets->data(),
                              static_cast<size_t>(8 * (s->n_events + 1))) != 0))
      return EInval("aggregation '" + g.name + "': x and y have different list lengths");
    shape = s;
  }
  if (g.weight >= 0 && values[g.weight].t.is_list && !values[g.weight].scalar && shape &&
      std::memcmp(shape->offsets->data(), values[g.weight].offsets->data(),
                  static_cast<size_t>(8 * (n_events + 1))) != 0)
    return EInval("aggregation '" + g.name + "': the weight has other list lengths than x");
  const bool integer = g.kind != AggKind::Hist1D && g.kind != AggKind::Hist2D &&
                       !IsFloat(plan.nodes[g.x].t.type);
  st->is_integer = integer && g.kind != AggKind::Count;
  ARROW_ASSIGN_OR_RAISE(Value mx, Materialize(x, integer ? VType::I64 : VType::F64, shape, n_events, ctx));
  Value my, mw;
  if (g.y >= 0) {
    ARROW_ASSIGN_OR_RAISE(my, Materialize(values[g.y], VType::F64, shape, n_events, ctx));
  }
  if (g.weight >= 0) {
    ARROW_ASSIGN_OR_RAISE(mw, Materialize(values[g.weight], VType::F64, shape, n_events, ctx));
  }
  const int64_t* off = shape ? shape->offs() : nullptr;
  const uint8_t* vx = mx.validity();
  const uint8_t* vy = g.y >= 0 ? my.validity() : nullptr;
  const uint8_t* vw = g.weight >= 0 ? mw.validity() : nullptr;
  for (int64_t e : sel) {
    const int64_t b = off ? off[e] : e, end = off ? off[e + 1] : e + 1;
    for (int64_t j = b; j < end; ++j) {
      if (vx && !vx[j]) continue;
      switch (g.kind) {
        case AggKind::Count: st->count++; break;
        case AggKind::Sum: case AggKind::Min: case AggKind::Max: case AggKind::Mean:
          if (integer) {
            int64_t v = mx.values<int64_t>()[j];
            st->isum += static_cast<uint64_t>(v);
            st->imin = std::min(st->imin, v);
            st->imax = std::max(st->imax, v);
          } else {
            double v = mx.values<double>()[j];
            if (std::isnan(v)) continue;
            st->fsum += v;
            st->fmin = std::min(st->fmin, v);
            st->fmax = std::max(st->fmax, v);
          }
          st->count++;
          break;
        case AggKind::Hist1D: case AggKind::Hist2D: {
          double v = mx.values<double>()[j];
          double w = g.weight >= 0 ? mw.values<double>()[j] : 1.0;
          if (std::isnan(v) || std::isnan(w) || (vw && !vw[j])) continue;
          int64_t bin = BinOf(v, g.x_axis);
          if (g.kind == AggKind::Hist2D) {
            double y = my.values<double>()[j];
            if (std::isnan(y) || (vy && !vy[j])) continue;
            bin = bin * (g.y_axis.bins + 2) + BinOf(y, g.y_axis);
          }
          st->sumw[static_cast<size_t>(bin)] += w;
          st->sumw2[static_cast<size_t>(bin)] += w * w;
          st->count++;
          break;
        }
      }
    }
  }
  return arrow::Status::OK();
}

// ---------------------------------------------------------------- the scan

struct EvalState {
  explicit EvalState(size_t n) : values(n), done(n, false) {}
  std::vector<Value> values;
  std::vector<bool> done;
};

// Evaluates the nodes marked in `which` (and not done yet) over the rows of `batch`.
arrow::Status EvaluateBatch(const Plan& plan, const arrow::RecordBatch& batch,
                            const std::vector<bool>& which, EvalState* st, CallContext* ctx) {
  for (size_t i = 0; i < plan.nodes.size(); ++i) {
    if (!which[i] || st->done[i]) continue;
    const Node& n = plan.nodes[i];
    if (n.op == Op::Column) {
      const ColumnRef& c = plan.columns[n.column];
      auto arr = batch.GetColumnByName(c.name);
      if (!arr) return ErrnoStatus(EBADMSG, "column '" + c.name + "' missing from a batch");
      ARROW_ASSIGN_OR_RAISE(st->values[i], ColumnValue(*arr, c, ctx));
    } else {
      ARROW_RETURN_NOT_OK(ctx->CheckDeadline());
      ARROW_ASSIGN_OR_RAISE(st->values[i], EvaluateNode(plan, static_cast<uint32_t>(i), st->values,
                                                        batch.num_rows(), ctx));
    }
    st->done[i] = true;
  }
  return arrow::Status::OK();
}


arrow::Result<std::shared_ptr<arrow::Buffer>> Scan(const uint8_t* request, size_t request_len,
                                                   const std::shared_ptr<PositionalFile>& object,
                                                   const Limits& limits, ScanStats* stats,
                                                   int64_t cpu_start) {
  Plan plan;
  ARROW_RETURN_NOT_OK(DecodeRequest(request, request_len, limits, &plan));
  ARROW_ASSIGN_OR_RAISE(int64_t object_size, object->GetSize());
  stats->object_bytes = object_size;
  if (object_size > limits.max_object_bytes)
    return ErrnoStatus(EFBIG, "object of " + std::to_string(object_size) + " bytes, more than " +
                                  std::to_string(limits.max_object_bytes));
  CallContext ctx(limits.memory_per_object_byte * object_size + limits.memory_base,
                  limits.max_cpu_ns);
  object->set_pool(ctx.pool());
  // The object outlives this call; what it holds must not outlive the pool.
  struct Release {
    PositionalFile* file;
    ~Release() { file->ForgetPrefetched(/*all=*/true); file->set_pool(arrow::default_memory_pool()); }
  } release{object.get()};

  // Which format: Arrow IPC files start with ARROW1, Parquet files with PAR1.
  uint8_t magic[6] = {0};
  if (object_size < 12) return ErrnoStatus(EBADMSG, "object of " + std::to_string(object_size) +
                                                        " bytes is neither Arrow IPC nor Parquet");
  ARROW_RETURN_NOT_OK(object->ReadAt(0, 6, false, magic).status());
  std::unique_ptr<PartitionReader> reader;
  if (std::memcmp(magic, "ARROW1", 6) == 0) {
    auto r = std::make_unique<IpcPartition>(object, &ctx);
    ARROW_RETURN_NOT_OK(r->Open());
    reader = std::move(r);
  } else if (std::memcmp(magic, "PAR1", 4) == 0) {
    auto r = std::make_unique<ParquetPartition>(object, &ctx);
    ARROW_RETURN_NOT_OK(r->Open());
    reader = std::move(r);
  } else {
    return ErrnoStatus(EBADMSG, "object is neither an Arrow IPC file nor a Parquet file");
  }

  // Resolve columns against the schema, then type the whole DAG.
  std::vector<int> fields;
  for (ColumnRef& c : plan.columns) {
    for (int i = 0; i < reader->schema->num_fields(); ++i)
      if (reader->schema->field(i)->name() == c.name) { c.field_index = i; break; }
    if (c.field_index < 0) {
      std::string close;
      for (const auto& f : reader->schema->fields())
        if (f->name().find(c.name.substr(0, std::min<size_t>(c.name.size(), 4))) != std::string::npos &&
            close.size() < 200)
          close += (close.empty() ? "" : ", ") + f->name();
      return ErrnoStatus(ESRCH, "unknown column '" + c.name + "'" +
                                    (close.empty() ? "" : "; similar: " + close));
    }
    ARROW_ASSIGN_OR_RAISE(c.t, ColumnTypeOf(*reader->schema->field(c.field_index)));
    fields.push_back(c.field_index);
  }
  ARROW_RETURN_NOT_OK(TypeCheck(&plan, limits));
  std::vector<int> sorted = fields;
  std::sort(sorted.begin(), sorted.end());
  ARROW_RETURN_NOT_OK(reader->Select(sorted, plan.row_start, plan.row_stop));

  // Output schema and stream writer.
  arrow::FieldVector out_fields;
  // Nullability as the reference evaluator declares it (skyhook_py/reference.py may_be_null).
  std::vector<bool> may_be_null(plan.nodes.size(), false);
  for (size_t i = 0; i < plan.nodes.size(); ++i) {
    const Op op = plan.nodes[i].op;
    if (op == Op::First || op == Op::Last || op == Op::Index || op == Op::Min || op == Op::Max ||
        op == Op::Mean) {
      may_be_null[i] = true;
    } else if (!(op >= Op::Count && op <= Op::All)) {
      for (uint32_t a : plan.nodes[i].args) may_be_null[i] = may_be_null[i] || may_be_null[a];
    }
  }
  for (auto& [name, node] : plan.outputs) {
    const NodeType& t = plan.nodes[node].t;
    const bool nullable = may_be_null[node];
    if (t.is_list)
      out_fields.push_back(arrow::field(name, arrow::list(arrow::field("item", ArrowTypeOf(t.type), nullable)), false));
    else
      out_fields.push_back(arrow::field(name, ArrowTypeOf(t.type), nullable));
  }
  auto out_schema = arrow::schema(out_fields);
  ARROW_ASSIGN_OR_RAISE(auto sink, arrow::io::BufferOutputStream::Create(4096, ctx.pool()));
  auto wopts = arrow::ipc::IpcWriteOptions::Defaults();
  wopts.memory_pool = ctx.pool();
  wopts.use_threads = false;
  if (plan.compression != 0) {
    ARROW_ASSIGN_OR_RAISE(auto codec, arrow::util::Codec::Create(
                                          plan.compression == 1 ? arrow::Compression::LZ4_FRAME
                                                                : arrow::Compression::ZSTD));
    wopts.codec = std::move(codec);
  }
  ARROW_ASSIGN_OR_RAISE(auto writer, arrow::ipc::MakeStreamWriter(sink, out_schema, wopts));

  std::vector<AggState> aggs(plan.aggregations.size());
  for (size_t a = 0; a < aggs.size(); ++a) {
    const AggSpec& g = plan.aggregations[a];
    if (g.kind == AggKind::Hist1D || g.kind == AggKind::Hist2D) {
      size_t cells = (g.x_axis.bins + 2) * (g.kind == AggKind::Hist2D ? g.y_axis.bins + 2 : 1);
      aggs[a].sumw.assign(cells, 0.0);
      aggs[a].sumw2.assign(cells, 0.0);
    }
  }

  // Nodes needed for the filter alone: evaluated first, the rest only when rows pass.
  std::vector<bool> for_filter(plan.nodes.size(), false);
  if (plan.filter >= 0) {
    for_filter[plan.filter] = true;
    for (size_t i = plan.nodes.size(); i-- > 0;)
      if (for_filter[i])
        for (uint32_t a : plan.nodes[i].args) for_filter[a] = true;
  }

  // The cut runs on every row of the range (so that its errors and rows_matched do
  // not depend on the limit); outputs and aggregations only on the selected rows.
  int64_t remaining = plan.limit;  // -1: no limit
  bool evaluated = false;          // have outputs and aggregations been evaluated on any rows?
  while (true) {
    ARROW_RETURN_NOT_OK(ctx.CheckDeadline());
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
    ARROW_RETURN_NOT_OK(AsBadMessage(batch->ValidateFull(), "record batch at row " +
                                                                std::to_string(first_row)));
    // Cut to [row_start, row_stop).
    int64_t lo = std::max<int64_t>(0, plan.row_start - first_row);
    int64_t hi = batch->num_rows();
    if (plan.row_stop >= 0) hi = std::min(hi, plan.row_stop - first_row);
    if (hi <= lo) continue;
    if (lo > 0 || hi < batch->num_rows()) batch = batch->Slice(lo, hi - lo);
    stats->rows_scanned += batch->num_rows();

    EvalState all(plan.nodes.size());
    std::vector<int64_t> sel;
    if (plan.filter >= 0) {
      ARROW_RETURN_NOT_OK(EvaluateBatch(plan, *batch, for_filter, &all, &ctx));
      const Value& f = all.values[plan.filter];
      for (int64_t e = 0; e < batch->num_rows(); ++e) {
        bool keep = f.scalar ? f.ival != 0
                             : f.values<uint8_t>()[e] && (!f.valid || f.valid->data()[e]);
        if (keep) sel.push_back(e);  // a null cut drops the event
      }
    } else {
      for (int64_t e = 0; e < batch->num_rows(); ++e) sel.push_back(e);
    }
    stats->rows_matched += static_cast<int64_t>(sel.size());
    if (remaining >= 0 && static_cast<int64_t>(sel.size()) > remaining) sel.resize(static_cast<size_t>(remaining));
    if (remaining >= 0) remaining -= static_cast<int64_t>(sel.size());
    if (sel.empty()) continue;
    const int64_t n_sel = static_cast<int64_t>(sel.size());
    stats->rows_returned += n_sel;

    // The selected rows as their own batch (every row selected: the same batch and values).
    EvalState picked(plan.nodes.size());
    EvalState* st = &all;
    std::shared_ptr<arrow::RecordBatch> rows = batch;
    if (n_sel != batch->num_rows()) {
      st = &picked;
      if (sel.back() - sel.front() + 1 == n_sel) {
        rows = batch->Slice(sel.front(), n_sel);
      } else if (batch->num_columns() == 0) {
        rows = arrow::RecordBatch::Make(batch->schema(), n_sel, arrow::ArrayVector{});
      } else {
        arrow::Int64Builder idx(ctx.pool());
        ARROW_RETURN_NOT_OK(idx.AppendValues(sel));
        ARROW_ASSIGN_OR_RAISE(auto indices, idx.Finish());
        arrow::compute::ExecContext exec(ctx.pool());
        ARROW_ASSIGN_OR_RAISE(arrow::Datum taken,
                              arrow::compute::Take(batch, indices,
                                                   arrow::compute::TakeOptions::NoBoundsCheck(), &exec));
        rows = taken.record_batch();
      }
    }
    ARROW_RETURN_NOT_OK(EvaluateBatch(plan, *rows, plan.needed, st, &ctx));
    evaluated = true;
    std::vector<int64_t> identity(static_cast<size_t>(n_sel));
    for (int64_t e = 0; e < n_sel; ++e) identity[static_cast<size_t>(e)] = e;

    if (!plan.outputs.empty()) {
      arrow::ArrayVector cols;
      for (size_t o = 0; o < plan.outputs.size(); ++o) {
        ARROW_ASSIGN_OR_RAISE(auto arr, ToArrow(st->values[plan.outputs[o].second], identity,
                                                out_fields[o]->type(), &ctx));
        cols.push_back(std::move(arr));
      }
      ARROW_RETURN_NOT_OK(writer->WriteRecordBatch(*arrow::RecordBatch::Make(out_schema, n_sel, cols)));
      ARROW_ASSIGN_OR_RAISE(int64_t written, sink->Tell());
      if (written > plan.reply_cap)
        return ErrnoStatus(EMSGSIZE, "reply exceeds " + std::to_string(plan.reply_cap) + " bytes");
    }
    for (size_t a = 0; a < aggs.size(); ++a)
      ARROW_RETURN_NOT_OK(UpdateAggregate(plan, plan.aggregations[a], st->values, identity, n_sel,
                                          &aggs[a], &ctx));
  }
  if (!evaluated) {
    // No rows selected (or none at all: an empty file has no batch): errors that
    // depend only on types and literals are still raised (formats/README.md), so
    // evaluate once over no rows and drop the values.
    ARROW_ASSIGN_OR_RAISE(auto empty, arrow::RecordBatch::MakeEmpty(reader->schema, ctx.pool()));
    EvalState none(plan.nodes.size());
    ARROW_RETURN_NOT_OK(EvaluateBatch(plan, *empty, plan.needed, &none, &ctx));
  }
  ARROW_RETURN_NOT_OK(writer->Close());
  ARROW_ASSIGN_OR_RAISE(auto ipc, sink->Finish());
  if (ipc->size() > plan.reply_cap)
    return ErrnoStatus(EMSGSIZE, "reply exceeds " + std::to_string(plan.reply_cap) + " bytes");
  stats->bytes_read = object->bytes_read();

  // The reply.
  flatbuffers::FlatBufferBuilder fbb(static_cast<size_t>(ipc->size()) + 1024);
  auto stream = fbb.CreateVector(ipc->data(), static_cast<size_t>(ipc->size()));
  std::vector<flatbuffers::Offset<fb::AggregateResult>> results;
  for (size_t a = 0; a < aggs.size(); ++a) {
    const AggSpec& g = plan.aggregations[a];
    const AggState& s = aggs[a];
    auto name = fbb.CreateString(g.name);
    flatbuffers::Offset<flatbuffers::Vector<double>> sumw, sumw2;
    if (!s.sumw.empty()) {
      sumw = fbb.CreateVector(s.sumw);
      sumw2 = fbb.CreateVector(s.sumw2);
    }
    int64_t ival = 0;
    double fval = 0;
    // integers: the exact value in int_value (float_value 0); floats: float_value
    if (g.kind == AggKind::Sum || g.kind == AggKind::Mean) {
      if (s.is_integer) ival = static_cast<int64_t>(s.isum);
      else fval = s.fsum;
    } else if (s.count > 0 && (g.kind == AggKind::Min || g.kind == AggKind::Max)) {
      const bool mn = g.kind == AggKind::Min;
      if (s.is_integer) ival = mn ? s.imin : s.imax;
      else fval = mn ? s.fmin : s.fmax;
    }
    results.push_back(fb::CreateAggregateResult(fbb, name, static_cast<fb::AggKind>(g.kind), s.count,
                                                s.is_integer, ival, fval, sumw, sumw2));
  }
  auto aggregates = fbb.CreateVector(results);
  stats->cpu_ns = ThreadCpuNs() - cpu_start;
  auto figures = fb::CreateFigures(fbb, stats->rows_scanned, stats->rows_matched,
                                   stats->rows_returned, stats->bytes_read, stats->object_bytes,
                                   stats->cpu_ns);
  fbb.Finish(fb::CreateScanReply(fbb, 1, figures, stream, aggregates), fb::ScanRequestIdentifier());
  if (static_cast<int64_t>(fbb.GetSize()) > plan.reply_cap)
    return ErrnoStatus(EMSGSIZE, "reply of " + std::to_string(fbb.GetSize()) + " bytes exceeds " +
                                     std::to_string(plan.reply_cap));
  ARROW_ASSIGN_OR_RAISE(auto out, arrow::AllocateBuffer(fbb.GetSize()));
  std::memcpy(out->mutable_data(), fbb.GetBufferPointer(), fbb.GetSize());
  return std::shared_ptr<arrow::Buffer>(std::move(out));
}

}  // namespace

arrow::Result<std::shared_ptr<arrow::Buffer>> RunScan(const uint8_t* request, size_t request_len,
                                                      const std::shared_ptr<PositionalFile>& object,
                                                      const Limits& limits, ScanStats* stats) {
  const int64_t start = ThreadCpuNs();
  arrow::Result<std::shared_ptr<arrow::Buffer>> result;
  try {
    result = Scan(request, request_len, object, limits, stats, start);
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
