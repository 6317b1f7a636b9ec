#include "server/engine/capture_file.h"

#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "server/model/safetensors.h"

namespace attnscope {

namespace {

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

std::vector<float> ToFloats(const uint8_t* data, int64_t count, TensorDType dtype) {
  std::vector<float> values(count);
  CaptureValuesToFloats(data, count, dtype, values.data());
  return values;
}

}  // namespace

void CaptureValuesToFloats(const uint8_t* data, int64_t count, TensorDType dtype, float* out) {
  if (dtype == TensorDType::kF32) {
    std::memcpy(out, data, static_cast<size_t>(count) * 4);
    return;
  }
  for (int64_t i = 0; i < count; ++i) {
    uint16_t raw;
    std::memcpy(&raw, data + 2 * i, 2);
    if (dtype == TensorDType::kF16) {
      out[i] = HalfToFloat(raw);
    } else {
      const uint32_t bits = static_cast<uint32_t>(raw) << 16;
      std::memcpy(&out[i], &bits, 4);
    }
  }
}

CaptureAssembler::CaptureAssembler(CaptureSpec spec) : spec_(std::move(spec)) {
  for (int layer : spec_.layers) rows_[layer];
}

absl::Status CaptureAssembler::AddBytes(int layer, int first_row, int num_rows, int key_length,
                                        const void* data, size_t size_bytes) {
  auto layer_it = rows_.find(layer);
  if (layer_it == rows_.end()) {
    return absl::InvalidArgumentError(absl::StrCat("chunk layer ", layer, " was not captured"));
  }
  if (first_row < 0 || num_rows <= 0 || key_length <= 0 || key_length > first_row + num_rows) {
    return absl::InvalidArgumentError(absl::StrCat("chunk rows [", first_row, ", ",
                                                   first_row + num_rows, ") with key_length ",
                                                   key_length, " are not a causal slice"));
  }
  const size_t heads = spec_.heads.size();
  const size_t element = CaptureDTypeSize(spec_.dtype);
  const size_t row_bytes = static_cast<size_t>(key_length) * element;
  if (size_bytes != heads * num_rows * row_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("chunk of layer ", layer, " has ", size_bytes, " bytes, expected ",
                     heads * num_rows * row_bytes, " for ", heads, " heads x ", num_rows,
                     " rows x ", key_length, " keys"));
  }
  const char* bytes = static_cast<const char*>(data);
  for (int r = 0; r < num_rows; ++r) {
    Row& row = layer_it->second[first_row + r];
    row.key_length = key_length;
    row.bytes.resize(heads * row_bytes);
    for (size_t h = 0; h < heads; ++h) {
      std::memcpy(row.bytes.data() + h * row_bytes, bytes + (h * num_rows + r) * row_bytes,
                  row_bytes);
    }
  }
  return absl::OkStatus();
}

absl::Status CaptureAssembler::AddFloats(const AttentionBlock& block) {
  const size_t count = block.heads->size() * static_cast<size_t>(block.num_rows) * block.key_length;
  if (block.wire_data != nullptr && block.wire_dtype == spec_.dtype) {
    // Converted where the rows were computed: already the file's bytes.
    return AddBytes(block.layer, block.first_row, block.num_rows, block.key_length, block.wire_data,
                    count * CaptureDTypeSize(spec_.dtype));
  }
  std::string converted;
  ConvertFloats(block.data, count, spec_.dtype, &converted);
  return AddBytes(block.layer, block.first_row, block.num_rows, block.key_length, converted.data(),
                  converted.size());
}

int CaptureAssembler::RowsReceived(int layer) const {
  auto it = rows_.find(layer);
  return it == rows_.end() ? 0 : static_cast<int>(it->second.size());
}

std::string CaptureAssembler::LayerBytes(int layer, int total_tokens) const {
  const size_t heads = spec_.heads.size();
  const size_t element = CaptureDTypeSize(spec_.dtype);
  const size_t t = static_cast<size_t>(total_tokens);
  std::string out(heads * t * t * element, '\0');
  auto it = rows_.find(layer);
  if (it == rows_.end()) return out;
  for (const auto& [row_index, row] : it->second) {
    if (row_index >= total_tokens) continue;
    const size_t key_length = std::min<size_t>(row.key_length, t);
    const size_t row_bytes = static_cast<size_t>(row.key_length) * element;
    for (size_t h = 0; h < heads; ++h) {
      std::memcpy(out.data() + ((h * t + row_index) * t) * element,
                  row.bytes.data() + h * row_bytes, key_length * element);
    }
  }
  return out;
}

absl::Status CaptureAssembler::Write(const std::string& path, const std::vector<int64_t>& token_ids,
                                     const CaptureMetadata& metadata,
                                     const std::vector<float>* logits, int vocab_size) const {
  const int total = static_cast<int>(token_ids.size());
  std::vector<std::string> layer_bytes;
  std::vector<TensorToWrite> tensors;
  tensors.push_back({"token_ids",
                     TensorDType::kI64,
                     {total},
                     token_ids.data(),
                     token_ids.size() * sizeof(int64_t)});
  auto dtype = ParseTensorDType(CaptureDTypeSafetensorsName(spec_.dtype));
  layer_bytes.reserve(spec_.layers.size());
  for (int layer : spec_.layers) {
    layer_bytes.push_back(LayerBytes(layer, total));
    tensors.push_back({absl::StrCat("attention.", layer),
                       *dtype,
                       {static_cast<int64_t>(spec_.heads.size()), total, total},
                       layer_bytes.back().data(),
                       layer_bytes.back().size()});
  }
  if (logits != nullptr && !logits->empty()) {
    tensors.push_back({"logits",
                       TensorDType::kF32,
                       {static_cast<int64_t>(logits->size() / vocab_size), vocab_size},
                       logits->data(),
                       logits->size() * sizeof(float)});
  }
  std::map<std::string, std::string> meta;
  meta["format"] = "attnscope.capture.v1";
  meta["prompt_length"] = std::to_string(metadata.prompt_length);
  meta["layers"] = nlohmann::json(spec_.layers).dump();
  meta["heads"] = nlohmann::json(spec_.heads).dump();
  meta["dtype"] = CaptureDTypeName(spec_.dtype);
  meta["model"] = metadata.model;
  meta["stop_reason"] = metadata.stop_reason;
  if (!metadata.template_date.empty()) meta["template_date"] = metadata.template_date;
  if (!metadata.tokens.empty()) {
    meta["tokens"] = nlohmann::json(metadata.tokens)
                         .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    meta["generated_text"] = metadata.generated_text;
  }
  return WriteSafetensors(path, tensors, meta);
}

absl::StatusOr<MappedCapture> OpenCaptureFile(const std::string& path) {
  auto file = SafetensorsFile::Open(path);
  if (!file.ok()) return file.status();
  MappedCapture capture;
  capture.metadata = (*file)->metadata();
  auto meta = [&](const std::string& key) {
    auto it = capture.metadata.find(key);
    return it == capture.metadata.end() ? std::string() : it->second;
  };
  if (meta("format") != "attnscope.capture.v1") {
    return absl::InvalidArgumentError(absl::StrCat(path, ": __metadata__ format is '",
                                                   meta("format"), "', not attnscope.capture.v1"));
  }
  try {
    capture.layers = nlohmann::json::parse(meta("layers")).get<std::vector<int>>();
    capture.heads = nlohmann::json::parse(meta("heads")).get<std::vector<int>>();
    capture.prompt_length = std::stoi(meta("prompt_length"));
    if (!meta("tokens").empty()) {
      capture.tokens = nlohmann::json::parse(meta("tokens")).get<std::vector<std::string>>();
    }
  } catch (const std::exception& error) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": malformed metadata: ", error.what()));
  }
  const TensorInfo* ids = (*file)->Find("token_ids");
  if (ids == nullptr || ids->dtype != TensorDType::kI64 || ids->shape.size() != 1) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": token_ids I64 [T] missing"));
  }
  capture.token_ids.resize(ids->numel());
  std::memcpy(capture.token_ids.data(), (*file)->Data(*ids), ids->numel() * sizeof(int64_t));
  const int64_t total = ids->numel();
  if (capture.prompt_length < 0 || capture.prompt_length > total) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": prompt_length ", capture.prompt_length,
                                                   " is outside [0, ", total, "]"));
  }
  if (!capture.tokens.empty() && static_cast<int64_t>(capture.tokens.size()) != total) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": metadata tokens has ",
                                                   capture.tokens.size(), " entries for ", total,
                                                   " token_ids"));
  }
  for (int layer : capture.layers) {
    const std::string name = absl::StrCat("attention.", layer);
    const TensorInfo* info = (*file)->Find(name);
    const std::vector<int64_t> expected = {static_cast<int64_t>(capture.heads.size()), total,
                                           total};
    if (info == nullptr || info->shape != expected ||
        (info->dtype != TensorDType::kF32 && info->dtype != TensorDType::kF16 &&
         info->dtype != TensorDType::kBF16)) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": tensor '", name, "' missing or not F32/F16/BF16 [",
                       capture.heads.size(), ",", total, ",", total, "]"));
    }
    capture.attention[layer] = info;
  }
  capture.file = std::move(*file);
  return capture;
}

absl::StatusOr<CaptureFileContents> ReadCaptureFile(const std::string& path) {
  auto capture = OpenCaptureFile(path);
  if (!capture.ok()) return capture.status();
  CaptureFileContents contents;
  contents.token_ids = capture->token_ids;
  contents.layers = capture->layers;
  contents.heads = capture->heads;
  contents.prompt_length = capture->prompt_length;
  contents.tokens = capture->tokens;
  contents.metadata = capture->metadata;
  for (const auto& [layer, info] : capture->attention) {
    contents.attention[layer] = ToFloats(capture->file->Data(*info), info->numel(), info->dtype);
  }
  if (const TensorInfo* logits = capture->file->Find("logits"); logits != nullptr) {
    contents.logits = ToFloats(capture->file->Data(*logits), logits->numel(), logits->dtype);
  }
  return contents;
}

}  // namespace attnscope
