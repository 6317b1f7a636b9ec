#include "server/capture/capture_spec.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace attnscope {

absl::StatusOr<std::vector<int>> ResolveIndices(const std::vector<int>& indices, int count,
                                                const std::string& what) {
  std::vector<int> resolved;
  if (indices.empty()) {
    for (int i = 0; i < count; ++i) resolved.push_back(i);
    return resolved;
  }
  for (int index : indices) {
    const int64_t value = index < 0 ? static_cast<int64_t>(count) + index : index;
    if (value < 0 || value >= count) {
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

absl::StatusOr<CaptureDType> ParseCaptureDType(const std::string& name) {
  if (name == "float32" || name == "fp32" || name == "F32") return CaptureDType::kFloat32;
  if (name == "float16" || name == "fp16" || name == "F16") return CaptureDType::kFloat16;
  if (name == "bfloat16" || name == "bf16" || name == "BF16") return CaptureDType::kBFloat16;
  return absl::InvalidArgumentError(
      absl::StrCat("dtype: '", name, "' is not one of float32, float16, bfloat16"));
}

const char* CaptureDTypeName(CaptureDType dtype) {
  switch (dtype) {
    case CaptureDType::kFloat32:
      return "float32";
    case CaptureDType::kFloat16:
      return "float16";
    case CaptureDType::kBFloat16:
      return "bfloat16";
  }
  return "?";
}

const char* CaptureDTypeSafetensorsName(CaptureDType dtype) {
  switch (dtype) {
    case CaptureDType::kFloat32:
      return "F32";
    case CaptureDType::kFloat16:
      return "F16";
    case CaptureDType::kBFloat16:
      return "BF16";
  }
  return "?";
}

size_t CaptureDTypeSize(CaptureDType dtype) { return dtype == CaptureDType::kFloat32 ? 4 : 2; }

uint64_t EstimateCaptureBytes(const CaptureSpec& spec, int64_t total_tokens) {
  const uint64_t t = static_cast<uint64_t>(std::max<int64_t>(total_tokens, 0));
  return static_cast<uint64_t>(spec.layers.size()) * spec.heads.size() * t * t *
         CaptureDTypeSize(spec.dtype);
}

namespace {

uint16_t FloatToBFloat16(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, 4);
  if (std::isnan(value)) return static_cast<uint16_t>((bits >> 16) | 0x40);
  const uint32_t rounding = 0x7FFF + ((bits >> 16) & 1);  // round to nearest even
  return static_cast<uint16_t>((bits + rounding) >> 16);
}

uint16_t FloatToHalf(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, 4);
  const uint32_t sign = (bits >> 16) & 0x8000;
  const int32_t exponent = static_cast<int32_t>((bits >> 23) & 0xFF) - 127 + 15;
  uint32_t mantissa = bits & 0x7FFFFF;
  if (((bits >> 23) & 0xFF) == 0xFF)
    return static_cast<uint16_t>(sign | 0x7C00 | (mantissa ? 0x200 : 0));
  if (exponent >= 31) return static_cast<uint16_t>(sign | 0x7C00);  // overflow -> inf
  if (exponent <= 0) {
    if (exponent < -10) return static_cast<uint16_t>(sign);  // underflow -> signed zero
    mantissa |= 0x800000;
    const int shift = 14 - exponent;
    uint32_t half_mantissa = mantissa >> shift;
    const uint32_t remainder = mantissa & ((1u << shift) - 1);
    const uint32_t halfway = 1u << (shift - 1);
    if (remainder > halfway || (remainder == halfway && (half_mantissa & 1))) ++half_mantissa;
    return static_cast<uint16_t>(sign | half_mantissa);
  }
  uint32_t half = sign | (static_cast<uint32_t>(exponent) << 10) | (mantissa >> 13);
  const uint32_t remainder = mantissa & 0x1FFF;
  if (remainder > 0x1000 || (remainder == 0x1000 && (half & 1))) ++half;  // may carry into exponent
  return static_cast<uint16_t>(half);
}

}  // namespace

void ConvertFloats(const float* src, size_t count, CaptureDType dtype, std::string* out) {
  const size_t offset = out->size();
  if (dtype == CaptureDType::kFloat32) {
    out->append(reinterpret_cast<const char*>(src), count * 4);
    return;
  }
  out->resize(offset + count * 2);
  char* dst = out->data() + offset;
  for (size_t i = 0; i < count; ++i) {
    const uint16_t value =
        dtype == CaptureDType::kFloat16 ? FloatToHalf(src[i]) : FloatToBFloat16(src[i]);
    std::memcpy(dst + 2 * i, &value, 2);
  }
}

}  // namespace attnscope
