// The local capture sink: an engine observer that assembles everything the engine captures
// into the capture format's CaptureAssembler (the `capture --model` command, tests).
#pragma once

#include <utility>

#include "absl/status/status.h"
#include "server/capture/capture_file.h"
#include "server/engine/engine.h"

namespace attnscope {

class CaptureFileObserver : public GenerationObserver {
 public:
  // `max_tokens`: the sequence bound the assembler preallocates for (0: unknown, it grows).
  explicit CaptureFileObserver(CaptureSpec spec, int max_tokens = 0)
      : assembler_(std::move(spec), max_tokens) {}
  // Places the block's wire bytes when they are in the capture dtype, else its float32 values
  // converted.
  absl::Status OnAttention(const AttentionBlock& block) override;
  bool accepts_wire_rows() const override { return true; }
  CaptureAssembler& assembler() { return assembler_; }

 private:
  CaptureAssembler assembler_;
};

}  // namespace attnscope
