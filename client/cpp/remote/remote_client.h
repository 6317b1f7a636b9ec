// The command line's remote mode: `attnscope capture|analyze|tokenize --server HOST:PORT`.
// Speaks attnscope.v1 to a server and, for capture, reassembles the streamed chunks into the
// same safetensors capture file that local mode writes (through the same CaptureAssembler),
// after proving the stream complete: header first, consecutive sequence numbers, every
// expected row of every layer, chunk count, byte count and CRC-32 as the Final message says.
#pragma once

#include <cstdint>
#include <functional>
#include <iosfwd>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "attnscope/v1/attnscope.pb.h"
#include "server/capture/capture_file.h"

namespace attnscope::remote {

// Where the server is and how to reach it.
struct RemoteTarget {
  std::string address;         // HOST:PORT
  std::string token;           // API key sent as `authorization: Bearer <token>`; empty: none
  bool tls = false;            // TLS with the system roots (or tls_ca_file)
  std::string tls_ca_file;     // PEM roots; implies tls
  double timeout_seconds = 0;  // per-call deadline; 0: none
};

// Receives a GenerateWithAttention stream message by message and reassembles the capture.
// Network-free, so it is testable on hand-made streams.
class CaptureStreamReceiver {
 public:
  absl::Status OnMessage(const v1::GenerateResponse& message);
  // After the stream ended with OK: Final seen, counts/CRC match, every expected row present.
  absl::Status Finish() const;

  bool has_header() const { return header_.has_value(); }
  const v1::Header& header() const { return *header_; }
  const v1::Final& final_message() const { return *final_; }
  int generated_tokens() const { return static_cast<int>(token_ids_.size()); }
  uint64_t attention_bytes() const { return bytes_; }
  // Prompt + generated ids (valid after Finish).
  std::vector<int64_t> AllTokenIds() const;
  // The capture file's metadata, as local mode fills it.
  CaptureMetadata Metadata() const;
  // Writes the capture file (temporary name, then rename).
  absl::Status WriteFile(const std::string& path) const;

 private:
  absl::Status AddChunk(const v1::AttentionChunk& chunk);

  std::optional<v1::Header> header_;
  std::optional<v1::Final> final_;
  std::optional<CaptureAssembler> assembler_;
  std::vector<int64_t> token_ids_;  // generated
  std::vector<std::string> token_strings_;
  uint64_t next_sequence_ = 0;
  uint64_t bytes_ = 0;
  uint32_t crc32_ = 0;
};

struct RemoteCaptureSummary {
  v1::Header header;
  v1::Final final_message;
  uint64_t attention_bytes = 0;
  double stream_seconds = 0;  // call start to the stream's end
  double seconds = 0;         // including reassembly and writing the file
};

// Runs GenerateWithAttention and writes the reassembled capture to `out_path`. With
// `progress`, a line on stderr (tokens generated, MB received) is refreshed while the capture
// runs longer than one second. Errors carry the server's status code and message.
absl::StatusOr<RemoteCaptureSummary> RemoteCapture(const RemoteTarget& target,
                                                   const v1::GenerateRequest& request,
                                                   const std::string& out_path, bool progress);

absl::StatusOr<v1::AnalyzeResponse> RemoteAnalyze(const RemoteTarget& target,
                                                  const v1::AnalyzeRequest& request);
absl::StatusOr<v1::TokenizeResponse> RemoteTokenize(const RemoteTarget& target,
                                                    const v1::TokenizeRequest& request);
absl::StatusOr<v1::GetModelInfoResponse> RemoteModelInfo(const RemoteTarget& target);

// Runs ScoreAnswers: `progress` sees each ScoreProgress; the ScoreResult comes back. A stream
// that ends without a result, or with more than one, is an error.
absl::StatusOr<v1::ScoreResult> RemoteScore(
    const RemoteTarget& target, const v1::ScoreRequest& request,
    const std::function<void(const v1::ScoreProgress&)>& progress);

// The gRPC status of a failed call as an absl::Status (same code), message prefixed with the
// server address.
absl::Status FromGrpcStatus(int code, const std::string& message, const std::string& address);

}  // namespace attnscope::remote
