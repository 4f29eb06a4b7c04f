// Block checksums of a partition object (formats/layout.md, xattr
// `skyhook.crc32c`): crc32c (Castagnoli) of every `block` bytes of the object,
// the last block shorter, recorded at ingest.  When a partition has them,
// PositionalFile widens every positional read to whole blocks and verifies
// them, so every byte the scan reads is checked (EBADMSG on a mismatch).
// Partitions written before checksums existed have no xattr: not verified.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include <arrow/result.h>

namespace skyhook {

// crc32c of `n` bytes continuing from `crc` (0 to start); SSE4.2 when the CPU has it.
uint32_t Crc32c(uint32_t crc, const uint8_t* data, size_t n);

struct BlockChecksums {
  int64_t block = 0;           // bytes per block
  std::vector<uint32_t> crcs;  // one per block, ceil(object size / block)
};

// The xattr's bytes: "SKC1", uint32 block, uint64 object size, uint32 count,
// then `count` uint32 crcs, all little-endian.  EBADMSG when malformed or when
// it describes an object of another size than `object_size`.
arrow::Result<BlockChecksums> ParseBlockChecksums(const uint8_t* data, size_t n,
                                                  int64_t object_size);

}  // namespace skyhook
