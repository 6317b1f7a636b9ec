// Which layers, heads and query rows a request captures, and in which dtype.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/capture/dtype.h"

namespace attnscope {

// Which query rows reach the sinks.
enum class CaptureRows { kAll, kPromptOnly, kGeneratedOnly };

struct CaptureSpec {
  std::vector<int> layers;  // resolved, ascending, no duplicates; empty: capture nothing
  std::vector<int> heads;   // resolved query-head indices, ascending; same for every layer
  DType dtype = DType::kFloat32;
  CaptureRows rows = CaptureRows::kAll;

  bool enabled() const { return !layers.empty() && !heads.empty(); }
};

// Parses "all", "" (all) or a comma list with negative indices counted from the end
// ("0,5,-1"). Errors name `what` ("layers"/"heads"), the bad value and the valid range.
absl::StatusOr<std::vector<int>> ParseIndexList(const std::string& text, int count,
                                                const std::string& what);
// Resolves explicit indices (negatives from the end), sorted and deduplicated; empty means all.
// On an out-of-range index, *bad_position (when given) is its position in `indices`.
absl::StatusOr<std::vector<int>> ResolveIndices(const std::vector<int>& indices, int count,
                                                const std::string& what,
                                                size_t* bad_position = nullptr);

// Worst-case bytes of a capture: layers x heads x T x T x dtype size.
uint64_t EstimateCaptureBytes(const CaptureSpec& spec, int64_t total_tokens);

}  // namespace attnscope
