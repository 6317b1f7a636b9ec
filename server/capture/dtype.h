// The one floating-point element type of the project: what attention is captured in, what a
// capture file's attention tensors hold, what the model runs in. Its only conversions: from
// text (ParseDType, every spelling), to and from the safetensors element type (here), to
// at::ScalarType (server/model/transformer.h, the torch side) and to and from attnscope.v1's
// DType (server/session/request_proto.h, the only proto conversion).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/model/safetensors.h"

namespace attnscope {

enum class DType { kFloat32, kFloat16, kBFloat16 };

// float32 | fp32 | F32, float16 | fp16 | F16, bfloat16 | bf16 | BF16 (the flag spellings and
// the safetensors names). Errors name `field`, the value and the accepted names.
absl::StatusOr<DType> ParseDType(absl::string_view name, absl::string_view field = "dtype");
const char* DTypeName(DType dtype);  // "float32", "float16", "bfloat16"
size_t DTypeSize(DType dtype);

// The safetensors element type (F32, F16, BF16), and back: another element type (I64, F64,
// ...) is an error naming `what`.
TensorDType ToTensorDType(DType dtype);
absl::StatusOr<DType> FromTensorDType(TensorDType dtype, absl::string_view what);

// float32 -> `dtype` (IEEE half / bfloat16 round to nearest even); appends to `out`.
void ConvertFloats(const float* src, size_t count, DType dtype, std::string* out);
// `count` little-endian values in `dtype` -> float32.
void DTypeValuesToFloats(const uint8_t* data, int64_t count, DType dtype, float* out);

}  // namespace attnscope
