// Minimal reader for .npy files (version 1/2, little-endian f4/f8/i8/i4, C order), enough
// for the reference dumps in ../shared/golden.
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

// ../shared as the build configured it (ATTNSCOPE_SHARED_DIR), or "" when absent.
std::string SharedDir();

}  // namespace attnscope::testing
