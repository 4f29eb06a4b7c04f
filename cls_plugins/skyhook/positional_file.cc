// Positional reads: the read-only RandomAccessFile over one object
// (scan_kernel.h PositionalFile).  Every range is checked against the object's
// size (EBADMSG past the end), buffers come from the call's pool, and
// prefetched ranges serve later reads as zero-copy slices (the IPC partition's
// read coalescing).  The one real read, DoReadAt, is cls_cxx_read in the OSD
// (cls_skyhook.cc) and pread locally (scan_local.cc).

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "kernel_internal.h"

namespace skyhook {

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
  if (n > 0 && checksums_.block > 0) {
    ARROW_ASSIGN_OR_RAISE(int64_t got, ReadVerified(position, n, static_cast<uint8_t*>(out)));
    bytes_read_ += got;
    return n;
  }
  if (n > 0) {
    ARROW_RETURN_NOT_OK(DoReadAt(position, n, static_cast<uint8_t*>(out)));
    ++read_calls_;
  }
  bytes_read_ += n;
  return n;
}

arrow::Result<int64_t> PositionalFile::ReadVerified(int64_t position, int64_t n, uint8_t* out) {
  if (edge_start_ >= 0 && position >= edge_start_ &&
      position + n <= edge_start_ + static_cast<int64_t>(edge_.size())) {
    std::memcpy(out, edge_.data() + (position - edge_start_), static_cast<size_t>(n));
    return 0;
  }
  const int64_t block = checksums_.block;
  const int64_t first = position / block, last = (position + n - 1) / block;
  if (last >= static_cast<int64_t>(checksums_.crcs.size()))
    return ErrnoStatus(EBADMSG, "read past the checksummed blocks");
  const int64_t start = first * block, stop = std::min(size_, (last + 1) * block);
  // The widened range, from the call's pool (counted against its memory cap).
  ARROW_ASSIGN_OR_RAISE(auto buf, arrow::AllocateBuffer(stop - start, pool_));
  ARROW_RETURN_NOT_OK(DoReadAt(start, stop - start, buf->mutable_data()));
  ++read_calls_;
  ARROW_RETURN_NOT_OK(VerifyBlocks(buf->data(), first, last));
  std::memcpy(out, buf->data() + (position - start), static_cast<size_t>(n));
  if (stop - start <= 2 * block) {  // small reads come in runs (trailer, footer, metadata)
    edge_.assign(buf->data(), buf->data() + (stop - start));
    edge_start_ = start;
  }
  return stop - start;
}

arrow::Status PositionalFile::VerifyBlocks(const uint8_t* data, int64_t first, int64_t last) const {
  const int64_t block = checksums_.block, start = first * block;
  for (int64_t b = first; b <= last; ++b) {
    const int64_t at = b * block, len = std::min(block, size_ - at);
    if (Crc32c(0, data + (at - start), static_cast<size_t>(len)) !=
        checksums_.crcs[static_cast<size_t>(b)])
      return ErrnoStatus(EBADMSG, "checksum mismatch in block " + std::to_string(b) + " (bytes " +
                                      std::to_string(at) + ".." + std::to_string(at + len) + ")");
  }
  return arrow::Status::OK();
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
  if (n == 0) {
    ARROW_ASSIGN_OR_RAISE(auto empty, arrow::AllocateBuffer(0, pool_));
    return std::shared_ptr<arrow::Buffer>(std::move(empty));
  }
  // With checksums the read is widened to whole blocks, verified, and sliced (zero copy).
  int64_t start = position, stop = position + n, first = 0, last = -1;
  if (checksums_.block > 0) {
    const int64_t block = checksums_.block;
    first = position / block;
    last = (position + n - 1) / block;
    if (last >= static_cast<int64_t>(checksums_.crcs.size()))
      return ErrnoStatus(EBADMSG, "read past the checksummed blocks");
    start = first * block;
    stop = std::min(size_, (last + 1) * block);
  }
  bool pooled = true;
  ARROW_ASSIGN_OR_RAISE(auto buf, DoReadBuffer(start, stop - start, pool_, &pooled));
  ++read_calls_;
  bytes_read_ += stop - start;
  if (!pooled) {
    unpooled_bytes_ += stop - start;
    if (unpooled_bytes_ > unpooled_cap_)
      return ErrnoStatus(ENOMEM, "reads of " + std::to_string(unpooled_bytes_) +
                                     " bytes exceed the call's memory budget");
  }
  if (last >= first) ARROW_RETURN_NOT_OK(VerifyBlocks(buf->data(), first, last));
  return start == position && stop - start == n ? buf : arrow::SliceBuffer(buf, position - start, n);
}

arrow::Result<std::shared_ptr<arrow::Buffer>> PositionalFile::DoReadBuffer(int64_t position,
                                                                           int64_t nbytes,
                                                                           arrow::MemoryPool* pool,
                                                                           bool* pooled) {
  *pooled = true;
  ARROW_ASSIGN_OR_RAISE(auto buf, arrow::AllocateBuffer(nbytes, pool));
  ARROW_RETURN_NOT_OK(DoReadAt(position, nbytes, buf->mutable_data()));
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

}  // namespace skyhook
