#include "server/service/attention_chunker.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "server/capture/crc32.h"

namespace attnscope::service {

AttentionChunker::AttentionChunker(CaptureSpec spec, int prompt_length, uint64_t max_chunk_bytes,
                                   EmitFn emit)
    : spec_(std::move(spec)),
      prompt_length_(prompt_length),
      max_chunk_bytes_(max_chunk_bytes),
      dtype_size_(DTypeSize(spec_.dtype)),
      wire_dtype_(session::ToWireDType(spec_.dtype)),
      emit_(std::move(emit)) {}

bool AttentionChunker::KeepsRow(int row) const {
  switch (spec_.rows) {
    case CaptureRows::kPromptOnly:
      return row < prompt_length_;
    case CaptureRows::kGeneratedOnly:
      return row >= prompt_length_;
    case CaptureRows::kAll:
    default:
      return true;
  }
}

absl::Status AttentionChunker::Add(const AttentionBlock& block) {
  const int num_heads = static_cast<int>(block.heads->size());
  if (num_heads != static_cast<int>(spec_.heads.size())) {
    return absl::InternalError(absl::StrCat("attention block of layer ", block.layer, " has ",
                                            num_heads, " heads; the capture spec has ",
                                            spec_.heads.size()));
  }
  for (int i = 0; i < block.num_rows; ++i) {
    const int row = block.first_row + i;
    if (!KeepsRow(row)) continue;
    // Row `row` sees keys 0..row; anything beyond is a causal zero.
    const int key_length = std::min(block.key_length, row + 1);
    std::string row_bytes;
    row_bytes.reserve(static_cast<size_t>(num_heads) * key_length * dtype_size_);
    const bool wire = block.wire_data != nullptr && block.wire_dtype == spec_.dtype;
    for (int h = 0; h < num_heads; ++h) {
      const size_t offset = (static_cast<size_t>(h) * block.num_rows + i) * block.key_length;
      if (wire) {
        // Converted where the rows were computed: copy the bytes as they are.
        row_bytes.append(static_cast<const char*>(block.wire_data) + offset * dtype_size_,
                         key_length * dtype_size_);
      } else {
        ConvertFloats(block.data + offset, key_length, spec_.dtype, &row_bytes);
      }
    }
    absl::Status status = AddRow(block.layer, row, key_length, std::move(row_bytes));
    if (!status.ok()) return status;
  }
  return absl::OkStatus();
}

absl::Status AttentionChunker::AddRow(int layer, int row, int key_length, std::string row_bytes) {
  const uint64_t heads = spec_.heads.size();
  if (heads * key_length * dtype_size_ > max_chunk_bytes_) {
    // One row of all heads is already too big: flush what is pending, then split by heads.
    auto it = pending_.find(layer);
    if (it != pending_.end() && !it->second.rows.empty()) {
      absl::Status status = FlushLayer(layer, &it->second);
      if (!status.ok()) return status;
    }
    return SendSplitByHeads(layer, row, key_length, row_bytes);
  }
  PendingRows& pending = pending_[layer];
  if (!pending.rows.empty()) {
    const bool contiguous = pending.first_row + static_cast<int>(pending.rows.size()) == row;
    const uint64_t padded_keys = std::max(pending.key_length, key_length);
    const uint64_t padded_bytes = heads * (pending.rows.size() + 1) * padded_keys * dtype_size_;
    if (!contiguous || padded_bytes > max_chunk_bytes_) {
      absl::Status status = FlushLayer(layer, &pending);
      if (!status.ok()) return status;
    }
  }
  if (pending.rows.empty()) {
    pending.first_row = row;
    pending.key_length = 0;
  }
  pending.key_length = std::max(pending.key_length, key_length);
  pending.rows.push_back(std::move(row_bytes));
  pending.row_key_lengths.push_back(key_length);
  return absl::OkStatus();
}

absl::Status AttentionChunker::FlushLayer(int layer, PendingRows* pending) {
  if (pending->rows.empty()) return absl::OkStatus();
  const int heads = static_cast<int>(spec_.heads.size());
  const int num_rows = static_cast<int>(pending->rows.size());
  const size_t key_length = pending->key_length;
  v1::AttentionChunk chunk;
  chunk.set_layer(layer);
  for (int head : spec_.heads) chunk.add_heads(head);
  chunk.set_first_row(pending->first_row);
  chunk.set_num_rows(num_rows);
  chunk.set_key_length(pending->key_length);
  chunk.set_dtype(wire_dtype_);
  chunk.add_shape(heads);
  chunk.add_shape(num_rows);
  chunk.add_shape(pending->key_length);
  std::string* data = chunk.mutable_data();
  data->assign(static_cast<size_t>(heads) * num_rows * key_length * dtype_size_, '\0');
  // [rows][heads, row_keys] -> [heads, rows, key_length], zero-padded.
  for (int r = 0; r < num_rows; ++r) {
    const size_t row_bytes = pending->row_key_lengths[r] * dtype_size_;
    const char* src = pending->rows[r].data();
    for (int h = 0; h < heads; ++h) {
      char* dst =
          data->data() + ((static_cast<size_t>(h) * num_rows + r) * key_length) * dtype_size_;
      std::copy(src + h * row_bytes, src + (h + 1) * row_bytes, dst);
    }
  }
  pending->rows.clear();
  pending->row_key_lengths.clear();
  pending->key_length = 0;
  return Send(std::move(chunk));
}

absl::Status AttentionChunker::SendSplitByHeads(int layer, int row, int key_length,
                                                const std::string& row_bytes) {
  const size_t head_bytes = static_cast<size_t>(key_length) * dtype_size_;
  const int heads_per_chunk = std::max<int>(1, static_cast<int>(max_chunk_bytes_ / head_bytes));
  const int heads = static_cast<int>(spec_.heads.size());
  for (int begin = 0; begin < heads; begin += heads_per_chunk) {
    const int end = std::min(heads, begin + heads_per_chunk);
    v1::AttentionChunk chunk;
    chunk.set_layer(layer);
    for (int h = begin; h < end; ++h) chunk.add_heads(spec_.heads[h]);
    chunk.set_first_row(row);
    chunk.set_num_rows(1);
    chunk.set_key_length(key_length);
    chunk.set_dtype(wire_dtype_);
    chunk.add_shape(end - begin);
    chunk.add_shape(1);
    chunk.add_shape(key_length);
    chunk.set_data(row_bytes.substr(begin * head_bytes, (end - begin) * head_bytes));
    absl::Status status = Send(std::move(chunk));
    if (!status.ok()) return status;
  }
  return absl::OkStatus();
}

absl::Status AttentionChunker::Send(v1::AttentionChunk&& chunk) {
  chunk.set_sequence_number(next_sequence_++);
  bytes_sent_ += chunk.data().size();
  crc32_ = Crc32(crc32_, chunk.data().data(), chunk.data().size());
  return emit_(std::move(chunk));
}

absl::Status AttentionChunker::Flush() {
  for (auto& [layer, pending] : pending_) {
    absl::Status status = FlushLayer(layer, &pending);
    if (!status.ok()) return status;
  }
  return absl::OkStatus();
}

}  // namespace attnscope::service
