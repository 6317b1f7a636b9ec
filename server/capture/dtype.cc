#include "server/capture/dtype.h"

#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace attnscope {

absl::StatusOr<DType> ParseDType(absl::string_view name, absl::string_view field) {
  if (name == "float32" || name == "fp32" || name == "F32") return DType::kFloat32;
  if (name == "float16" || name == "fp16" || name == "F16") return DType::kFloat16;
  if (name == "bfloat16" || name == "bf16" || name == "BF16") return DType::kBFloat16;
  return absl::InvalidArgumentError(
      absl::StrCat(field, ": '", name, "' is not one of float32, float16, bfloat16"));
}

const char* DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kFloat32:
      return "float32";
    case DType::kFloat16:
      return "float16";
    case DType::kBFloat16:
      return "bfloat16";
  }
  return "?";
}

size_t DTypeSize(DType dtype) { return dtype == DType::kFloat32 ? 4 : 2; }

TensorDType ToTensorDType(DType dtype) {
  switch (dtype) {
    case DType::kFloat16:
      return TensorDType::kF16;
    case DType::kBFloat16:
      return TensorDType::kBF16;
    case DType::kFloat32:
      break;
  }
  return TensorDType::kF32;
}

absl::StatusOr<DType> FromTensorDType(TensorDType dtype, absl::string_view what) {
  switch (dtype) {
    case TensorDType::kF32:
      return DType::kFloat32;
    case TensorDType::kF16:
      return DType::kFloat16;
    case TensorDType::kBF16:
      return DType::kBFloat16;
    default:
      return absl::InvalidArgumentError(absl::StrCat(
          what, ": element type ", TensorDTypeName(dtype), " is not one of F32, F16, BF16"));
  }
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

float HalfToFloat(uint16_t half) {
  const uint32_t sign = (half & 0x8000u) << 16;
  uint32_t exponent = (half >> 10) & 0x1F;
  uint32_t mantissa = half & 0x3FF;
  uint32_t bits;
  if (exponent == 0) {
    if (mantissa == 0) {
      bits = sign;
    } else {  // subnormal: normalise
      exponent = 127 - 15 + 1;
      while ((mantissa & 0x400) == 0) {
        mantissa <<= 1;
        --exponent;
      }
      bits = sign | (exponent << 23) | ((mantissa & 0x3FF) << 13);
    }
  } else if (exponent == 31) {
    bits = sign | 0x7F800000u | (mantissa << 13);
  } else {
    bits = sign | ((exponent + 127 - 15) << 23) | (mantissa << 13);
  }
  float value;
  std::memcpy(&value, &bits, 4);
  return value;
}

}  // namespace

void ConvertFloats(const float* src, size_t count, DType dtype, std::string* out) {
  const size_t offset = out->size();
  if (dtype == DType::kFloat32) {
    out->append(reinterpret_cast<const char*>(src), count * 4);
    return;
  }
  out->resize(offset + count * 2);
  char* dst = out->data() + offset;
  for (size_t i = 0; i < count; ++i) {
    const uint16_t value = dtype == DType::kFloat16 ? FloatToHalf(src[i]) : FloatToBFloat16(src[i]);
    std::memcpy(dst + 2 * i, &value, 2);
  }
}

void DTypeValuesToFloats(const uint8_t* data, int64_t count, DType dtype, float* out) {
  if (dtype == DType::kFloat32) {
    std::memcpy(out, data, static_cast<size_t>(count) * 4);
    return;
  }
  for (int64_t i = 0; i < count; ++i) {
    uint16_t raw;
    std::memcpy(&raw, data + 2 * i, 2);
    if (dtype == DType::kFloat16) {
      out[i] = HalfToFloat(raw);
    } else {
      const uint32_t bits = static_cast<uint32_t>(raw) << 16;
      std::memcpy(&out[i], &bits, 4);
    }
  }
}

}  // namespace attnscope
