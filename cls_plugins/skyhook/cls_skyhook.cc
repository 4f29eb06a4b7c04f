// The `skyhook` object class: the OSD side only.
//
//   scan  (RD): a ScanRequest in, a ScanReply out (formats/skyhook_scan.fbs);
//               the work is the kernel (scan_kernel.h, scan.cc), which knows
//               nothing of Ceph.
//   stats (RD): the partition's statistics JSON (xattr `skyhook.stats`), or -ENODATA.
// Names, flags, the xattr and the version are spelled once, in cls_skyhook_ops.h.
//
// Each method body sits under a catch-all: whatever happens, the OSD gets a
// negative errno of the formats/README.md table, never an exception.  Errors are
// logged at level 0 as "skyhook <method>: <object>: <cause>", tracing at level 20.
// The public objclass.h gives no access to the object's name, so <object> is
// described by its size and modification time.

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <ctime>
#include <time.h>
#include <algorithm>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <rados/objclass.h>

#include "cls_skyhook_ops.h"
#include "fair_share.h"
#include "scan_kernel.h"

// Who sent the call.  The public objclass.h does not declare it, but every OSD
// exports it with C linkage (src/objclass/class_api.cc); its entity_inst_t starts
// with the sender's entity_name_t {uint8_t type; int64_t num}, num being the
// client instance's global id.  The buffer is far larger than an entity_inst_t.
extern "C" int cls_get_request_origin(cls_method_context_t hctx, void* origin);

#pragma GCC visibility push(default)
CLS_VER(1, 0)
CLS_NAME(skyhook)
#pragma GCC visibility pop

static_assert(skyhook::cls_ops::kRd == CLS_METHOD_RD && skyhook::cls_ops::kWr == CLS_METHOD_WR,
              "cls_skyhook_ops.h flags must be objclass.h's");

namespace {

namespace ops = skyhook::cls_ops;
using ops::kStatsXattr;

// One segment of a cls_cxx_read as an Arrow buffer, without a copy: the
// bufferptr (a reference on the object store's memory) lives as long as the buffer.
class BufferptrBuffer : public arrow::Buffer {
 public:
  explicit BufferptrBuffer(ceph::bufferptr p)
      : arrow::Buffer(reinterpret_cast<const uint8_t*>(p.c_str()), p.length()), p_(std::move(p)) {}
  const ceph::bufferptr& ptr() const { return p_; }

 private:
  ceph::bufferptr p_;
};

// The BufferptrBuffer `b` is a slice of (through Arrow's parent links), or null.
const BufferptrBuffer* LentBy(const arrow::Buffer& b) {
  return dynamic_cast<const BufferptrBuffer*>(&skyhook::RootOf(b));
}

// `b` (a slice of a BufferptrBuffer) as a bufferptr on the same object store
// memory, appended to `out`: the reply refers to it, no copy.  False (nothing
// appended) if `b` is not inside its root: a bufferptr out of range would abort
// the OSD (ceph_assert), an error only fails the call.
bool AppendRef(const arrow::Buffer& b, ceph::bufferlist* out) {
  const BufferptrBuffer* root = LentBy(b);
  if (root == nullptr) return false;
  const int64_t at = b.data() - root->data();
  if (at < 0 || b.size() < 0 || at + b.size() > root->size()) return false;
  out->append(ceph::bufferptr(root->ptr(), static_cast<unsigned>(at), static_cast<unsigned>(b.size())));
  return true;
}

// The object, read with cls_cxx_read; every return value is checked.
class ClsObject : public skyhook::PositionalFile {
 public:
  ClsObject(cls_method_context_t hctx, int64_t size) : PositionalFile(size), hctx_(hctx) {}

 protected:
  arrow::Status DoReadAt(int64_t position, int64_t nbytes, uint8_t* out) override {
    ceph::bufferlist bl;
    ARROW_RETURN_NOT_OK(Read(position, nbytes, &bl));
    bl.begin().copy(static_cast<unsigned>(nbytes), reinterpret_cast<char*>(out));
    return arrow::Status::OK();
  }

  // Each segment the object store answered with is handed out zero-copy when
  // its address keeps the object's 8-byte alignment (Arrow's buffers start
  // 8-aligned in the file); a misaligned one is copied into the call's pool.
  // BlueStore answers cached data in the pieces it was first read in.
  arrow::Status DoReadPieces(int64_t position, int64_t nbytes, arrow::MemoryPool* pool,
                             std::vector<Piece>* pieces) override {
    ceph::bufferlist bl;
    ARROW_RETURN_NOT_OK(Read(position, nbytes, &bl));
    int64_t at = position;
    for (const ceph::bufferptr& p : bl.buffers()) {
      if (p.length() == 0) continue;
      if ((reinterpret_cast<uintptr_t>(p.c_str()) - static_cast<uintptr_t>(at)) % 8 == 0) {
        ++zero_copy_reads_;
        pieces->push_back({at, std::make_shared<BufferptrBuffer>(p), false});
      } else {
        ARROW_ASSIGN_OR_RAISE(auto buf, arrow::AllocateBuffer(p.length(), pool));
        std::memcpy(buf->mutable_data(), p.c_str(), p.length());
        pieces->push_back({at, std::shared_ptr<arrow::Buffer>(std::move(buf)), true});
      }
      at += p.length();
    }
    return arrow::Status::OK();
  }

 public:
  int64_t zero_copy_reads() const { return zero_copy_reads_; }
  bool Lent(const arrow::Buffer& b) const override { return LentBy(b) != nullptr; }

 private:
  arrow::Status Read(int64_t position, int64_t nbytes, ceph::bufferlist* bl) {
    // cls_cxx_read takes int offsets; objects are at most 1 GiB (checked before).
    if (position > INT32_MAX || nbytes > INT32_MAX || position + nbytes > INT32_MAX)
      return skyhook::ErrnoStatus(EFBIG, "read beyond 2 GiB");
    int r = cls_cxx_read(hctx_, static_cast<int>(position), static_cast<int>(nbytes), bl);
    if (r < 0)
      return skyhook::ErrnoStatus(-r, "cls_cxx_read of " + std::to_string(nbytes) + " bytes at " +
                                          std::to_string(position) + " failed: " + std::strerror(-r));
    if (r != nbytes || static_cast<int64_t>(bl->length()) != nbytes)
      return skyhook::ErrnoStatus(EIO, "cls_cxx_read returned " + std::to_string(bl->length()) +
                                           " bytes of " + std::to_string(nbytes));
    return arrow::Status::OK();
  }

  cls_method_context_t hctx_;
  int64_t zero_copy_reads_ = 0;
};

// Error lines are rate-limited (a flood of bad requests must not flood the OSD
// log): a burst of kLogBurst lines, then kLogPerSecond; the next line that is
// written says how many were suppressed.
constexpr double kLogBurst = 50, kLogPerSecond = 20;

bool LogAllowed(unsigned long long* suppressed_before) {
  static std::mutex mu;
  static double tokens = kLogBurst;
  static int64_t last_ns = 0;
  static unsigned long long suppressed = 0;
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  const int64_t now = static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
  std::lock_guard<std::mutex> lock(mu);
  if (last_ns != 0) tokens = std::min(kLogBurst, tokens + (now - last_ns) * 1e-9 * kLogPerSecond);
  last_ns = now;
  if (tokens < 1) {
    ++suppressed;
    return false;
  }
  tokens -= 1;
  *suppressed_before = suppressed;
  suppressed = 0;
  return true;
}

#define SKYHOOK_ERR(...)                                                                   \
  do {                                                                                     \
    unsigned long long suppressed_ = 0;                                                    \
    if (LogAllowed(&suppressed_)) {                                                        \
      if (suppressed_ > 0) CLS_ERR("skyhook: %llu error lines suppressed (rate limit)", suppressed_); \
      CLS_ERR(__VA_ARGS__);                                                                \
    }                                                                                      \
  } while (0)

int64_t MonotonicNs() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

// The client instance that sent the call (0 when the OSD cannot say).
uint64_t ClientOf(cls_method_context_t hctx) {
  alignas(16) unsigned char inst[1024] = {};
  if (cls_get_request_origin(hctx, inst) != 0) return 0;
  int64_t num = 0;
  std::memcpy(&num, inst + 8, sizeof num);
  return (static_cast<uint64_t>(inst[0]) << 56) ^ static_cast<uint64_t>(num);
}

// The OSD's CPU shares: every scan call is sliced by what its client earned.
skyhook::FairShare& Shares() {
  static skyhook::FairShare shares;
  return shares;
}

std::string Describe(uint64_t size, time_t mtime) {
  return "object(" + std::to_string(size) + " bytes, mtime " + std::to_string(mtime) + ")";
}

int Scan(cls_method_context_t hctx, ceph::bufferlist* in, ceph::bufferlist* out) {
  uint64_t size = 0;
  time_t mtime = 0;
  int r = cls_cxx_stat(hctx, &size, &mtime);
  if (r < 0) {
    SKYHOOK_ERR("skyhook scan: object: cls_cxx_stat failed: %d", r);
    return r;
  }
  const std::string object = Describe(size, mtime);
  skyhook::Limits limits;
  if (in->length() > static_cast<uint64_t>(skyhook::MaxRequestBytes(limits))) {
    SKYHOOK_ERR("skyhook scan: %s: request of %u bytes, more than %lld", object.c_str(), in->length(),
            static_cast<long long>(skyhook::MaxRequestBytes(limits)));
    return -E2BIG;
  }
  // This client's slice, decided before any work (a refused call costs next to nothing).
  const uint64_t client = ClientOf(hctx);
  const int64_t request_bytes = static_cast<int64_t>(in->length());
  const skyhook::FairShare::Slice slice = Shares().SliceFor(client, MonotonicNs(), request_bytes);
  if (slice.refuse) {
    SKYHOOK_ERR("skyhook scan: %s: other clients are waiting, this client has used more than its share "
                "and a request of its no larger than this one could not scan a chunk in its slice (%d)",
                object.c_str(), -EBUSY);
    return -EBUSY;
  }
  limits.slice_ns = slice.ns;
  if (slice.contended) limits.busy_cap_ns = slice.ns;  // however costly the request, the call stays short
  // A copy: flatbuffers wants aligned memory, a bufferlist may be fragmented.
  std::vector<uint8_t> request(in->length());
  if (!request.empty()) in->begin().copy(in->length(), reinterpret_cast<char*>(request.data()));
  auto file = std::make_shared<ClsObject>(hctx, static_cast<int64_t>(size));
  {
    ceph::bufferlist crc_bl;
    r = cls_cxx_getxattr(hctx, ops::kChecksumXattr, &crc_bl);
    if (r >= 0) {
      std::vector<uint8_t> raw(crc_bl.length());
      if (!raw.empty()) crc_bl.begin().copy(crc_bl.length(), reinterpret_cast<char*>(raw.data()));
      auto sums = skyhook::ParseBlockChecksums(raw.data(), raw.size(), static_cast<int64_t>(size));
      if (!sums.ok()) {
        SKYHOOK_ERR("skyhook scan: %s: %s (%d)", object.c_str(), sums.status().message().c_str(), -EBADMSG);
        return -EBADMSG;
      }
      file->set_checksums(std::move(*sums));
    } else if (r != -ENODATA) {
      SKYHOOK_ERR("skyhook scan: %s: getxattr %s failed: %d", object.c_str(), ops::kChecksumXattr, r);
      return r;
    }
  }
  skyhook::ScanStats stats;
  auto reply = skyhook::RunScan(request.data(), request.size(), file, limits, &stats, /*lend=*/true);
  Shares().Charge(client, stats.cpu_ns, MonotonicNs());
  if (!reply.ok() && skyhook::StatusToErrno(reply.status()) == -EBUSY) Shares().NoteBusy(client, request_bytes);
  if (!reply.ok()) {
    int err = skyhook::StatusToErrno(reply.status());
    SKYHOOK_ERR("skyhook scan: %s: %s (%d)", object.c_str(), reply.status().message().c_str(), err);
    return err;
  }
  const auto reply_bytes = static_cast<unsigned>((*reply)->size());
  unsigned lent_bytes = 0;
  if (auto* whole = dynamic_cast<skyhook::ReplyBuffer*>(reply->get())) {
    // the reply's malloc block becomes the bufferlist's, and the stream's lent
    // pieces (columns passed through) go in as references on the object store's
    // memory: no copy.
    const std::vector<skyhook::ReplyBuffer::LentPiece> lent = whole->lent();
    size_t block_bytes = 0, offset = 0;
    char* block = reinterpret_cast<char*>(whole->Release(&block_bytes, &offset));
    ceph::bufferptr all(ceph::buffer::claim_malloc(static_cast<unsigned>(block_bytes), block));
    unsigned at = 0;  // in the reply
    for (const auto& l : lent) {
      const auto lent_at = static_cast<unsigned>(l.at);
      if (lent_at > at) out->append(ceph::bufferptr(all, static_cast<unsigned>(offset) + at, lent_at - at));
      if (!AppendRef(*l.data, out)) {
        SKYHOOK_ERR("skyhook scan: %s: a reply piece lies outside the read it was lent from (%d)",
                    object.c_str(), -EIO);
        out->clear();
        return -EIO;
      }
      at = lent_at + static_cast<unsigned>(l.data->size());
      lent_bytes += static_cast<unsigned>(l.data->size());
    }
    if (reply_bytes > at) out->append(ceph::bufferptr(all, static_cast<unsigned>(offset) + at, reply_bytes - at));
  } else {
    out->append(reinterpret_cast<const char*>((*reply)->data()), reply_bytes);
  }
  CLS_LOG(20, "skyhook scan: %s: rows scanned %lld matched %lld returned %lld, read %lld bytes "
          "in %lld reads (%lld zero-copy), reply %u bytes (%u by reference), cpu %lld ns, slice %lld ns, "
          "resume at %lld",
          object.c_str(),
          static_cast<long long>(stats.rows_scanned), static_cast<long long>(stats.rows_matched),
          static_cast<long long>(stats.rows_returned), static_cast<long long>(stats.bytes_read),
          static_cast<long long>(file->read_calls()), static_cast<long long>(file->zero_copy_reads()),
          reply_bytes, lent_bytes, static_cast<long long>(stats.cpu_ns), static_cast<long long>(limits.slice_ns),
          static_cast<long long>(stats.resume_row));
  return 0;
}

// The stats reply is at most the client's buffer: an optional 8-byte little-endian
// input names it (at most kMaxStatsReply), empty input means kDefaultStatsReply.
constexpr uint64_t kDefaultStatsReply = 64 * 1024, kMaxStatsReply = 256ull << 20;

int Stats(cls_method_context_t hctx, ceph::bufferlist* in, ceph::bufferlist* out) {
  uint64_t cap = kDefaultStatsReply;
  if (in->length() == 8) {
    unsigned char raw[8];
    in->begin().copy(8, reinterpret_cast<char*>(raw));
    cap = 0;
    for (int i = 7; i >= 0; --i) cap = cap << 8 | raw[i];
    if (cap == 0) return -EINVAL;
    cap = std::min(cap, kMaxStatsReply);
  } else if (in->length() != 0) {
    SKYHOOK_ERR("skyhook stats: object: input of %u bytes, expected 0 or 8", in->length());
    return -EINVAL;
  }
  ceph::bufferlist bl;
  int r = cls_cxx_getxattr(hctx, kStatsXattr, &bl);
  if (r < 0) {
    if (r != -ENODATA) SKYHOOK_ERR("skyhook stats: object: getxattr %s failed: %d", kStatsXattr, r);
    else CLS_LOG(20, "skyhook stats: object: no %s xattr", kStatsXattr);
    return r;
  }
  if (bl.length() > cap) {
    SKYHOOK_ERR("skyhook stats: object: %s of %u bytes exceeds the reply cap of %llu", kStatsXattr,
                bl.length(), static_cast<unsigned long long>(cap));
    return -EMSGSIZE;
  }
  out->claim_append(bl);
  return 0;
}

// The boundary: no exception leaves a method.
template <int (*Method)(cls_method_context_t, ceph::bufferlist*, ceph::bufferlist*)>
int Guarded(cls_method_context_t hctx, ceph::bufferlist* in, ceph::bufferlist* out,
            const char* name) {
  try {
    return Method(hctx, in, out);
  } catch (const std::bad_alloc&) {
    SKYHOOK_ERR("skyhook %s: object: out of memory", name);
    return -ENOMEM;
  } catch (const std::exception& e) {
    SKYHOOK_ERR("skyhook %s: object: exception: %s", name, e.what());
    return -EIO;
  } catch (...) {
    SKYHOOK_ERR("skyhook %s: object: unknown exception", name);
    return -EIO;
  }
}

int ScanMethod(cls_method_context_t hctx, ceph::bufferlist* in, ceph::bufferlist* out) {
  return Guarded<Scan>(hctx, in, out, ops::kScan.name);
}

int StatsMethod(cls_method_context_t hctx, ceph::bufferlist* in, ceph::bufferlist* out) {
  return Guarded<Stats>(hctx, in, out, ops::kStats.name);
}

}  // namespace

namespace {

void Register() {
  CLS_LOG(20, "loading skyhook class");
  arrow::Status st = skyhook::InitializeKernel();
  if (!st.ok()) {
    CLS_ERR("skyhook: arrow::compute::Initialize failed: %s", st.ToString().c_str());
    return;
  }
  cls_handle_t h_class;
  cls_method_handle_t h_scan, h_stats;
  // Ceph's cls_register returns 1 on success (`return cls != NULL`), not 0
  if (cls_register(skyhook::cls_ops::kClassName, &h_class) == 0) {
    CLS_ERR("skyhook: cls_register failed");
    return;
  }
  namespace ops = skyhook::cls_ops;
  cls_register_cxx_method(h_class, ops::kScan.name, ops::kScan.flags, ScanMethod, &h_scan);
  cls_register_cxx_method(h_class, ops::kStats.name, ops::kStats.flags, StatsMethod, &h_stats);
}

}  // namespace

// Loading the class runs under the same catch-all as its methods: an exception
// here (Arrow's initialisation, an allocation) must not take the OSD down; the
// class is then simply not registered (calls answer -EOPNOTSUPP).
CLS_INIT(skyhook) {
  try {
    Register();
  } catch (const std::exception& e) {
    CLS_ERR("skyhook: loading the class failed: %s", e.what());
  } catch (...) {
    CLS_ERR("skyhook: loading the class failed: unknown exception");
  }
}
