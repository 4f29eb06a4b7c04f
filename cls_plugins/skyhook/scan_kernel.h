// The compute kernel of the `skyhook` object class, in plain Arrow C++.
//
// RunScan decodes and validates a ScanRequest (formats/skyhook_scan.fbs),
// reads only the needed parts of one partition (an Arrow IPC file or a Parquet
// file) through an arrow::io::RandomAccessFile, evaluates the expression IR with
// NanoAOD jagged semantics (formats/README.md) and encodes a ScanReply.
//
// It knows nothing of Ceph: no objclass.h here, so the same kernel runs in the
// OSD (cls_skyhook.cc) and on a local file (scan_local.cc).  Every failure is an
// arrow::Status carrying the errno of the formats/README.md table
// (StatusToErrno); no exception is meant to leave it, and callers still wrap it
// in a catch-all.
#pragma once

#include <climits>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include <arrow/buffer.h>
#include <arrow/io/interfaces.h>
#include <arrow/memory_pool.h>
#include <arrow/result.h>
#include <arrow/status.h>
#include <arrow/util/future.h>

#include "checksum.h"

namespace skyhook {

// The limits of formats/README.md; tests may lower them.
struct Limits {
  int64_t max_request_bytes = 1 << 20;
  int64_t max_nodes = 10000;
  int64_t max_depth = 256;
  int64_t max_aggregations = 64;
  int64_t max_hist_bins = 1000000;
  int64_t max_object_bytes = int64_t{1} << 30;
  int64_t max_reply_bytes = int64_t{256} << 20;  // hard cap, whatever the client asks
  int64_t max_cpu_ns = int64_t{10} * 1000 * 1000 * 1000;
  // the CPU budget of one call: cpu_base_ns + cpu_ns_per_object_byte * object size,
  // at most max_cpu_ns (a 1 MiB partition gets 1.13 s, 64 MiB the full 10 s)
  int64_t cpu_base_ns = int64_t{1000} * 1000 * 1000;
  int64_t cpu_ns_per_object_byte = 128;
  // memory budget: memory_per_object_byte * object size + memory_base
  int64_t memory_per_object_byte = 4;
  int64_t memory_base = int64_t{256} << 20;
  // ... and never more than this per call, histograms, the reply flatbuffer and its
  // copy included: half of a 1 GiB osd_memory_target (objclass.h gives a class no
  // access to the OSD's configuration, so this is a constant; formats/README.md)
  int64_t max_call_memory = int64_t{512} << 20;
  // cells (bins + under/overflow) of all histograms of one request together
  int64_t max_total_hist_cells = 4000000;
  // the time slice of one call in ns of CPU (0: none, the call runs to the end of
  // its range); the OSD sets it per call (cls_skyhook.cc: shorter for a client
  // that uses more than its share), a request may ask for a shorter one
  int64_t slice_ns = 0;
  // with a slice: the first chunk's rows are this divided by the request's nodes
  // (at least 16), so that a request of thousands of nodes starts small
  int64_t first_chunk_node_rows = 1 << 20;
  // a call that has used this much CPU (decoding included) before it scanned its
  // first chunk stops with -EBUSY (0: never); the OSD sets it for a client that uses
  // more than its share while others wait, so that its calls stay short however
  // costly the request
  int64_t busy_cap_ns = 0;
};

// The largest request a call accepts: max_request_bytes plus the most histogram
// state a resumed request (ScanRequest.resume) can carry.
int64_t MaxRequestBytes(const Limits& limits);

// What one call did, for the reply's Figures and for the callers' logs.
struct ScanStats {
  int64_t rows_scanned = 0;
  int64_t rows_matched = 0;
  int64_t rows_returned = 0;
  int64_t bytes_read = 0;
  int64_t object_bytes = 0;
  int64_t cpu_ns = 0;
  int64_t resume_row = -1;  // the time slice ended before this row (-1: the range is done)
};

// A read-only RandomAccessFile over an object of known size, defined by one
// positional read (cls_cxx_read in the OSD, pread locally).  It checks every
// range against the size, allocates from the call's memory pool and counts
// the bytes read (Figures.bytes_read) and the positional reads issued.
//
// The buffer `b` was sliced from, through Arrow's parent links (`b` itself if none).
inline const arrow::Buffer& RootOf(const arrow::Buffer& b) {
  const arrow::Buffer* root = &b;
  while (root->parent()) root = root->parent().get();
  return *root;
}

// Prefetch reads a range now and serves later reads that fall inside it as
// zero-copy slices, without another positional read: the IPC reader asks for
// the needed buffers one by one, and in the OSD every positional read is a
// trip into the object store, so the scan reads coalesced ranges up front
// (ipc_partition.cc).  Bytes are counted once, when read.
class PositionalFile : public arrow::io::RandomAccessFile {
 public:
  explicit PositionalFile(int64_t size) : size_(size) {}
  int64_t bytes_read() const { return bytes_read_; }
  int64_t read_calls() const { return read_calls_; }
  void set_pool(arrow::MemoryPool* pool) { pool_ = pool; }
  // The most bytes DoReadPieces may hand out outside the pool (ENOMEM past it).
  void set_unpooled_cap(int64_t bytes) { unpooled_cap_ = bytes; }
  // The object's block checksums (checksum.h): from now on every positional
  // read is widened to whole blocks, verified (EBADMSG on a mismatch) and
  // counted in bytes_read as widened.
  void set_checksums(BlockChecksums checksums) { checksums_ = std::move(checksums); }
  // Reads [position, position + nbytes) now (whole, or fails) and keeps it for
  // later reads; `keep`: it survives ForgetPrefetched.  The range is held in the
  // pieces the object store returned (each served zero-copy); a later read that
  // spans two pieces is copied from them.
  arrow::Status Prefetch(int64_t position, int64_t nbytes, bool keep);
  // Drops the prefetched ranges not kept, or all (what Arrow still uses stays
  // alive in its slices).  All, before the pool they came from goes away.
  void ForgetPrefetched(bool all = false);
  // Whether `buffer` is (a slice of) memory the object store lent for a read,
  // valid after the call: a reply may then refer to it instead of copying it
  // (RunScan's `lend`).  The OSD's object and the local runner's mapped file say so.
  virtual bool Lent(const arrow::Buffer& buffer) const { return false; }

  arrow::Status Close() override { closed_ = true; return arrow::Status::OK(); }
  bool closed() const override { return closed_; }
  arrow::Result<int64_t> Tell() const override { return position_; }
  arrow::Status Seek(int64_t position) override;
  arrow::Result<int64_t> GetSize() override { return size_; }
  arrow::Result<int64_t> Read(int64_t nbytes, void* out) override;
  arrow::Result<std::shared_ptr<arrow::Buffer>> Read(int64_t nbytes) override;
  arrow::Result<int64_t> ReadAt(int64_t position, int64_t nbytes, bool allow_short_read,
                                void* out) override;
  arrow::Result<int64_t> ReadAt(int64_t position, int64_t nbytes, void* out) override;
  arrow::Result<std::shared_ptr<arrow::Buffer>> ReadAt(int64_t position, int64_t nbytes,
                                                       bool allow_short_read) override;
  arrow::Result<std::shared_ptr<arrow::Buffer>> ReadAt(int64_t position, int64_t nbytes) override;
  // Synchronous: Arrow would otherwise read on its IO thread pool, i.e. on
  // threads of the OSD that this call does not own.
  arrow::Future<std::shared_ptr<arrow::Buffer>> ReadAsync(const arrow::io::IOContext&,
                                                          int64_t position, int64_t nbytes,
                                                          bool allow_short_read) override;
  arrow::Future<std::shared_ptr<arrow::Buffer>> ReadAsync(const arrow::io::IOContext&,
                                                          int64_t position, int64_t nbytes) override;
  arrow::Status WillNeed(const std::vector<arrow::io::ReadRange>&) override {
    return arrow::Status::OK();
  }

 protected:
  // Reads exactly `nbytes` (already within the size) at `position` into `out`.
  virtual arrow::Status DoReadAt(int64_t position, int64_t nbytes, uint8_t* out) = 0;
  // One piece of a read: `data` holds the object's bytes from `start`;
  // `pooled`: allocated from the call's pool (else memory the object store lent).
  struct Piece {
    int64_t start;
    std::shared_ptr<arrow::Buffer> data;
    bool pooled;
  };
  // The same as consecutive pieces.  By default one buffer of `pool` filled by
  // DoReadAt; the OSD side instead hands out the segments cls_cxx_read returned
  // (zero copy), copying only those that break the object's 8-byte alignment.
  virtual arrow::Status DoReadPieces(int64_t position, int64_t nbytes, arrow::MemoryPool* pool,
                                     std::vector<Piece>* pieces);

 private:
  arrow::Result<int64_t> Clamp(int64_t position, int64_t nbytes, bool allow_short_read) const;
  // The prefetched range holding all of [position, position + n), or null.
  const arrow::Buffer* Held(int64_t position, int64_t n, int64_t* start) const;
  // DoReadPieces of [position, position + n) widened to whole checksum blocks,
  // verified, counted; the pieces cover the widened range.
  arrow::Status ReadPieces(int64_t position, int64_t n, std::vector<Piece>* pieces);
  // DoReadAt of whole blocks, verified; returns the bytes read from the object.
  arrow::Result<int64_t> ReadVerified(int64_t position, int64_t n, uint8_t* out);
  // [position, position + n) widened to whole checksum blocks: [*start, *stop).
  arrow::Status Widen(int64_t position, int64_t n, int64_t* start, int64_t* stop) const;
  // EBADMSG unless the blocks held by consecutive pieces (from a block boundary)
  // match their recorded crc32c; a block may span two pieces: crc32c continues.
  arrow::Status VerifyPieces(const std::vector<Piece>& pieces) const;
  struct Region {
    int64_t start;
    std::shared_ptr<arrow::Buffer> data;
    bool keep;
  };
  // Slices of the ranges `from` that together cover [position, position + n), in
  // order; false when they do not.
  static bool Cover(const std::vector<Region>& from, int64_t position, int64_t n,
                    std::vector<Region>* parts);
  // [position, position + n) from Cover's parts: the one slice, or a copy joining them.
  arrow::Result<std::shared_ptr<arrow::Buffer>> Join(int64_t position, int64_t n,
                                                     const std::vector<Region>& parts) const;
  std::vector<Region> held_;
  int64_t size_;
  int64_t position_ = 0;
  int64_t bytes_read_ = 0;
  int64_t read_calls_ = 0;
  int64_t unpooled_bytes_ = 0;
  int64_t unpooled_cap_ = INT64_MAX;
  bool closed_ = false;
  arrow::MemoryPool* pool_ = arrow::default_memory_pool();
  BlockChecksums checksums_;     // block 0: not verified
  std::vector<uint8_t> edge_;    // the last verified read when small (footer, metadata)
  int64_t edge_start_ = -1;
};

// The ScanReply bytes: [offset, block_bytes) of a block from malloc, which the
// OSD side takes over whole (ceph::buffer::claim_malloc) instead of copying.
class ReplyBuffer : public arrow::Buffer {
 public:
  ReplyBuffer(uint8_t* block, size_t block_bytes, size_t offset)
      : arrow::Buffer(block + offset, static_cast<int64_t>(block_bytes - offset)),
        block_(block), block_bytes_(block_bytes), offset_(offset) {}
  ~ReplyBuffer() override { std::free(block_); }
  ReplyBuffer(const ReplyBuffer&) = delete;
  ReplyBuffer& operator=(const ReplyBuffer&) = delete;
  // A piece of the reply's IPC stream left out of the block (RunScan's `lend`):
  // the reply's bytes [at, at + data->size()) are data's, not the block's.
  struct LentPiece {
    int64_t at;
    std::shared_ptr<arrow::Buffer> data;
  };
  void AddLent(int64_t at, std::shared_ptr<arrow::Buffer> data) { lent_.push_back({at, std::move(data)}); }
  // In reply order; empty for a reply that is whole in its block.
  const std::vector<LentPiece>& lent() const { return lent_; }
  // Copies the lent pieces into their places: the block is then the whole reply.
  void Fill() {
    for (const auto& l : lent_) std::memcpy(block_ + offset_ + l.at, l.data->data(), static_cast<size_t>(l.data->size()));
    lent_.clear();
  }
  // The block (to be freed with free()), its size and where the reply starts
  // in it; this buffer is then empty.
  uint8_t* Release(size_t* block_bytes, size_t* offset) {
    uint8_t* b = block_;
    *block_bytes = block_bytes_;
    *offset = offset_;
    block_ = nullptr;
    data_ = nullptr;
    size_ = capacity_ = 0;
    return b;
  }

 private:
  uint8_t* block_;
  size_t block_bytes_, offset_;
  std::vector<LentPiece> lent_;
};

// Runs one `scan` call: request bytes in, ScanReply bytes out (a ReplyBuffer).  The object is
// shared because Arrow's readers may keep it (shared_from_this).  `lend`: the stream's
// large pieces that are the object store's memory (PositionalFile::Lent: a column
// passed through) are not copied into the reply's block but left as its lent pieces,
// for a caller that sends the reply as a list of buffers (the class's bufferlist);
// otherwise the reply is whole.
arrow::Result<std::shared_ptr<arrow::Buffer>> RunScan(const uint8_t* request, size_t request_len,
                                                      const std::shared_ptr<PositionalFile>& object,
                                                      const Limits& limits, ScanStats* stats,
                                                      bool lend = false);

// A Status that carries `err` (a positive errno value) and a message naming the cause.
arrow::Status ErrnoStatus(int err, std::string message);

// The negative errno of a Status: its carried errno, -ENOMEM for an
// out-of-memory status, -EIO for anything else; 0 for OK.
int StatusToErrno(const arrow::Status& status);

// Registers the Arrow compute kernels (Arrow >= 21); call once per process.
arrow::Status InitializeKernel();

}  // namespace skyhook
