// JSON from files a checkpoint brings (config.json, tokenizer.json, safetensors headers) is
// untrusted: a document nested a million levels deep parses, but copying it (`value()`),
// printing it (`dump()`) or destroying it recurses once per level and overflows the stack.
// Every such read goes through ParseBoundedJson, which refuses documents nested deeper than
// kMaxJsonDepth before nlohmann builds anything, and error messages describe values with
// DescribeJson, whose output is bounded whatever the value holds.
#pragma once

#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace attnscope {

// Real model files nest at most ~6 levels (a tokenizer.json Sequence of Split pre-tokenizers).
inline constexpr int kMaxJsonDepth = 64;

// INVALID_ARGUMENT "SOURCE: field 'KEY' is nested deeper than MAX levels (at byte N)" when
// arrays/objects nest deeper than `max_depth` (KEY is the top-level key holding the spot).
// O(size), no allocation beyond the key name.
absl::Status CheckJsonDepth(std::string_view text, const std::string& source,
                            int max_depth = kMaxJsonDepth);

// CheckJsonDepth, then nlohmann::json::parse; a syntax error is INVALID_ARGUMENT naming
// `source`. Never throws.
absl::StatusOr<nlohmann::json> ParseBoundedJson(std::string_view text, const std::string& source,
                                                int max_depth = kMaxJsonDepth);

// A short description for error messages: scalars as JSON (strings cut at 64 bytes), arrays
// and objects by size ("an array of 3 items"). At most ~100 bytes, O(1) work.
std::string DescribeJson(const nlohmann::json& value);

}  // namespace attnscope
