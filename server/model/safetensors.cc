#include "server/model/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"
#include "server/json/bounded_json.h"

namespace attnscope {

namespace {

struct DTypeEntry {
  TensorDType dtype;
  const char* name;
  size_t size;
};

constexpr DTypeEntry kDTypes[] = {
    {TensorDType::kF64, "F64", 8},   {TensorDType::kF32, "F32", 4}, {TensorDType::kF16, "F16", 2},
    {TensorDType::kBF16, "BF16", 2}, {TensorDType::kI64, "I64", 8}, {TensorDType::kI32, "I32", 4},
    {TensorDType::kI16, "I16", 2},   {TensorDType::kI8, "I8", 1},   {TensorDType::kU8, "U8", 1},
    {TensorDType::kBool, "BOOL", 1},
};

absl::Status HeaderError(const std::string& file, const std::string& tensor,
                         const std::string& what) {
  if (tensor.empty()) return absl::InvalidArgumentError(absl::StrCat(file, ": ", what));
  return absl::InvalidArgumentError(absl::StrCat(file, ": tensor '", tensor, "': ", what));
}

// Reads a non-negative integer that fits in uint64 from a JSON value.
bool ReadUnsigned(const nlohmann::json& value, uint64_t* out) {
  if (value.is_number_unsigned()) {
    *out = value.get<uint64_t>();
    return true;
  }
  if (value.is_number_integer() && value.get<int64_t>() >= 0) {
    *out = static_cast<uint64_t>(value.get<int64_t>());
    return true;
  }
  return false;
}

}  // namespace

absl::StatusOr<TensorDType> ParseTensorDType(const std::string& name) {
  for (const auto& entry : kDTypes) {
    if (name == entry.name) return entry.dtype;
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown dtype '", name, "'"));
}

const char* TensorDTypeName(TensorDType dtype) {
  for (const auto& entry : kDTypes) {
    if (entry.dtype == dtype) return entry.name;
  }
  return "?";
}

size_t TensorDTypeSize(TensorDType dtype) {
  for (const auto& entry : kDTypes) {
    if (entry.dtype == dtype) return entry.size;
  }
  return 0;
}

int64_t TensorInfo::numel() const {
  int64_t count = 1;
  for (int64_t dim : shape) count *= dim;
  return count;
}

absl::StatusOr<std::vector<TensorInfo>> ParseSafetensorsHeader(
    const std::string& header_json, uint64_t data_size, const std::string& file_name,
    std::map<std::string, std::string>* metadata) {
  absl::StatusOr<nlohmann::json> parsed =
      ParseBoundedJson(header_json, absl::StrCat(file_name, ": header"));
  if (!parsed.ok()) return parsed.status();
  const nlohmann::json& header = *parsed;
  if (!header.is_object()) return HeaderError(file_name, "", "header is not a JSON object");

  std::vector<TensorInfo> tensors;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const nlohmann::json& entry = it.value();
    if (name == "__metadata__") {
      if (!entry.is_object()) return HeaderError(file_name, "", "__metadata__ is not an object");
      for (auto meta = entry.begin(); meta != entry.end(); ++meta) {
        if (!meta.value().is_string()) {
          return HeaderError(
              file_name, "",
              absl::StrCat("__metadata__ value of '", meta.key(), "' is not a string"));
        }
        if (metadata != nullptr) (*metadata)[meta.key()] = meta.value().get<std::string>();
      }
      continue;
    }
    if (!entry.is_object()) return HeaderError(file_name, name, "entry is not an object");
    TensorInfo info;
    info.name = name;
    auto dtype_it = entry.find("dtype");
    if (dtype_it == entry.end() || !dtype_it->is_string()) {
      return HeaderError(file_name, name, "missing or non-string 'dtype'");
    }
    auto dtype = ParseTensorDType(dtype_it->get<std::string>());
    if (!dtype.ok()) return HeaderError(file_name, name, std::string(dtype.status().message()));
    info.dtype = *dtype;

    auto shape_it = entry.find("shape");
    if (shape_it == entry.end() || !shape_it->is_array()) {
      return HeaderError(file_name, name, "missing or non-array 'shape'");
    }
    // Element count and byte size are computed with overflow checks: a hostile header can
    // claim dimensions whose product wraps around.
    uint64_t numel = 1;
    for (const auto& dim : *shape_it) {
      uint64_t value = 0;
      if (!ReadUnsigned(dim, &value) ||
          value > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        return HeaderError(file_name, name,
                           absl::StrCat("shape has an invalid dimension ", DescribeJson(dim)));
      }
      if (value != 0 && numel > std::numeric_limits<uint64_t>::max() / value) {
        return HeaderError(file_name, name, "shape's element count overflows");
      }
      numel *= value;
      info.shape.push_back(static_cast<int64_t>(value));
    }
    auto offsets_it = entry.find("data_offsets");
    if (offsets_it == entry.end() || !offsets_it->is_array() || offsets_it->size() != 2 ||
        !ReadUnsigned((*offsets_it)[0], &info.begin) ||
        !ReadUnsigned((*offsets_it)[1], &info.end)) {
      return HeaderError(file_name, name,
                         "missing or malformed 'data_offsets' (want [begin, end])");
    }
    if (info.end < info.begin) {
      return HeaderError(
          file_name, name,
          absl::StrCat("data_offsets end ", info.end, " is before begin ", info.begin));
    }
    const uint64_t element_size = TensorDTypeSize(info.dtype);
    if (numel > std::numeric_limits<uint64_t>::max() / element_size ||
        info.end - info.begin != numel * element_size) {
      return HeaderError(file_name, name,
                         absl::StrCat("byte span ", info.end - info.begin, " does not match dtype ",
                                      TensorDTypeName(info.dtype), " x shape [",
                                      absl::StrJoin(info.shape, ","), "]"));
    }
    if (info.end > data_size) {
      return HeaderError(
          file_name, name,
          absl::StrCat("data_offsets end ", info.end, " is past the data section of ", data_size,
                       " bytes (file truncated?)"));
    }
    tensors.push_back(std::move(info));
  }

  std::vector<const TensorInfo*> by_offset;
  for (const auto& info : tensors) by_offset.push_back(&info);
  std::sort(by_offset.begin(), by_offset.end(),
            [](const TensorInfo* a, const TensorInfo* b) { return a->begin < b->begin; });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    if (by_offset[i]->begin < by_offset[i - 1]->end) {
      return HeaderError(file_name, by_offset[i]->name,
                         absl::StrCat("byte span overlaps tensor '", by_offset[i - 1]->name, "'"));
    }
  }
  return tensors;
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return absl::NotFoundError(absl::StrCat(path, ": cannot open: ", std::strerror(errno)));
  }
  struct stat info;
  if (::fstat(fd, &info) != 0) {
    ::close(fd);
    return absl::InternalError(absl::StrCat(path, ": cannot stat"));
  }
  const uint64_t file_size = static_cast<uint64_t>(info.st_size);
  if (file_size < 8) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrCat(path, ": file of ", file_size,
                                                   " bytes is too short for a safetensors header"));
  }
  void* mapping = ::mmap(nullptr, file_size, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (mapping == MAP_FAILED) return absl::InternalError(absl::StrCat(path, ": mmap failed"));

  std::unique_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->path_ = path;
  file->mapping_ = mapping;
  file->mapping_size_ = file_size;
  const auto* bytes = static_cast<const uint8_t*>(mapping);
  uint64_t header_length = 0;
  for (int i = 7; i >= 0; --i) header_length = (header_length << 8) | bytes[i];
  if (header_length > kMaxSafetensorsHeaderBytes) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": header length ", header_length,
                                                   " exceeds the limit of ",
                                                   kMaxSafetensorsHeaderBytes, " bytes"));
  }
  if (header_length > file_size - 8) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": header length ", header_length,
                                                   " runs past the end of the file (", file_size,
                                                   " bytes)"));
  }
  const std::string header(reinterpret_cast<const char*>(bytes + 8), header_length);
  file->data_ = bytes + 8 + header_length;
  auto tensors =
      ParseSafetensorsHeader(header, file_size - 8 - header_length, path, &file->metadata_);
  if (!tensors.ok()) return tensors.status();
  file->tensors_ = std::move(*tensors);
  return file;
}

SafetensorsFile::~SafetensorsFile() {
  if (mapping_ != nullptr) ::munmap(mapping_, mapping_size_);
}

const TensorInfo* SafetensorsFile::Find(const std::string& name) const {
  for (const auto& info : tensors_) {
    if (info.name == name) return &info;
  }
  return nullptr;
}

absl::Status WriteSafetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                              const std::map<std::string, std::string>& metadata) {
  nlohmann::json header = nlohmann::json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  std::vector<uint64_t> offsets;
  for (const auto& tensor : tensors) {
    uint64_t numel = 1;
    for (int64_t dim : tensor.shape) numel *= static_cast<uint64_t>(dim);
    if (numel * TensorDTypeSize(tensor.dtype) != tensor.size_bytes) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tensor '", tensor.name, "': ", tensor.size_bytes, " bytes do not match shape"));
    }
    offsets.push_back(offset);
    header[tensor.name] = {{"dtype", TensorDTypeName(tensor.dtype)},
                           {"shape", tensor.shape},
                           {"data_offsets", {offset, offset + tensor.size_bytes}}};
    offset += tensor.size_bytes;
  }
  // Invalid UTF-8 in metadata (a token cut inside a character) becomes U+FFFD, not an exception.
  std::string header_text = header.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  // Pad with spaces so the data section starts 8-byte aligned, as the reference writer does.
  while ((8 + header_text.size()) % 8 != 0) header_text.push_back(' ');

  const std::string partial_path = path + ".partial";
  std::FILE* out = std::fopen(partial_path.c_str(), "wb");
  if (out == nullptr) {
    return absl::PermissionDeniedError(
        absl::StrCat(path, ": cannot open for writing: ", std::strerror(errno)));
  }
  uint8_t length_bytes[8];
  uint64_t length = header_text.size();
  for (int i = 0; i < 8; ++i) length_bytes[i] = static_cast<uint8_t>(length >> (8 * i));
  bool ok = std::fwrite(length_bytes, 1, 8, out) == 8 &&
            std::fwrite(header_text.data(), 1, header_text.size(), out) == header_text.size();
  for (const auto& tensor : tensors) {
    if (!ok) break;
    ok = tensor.size_bytes == 0 ||
         std::fwrite(tensor.data, 1, tensor.size_bytes, out) == tensor.size_bytes;
  }
  ok = (std::fclose(out) == 0) && ok;
  if (!ok || std::rename(partial_path.c_str(), path.c_str()) != 0) {
    std::remove(partial_path.c_str());
    return absl::InternalError(absl::StrCat(path, ": write failed: ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

}  // namespace attnscope
