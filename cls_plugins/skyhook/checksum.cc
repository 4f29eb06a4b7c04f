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
// The crc32 instruction has a latency of 3 cycles and a throughput of 1: one
// stream runs at a third of the CPU's speed.  So, as in Mark Adler's crc32c.c,
// three streams over adjacent spans run interleaved and are joined by shifting
// a crc over the bytes of the spans after it: a table lookup per byte of the
// crc (`Shift`), since a crc is linear in its register.

// The operator that appends `len` zero bytes to a crc register, as 32 columns
// of a GF(2) matrix; built by repeated squaring from the one-zero-bit operator.
uint32_t Gf2Times(const uint32_t* mat, uint32_t vec) {
  uint32_t sum = 0;
  for (; vec; vec >>= 1, ++mat)
    if (vec & 1) sum ^= *mat;
  return sum;
}

void Gf2Square(uint32_t* square, const uint32_t* mat) {
  for (int n = 0; n < 32; ++n) square[n] = Gf2Times(mat, mat[n]);
}

struct ShiftTable {
  uint32_t t[4][256];
  // `len` a power of two
  explicit ShiftTable(size_t len) {
    uint32_t odd[32], even[32];
    odd[0] = 0x82F63B78u;  // one zero bit
    for (int n = 1; n < 32; ++n) odd[n] = 1u << (n - 1);
    Gf2Square(even, odd);  // two zero bits
    Gf2Square(odd, even);  // four
    // the first square gives one zero byte in `even`, the next two in `odd`, ...
    const uint32_t* op = odd;
    do {
      Gf2Square(even, odd);
      len >>= 1;
      if (len == 0) { op = even; break; }
      Gf2Square(odd, even);
      len >>= 1;
    } while (len);
    for (uint32_t n = 0; n < 256; ++n)
      for (int k = 0; k < 4; ++k) t[k][n] = Gf2Times(op, n << (8 * k));
  }
  uint32_t Shift(uint32_t crc) const {
    return t[0][crc & 0xff] ^ t[1][(crc >> 8) & 0xff] ^ t[2][(crc >> 16) & 0xff] ^ t[3][crc >> 24];
  }
};

constexpr size_t kLong = 8192, kShort = 256;

__attribute__((target("sse4.2"))) uint64_t Crc32cWords(uint64_t c, const uint8_t* p, size_t words) {
  for (size_t i = 0; i < words; ++i) {
    uint64_t w;
    std::memcpy(&w, p + 8 * i, 8);
    c = __builtin_ia32_crc32di(c, w);
  }
  return c;
}

// Three interleaved streams of `span` bytes each; the crc after all of them.
__attribute__((target("sse4.2"))) uint64_t Crc32cThree(uint64_t c0, const uint8_t* p, size_t span,
                                                       const ShiftTable& shift) {
  uint64_t c1 = 0, c2 = 0;
  for (size_t i = 0; i < span; i += 8) {
    uint64_t w0, w1, w2;
    std::memcpy(&w0, p + i, 8);
    std::memcpy(&w1, p + span + i, 8);
    std::memcpy(&w2, p + 2 * span + i, 8);
    c0 = __builtin_ia32_crc32di(c0, w0);
    c1 = __builtin_ia32_crc32di(c1, w1);
    c2 = __builtin_ia32_crc32di(c2, w2);
  }
  c0 = shift.Shift(static_cast<uint32_t>(c0)) ^ c1;
  return shift.Shift(static_cast<uint32_t>(c0)) ^ c2;
}

__attribute__((target("sse4.2"))) uint32_t Crc32cSse42(uint32_t crc, const uint8_t* p, size_t n) {
  static const ShiftTable long_shift(kLong), short_shift(kShort);
  uint64_t c = ~crc;
  for (; n >= 3 * kLong; p += 3 * kLong, n -= 3 * kLong) c = Crc32cThree(c, p, kLong, long_shift);
  for (; n >= 3 * kShort; p += 3 * kShort, n -= 3 * kShort) c = Crc32cThree(c, p, kShort, short_shift);
  c = Crc32cWords(c, p, n / 8);
  p += n / 8 * 8;
  n %= 8;
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
