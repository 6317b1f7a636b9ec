// The capture file (format "attnscope.capture.v1"): a safetensors file holding
//   token_ids          I64 [T]            prompt then generated ids
//   attention.<layer>  F32|F16|BF16 [H_sel, T, T]  query rows by key columns, zeros above the
//   diagonal logits             F32 [T, vocab]      only with --save-logits
// and __metadata__: format, prompt_length, layers, heads (JSON lists), tokens (JSON list, when a
// tokenizer exists), model, dtype, stop_reason, generated_text (when a tokenizer exists).
//
// CaptureAssembler places slices (a layer, its captured heads, a range of query rows) into the
// per-layer [H_sel, T, T] buffers. The local file sink and the remote client's chunk
// reassembly both use it, so a capture over gRPC equals the local file by construction.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/engine/capture_spec.h"
#include "server/engine/engine.h"
#include "server/model/safetensors.h"

namespace attnscope {

struct CaptureMetadata {
  int prompt_length = 0;
  std::vector<std::string> tokens;  // display strings; empty without a tokenizer
  std::string model;                // folder name + config hash
  std::string stop_reason;
  std::string generated_text;  // empty without a tokenizer
  std::string template_date;   // what the chat template's strftime_now() saw; "" if unused
};

class CaptureAssembler {
 public:
  // Buffers grow with the sequence; `spec` fixes layers, heads and dtype.
  explicit CaptureAssembler(CaptureSpec spec);

  const CaptureSpec& spec() const { return spec_; }

  // Places raw little-endian values in spec().dtype, layout [heads.size(), num_rows,
  // key_length], at query rows [first_row, first_row + num_rows). Errors (unknown layer,
  // bad sizes, key_length > first_row + num_rows) name the offending field.
  absl::Status AddBytes(int layer, int first_row, int num_rows, int key_length, const void* data,
                        size_t size_bytes);
  // Same from an engine block: its wire bytes when they are in spec().dtype, else its float32
  // values converted.
  absl::Status AddFloats(const AttentionBlock& block);

  // Number of distinct query rows received for every layer; all equal when complete.
  int RowsReceived(int layer) const;

  // Finalises the [H_sel, T, T] tensors for T = token_ids.size() (rows never received stay
  // zero; rows outside the capture's row selection are legitimately absent) and writes the
  // file (temporary name, then rename).
  absl::Status Write(const std::string& path, const std::vector<int64_t>& token_ids,
                     const CaptureMetadata& metadata, const std::vector<float>* logits,
                     int vocab_size) const;

  // The [H_sel, T, T] bytes of one layer for T tokens, in spec().dtype.
  std::string LayerBytes(int layer, int total_tokens) const;

 private:
  struct Row {
    int key_length = 0;
    std::string bytes;  // [heads, key_length] in dtype
  };
  CaptureSpec spec_;
  std::map<int, std::map<int, Row>> rows_;  // layer -> query row -> row data
};

// An observer that assembles everything the engine captures (the local `capture` command).
class CaptureFileObserver : public GenerationObserver {
 public:
  explicit CaptureFileObserver(CaptureSpec spec) : assembler_(std::move(spec)) {}
  absl::Status OnAttention(const AttentionBlock& block) override {
    return assembler_.AddFloats(block);
  }
  bool accepts_wire_rows() const override { return true; }
  CaptureAssembler& assembler() { return assembler_; }

 private:
  CaptureAssembler assembler_;
};

// A capture file read back (tests, `analyze --from`, comparisons).
struct CaptureFileContents {
  std::vector<int64_t> token_ids;
  std::map<int, std::vector<float>> attention;  // layer -> [H_sel, T, T] as float32
  std::vector<int> layers, heads;
  int prompt_length = 0;
  std::vector<std::string> tokens;
  std::map<std::string, std::string> metadata;
  std::vector<float> logits;
};
absl::StatusOr<CaptureFileContents> ReadCaptureFile(const std::string& path);

// A capture file mapped read-only, metadata parsed and every tensor's shape checked, but no
// attention copied: for readers that visit one head at a time (the viewer, `view --serve`).
struct MappedCapture {
  std::unique_ptr<SafetensorsFile> file;
  std::vector<int64_t> token_ids;
  std::vector<int> layers, heads;
  int prompt_length = 0;
  std::vector<std::string> tokens;  // empty when the file has none
  std::map<std::string, std::string> metadata;
  // Layer -> its attention tensor [H_sel, T, T] inside `file`.
  std::map<int, const TensorInfo*> attention;
  int64_t total_tokens() const { return static_cast<int64_t>(token_ids.size()); }
};
absl::StatusOr<MappedCapture> OpenCaptureFile(const std::string& path);

// `count` little-endian values in `dtype` (F32, F16 or BF16) as float32.
void CaptureValuesToFloats(const uint8_t* data, int64_t count, TensorDType dtype, float* out);

}  // namespace attnscope
