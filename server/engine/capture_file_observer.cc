#include "server/engine/capture_file_observer.h"

#include <string>

namespace attnscope {

absl::Status CaptureFileObserver::OnAttention(const AttentionBlock& block) {
  const CaptureSpec& spec = assembler_.spec();
  const size_t count = block.heads->size() * static_cast<size_t>(block.num_rows) * block.key_length;
  if (block.wire_data != nullptr && block.wire_dtype == spec.dtype) {
    // Converted where the rows were computed: already the file's bytes.
    return assembler_.AddBytes(block.layer, block.first_row, block.num_rows, block.key_length,
                               block.wire_data, count * DTypeSize(spec.dtype));
  }
  std::string converted;
  ConvertFloats(block.data, count, spec.dtype, &converted);
  return assembler_.AddBytes(block.layer, block.first_row, block.num_rows, block.key_length,
                             converted.data(), converted.size());
}

}  // namespace attnscope
