#include "server/capture/capture_spec.h"

#include <algorithm>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace attnscope {

absl::StatusOr<std::vector<int>> ResolveIndices(const std::vector<int>& indices, int count,
                                                const std::string& what, size_t* bad_position) {
  std::vector<int> resolved;
  if (indices.empty()) {
    for (int i = 0; i < count; ++i) resolved.push_back(i);
    return resolved;
  }
  for (size_t position = 0; position < indices.size(); ++position) {
    const int index = indices[position];
    const int64_t value = index < 0 ? static_cast<int64_t>(count) + index : index;
    if (value < 0 || value >= count) {
      if (bad_position != nullptr) *bad_position = position;
      return absl::OutOfRangeError(absl::StrCat(what, ": index ", index,
                                                " is out of range; the model has ", count, " ",
                                                what, " (valid: ", -count, "..", count - 1, ")"));
    }
    resolved.push_back(static_cast<int>(value));
  }
  std::sort(resolved.begin(), resolved.end());
  resolved.erase(std::unique(resolved.begin(), resolved.end()), resolved.end());
  return resolved;
}

absl::StatusOr<std::vector<int>> ParseIndexList(const std::string& text, int count,
                                                const std::string& what) {
  std::vector<int> indices;
  const std::string trimmed(absl::StripAsciiWhitespace(text));
  if (trimmed.empty() || trimmed == "all") return ResolveIndices(indices, count, what);
  for (absl::string_view part : absl::StrSplit(trimmed, ',')) {
    int value = 0;
    if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(part), &value)) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, ": '", std::string(part), "' is not an integer index"));
    }
    indices.push_back(value);
  }
  return ResolveIndices(indices, count, what);
}

uint64_t EstimateCaptureBytes(const CaptureSpec& spec, int64_t total_tokens) {
  const uint64_t t = static_cast<uint64_t>(std::max<int64_t>(total_tokens, 0));
  return static_cast<uint64_t>(spec.layers.size()) * spec.heads.size() * t * t *
         DTypeSize(spec.dtype);
}

}  // namespace attnscope
