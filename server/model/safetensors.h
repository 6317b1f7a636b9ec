// A hardened reader and a writer for the safetensors format
// (https://github.com/huggingface/safetensors): 8-byte little-endian header length, a JSON
// header {name: {dtype, shape, data_offsets}, "__metadata__": {str: str}}, then the bytes.
//
// The reader maps the file read-only and never copies tensor bytes; every tensor's span is
// checked against dtype x shape and the file size, spans may not overlap, and every error
// names the file, the tensor and what was wrong. torch-free.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace attnscope {

// Header length cap: larger headers are rejected before any allocation.
inline constexpr uint64_t kMaxSafetensorsHeaderBytes = 100000000;

enum class TensorDType { kF64, kF32, kF16, kBF16, kI64, kI32, kI16, kI8, kU8, kBool };

absl::StatusOr<TensorDType> ParseTensorDType(const std::string& name);
const char* TensorDTypeName(TensorDType dtype);
size_t TensorDTypeSize(TensorDType dtype);

struct TensorInfo {
  std::string name;
  TensorDType dtype = TensorDType::kF32;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // byte offsets relative to the start of the data section
  uint64_t end = 0;
  int64_t numel() const;
};

// Parses and validates a header (the JSON text) for a data section of `data_size` bytes.
// Exposed for the fuzz target and tests; `file_name` only labels errors.
absl::StatusOr<std::vector<TensorInfo>> ParseSafetensorsHeader(
    const std::string& header_json, uint64_t data_size, const std::string& file_name,
    std::map<std::string, std::string>* metadata);

class SafetensorsFile {
 public:
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const TensorInfo* Find(const std::string& name) const;
  // Pointer to the tensor's bytes inside the mapping (little-endian, row-major).
  const uint8_t* Data(const TensorInfo& info) const { return data_ + info.begin; }

 private:
  SafetensorsFile() = default;
  std::string path_;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, std::string> metadata_;
  void* mapping_ = nullptr;
  size_t mapping_size_ = 0;
  const uint8_t* data_ = nullptr;
};

// A tensor to write: raw little-endian bytes already in `dtype`.
struct TensorToWrite {
  std::string name;
  TensorDType dtype = TensorDType::kF32;
  std::vector<int64_t> shape;
  const void* data = nullptr;
  size_t size_bytes = 0;
};

// Writes to `path + ".partial"` and renames on success, so no half-written file is ever left
// under `path`. Tensors are laid out in the given order, 8-byte aligned.
absl::Status WriteSafetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                              const std::map<std::string, std::string>& metadata);

}  // namespace attnscope
