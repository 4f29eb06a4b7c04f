// The Arrow IPC partition reader, with read coalescing (see ipc_layout below).

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <list>
#include <mutex>
#include <string>

#include <arrow/io/interfaces.h>
#include <arrow/ipc/reader.h>
#include <flatbuffers/flatbuffers.h>

#include "partition.h"

namespace skyhook {

namespace {

// Arrow's IPC file reader, left to itself, reads the footer, the message and the
// needed buffers of a batch one ReadAt at a time; each is a cls_cxx_read in the
// OSD.  So the scan reads the footer's block list and the batch's message
// itself (the raw flatbuffers of Arrow's File.fbs/Message.fbs, verified), and
// prefetches the needed buffers in ranges merged across gaps of at most
// kCoalesceGap bytes.  The batch is then decoded by
// arrow::ipc::ReadRecordBatch(message, ..., BodyFile), which takes each buffer
// as a zero-copy slice of a prefetched range.  This is only a plan: on anything
// unexpected (a type it does not know, dictionaries, a failed check) it
// prefetches nothing and Arrow's file reader reads, and validates, as before.
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

// Flatbuffers are read in place through typed pointers, which must be aligned
// (UBSan: "member call on misaligned address" for a footer at an odd offset of
// the file): `ptr` is `data` when it is 8-aligned, else an aligned copy.
struct AlignedBytes {
  AlignedBytes(const uint8_t* data, size_t n) {
    if (reinterpret_cast<uintptr_t>(data) % 8 == 0) {
      ptr = data;
      return;
    }
    copy.resize((n + 7) / 8);
    if (n > 0) std::memcpy(copy.data(), data, n);
    ptr = reinterpret_cast<const uint8_t*>(copy.data());
  }
  const uint8_t* ptr;
  std::vector<uint64_t> copy;
};

// The elements of a verified flatbuffer vector of structs, copied out byte by
// byte: the verifier checks the alignment of the vector's length field only, so a
// malformed buffer can put 8-byte structs at an offset of 4 (UBSan: "reference
// binding to misaligned address"; a libFuzzer finding), and they are never read
// through a typed pointer.
template <typename T>
void CopyStructs(const flatbuffers::Vector<const T*>& vec, std::vector<T>* out) {
  const uint8_t* data = vec.Data();
  for (flatbuffers::uoffset_t i = 0; i < vec.size(); ++i) {
    T item;
    std::memcpy(&item, data + static_cast<size_t>(i) * sizeof(T), sizeof(T));
    out->push_back(item);
  }
}

// The record batch blocks of the footer, or empty.
std::vector<Block> FooterBlocks(const arrow::Buffer& footer) {
  AlignedBytes bytes(footer.data(), static_cast<size_t>(footer.size()));
  flatbuffers::Verifier v(bytes.ptr, static_cast<size_t>(footer.size()));
  auto* t = footer.size() < 8 ? nullptr : RootTable(v, bytes.ptr);
  if (!t) return {};
  using Blocks = flatbuffers::Vector<const Block*>;
  if (!t->VerifyOffset(v, kFooterDictionaries) || !t->VerifyOffset(v, kFooterRecordBatches)) return {};
  auto* dicts = t->GetPointer<const Blocks*>(kFooterDictionaries);
  auto* batches = t->GetPointer<const Blocks*>(kFooterRecordBatches);
  if (!v.VerifyVector(dicts) || !v.VerifyVector(batches) || !batches) return {};
  if (dicts && dicts->size() > 0) return {};  // dictionary batches: leave it to Arrow
  std::vector<Block> out;
  CopyStructs(*batches, &out);
  return out;
}

// The body buffers listed by a record batch message (prefix + flatbuffer), and
// where its flatbuffer lies in `meta`; or false.
bool MessageBuffers(const arrow::Buffer& meta, std::vector<BufferSpec>* out, int64_t* fb_start,
                    int64_t* fb_length) {
  int64_t at = 4;
  if (meta.size() < 8) return false;
  int32_t len;
  std::memcpy(&len, meta.data(), 4);
  if (len == -1) {  // continuation marker, then the length
    std::memcpy(&len, meta.data() + 4, 4);
    at = 8;
  }
  if (len <= 0 || at + len > meta.size()) return false;
  AlignedBytes bytes(meta.data() + at, static_cast<size_t>(len));
  const uint8_t* fb = bytes.ptr;
  flatbuffers::Verifier v(fb, static_cast<size_t>(len));
  auto* m = RootTable(v, fb);
  if (!m || !m->VerifyField<uint8_t>(v, kMessageHeaderType, 1) || !m->VerifyOffset(v, kMessageHeader) ||
      m->GetField<uint8_t>(kMessageHeaderType, 0) != kHeaderRecordBatch)
    return false;
  auto* rb = m->GetPointer<const flatbuffers::Table*>(kMessageHeader);
  if (!rb || !rb->VerifyTableStart(v) || !rb->VerifyOffset(v, kRecordBatchBuffers)) return false;
  auto* bufs = rb->GetPointer<const flatbuffers::Vector<const BufferSpec*>*>(kRecordBatchBuffers);
  if (!bufs || !v.VerifyVector(bufs)) return false;
  CopyStructs(*bufs, out);
  *fb_start = at;
  *fb_length = len;
  return true;
}

// The body of one record batch message as a file of its own (positions
// relative to the body, reads limited to it), over the partition's file: what
// arrow::ipc::ReadRecordBatch(metadata, ..., file) reads the buffers from, one
// ReadAt each, served as zero-copy slices of the prefetched ranges.  (Arrow's
// file reader with included_fields instead allocates a buffer of the whole
// body outside the call's pool and copies every needed buffer into it.)
class BodyFile : public arrow::io::RandomAccessFile {
 public:
  BodyFile(std::shared_ptr<PositionalFile> file, int64_t start, int64_t length)
      : file_(std::move(file)), start_(start), length_(length) {}
  arrow::Status Close() override { return arrow::Status::OK(); }
  bool closed() const override { return false; }
  arrow::Result<int64_t> Tell() const override { return position_; }
  arrow::Status Seek(int64_t position) override {
    ARROW_RETURN_NOT_OK(Check(position, 0));
    position_ = position;
    return arrow::Status::OK();
  }
  arrow::Result<int64_t> GetSize() override { return length_; }
  arrow::Result<int64_t> Read(int64_t nbytes, void* out) override {
    ARROW_ASSIGN_OR_RAISE(int64_t n, ReadAt(position_, nbytes, true, out));
    position_ += n;
    return n;
  }
  arrow::Result<std::shared_ptr<arrow::Buffer>> Read(int64_t nbytes) override {
    ARROW_ASSIGN_OR_RAISE(auto buf, ReadAt(position_, nbytes, true));
    position_ += buf->size();
    return buf;
  }
  arrow::Result<int64_t> ReadAt(int64_t position, int64_t nbytes, bool allow_short_read,
                                void* out) override {
    ARROW_ASSIGN_OR_RAISE(int64_t n, Clamp(position, nbytes, allow_short_read));
    return file_->ReadAt(start_ + position, n, false, out);
  }
  arrow::Result<int64_t> ReadAt(int64_t position, int64_t nbytes, void* out) override {
    return ReadAt(position, nbytes, true, out);
  }
  arrow::Result<std::shared_ptr<arrow::Buffer>> ReadAt(int64_t position, int64_t nbytes,
                                                       bool allow_short_read) override {
    ARROW_ASSIGN_OR_RAISE(int64_t n, Clamp(position, nbytes, allow_short_read));
    return file_->ReadAt(start_ + position, n, false);
  }
  arrow::Result<std::shared_ptr<arrow::Buffer>> ReadAt(int64_t position, int64_t nbytes) override {
    return ReadAt(position, nbytes, true);
  }
  // Synchronous, as PositionalFile's: no work on the OSD's other threads.
  arrow::Future<std::shared_ptr<arrow::Buffer>> ReadAsync(const arrow::io::IOContext&, int64_t position,
                                                          int64_t nbytes, bool allow_short_read) override {
    return arrow::Future<std::shared_ptr<arrow::Buffer>>::MakeFinished(ReadAt(position, nbytes, allow_short_read));
  }
  arrow::Future<std::shared_ptr<arrow::Buffer>> ReadAsync(const arrow::io::IOContext& ctx, int64_t position,
                                                          int64_t nbytes) override {
    return ReadAsync(ctx, position, nbytes, true);
  }
  arrow::Status WillNeed(const std::vector<arrow::io::ReadRange>&) override {
    return arrow::Status::OK();
  }

 private:
  arrow::Status Check(int64_t position, int64_t nbytes) const {
    if (position < 0 || nbytes < 0 || position > length_)
      return ErrnoStatus(EBADMSG, "buffer at " + std::to_string(position) + " outside the message body of " +
                                      std::to_string(length_) + " bytes");
    return arrow::Status::OK();
  }
  arrow::Result<int64_t> Clamp(int64_t position, int64_t nbytes, bool allow_short_read) const {
    ARROW_RETURN_NOT_OK(Check(position, nbytes));
    int64_t n = std::min(nbytes, length_ - position);
    if (n < nbytes && !allow_short_read)
      return ErrnoStatus(EBADMSG, "buffer of " + std::to_string(nbytes) + " bytes at " +
                                      std::to_string(position) + " past the message body of " +
                                      std::to_string(length_) + " bytes");
    return n;
  }
  std::shared_ptr<PositionalFile> file_;
  int64_t start_, length_;
  int64_t position_ = 0;
};

}  // namespace ipc_layout

// Parsed footers, shared by every call in this process.  Arrow's parse of a
// 148-column schema was about a tenth of the OSD's CPU for a small query
// (perf, 8 partitions of 6,250 events).  An entry is found by the footer's
// bytes themselves (the parse depends on nothing else), so a rewritten object
// never meets a stale one.  At most kEntries footers of kMaxFooter bytes each:
// outside the call's pool, 16 MiB at worst.
class FooterCache {
 public:
  struct Entry {
    std::string footer;
    std::shared_ptr<arrow::Schema> schema;
    int num_batches;
  };
  static FooterCache& Get() {
    static FooterCache* cache = new FooterCache;  // never destroyed: calls may run at exit
    return *cache;
  }
  std::shared_ptr<const Entry> Find(const arrow::Buffer& footer) {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto it = entries_.begin(); it != entries_.end(); ++it)
      if ((*it)->footer.size() == static_cast<size_t>(footer.size()) &&
          std::memcmp((*it)->footer.data(), footer.data(), (*it)->footer.size()) == 0) {
        entries_.splice(entries_.begin(), entries_, it);  // most recent first
        return entries_.front();
      }
    return nullptr;
  }
  void Put(const arrow::Buffer& footer, std::shared_ptr<arrow::Schema> schema, int num_batches) {
    if (footer.size() > kMaxFooter) return;
    auto e = std::make_shared<Entry>(Entry{footer.ToString(), std::move(schema), num_batches});
    std::lock_guard<std::mutex> lock(mu_);
    entries_.push_front(std::move(e));
    if (entries_.size() > kEntries) entries_.pop_back();
  }

 private:
  static constexpr size_t kEntries = 64;
  static constexpr int64_t kMaxFooter = 256 * 1024;
  std::mutex mu_;
  std::list<std::shared_ptr<const Entry>> entries_;
};

class IpcPartition : public PartitionReader {
 public:
  IpcPartition(std::shared_ptr<PositionalFile> file, CallContext* ctx)
      : file_(std::move(file)), ctx_(ctx) {}

  arrow::Status Open() {
    ARROW_RETURN_NOT_OK(ReadFooter());
    if (auto hit = footer_ ? FooterCache::Get().Find(*footer_) : nullptr) {
      schema = hit->schema;
      num_batches_ = hit->num_batches;
    } else {
      auto r = arrow::ipc::RecordBatchFileReader::Open(file_, Options());
      ARROW_RETURN_NOT_OK(AsBadMessage(r.status(), "not a valid Arrow IPC file"));
      schema = (*r)->schema();
      num_batches_ = (*r)->num_record_batches();
      if (footer_) FooterCache::Get().Put(*footer_, schema, num_batches_);
    }
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
    fields_ = fields;
    if (fields_.empty()) fields_ = {0};  // Arrow reads all for an empty list
    start_ = start;
    stop_ = stop;
    return arrow::Status::OK();
  }

  arrow::Result<int64_t> TotalRows() override {
    ARROW_RETURN_NOT_OK(OpenReader());
    auto r = reader_->CountRows();  // reads each batch's metadata only
    ARROW_RETURN_NOT_OK(AsBadMessage(r.status(), "record batch metadata"));
    return *r;
  }

  arrow::Result<std::shared_ptr<arrow::RecordBatch>> Next(int64_t* first_row) override {
    // Batches are read one by one (their row counts are in their own metadata).
    while (next_ < num_batches_) {
      if (stop_ >= 0 && row_ >= stop_) return nullptr;
      std::shared_ptr<arrow::Buffer> message;  // the batch's message flatbuffer, when planned
      ARROW_RETURN_NOT_OK(PrefetchBatch(next_, &message));
      arrow::Result<std::shared_ptr<arrow::RecordBatch>> r;
      if (message) {
        const ipc_layout::Block& b = blocks_[static_cast<size_t>(next_)];
        ipc_layout::BodyFile body(file_, b.offset + b.meta_length, b.body_length);
        auto opts = Options();
        opts.included_fields = fields_;
        r = arrow::ipc::ReadRecordBatch(*message, schema, nullptr, opts, &body);
        ++next_;
      } else {
        ARROW_RETURN_NOT_OK(OpenReader());
        r = reader_->ReadRecordBatch(next_++);
      }
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
  // Arrow's file reader of the selected fields, opened when first needed: for a
  // batch without a read plan, or to count rows from metadata.
  arrow::Status OpenReader() {
    if (reader_) return arrow::Status::OK();
    auto opts = Options();
    opts.included_fields = fields_;
    auto r = arrow::ipc::RecordBatchFileReader::Open(file_, opts);
    ARROW_RETURN_NOT_OK(AsBadMessage(r.status(), "not a valid Arrow IPC file"));
    reader_ = *r;
    return arrow::Status::OK();
  }
  // Keeps the trailer and footer (both Arrow opens read them) and notes the
  // batch blocks.  Short or odd files are left to Arrow's own checks.
  arrow::Status ReadFooter() {
    ARROW_ASSIGN_OR_RAISE(int64_t size, file_->GetSize());
    if (size < 6 + 8 + 10) return arrow::Status::OK();
    // Trailer and footer come from the last TailBytes, which OpenPartition holds
    // (it read them for the format's magic); a longer footer takes a second read.
    const int64_t guess = TailBytes(size);
    ARROW_ASSIGN_OR_RAISE(auto tail, file_->ReadAt(size - guess, guess));
    const uint8_t* trailer = tail->data() + guess - 10;
    int32_t footer_len;
    std::memcpy(&footer_len, trailer, 4);
    if (std::memcmp(trailer + 4, "ARROW1", 6) != 0 || footer_len <= 0 || footer_len > size - 10 - 8)
      return arrow::Status::OK();
    if (footer_len + 10 > guess) {
      ARROW_RETURN_NOT_OK(file_->Prefetch(size - 10 - footer_len, footer_len + 10, true));
      ARROW_ASSIGN_OR_RAISE(tail, file_->ReadAt(size - 10 - footer_len, footer_len + 10));
    }
    const int64_t at = tail->size() - 10 - footer_len;
    auto footer = arrow::SliceBuffer(tail, at, footer_len);
    blocks_ = ipc_layout::FooterBlocks(*footer);
    if (!blocks_.empty()) footer_ = std::move(footer);  // a footer that verified as File.fbs
    return arrow::Status::OK();
  }

  // Reads the needed buffers of batch i in coalesced ranges (see ipc_layout);
  // `message`: its message flatbuffer, or null when there is no plan.
  arrow::Status PrefetchBatch(int i, std::shared_ptr<arrow::Buffer>* message) {
    file_->ForgetPrefetched();
    if (i >= static_cast<int>(blocks_.size()) || field_buffers_.empty()) return arrow::Status::OK();
    const ipc_layout::Block& b = blocks_[static_cast<size_t>(i)];
    ARROW_ASSIGN_OR_RAISE(int64_t size, file_->GetSize());
    if (b.offset < 8 || b.meta_length < 8 || b.body_length < 0 || b.offset > size ||
        b.meta_length > size - b.offset || b.body_length > size - b.offset - b.meta_length)
      return arrow::Status::OK();
    ARROW_RETURN_NOT_OK(file_->Prefetch(b.offset, b.meta_length, false));
    ARROW_ASSIGN_OR_RAISE(auto meta, file_->ReadAt(b.offset, b.meta_length));
    std::vector<ipc_layout::BufferSpec> buffers;
    int64_t fb_start = 0, fb_length = 0;
    if (!ipc_layout::MessageBuffers(*meta, &buffers, &fb_start, &fb_length)) return arrow::Status::OK();
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
      ARROW_RETURN_NOT_OK(file_->Prefetch(start, end - start, false));
      g = h;
    }
    *message = arrow::SliceBuffer(meta, fb_start, fb_length);
    return arrow::Status::OK();
  }

  std::shared_ptr<PositionalFile> file_;
  CallContext* ctx_;
  std::shared_ptr<arrow::ipc::RecordBatchFileReader> reader_;
  std::shared_ptr<arrow::Buffer> footer_;            // its bytes, when FooterBlocks verified them
  std::vector<ipc_layout::Block> blocks_;            // from the footer; empty: no plans
  std::vector<std::pair<int, int>> field_buffers_;   // per top-level field: first buffer, count
  std::vector<int> fields_;                          // the included fields
  int next_ = 0, num_batches_ = 0;
  int64_t row_ = 0, start_ = 0, stop_ = -1;
};

}  // namespace

int64_t TailBytes(int64_t object_size) {
  return std::max<int64_t>(10, std::min<int64_t>(object_size / 4, 64 * 1024));
}

arrow::Result<std::unique_ptr<PartitionReader>> OpenIpcPartition(std::shared_ptr<PositionalFile> file,
                                                                 CallContext* ctx) {
  auto r = std::make_unique<IpcPartition>(std::move(file), ctx);
  ARROW_RETURN_NOT_OK(r->Open());
  return std::unique_ptr<PartitionReader>(std::move(r));
}

}  // namespace skyhook
