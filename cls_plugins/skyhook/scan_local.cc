// skyhook_scan_local REQUEST_FILE OBJECT_FILE OUT_FILE [--max-cpu-ms N] [--max-memory-bytes N]
//                    [--slice-us N] [--first-chunk-node-rows N]   (time slices, as the OSD sets them)
//                    [--max-object-bytes N] [--repeat N] [--memcpy-sizes FILE] [--reads pread|mapped]
//                    [--pieces N] [--checksums FILE]
// skyhook_scan_local --list-ops
// skyhook_scan_local --crc32c FILE
//
// Runs the object class's scan kernel on a local file, exactly as the OSD
// would run it on an object: same request, same reply, same errors.  Exit
// status: 0, or the positive errno of formats/README.md with the cause on
// stderr.  Used by the Python tests (tests/test_cls_kernel.py) without a cluster.
//
// --repeat N (for profiling and benchmarks): runs the same scan N times in this
// process and prints one line to stderr: the median and minimum wall time of a
// run, the positional reads (pread, i.e. cls_cxx_read in the OSD) and bytes of
// one run, and the median CPU time of a run (cpu_median_ms: what compares with an
// OSD's CPU time on a loaded machine, where wall time includes waiting for a core).
//
// --memcpy-sizes FILE (with --repeat): FILE holds byte counts, one per line (the
// buffers a query references, as bench_scan.py computes them); after each scan the
// runner copies that many bytes from as many separate source buffers into one
// destination, timed, and prints the median and minimum of those copies too, so
// that scan and memcpy are measured in the same run under the same load.
//
// --reads mapped: the file is mapped once and every read is a zero-copy slice of
// it, as the OSD hands out BlueStore's cached data (cls_skyhook.cc DoReadPieces);
// the default, pread, copies each read.  --pieces N: mapped, and every read comes
// back cut at multiples of N bytes, as BlueStore answers cached data in pieces.
// --checksums FILE: the partition's block checksums (the `skyhook.crc32c` xattr's
// bytes), verified as the OSD verifies them.
//
// --list-ops: prints the kernel's operator table (op_table.h), one line per
// operator in enum order, "<value>\t<Name>\t<arity>\t<kind>", and exits 0; the
// Python tests compare it with skyhook_py's operator table.
//
// --crc32c FILE: prints the kernel's crc32c (checksum.h) of FILE's bytes in
// decimal, for the tests to compare with an independent implementation.

#include <fcntl.h>
#include <time.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <algorithm>
#include <chrono>
#include <cstring>
#include <fstream>
#include <iterator>
#include <optional>
#include <string>
#include <vector>

#include <arrow/io/file.h>

#include "checksum.h"
#include "op_table.h"
#include "scan_kernel.h"

namespace {

// The object, read with pread (a copy per read), or with `mapped` (the whole
// file mapped: reads are zero-copy slices, as the OSD hands out BlueStore's
// cached data).
class LocalObject : public skyhook::PositionalFile {
 public:
  // `piece_bytes` > 0 (with `mapped`): each read comes back cut at multiples of
  // it, as BlueStore answers cached data in pieces (tests of the pieces' logic)
  LocalObject(int fd, int64_t size, std::shared_ptr<arrow::Buffer> mapped = nullptr, int64_t piece_bytes = 0)
      : PositionalFile(size), fd_(fd), mapped_(std::move(mapped)), piece_bytes_(piece_bytes) {}
  // The mapped file outlives the call, as the OSD's cached data does.
  bool Lent(const arrow::Buffer& b) const override {
    return mapped_ != nullptr && &skyhook::RootOf(b) == &skyhook::RootOf(*mapped_);
  }

 protected:
  arrow::Status DoReadPieces(int64_t position, int64_t nbytes, arrow::MemoryPool* pool,
                             std::vector<Piece>* pieces) override {
    if (!mapped_) return PositionalFile::DoReadPieces(position, nbytes, pool, pieces);
    for (int64_t at = position, end = position + nbytes; at < end;) {
      const int64_t next = piece_bytes_ > 0 ? std::min(end, (at / piece_bytes_ + 1) * piece_bytes_) : end;
      pieces->push_back({at, arrow::SliceBuffer(mapped_, at, next - at), false});
      at = next;
    }
    return arrow::Status::OK();
  }
  arrow::Status DoReadAt(int64_t position, int64_t nbytes, uint8_t* out) override {
    if (mapped_) {
      std::memcpy(out, mapped_->data() + position, static_cast<size_t>(nbytes));
      return arrow::Status::OK();
    }
    while (nbytes > 0) {
      ssize_t n = pread(fd_, out, static_cast<size_t>(nbytes), position);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return skyhook::ErrnoStatus(EIO, std::string("pread: ") + std::strerror(errno));
      out += n;
      position += n;
      nbytes -= n;
    }
    return arrow::Status::OK();
  }

 private:
  int fd_;
  std::shared_ptr<arrow::Buffer> mapped_;
  int64_t piece_bytes_;
};

int ListOps() {
  for (const skyhook::OpInfo& info : skyhook::op_table::kRows)
    std::printf("%d\t%s\t%d\t%s\n", static_cast<int>(info.op), skyhook::OpName(info.op), info.arity,
                skyhook::OpKindName(info.kind));
  return std::fflush(stdout) == 0 ? 0 : EIO;
}

// The whole file, or false when it cannot be read.
bool ReadFile(const std::string& path, std::vector<uint8_t>* bytes) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  bytes->assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  return true;
}

int PrintCrc32c(const char* path) {
  std::vector<uint8_t> bytes;
  if (!ReadFile(path, &bytes)) return EIO;
  std::printf("%u\n", skyhook::Crc32c(0, bytes.data(), bytes.size()));
  return std::fflush(stdout) == 0 ? 0 : EIO;
}

int Fail(int err, const std::string& message) {
  std::fprintf(stderr, "skyhook_scan_local: %s\n", message.c_str());
  return err;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 2 && std::string(argv[1]) == "--list-ops") return ListOps();
  if (argc == 3 && std::string(argv[1]) == "--crc32c") return PrintCrc32c(argv[2]);
  if (argc < 4)
    return Fail(EINVAL, "usage: skyhook_scan_local REQUEST_FILE OBJECT_FILE OUT_FILE "
                        "[--max-cpu-ms N] [--cpu-base-ms N] [--max-memory-bytes N] [--max-object-bytes N] "
                        "[--slice-us N] [--first-chunk-node-rows N]");
  skyhook::Limits limits;
  int repeat = 0;
  std::string memcpy_sizes;
  bool mapped = false;
  int64_t piece_bytes = 0;
  std::string checksums_path;
  for (int i = 4; i + 1 < argc; i += 2) {
    std::string opt = argv[i];
    long long v = std::atoll(argv[i + 1]);
    if (opt == "--max-cpu-ms") limits.max_cpu_ns = v * 1000000LL;
    else if (opt == "--cpu-base-ms") limits.cpu_base_ns = v * 1000000LL;
    else if (opt == "--max-memory-bytes") { limits.memory_base = v; limits.memory_per_object_byte = 0; }
    else if (opt == "--max-object-bytes") limits.max_object_bytes = v;
    else if (opt == "--slice-us") limits.slice_ns = v * 1000LL;
    else if (opt == "--first-chunk-node-rows") limits.first_chunk_node_rows = v;
    else if (opt == "--repeat") repeat = static_cast<int>(std::max(1LL, v));
    else if (opt == "--memcpy-sizes") memcpy_sizes = argv[i + 1];
    else if (opt == "--reads" && std::string(argv[i + 1]) == "mapped") mapped = true;
    else if (opt == "--reads" && std::string(argv[i + 1]) == "pread") mapped = false;
    else if (opt == "--pieces") { mapped = true; piece_bytes = v; }
    else if (opt == "--checksums") checksums_path = argv[i + 1];
    else return Fail(EINVAL, "unknown option " + opt);
  }
  std::vector<uint8_t> request;
  if (!ReadFile(argv[1], &request)) return Fail(ENOENT, std::string("cannot read ") + argv[1]);
  int fd = open(argv[2], O_RDONLY);
  if (fd < 0) return Fail(ENOENT, std::string("cannot open ") + argv[2]);
  struct stat st {};
  if (fstat(fd, &st) != 0) return Fail(EIO, "fstat failed");
  if (!skyhook::InitializeKernel().ok()) return Fail(EIO, "arrow::compute::Initialize failed");
  std::optional<skyhook::BlockChecksums> sums;  // --checksums: the xattr's bytes, as the OSD reads them
  if (!checksums_path.empty()) {
    std::vector<uint8_t> raw;
    if (!ReadFile(checksums_path, &raw)) return Fail(ENOENT, "cannot read " + checksums_path);
    auto parsed = skyhook::ParseBlockChecksums(raw.data(), raw.size(), st.st_size);
    if (!parsed.ok()) return Fail(EBADMSG, parsed.status().message());
    sums = std::move(*parsed);
  }
  std::shared_ptr<arrow::Buffer> whole;  // --reads mapped: the file, mapped once
  if (mapped) {
    auto f = arrow::io::MemoryMappedFile::Open(argv[2], arrow::io::FileMode::READ);
    if (!f.ok()) return Fail(EIO, "cannot map " + std::string(argv[2]) + ": " + f.status().ToString());
    auto b = (*f)->ReadAt(0, st.st_size);
    if (!b.ok()) return Fail(EIO, "cannot map " + std::string(argv[2]) + ": " + b.status().ToString());
    whole = *b;
  }
  // the memcpy reference: separate source buffers (as the buffers of a batch are), one destination
  std::vector<std::vector<uint8_t>> sources;
  std::vector<uint8_t> dest;
  if (!memcpy_sizes.empty()) {
    std::ifstream mf(memcpy_sizes);
    if (!mf) return Fail(ENOENT, "cannot read " + memcpy_sizes);
    size_t total = 0;
    for (long long n; mf >> n;) {
      sources.emplace_back(static_cast<size_t>(std::max(0LL, n)), uint8_t{1});
      total += sources.back().size();
    }
    dest.assign(total, 0);
  }
  std::vector<double> ms, cpu_ms, copy_ms;
  auto cpu_now = [] {
    timespec ts{};
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return static_cast<double>(ts.tv_sec) * 1e3 + static_cast<double>(ts.tv_nsec) / 1e6;
  };
  auto copy_once = [&]() {
    auto t0 = std::chrono::steady_clock::now();
    uint8_t* o = dest.data();
    for (const auto& s : sources) {
      std::memcpy(o, s.data(), s.size());
      o += s.size();
    }
    asm volatile("" : : "r"(dest.data()) : "memory");  // the copy is used
    copy_ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  };
  // One timed scan of a freshly opened object, as each OSD call opens its own.  Mapped:
  // the reply leaves the mapped columns it passes through out of its block, as the
  // OSD does (timed so); the answering run's reply is filled in before it is written.
  auto scan_once = [&](std::shared_ptr<LocalObject>* object, skyhook::ScanStats* stats) {
    *object = std::make_shared<LocalObject>(fd, st.st_size, whole, piece_bytes);
    if (sums) (*object)->set_checksums(*sums);
    const double c0 = cpu_now();
    auto t0 = std::chrono::steady_clock::now();
    auto reply = skyhook::RunScan(request.data(), request.size(), *object, limits, stats, mapped);
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    cpu_ms.push_back(cpu_now() - c0);
    return reply;
  };
  for (int run = 1; run < repeat; ++run) {  // the last run is the one that answers
    std::shared_ptr<LocalObject> timed;
    skyhook::ScanStats timed_stats;
    (void)scan_once(&timed, &timed_stats);
    if (!sources.empty()) copy_once();
  }
  std::shared_ptr<LocalObject> object;
  skyhook::ScanStats stats;
  auto reply = scan_once(&object, &stats);
  close(fd);
  if (repeat > 0) {
    std::sort(ms.begin(), ms.end());
    std::fprintf(stderr, "runs %zu median_ms %.3f min_ms %.3f reads %lld bytes_read %lld of %lld\n",
                 ms.size(), ms[ms.size() / 2], ms.front(), static_cast<long long>(object->read_calls()),
                 static_cast<long long>(stats.bytes_read), static_cast<long long>(stats.object_bytes));
    std::sort(cpu_ms.begin(), cpu_ms.end());
    std::fprintf(stderr, "cpu_median_ms %.3f\n", cpu_ms[cpu_ms.size() / 2]);
    if (!copy_ms.empty()) {
      std::sort(copy_ms.begin(), copy_ms.end());
      std::fprintf(stderr, "memcpy runs %zu median_ms %.3f min_ms %.3f bytes %zu\n", copy_ms.size(),
                   copy_ms[copy_ms.size() / 2], copy_ms.front(), dest.size());
    }
  }
  if (!reply.ok()) return Fail(-skyhook::StatusToErrno(reply.status()), reply.status().message());
  int64_t lent_bytes = 0;
  if (auto* whole_reply = dynamic_cast<skyhook::ReplyBuffer*>(reply->get())) {
    for (const auto& l : whole_reply->lent()) lent_bytes += l.data->size();
    whole_reply->Fill();
  }
  if (repeat > 0) std::fprintf(stderr, "reply_bytes %lld lent_bytes %lld\n",
                               static_cast<long long>((*reply)->size()), static_cast<long long>(lent_bytes));
  std::ofstream out(argv[3], std::ios::binary);
  out.write(reinterpret_cast<const char*>((*reply)->data()), (*reply)->size());
  if (!out) return Fail(EIO, std::string("cannot write ") + argv[3]);
  return 0;
}
