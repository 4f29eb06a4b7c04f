// crc32c and the block checksums of a partition (checksum.h).

#include "checksum.h"

#include <cerrno>
#include <cstring>
#include <string>

#include "kernel_internal.h"

namespace skyhook {

namespace {

struct Table {
  uint32_t t[8][256];
  Table() {
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0x82F63B78u & (0u - (c & 1u)));
      t[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; ++i)
      for (int k = 1; k < 8; ++k) t[k][i] = (t[k - 1][i] >> 8) ^ t[0][t[k - 1][i] & 0xff];
  }
};

uint32_t Crc32cTable(uint32_t crc, const uint8_t* p, size_t n) {
  static const Table table;
  const auto& t = table.t;
  crc = ~crc;
  while (n >= 8) {
    uint64_t w;
    std::memcpy(&w, p, 8);
    w ^= crc;
    crc = t[7][w & 0xff] ^ t[6][(w >> 8) & 0xff] ^ t[5][(w >> 16) & 0xff] ^ t[4][(w >> 24) & 0xff] ^
          t[3][(w >> 32) & 0xff] ^ t[2][(w >> 40) & 0xff] ^ t[1][(w >> 48) & 0xff] ^ t[0][w >> 56];
    p += 8;
    n -= 8;
  }
  while (n--) crc = (crc >> 8) ^ t[0][(crc ^ *p++) & 0xff];
  return ~crc;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) uint32_t Crc32cSse42(uint32_t crc, const uint8_t* p, size_t n) {
  uint64_t c = ~crc;
  while (n >= 8) {
    uint64_t w;
    std::memcpy(&w, p, 8);
    c = __builtin_ia32_crc32di(c, w);
    p += 8;
    n -= 8;
  }
  uint32_t c32 = static_cast<uint32_t>(c);
  while (n--) c32 = __builtin_ia32_crc32qi(c32, *p++);
  return ~c32;
}
#endif

uint32_t Le32(const uint8_t* p) {
  return uint32_t{p[0]} | uint32_t{p[1]} << 8 | uint32_t{p[2]} << 16 | uint32_t{p[3]} << 24;
}

}  // namespace

uint32_t Crc32c(uint32_t crc, const uint8_t* data, size_t n) {
#if defined(__x86_64__)
  static const bool sse42 = __builtin_cpu_supports("sse4.2");
  if (sse42) return Crc32cSse42(crc, data, n);
#endif
  return Crc32cTable(crc, data, n);
}

arrow::Result<BlockChecksums> ParseBlockChecksums(const uint8_t* data, size_t n,
                                                  int64_t object_size) {
  constexpr size_t kHeader = 4 + 4 + 8 + 4;
  if (n < kHeader || std::memcmp(data, "SKC1", 4) != 0)
    return ErrnoStatus(EBADMSG, "checksum xattr of " + std::to_string(n) + " bytes is not SKC1");
  BlockChecksums out;
  out.block = Le32(data + 4);
  const uint64_t size = uint64_t{Le32(data + 8)} | uint64_t{Le32(data + 12)} << 32;
  const uint32_t count = Le32(data + 16);
  if (out.block < 512 || out.block > (int64_t{64} << 20))
    return ErrnoStatus(EBADMSG, "checksum block of " + std::to_string(out.block) + " bytes");
  if (size != static_cast<uint64_t>(object_size))
    return ErrnoStatus(EBADMSG, "checksums describe an object of " + std::to_string(size) +
                                    " bytes, the object has " + std::to_string(object_size));
  const uint64_t blocks = (size + static_cast<uint64_t>(out.block) - 1) / static_cast<uint64_t>(out.block);
  if (count != blocks || n != kHeader + 4 * size_t{count})
    return ErrnoStatus(EBADMSG, "checksum xattr: " + std::to_string(count) + " crcs for " +
                                    std::to_string(blocks) + " blocks");
  out.crcs.resize(count);
  for (uint32_t i = 0; i < count; ++i) out.crcs[i] = Le32(data + kHeader + 4 * size_t{i});
  return out;
}

}  // namespace skyhook
