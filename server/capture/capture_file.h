// The capture file (format "attnscope.capture.v1"): a safetensors file holding
//   token_ids          I64 [T]            prompt then generated ids
//   attention.<layer>  F32|F16|BF16 [H_sel, T, T]  query rows by key columns, zeros above the
//   diagonal logits             F32 [T, vocab]      only with --save-logits
// and __metadata__: format, prompt_length, layers, heads (JSON lists), tokens (JSON list, when a
// tokenizer exists), model, dtype, stop_reason, generated_text (when a tokenizer exists).
//
// The capture format, torch- and engine-free (clients link it without the engine). The local
// file sink (server/engine/capture_file_observer.h) and the remote client's chunk reassembly
// both assemble with CaptureAssembler, so a capture over gRPC equals the local file by
// construction.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/capture/capture_spec.h"
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

// The chunk layout, shared by the engine's AttentionBlock and the wire's AttentionChunk: raw
// little-endian values in the capture dtype, layout [heads, num_rows, key_length], for query
// rows [first_row, first_row + num_rows) and keys [0, key_length); keys a row cannot see
// (k > its row index) are zero.
//
// CaptureAssembler copies each chunk straight into place in one dense [H_sel, S, S] buffer
// per layer, S being the sequence bound it was given (P + max_new_tokens: the Header's, or the
// prepared request's). A layer's buffer is allocated zeroed at its first chunk with calloc, so
// the pages of rows that never come (a generation that stops early) are never touched.
class CaptureAssembler {
 public:
  // `max_tokens` bounds the sequence; a chunk past it is an error. 0: unknown (tests, probes):
  // the buffers then grow, doubling, as rows arrive. `spec` fixes layers, heads and dtype.
  explicit CaptureAssembler(CaptureSpec spec, int max_tokens = 0);
  CaptureAssembler(CaptureAssembler&&) = default;
  CaptureAssembler& operator=(CaptureAssembler&&) = default;

  const CaptureSpec& spec() const { return spec_; }
  int max_tokens() const { return max_tokens_; }

  // Places one chunk of every captured head (see the layout above). Errors (unknown layer,
  // bad sizes, key_length > first_row + num_rows, rows past max_tokens) name the field.
  absl::Status AddBytes(int layer, int first_row, int num_rows, int key_length, const void* data,
                        size_t size_bytes);
  // Same for a chunk of some of the captured heads (query-head indices, each in spec().heads),
  // layout [heads.size(), num_rows, key_length]: a row split by heads over several chunks.
  absl::Status AddHeadBytes(int layer, const std::vector<int>& heads, int first_row, int num_rows,
                            int key_length, const void* data, size_t size_bytes);

  // Number of distinct query rows of `layer` that every captured head has reached; all layers
  // equal when complete.
  int RowsReceived(int layer) const;
  // Rows of `layer` that some but not all captured heads have reached.
  int PartialRows(int layer) const;

  // Finalises the [H_sel, T, T] tensors for T = token_ids.size() (rows never received stay
  // zero; rows outside the capture's row selection are legitimately absent) and writes the
  // file (temporary name, then rename). Without a copy when T is the sequence bound.
  absl::Status Write(const std::string& path, const std::vector<int64_t>& token_ids,
                     const CaptureMetadata& metadata, const std::vector<float>* logits,
                     int vocab_size) const;

  // The [H_sel, T, T] bytes of one layer for T tokens, in spec().dtype.
  std::string LayerBytes(int layer, int total_tokens) const;

 private:
  struct FreeDeleter {
    void operator()(char* data) const { std::free(data); }
  };
  struct LayerBuffer {
    int64_t stride = 0;                       // S: rows and keys allocated
    std::unique_ptr<char, FreeDeleter> data;  // [H_sel, S, S] in dtype, zeroed
    std::vector<bool> received;               // [S, H_sel]: (row, head) placed
    std::vector<int> heads_received;          // [S]: heads placed per row
    int complete_rows = 0;
    int partial_rows = 0;
  };
  // Makes `buffer` hold rows [0, rows): allocates it, or grows it when no bound was given.
  absl::Status Reserve(int layer, LayerBuffer& buffer, int64_t rows);
  // Copies rows of the heads at `positions` (indices into spec().heads) into place.
  void Place(LayerBuffer& buffer, const std::vector<size_t>& positions, int first_row, int num_rows,
             int key_length, const char* data);
  absl::Status CheckChunk(int layer, size_t heads, int first_row, int num_rows, int key_length,
                          size_t size_bytes) const;

  CaptureSpec spec_;
  int max_tokens_ = 0;
  std::map<int, LayerBuffer> layers_;  // every captured layer
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
  // Layer -> its attention tensor [H_sel, T, T] inside `file`, every one in `dtype`.
  std::map<int, const TensorInfo*> attention;
  DType dtype = DType::kFloat32;
  int64_t total_tokens() const { return static_cast<int64_t>(token_ids.size()); }
};
absl::StatusOr<MappedCapture> OpenCaptureFile(const std::string& path);

}  // namespace attnscope
