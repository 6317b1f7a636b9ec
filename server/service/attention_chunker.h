// Cuts the engine's attention blocks into AttentionChunk messages of at most
// max_chunk_bytes of data: consecutive query rows of one layer are batched into one chunk
// (prefill rows and decode rows alike) until the next row would overflow it; a row of all
// heads that alone exceeds the limit is split into groups of heads.
//
// Each row i is sent with its causal keys only (key_length = i + 1, trimmed from the block's
// zero tail); a chunk of rows [r0, r1) has key_length r1 and zero-pads its earlier rows. That
// halves the bytes of a prefill block compared with sending [P, P].
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "attnscope/v1/attnscope.pb.h"
#include "server/capture/capture_spec.h"
#include "server/engine/engine.h"
#include "server/session/request_proto.h"

namespace attnscope::service {

class AttentionChunker {
 public:
  using EmitFn = std::function<absl::Status(v1::AttentionChunk&& chunk)>;

  // `prompt_length` decides which rows the spec's row selection keeps.
  AttentionChunker(CaptureSpec spec, int prompt_length, uint64_t max_chunk_bytes, EmitFn emit);

  // Takes rows of one layer; emits every chunk that is full.
  absl::Status Add(const AttentionBlock& block);
  // Emits every pending row (call at the end of generation).
  absl::Status Flush();

  uint64_t chunks_sent() const { return next_sequence_; }
  uint64_t bytes_sent() const { return bytes_sent_; }
  // CRC-32 (zlib's) of all chunks' data in sequence order (Final.data_crc32).
  uint32_t data_crc32() const { return crc32_; }

 private:
  struct PendingRows {
    int first_row = 0;
    int key_length = 0;             // longest row so far
    std::vector<std::string> rows;  // per row: [heads, its key_length] in dtype
    std::vector<int> row_key_lengths;
  };

  bool KeepsRow(int row) const;
  absl::Status AddRow(int layer, int row, int key_length, std::string row_bytes);
  absl::Status FlushLayer(int layer, PendingRows* pending);
  absl::Status SendSplitByHeads(int layer, int row, int key_length, const std::string& row_bytes);
  absl::Status Send(v1::AttentionChunk&& chunk);

  CaptureSpec spec_;
  int prompt_length_ = 0;
  uint64_t max_chunk_bytes_ = 0;
  size_t dtype_size_ = 4;
  v1::DType wire_dtype_ = v1::DTYPE_FLOAT32;
  EmitFn emit_;
  std::map<int, PendingRows> pending_;  // by layer
  uint64_t next_sequence_ = 0;
  uint64_t bytes_sent_ = 0;
  uint32_t crc32_ = 0;
};

}  // namespace attnscope::service
