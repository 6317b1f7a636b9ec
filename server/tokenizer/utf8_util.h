// Small UTF-8 helpers shared by the tokenizers (no dependency on utf8proc's allocation API).
#pragma once

#include <cstdint>
#include <string>

namespace attnscope::utf8 {

// Length of the well-formed UTF-8 sequence starting at text[pos] (1..4), or 0 when the bytes
// there are not a well-formed sequence (overlongs, surrogates, > U+10FFFF, truncation).
int WellFormedLength(const std::string& text, size_t pos);

// Offset of the first byte that does not start a well-formed sequence, or npos when valid.
size_t FirstInvalidOffset(const std::string& text);

// Replaces every maximal ill-formed subsequence with U+FFFD (as Rust's from_utf8_lossy does).
std::string ReplaceInvalid(const std::string& bytes);

// Decodes the code point of a well-formed sequence of `length` bytes at text[pos].
int32_t DecodeAt(const std::string& text, size_t pos, int length);

void AppendCodePoint(int32_t code_point, std::string* out);

}  // namespace attnscope::utf8
