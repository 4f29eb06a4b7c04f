// The `skyhook` object class as clients see it, spelled once (Ceph's shape,
// like src/cls/lock/cls_lock_ops.h): the class and method names, each method's
// RD/WR flags, the xattr it reads and the request version it speaks.  The
// request and reply themselves are the flatbuffers of formats/skyhook_scan.fbs;
// the errno table is formats/README.md.  No objclass.h here: the kernel
// (request.cc, scan.cc) and the local runner include it too; cls_skyhook.cc
// checks that the flags equal objclass.h's CLS_METHOD_RD / CLS_METHOD_WR.
// The Python client spells the same names in skyhook_py (rados_io, cluster caps).
#pragma once

#include <cstdint>

namespace skyhook::cls_ops {

inline constexpr const char* kClassName = "skyhook";

// objclass.h's CLS_METHOD_RD / CLS_METHOD_WR.
inline constexpr int kRd = 0x1;
inline constexpr int kWr = 0x2;

struct Method {
  const char* name;
  int flags;
};

// scan (RD): a ScanRequest in, a ScanReply out.
inline constexpr Method kScan{"scan", kRd};
// stats (RD): no input; the partition's statistics JSON from kStatsXattr, or -ENODATA.
inline constexpr Method kStats{"stats", kRd};

// The xattr holding a partition's statistics, written at ingest (formats/layout.md).
inline constexpr const char* kStatsXattr = "skyhook.stats";
// The xattr holding a partition's block checksums (checksum.h, formats/layout.md);
// absent in partitions written before 2026-12: then nothing is verified.
inline constexpr const char* kChecksumXattr = "skyhook.crc32c";

// ScanRequest.version / ScanReply.version this class speaks (history in skyhook_scan.fbs).
inline constexpr uint16_t kScanVersion = 1;

}  // namespace skyhook::cls_ops
