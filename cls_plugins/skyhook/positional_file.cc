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

arrow::Status PositionalFile::Prefetch(int64_t position, int64_t nbytes, bool keep) {
  ARROW_RETURN_NOT_OK(Clamp(position, nbytes, /*allow_short_read=*/false).status());
  if (nbytes == 0) return arrow::Status::OK();
  std::vector<Region> parts;
  if (Cover(held_, position, nbytes, &parts)) {  // read already (a small object's trailer read holds it all)
    for (Region& r : parts) held_.push_back({r.start, std::move(r.data), keep});
    return arrow::Status::OK();
  }
  std::vector<Piece> pieces;
  ARROW_RETURN_NOT_OK(ReadPieces(position, nbytes, &pieces));
  for (Piece& p : pieces) held_.push_back({p.start, std::move(p.data), keep});
  return arrow::Status::OK();
}

bool PositionalFile::Cover(const std::vector<Region>& from, int64_t position, int64_t n,
                           std::vector<Region>* parts) {
  while (n > 0) {  // each step: the range with the most bytes from `position`
    const Region* best = nullptr;
    for (const Region& r : from)
      if (position >= r.start && position < r.start + r.data->size() &&
          (!best || r.start + r.data->size() > best->start + best->data->size()))
        best = &r;
    if (!best) return false;
    const int64_t k = std::min(n, best->start + best->data->size() - position);
    parts->push_back({position, arrow::SliceBuffer(best->data, position - best->start, k), best->keep});
    position += k;
    n -= k;
  }
  return true;
}

arrow::Result<std::shared_ptr<arrow::Buffer>> PositionalFile::Join(int64_t position, int64_t n,
                                                                   const std::vector<Region>& parts) const {
  if (parts.size() == 1) return parts[0].data;  // zero copy
  ARROW_ASSIGN_OR_RAISE(auto joined, arrow::AllocateBuffer(n, pool_));
  for (const Region& r : parts)
    std::memcpy(joined->mutable_data() + (r.start - position), r.data->data(), static_cast<size_t>(r.data->size()));
  return std::shared_ptr<arrow::Buffer>(std::move(joined));
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
  int64_t start = 0, stop = 0;
  ARROW_RETURN_NOT_OK(Widen(position, n, &start, &stop));
  // The widened range, from the call's pool (counted against its memory cap).
  ARROW_ASSIGN_OR_RAISE(std::shared_ptr<arrow::Buffer> buf, arrow::AllocateBuffer(stop - start, pool_));
  ARROW_RETURN_NOT_OK(DoReadAt(start, stop - start, buf->mutable_data()));
  ++read_calls_;
  ARROW_RETURN_NOT_OK(VerifyPieces({{start, buf, true}}));
  std::memcpy(out, buf->data() + (position - start), static_cast<size_t>(n));
  if (stop - start <= 2 * checksums_.block) {  // small reads come in runs (trailer, footer, metadata)
    edge_.assign(buf->data(), buf->data() + (stop - start));
    edge_start_ = start;
  }
  return stop - start;
}

arrow::Result<int64_t> PositionalFile::ReadAt(int64_t position, int64_t nbytes, void* out) {
  return ReadAt(position, nbytes, true, out);
}

arrow::Result<std::shared_ptr<arrow::Buffer>> PositionalFile::ReadAt(int64_t position,
                                                                     int64_t nbytes,
                                                                     bool allow_short_read) {
  ARROW_ASSIGN_OR_RAISE(int64_t n, Clamp(position, nbytes, allow_short_read));
  if (n == 0) {
    ARROW_ASSIGN_OR_RAISE(auto empty, arrow::AllocateBuffer(0, pool_));
    return std::shared_ptr<arrow::Buffer>(std::move(empty));
  }
  // Slices of the prefetched ranges, else of a new read; copied only when they are
  // several (the range spans pieces).
  std::vector<Region> parts;
  if (!Cover(held_, position, n, &parts)) {
    std::vector<Piece> pieces;
    ARROW_RETURN_NOT_OK(ReadPieces(position, n, &pieces));
    std::vector<Region> read;
    for (Piece& p : pieces) read.push_back({p.start, std::move(p.data), false});
    parts.clear();
    Cover(read, position, n, &parts);  // the read covers the range (ReadPieces checked)
  }
  return Join(position, n, parts);
}

arrow::Status PositionalFile::Widen(int64_t position, int64_t n, int64_t* start, int64_t* stop) const {
  const int64_t block = checksums_.block;
  const int64_t first = position / block, last = (position + n - 1) / block;
  if (last >= static_cast<int64_t>(checksums_.crcs.size()))
    return ErrnoStatus(EBADMSG, "read past the checksummed blocks");
  *start = first * block;
  *stop = std::min(size_, (last + 1) * block);
  return arrow::Status::OK();
}

arrow::Status PositionalFile::ReadPieces(int64_t position, int64_t n, std::vector<Piece>* pieces) {
  // With checksums the read is widened to whole blocks and verified.
  int64_t start = position, stop = position + n;
  if (checksums_.block > 0) ARROW_RETURN_NOT_OK(Widen(position, n, &start, &stop));
  ARROW_RETURN_NOT_OK(DoReadPieces(start, stop - start, pool_, pieces));
  ++read_calls_;
  bytes_read_ += stop - start;
  int64_t at = start;
  for (const Piece& p : *pieces) {
    if (p.start != at || p.data->size() <= 0) return ErrnoStatus(EIO, "the object store's read came back with a gap");
    at += p.data->size();
    if (!p.pooled) unpooled_bytes_ += p.data->size();
  }
  if (at != stop) return ErrnoStatus(EIO, "the object store's read came back short");
  if (unpooled_bytes_ > unpooled_cap_)
    return ErrnoStatus(ENOMEM, "reads of " + std::to_string(unpooled_bytes_) +
                                   " bytes exceed the call's memory budget");
  return checksums_.block > 0 ? VerifyPieces(*pieces) : arrow::Status::OK();
}

arrow::Status PositionalFile::VerifyPieces(const std::vector<Piece>& pieces) const {
  const int64_t block = checksums_.block;
  int64_t b = pieces.front().start / block;  // the block being summed
  int64_t in_block = 0;                       // its bytes summed so far
  uint32_t crc = 0;
  for (const Piece& p : pieces) {
    const uint8_t* d = p.data->data();
    for (int64_t left = p.data->size(); left > 0;) {
      const int64_t len = std::min(block, size_ - b * block);
      const int64_t k = std::min(left, len - in_block);
      crc = Crc32c(crc, d, static_cast<size_t>(k));
      d += k;
      left -= k;
      in_block += k;
      if (in_block == len) {
        if (crc != checksums_.crcs[static_cast<size_t>(b)])
          return ErrnoStatus(EBADMSG, "checksum mismatch in block " + std::to_string(b) + " (bytes " +
                                          std::to_string(b * block) + ".." + std::to_string(b * block + len) + ")");
        ++b;
        in_block = 0;
        crc = 0;
      }
    }
  }
  return arrow::Status::OK();
}

arrow::Status PositionalFile::DoReadPieces(int64_t position, int64_t nbytes, arrow::MemoryPool* pool,
                                           std::vector<Piece>* pieces) {
  ARROW_ASSIGN_OR_RAISE(auto buf, arrow::AllocateBuffer(nbytes, pool));
  ARROW_RETURN_NOT_OK(DoReadAt(position, nbytes, buf->mutable_data()));
  pieces->push_back({position, std::shared_ptr<arrow::Buffer>(std::move(buf)), true});
  return arrow::Status::OK();
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
