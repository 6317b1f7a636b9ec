// Crc32 (carry-less multiplication where the CPU has it) and Crc32Portable against the
// textbook bit-at-a-time CRC-32 written here, and the check value of the standard.
#include "server/capture/crc32.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <string>
#include <vector>

namespace attnscope {
namespace {

// One bit at a time, reflected polynomial 0xEDB88320, register inverted in and out.
uint32_t Bitwise(uint32_t crc, const unsigned char* data, size_t size) {
  crc = ~crc;
  for (size_t i = 0; i < size; ++i) {
    crc ^= data[i];
    for (int bit = 0; bit < 8; ++bit) crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
  }
  return ~crc;
}

std::vector<unsigned char> RandomBytes(size_t size, uint32_t seed) {
  std::mt19937 generator(seed);
  std::vector<unsigned char> bytes(size);
  for (unsigned char& byte : bytes) byte = static_cast<unsigned char>(generator());
  return bytes;
}

TEST(Crc32Test, CheckValueOfTheStandard) {
  const std::string text = "123456789";
  EXPECT_EQ(Crc32(0, text.data(), text.size()), 0xCBF43926u);
  EXPECT_EQ(Crc32Portable(0, text.data(), text.size()), 0xCBF43926u);
  EXPECT_EQ(Crc32(0, nullptr, 0), 0u);
}

// Every length across the fast path's thresholds (64 bytes, multiples of 16) and misaligned
// starts, each continuing a random earlier CRC.
TEST(Crc32Test, EqualsTheBitwiseCrcForEveryLengthAndAlignment) {
  const std::vector<unsigned char> bytes = RandomBytes(4096, 7);
  std::mt19937 generator(11);
  for (size_t size = 0; size <= 1100; ++size) {
    for (size_t offset = 0; offset < 4; ++offset) {
      const uint32_t start = generator();
      const uint32_t expected = Bitwise(start, bytes.data() + offset, size);
      ASSERT_EQ(Crc32(start, bytes.data() + offset, size), expected)
          << "size " << size << ", offset " << offset;
      ASSERT_EQ(Crc32Portable(start, bytes.data() + offset, size), expected)
          << "size " << size << ", offset " << offset;
    }
  }
}

TEST(Crc32Test, EqualsTheBitwiseCrcOnAChunkSizedBufferAndChains) {
  const std::vector<unsigned char> bytes = RandomBytes((1 << 20) + 37, 3);
  const uint32_t whole = Bitwise(0, bytes.data(), bytes.size());
  EXPECT_EQ(Crc32(0, bytes.data(), bytes.size()), whole);
  // As the stream computes it: chunk after chunk.
  uint32_t chained = 0;
  for (size_t begin = 0; begin < bytes.size(); begin += 65537) {
    chained = Crc32(chained, bytes.data() + begin, std::min<size_t>(65537, bytes.size() - begin));
  }
  EXPECT_EQ(chained, whole);
  // All zeros and all ones (no lane may cancel another).
  const std::vector<unsigned char> zeros(4096, 0), ones(4096, 0xff);
  EXPECT_EQ(Crc32(0, zeros.data(), zeros.size()), Bitwise(0, zeros.data(), zeros.size()));
  EXPECT_EQ(Crc32(0, ones.data(), ones.size()), Bitwise(0, ones.data(), ones.size()));
}

}  // namespace
}  // namespace attnscope
