#include "server/capture/capture_file.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "server/model/safetensors.h"

namespace attnscope {

namespace {

// A tensor's values as float32 (F32, F16 or BF16; another element type is an error).
absl::StatusOr<std::vector<float>> ToFloats(const SafetensorsFile& file, const TensorInfo& info) {
  absl::StatusOr<DType> dtype =
      FromTensorDType(info.dtype, absl::StrCat("tensor '", info.name, "'"));
  if (!dtype.ok()) return dtype.status();
  std::vector<float> values(info.numel());
  DTypeValuesToFloats(file.Data(info), info.numel(), *dtype, values.data());
  return values;
}

}  // namespace

CaptureAssembler::CaptureAssembler(CaptureSpec spec, int max_tokens)
    : spec_(std::move(spec)), max_tokens_(std::max(max_tokens, 0)) {
  for (int layer : spec_.layers) layers_[layer];
}

absl::Status CaptureAssembler::CheckChunk(int layer, size_t heads, int first_row, int num_rows,
                                          int key_length, size_t size_bytes) const {
  if (layers_.count(layer) == 0) {
    return absl::InvalidArgumentError(absl::StrCat("chunk layer ", layer, " was not captured"));
  }
  if (first_row < 0 || num_rows <= 0 || key_length <= 0 ||
      static_cast<int64_t>(key_length) > static_cast<int64_t>(first_row) + num_rows) {
    return absl::InvalidArgumentError(absl::StrCat("chunk rows [", static_cast<int64_t>(first_row),
                                                   ", ", static_cast<int64_t>(first_row) + num_rows,
                                                   ") with key_length ", key_length,
                                                   " are not a causal slice"));
  }
  if (max_tokens_ > 0 && static_cast<int64_t>(first_row) + num_rows > max_tokens_) {
    return absl::OutOfRangeError(absl::StrCat("chunk of layer ", layer, " has rows [", first_row,
                                              ", ", static_cast<int64_t>(first_row) + num_rows,
                                              "), past the sequence bound of ", max_tokens_,
                                              " tokens (prompt + max_new_tokens)"));
  }
  const size_t row_bytes = static_cast<size_t>(key_length) * DTypeSize(spec_.dtype);
  if (size_bytes != heads * num_rows * row_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("chunk of layer ", layer, " has ", size_bytes, " bytes, expected ",
                     heads * num_rows * row_bytes, " for ", heads, " heads x ", num_rows,
                     " rows x ", key_length, " keys"));
  }
  return absl::OkStatus();
}

absl::Status CaptureAssembler::Reserve(int layer, LayerBuffer& buffer, int64_t rows) {
  if (buffer.data != nullptr && rows <= buffer.stride) return absl::OkStatus();
  const int64_t stride =
      max_tokens_ > 0 ? max_tokens_ : std::max<int64_t>({rows, 2 * buffer.stride, 16});
  const size_t heads = spec_.heads.size();
  const size_t element = DTypeSize(spec_.dtype);
  // Bounded before it is paid: [H_sel, S, S] must fit in size_t (checked in long double).
  const long double bytes = static_cast<long double>(heads) * stride * stride * element;
  char* data = bytes < static_cast<long double>(SIZE_MAX / 2)
                   ? static_cast<char*>(std::calloc(std::max<size_t>(heads, 1),
                                                    static_cast<size_t>(stride * stride) * element))
                   : nullptr;
  if (data == nullptr) {
    return absl::ResourceExhaustedError(
        absl::StrCat("layer ", layer, ": cannot allocate ", heads, " heads x ", stride, " x ",
                     stride, " rows and keys x ", element, " bytes for the capture"));
  }
  std::unique_ptr<char, FreeDeleter> grown(data);
  std::vector<bool> received(static_cast<size_t>(stride) * heads, false);
  std::vector<int> heads_received(static_cast<size_t>(stride), 0);
  const int64_t old = buffer.stride;
  for (size_t h = 0; h < heads && buffer.data != nullptr; ++h) {
    for (int64_t r = 0; r < old; ++r) {
      std::memcpy(data + ((h * stride + r) * stride) * element,
                  buffer.data.get() + ((h * old + r) * old) * element, old * element);
    }
  }
  for (int64_t r = 0; r < old; ++r) {
    heads_received[r] = buffer.heads_received[r];
    for (size_t h = 0; h < heads; ++h) received[r * heads + h] = buffer.received[r * heads + h];
  }
  buffer.stride = stride;
  buffer.data = std::move(grown);
  buffer.received = std::move(received);
  buffer.heads_received = std::move(heads_received);
  return absl::OkStatus();
}

void CaptureAssembler::Place(LayerBuffer& buffer, const std::vector<size_t>& positions,
                             int first_row, int num_rows, int key_length, const char* data) {
  const size_t heads = spec_.heads.size();
  const size_t element = DTypeSize(spec_.dtype);
  const size_t row_bytes = static_cast<size_t>(key_length) * element;
  const size_t stride = static_cast<size_t>(buffer.stride);
  for (size_t i = 0; i < positions.size(); ++i) {
    const size_t h = positions[i];
    for (int r = 0; r < num_rows; ++r) {
      const size_t row = static_cast<size_t>(first_row) + r;
      std::memcpy(buffer.data.get() + ((h * stride + row) * stride) * element,
                  data + (i * num_rows + r) * row_bytes, row_bytes);
      if (buffer.received[row * heads + h]) continue;  // a repeated row overwrites
      buffer.received[row * heads + h] = true;
      const int placed = ++buffer.heads_received[row];
      if (placed == static_cast<int>(heads)) {
        ++buffer.complete_rows;
        if (heads > 1) --buffer.partial_rows;
      } else if (placed == 1) {
        ++buffer.partial_rows;
      }
    }
  }
}

absl::Status CaptureAssembler::AddBytes(int layer, int first_row, int num_rows, int key_length,
                                        const void* data, size_t size_bytes) {
  const size_t heads = spec_.heads.size();
  absl::Status valid = CheckChunk(layer, heads, first_row, num_rows, key_length, size_bytes);
  if (!valid.ok()) return valid;
  LayerBuffer& buffer = layers_.at(layer);
  absl::Status reserved = Reserve(layer, buffer, static_cast<int64_t>(first_row) + num_rows);
  if (!reserved.ok()) return reserved;
  std::vector<size_t> positions(heads);
  for (size_t h = 0; h < heads; ++h) positions[h] = h;
  Place(buffer, positions, first_row, num_rows, key_length, static_cast<const char*>(data));
  return absl::OkStatus();
}

absl::Status CaptureAssembler::AddHeadBytes(int layer, const std::vector<int>& heads, int first_row,
                                            int num_rows, int key_length, const void* data,
                                            size_t size_bytes) {
  absl::Status valid = CheckChunk(layer, heads.size(), first_row, num_rows, key_length, size_bytes);
  if (!valid.ok()) return valid;
  std::vector<size_t> positions;
  positions.reserve(heads.size());
  for (int head : heads) {
    auto it = std::lower_bound(spec_.heads.begin(), spec_.heads.end(), head);
    if (it == spec_.heads.end() || *it != head) {
      return absl::InvalidArgumentError(
          absl::StrCat("chunk of layer ", layer, " has head ", head, ", not captured"));
    }
    positions.push_back(static_cast<size_t>(it - spec_.heads.begin()));
  }
  LayerBuffer& buffer = layers_.at(layer);
  absl::Status reserved = Reserve(layer, buffer, static_cast<int64_t>(first_row) + num_rows);
  if (!reserved.ok()) return reserved;
  Place(buffer, positions, first_row, num_rows, key_length, static_cast<const char*>(data));
  return absl::OkStatus();
}

int CaptureAssembler::RowsReceived(int layer) const {
  auto it = layers_.find(layer);
  return it == layers_.end() ? 0 : it->second.complete_rows;
}

int CaptureAssembler::PartialRows(int layer) const {
  auto it = layers_.find(layer);
  return it == layers_.end() ? 0 : it->second.partial_rows;
}

std::string CaptureAssembler::LayerBytes(int layer, int total_tokens) const {
  const size_t heads = spec_.heads.size();
  const size_t element = DTypeSize(spec_.dtype);
  const size_t t = static_cast<size_t>(std::max(total_tokens, 0));
  std::string out(heads * t * t * element, '\0');
  auto it = layers_.find(layer);
  if (it == layers_.end() || it->second.data == nullptr) return out;
  const LayerBuffer& buffer = it->second;
  const size_t stride = static_cast<size_t>(buffer.stride);
  if (stride == t) {
    std::memcpy(out.data(), buffer.data.get(), out.size());
    return out;
  }
  const size_t rows = std::min(stride, t);
  for (size_t h = 0; h < heads; ++h) {
    for (size_t r = 0; r < rows; ++r) {
      std::memcpy(out.data() + ((h * t + r) * t) * element,
                  buffer.data.get() + ((h * stride + r) * stride) * element, rows * element);
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
  layer_bytes.reserve(spec_.layers.size());
  for (int layer : spec_.layers) {
    const LayerBuffer& buffer = layers_.at(layer);
    const size_t size =
        spec_.heads.size() * static_cast<size_t>(total) * total * DTypeSize(spec_.dtype);
    const void* data = nullptr;
    if (buffer.data != nullptr && buffer.stride == total) {
      data = buffer.data.get();  // the sequence filled its bound: the buffer is the tensor
    } else {
      layer_bytes.push_back(LayerBytes(layer, total));
      data = layer_bytes.back().data();
    }
    tensors.push_back({absl::StrCat("attention.", layer),
                       ToTensorDType(spec_.dtype),
                       {static_cast<int64_t>(spec_.heads.size()), total, total},
                       data,
                       size});
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
  meta["dtype"] = DTypeName(spec_.dtype);
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
    absl::StatusOr<DType> dtype =
        info == nullptr ? absl::NotFoundError(name) : FromTensorDType(info->dtype, name);
    if (!dtype.ok() || info->shape != expected) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": tensor '", name, "' missing or not F32/F16/BF16 [",
                       capture.heads.size(), ",", total, ",", total, "]"));
    }
    if (!capture.attention.empty() && *dtype != capture.dtype) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": tensor '", name, "' is ",
                                                     DTypeName(*dtype), ", earlier layers are ",
                                                     DTypeName(capture.dtype)));
    }
    capture.dtype = *dtype;
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
    absl::StatusOr<std::vector<float>> values = ToFloats(*capture->file, *info);
    if (!values.ok()) return values.status();
    contents.attention[layer] = *std::move(values);
  }
  if (const TensorInfo* logits = capture->file->Find("logits"); logits != nullptr) {
    absl::StatusOr<std::vector<float>> values = ToFloats(*capture->file, *logits);
    if (!values.ok()) return values.status();
    contents.logits = *std::move(values);
  }
  return contents;
}

}  // namespace attnscope
