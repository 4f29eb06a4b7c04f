// libFuzzer target over the scan kernel (built with -DSKYHOOK_FUZZ=ON by clang,
// with ASan + UBSan; see `make fuzz`).  Two modes, chosen by SKYHOOK_FUZZ_MODE:
//
//   request (default): the input is a ScanRequest; its first byte picks one of the
//     partitions named in SKYHOOK_FUZZ_OBJECTS (colon-separated files, read once),
//     the rest is the request, run by RunScan over that partition in memory.
//   object: the input is the partition's bytes (Arrow IPC file or Parquet); its
//     first byte picks one of the requests in SKYHOOK_FUZZ_REQUESTS (colon-separated
//     files), run over the rest of the input.
//
// Every outcome but a crash, a sanitizer report or a leak is fine: errors are what
// malformed input should give.  The limits are smaller than the OSD's so that one
// input never runs long (a CPU budget of 1 s, 64 MiB of memory).
// No block checksums are set: corrupted bytes must reach the decoders.

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include "scan_kernel.h"

namespace {

class MemoryObject : public skyhook::PositionalFile {
 public:
  MemoryObject(const uint8_t* data, int64_t size) : PositionalFile(size), data_(data) {}

 protected:
  arrow::Status DoReadAt(int64_t position, int64_t nbytes, uint8_t* out) override {
    std::memcpy(out, data_ + position, static_cast<size_t>(nbytes));
    return arrow::Status::OK();
  }

 private:
  const uint8_t* data_;
};

std::vector<std::vector<uint8_t>> g_files;
bool g_object_mode = false;

std::vector<std::vector<uint8_t>> ReadFiles(const char* list) {
  std::vector<std::vector<uint8_t>> out;
  if (list == nullptr) return out;
  std::string s(list);
  size_t start = 0;
  while (start <= s.size()) {
    size_t end = s.find(':', start);
    if (end == std::string::npos) end = s.size();
    std::string path = s.substr(start, end - start);
    if (!path.empty()) {
      std::ifstream f(path, std::ios::binary);
      if (!f) {
        std::fprintf(stderr, "fuzz_scan: cannot read %s\n", path.c_str());
        std::exit(2);
      }
      out.emplace_back((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    }
    start = end + 1;
  }
  return out;
}

skyhook::Limits FuzzLimits() {
  skyhook::Limits limits;
  limits.max_cpu_ns = int64_t{1000} * 1000 * 1000;
  limits.cpu_base_ns = limits.max_cpu_ns;
  limits.memory_base = int64_t{64} << 20;
  limits.max_call_memory = int64_t{128} << 20;
  limits.max_reply_bytes = int64_t{64} << 20;
  return limits;
}

void Run(const uint8_t* request, size_t request_len, const uint8_t* object, size_t object_len) {
  // flatbuffers wants the request aligned, as the class's copy is
  std::vector<uint8_t> req(request, request + request_len);
  std::vector<uint8_t> obj(object, object + object_len);
  auto file = std::make_shared<MemoryObject>(obj.data(), static_cast<int64_t>(obj.size()));
  skyhook::ScanStats stats;
  auto reply = skyhook::RunScan(req.data(), req.size(), file, FuzzLimits(), &stats);
  if (!reply.ok()) {
    int err = skyhook::StatusToErrno(reply.status());
    if (err >= 0) std::abort();  // an error must carry a negative errno
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) {
  if (!skyhook::InitializeKernel().ok()) std::abort();
  const char* mode = std::getenv("SKYHOOK_FUZZ_MODE");
  g_object_mode = mode != nullptr && std::string(mode) == "object";
  g_files = ReadFiles(std::getenv(g_object_mode ? "SKYHOOK_FUZZ_REQUESTS" : "SKYHOOK_FUZZ_OBJECTS"));
  if (g_files.empty()) {
    std::fprintf(stderr, "fuzz_scan: set %s (colon-separated files)\n",
                 g_object_mode ? "SKYHOOK_FUZZ_REQUESTS" : "SKYHOOK_FUZZ_OBJECTS");
    std::exit(2);
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const std::vector<uint8_t>& fixed = g_files[data[0] % g_files.size()];
  if (g_object_mode) Run(fixed.data(), fixed.size(), data + 1, size - 1);
  else Run(data + 1, size - 1, fixed.data(), fixed.size());
  return 0;
}
