// CRC-32 (the zlib / PNG / gzip polynomial, as zlib's crc32() and Python's zlib.crc32 compute
// it) of the capture stream's chunk data: Final.data_crc32. Both ends of every stream compute
// it over every attention byte, so it folds with carry-less multiplication where the CPU has it
// (x86-64 with PCLMULQDQ: about twice zlib's speed here) and uses a byte table elsewhere.
#pragma once

#include <cstddef>
#include <cstdint>

namespace attnscope {

// Continues `crc` (0 to start) over `size` bytes; Crc32(Crc32(0, a), b) == Crc32(0, a + b).
uint32_t Crc32(uint32_t crc, const void* data, size_t size);

// The byte table alone (short inputs, tails, CPUs without carry-less multiplication).
uint32_t Crc32Portable(uint32_t crc, const void* data, size_t size);

}  // namespace attnscope
