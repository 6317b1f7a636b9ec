#include "server/tokenizer/utf8_util.h"

namespace attnscope::utf8 {
namespace {

// Number of leading bytes of text[pos..] that form a valid prefix of some sequence (the
// "maximal subpart" that Unicode's replacement practice consumes per U+FFFD), at least 1.
int MaximalSubpartLength(const std::string& text, size_t pos) {
  const auto byte = [&](size_t i) { return static_cast<unsigned char>(text[i]); };
  const unsigned char lead = byte(pos);
  int needed = 0;
  unsigned char low = 0x80, high = 0xBF;
  if (lead >= 0xC2 && lead <= 0xDF) {
    needed = 1;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    needed = 2;
    if (lead == 0xE0) low = 0xA0;
    if (lead == 0xED) high = 0x9F;
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    needed = 3;
    if (lead == 0xF0) low = 0x90;
    if (lead == 0xF4) high = 0x8F;
  } else {
    return 1;
  }
  int length = 1;
  for (int k = 0; k < needed; ++k) {
    const size_t i = pos + 1 + k;
    if (i >= text.size()) break;
    const unsigned char c = byte(i);
    const unsigned char lo = k == 0 ? low : 0x80, hi = k == 0 ? high : 0xBF;
    if (c < lo || c > hi) break;
    ++length;
  }
  return length;
}

}  // namespace

int WellFormedLength(const std::string& text, size_t pos) {
  const unsigned char lead = static_cast<unsigned char>(text[pos]);
  if (lead < 0x80) return 1;
  const int needed = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : 2;
  const int prefix = MaximalSubpartLength(text, pos);
  return prefix == needed ? needed : 0;
}

size_t FirstInvalidOffset(const std::string& text) {
  size_t pos = 0;
  while (pos < text.size()) {
    if (static_cast<unsigned char>(text[pos]) < 0x80) {
      ++pos;
      continue;
    }
    const int length = WellFormedLength(text, pos);
    if (length == 0) return pos;
    pos += length;
  }
  return std::string::npos;
}

std::string ReplaceInvalid(const std::string& bytes) {
  if (FirstInvalidOffset(bytes) == std::string::npos) return bytes;
  std::string out;
  out.reserve(bytes.size() + 8);
  size_t pos = 0;
  while (pos < bytes.size()) {
    const int length = WellFormedLength(bytes, pos);
    if (length > 0) {
      out.append(bytes, pos, length);
      pos += length;
    } else {
      out.append("\xEF\xBF\xBD");
      pos += MaximalSubpartLength(bytes, pos);
    }
  }
  return out;
}

int32_t DecodeAt(const std::string& text, size_t pos, int length) {
  const auto byte = [&](size_t i) { return static_cast<unsigned char>(text[i]); };
  switch (length) {
    case 1:
      return byte(pos);
    case 2:
      return ((byte(pos) & 0x1F) << 6) | (byte(pos + 1) & 0x3F);
    case 3:
      return ((byte(pos) & 0x0F) << 12) | ((byte(pos + 1) & 0x3F) << 6) | (byte(pos + 2) & 0x3F);
    default:
      return ((byte(pos) & 0x07) << 18) | ((byte(pos + 1) & 0x3F) << 12) |
             ((byte(pos + 2) & 0x3F) << 6) | (byte(pos + 3) & 0x3F);
  }
}

void AppendCodePoint(int32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

}  // namespace attnscope::utf8
