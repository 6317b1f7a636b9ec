// libFuzzer target for the safetensors reader (server/model/safetensors.cc): a model folder is
// untrusted input, and its header decides every offset the loader later reads.
//
// Each input is used twice:
//  1. as header JSON for a data section of kJsonModeDataSize bytes (JSON seeds mutate well);
//  2. as a whole file (8-byte little-endian header length, header, data) opened through
//     SafetensorsFile::Open from an in-memory file, which exercises the length-prefix framing.
// Beyond "no crash, no sanitizer report", every accepted header must satisfy the invariants
// the loader relies on; a violation traps, so libFuzzer saves the input.
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "server/model/safetensors.h"

namespace {

constexpr uint64_t kJsonModeDataSize = 1 << 16;

// The invariants of a header that ParseSafetensorsHeader accepted for `data_size` bytes.
void CheckAcceptedTensors(const std::vector<attnscope::TensorInfo>& tensors, uint64_t data_size) {
  std::vector<const attnscope::TensorInfo*> by_offset;
  for (const auto& info : tensors) {
    if (info.begin > info.end || info.end > data_size) __builtin_trap();
    uint64_t numel = 1;
    for (int64_t dim : info.shape) {
      if (dim < 0) __builtin_trap();
      numel *= static_cast<uint64_t>(dim);  // cannot wrap: the span below bounds it
    }
    if (info.end - info.begin != numel * attnscope::TensorDTypeSize(info.dtype)) __builtin_trap();
    by_offset.push_back(&info);
  }
  std::sort(by_offset.begin(), by_offset.end(),
            [](const auto* a, const auto* b) { return a->begin < b->begin; });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    if (by_offset[i]->begin < by_offset[i - 1]->end) __builtin_trap();
  }
}

void FuzzHeaderJson(const uint8_t* data, size_t size) {
  const std::string header(reinterpret_cast<const char*>(data), size);
  std::map<std::string, std::string> metadata;
  auto tensors = attnscope::ParseSafetensorsHeader(header, kJsonModeDataSize, "fuzz", &metadata);
  if (tensors.ok()) CheckAcceptedTensors(*tensors, kJsonModeDataSize);
}

// Writes the input to an anonymous in-memory file and opens it by its /proc path, so the
// real open/fstat/mmap path runs without touching the disk.
void FuzzWholeFile(const uint8_t* data, size_t size) {
  const int fd = memfd_create("safetensors_fuzz", MFD_CLOEXEC);
  if (fd < 0) return;
  size_t written = 0;
  while (written < size) {
    const ssize_t n = write(fd, data + written, size - written);
    if (n <= 0) break;
    written += static_cast<size_t>(n);
  }
  if (written == size) {
    const std::string path = "/proc/self/fd/" + std::to_string(fd);
    auto file = attnscope::SafetensorsFile::Open(path);
    if (file.ok()) {
      // Open accepted it, so the framing must be sound: a header length inside the file and
      // tensor spans inside the data section that follows it.
      if (size < 8) __builtin_trap();
      uint64_t header_length = 0;
      for (int i = 7; i >= 0; --i) header_length = (header_length << 8) | data[i];
      if (header_length > size - 8) __builtin_trap();
      const uint64_t data_size = size - 8 - header_length;
      CheckAcceptedTensors((*file)->tensors(), data_size);
      // Read every tensor's first and last byte through the mapping: Data() must point inside.
      const uint8_t* data_section = data + 8 + header_length;
      for (const auto& info : (*file)->tensors()) {
        if (info.end == info.begin) continue;
        const uint8_t* bytes = (*file)->Data(info);
        if (bytes[0] != data_section[info.begin]) __builtin_trap();
        if (bytes[info.end - info.begin - 1] != data_section[info.end - 1]) __builtin_trap();
      }
      for (const auto& info : (*file)->tensors()) {
        const attnscope::TensorInfo* found = (*file)->Find(info.name);
        if (found == nullptr || found->name != info.name) __builtin_trap();
      }
    }
  }
  close(fd);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzHeaderJson(data, size);
  FuzzWholeFile(data, size);
  return 0;
}
