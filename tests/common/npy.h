// Minimal reader for .npy files (version 1/2, little-endian f4/f8/i8/i4, C order), enough
// for the reference dumps in tests/data/golden.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace attnscope::testing {

struct NpyArray {
  std::vector<int64_t> shape;
  std::vector<double> values;  // every dtype widened to double, C order
  int64_t numel() const { return static_cast<int64_t>(values.size()); }
  std::vector<float> AsFloats() const { return std::vector<float>(values.begin(), values.end()); }
  std::vector<int64_t> AsInt64() const {
    return std::vector<int64_t>(values.begin(), values.end());
  }
};

absl::StatusOr<NpyArray> ReadNpy(const std::string& path);

// The repository's test fixtures (tests/data in the source tree: golden dumps, the Qwen2
// tokenizer, chat-template cases; tests/data/README.md says how each file was made). Always
// present in a checkout, so a test that misses a file there fails instead of skipping.
std::string DataDir();

// The device engine tests run on: "cpu" unless ATTNSCOPE_TEST_DEVICE names another
// (scripts/gpu-check.sh sets cuda).
std::string TestDevice();

}  // namespace attnscope::testing
