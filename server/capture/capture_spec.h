// Which layers, heads and query rows a request captures, and in which dtype.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace attnscope {

enum class CaptureDType { kFloat32, kFloat16, kBFloat16 };

// Which query rows reach the sinks.
enum class CaptureRows { kAll, kPromptOnly, kGeneratedOnly };

struct CaptureSpec {
  std::vector<int> layers;  // resolved, ascending, no duplicates; empty: capture nothing
  std::vector<int> heads;   // resolved query-head indices, ascending; same for every layer
  CaptureDType dtype = CaptureDType::kFloat32;
  CaptureRows rows = CaptureRows::kAll;

  bool enabled() const { return !layers.empty() && !heads.empty(); }
};

// Parses "all", "" (all) or a comma list with negative indices counted from the end
// ("0,5,-1"). Errors name `what` ("layers"/"heads"), the bad value and the valid range.
absl::StatusOr<std::vector<int>> ParseIndexList(const std::string& text, int count,
                                                const std::string& what);
// Resolves explicit indices (negatives from the end), sorted and deduplicated; empty means all.
absl::StatusOr<std::vector<int>> ResolveIndices(const std::vector<int>& indices, int count,
                                                const std::string& what);

absl::StatusOr<CaptureDType> ParseCaptureDType(const std::string& name);
const char* CaptureDTypeName(CaptureDType dtype);             // "float32", "float16", "bfloat16"
const char* CaptureDTypeSafetensorsName(CaptureDType dtype);  // "F32", "F16", "BF16"
size_t CaptureDTypeSize(CaptureDType dtype);

// Worst-case bytes of a capture: layers x heads x T x T x dtype size.
uint64_t EstimateCaptureBytes(const CaptureSpec& spec, int64_t total_tokens);

// float32 -> IEEE half / bfloat16, round to nearest even; appends to `out`.
void ConvertFloats(const float* src, size_t count, CaptureDType dtype, std::string* out);

}  // namespace attnscope
