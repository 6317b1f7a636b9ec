// Turns a request into engine inputs, checking every limit BEFORE any model work. Each
// failure is a status whose message names the field, the bad value and the limit.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "attnscope/v1/attnscope.pb.h"
#include "server/engine/capture_spec.h"
#include "server/engine/engine.h"
#include "server/engine/prompt.h"
#include "server/model/model_config.h"
#include "server/service/server_config.h"
#include "server/tokenizer/tokenizer.h"

namespace attnscope::service {

// The parts of the loaded model that validation needs (no engine, so it is testable alone).
struct ModelView {
  const ModelConfig* config = nullptr;
  const ModelTextTools* tools = nullptr;  // tokenizer / chat template, either may be absent
  std::string model_dir;                  // for error messages
  const Tokenizer* tokenizer() const { return tools ? tools->tokenizer.get() : nullptr; }
};

struct PreparedGeneration {
  PreparedPrompt prompt;
  GenerationParams params;
  CaptureSpec capture;  // resolved against the model; empty layers when disabled
  int max_new_tokens = 0;
  uint64_t estimated_capture_bytes = 0;
};

// Checks the sampling parameters and resolves max_new_tokens (the configured default for 0).
absl::StatusOr<GenerationParams> ValidateGenerationParams(const v1::GenerationParams& params,
                                                          const ModelView& model,
                                                          const ServerLimits& limits);

// Resolves layers and heads (negatives from the end), dtype and row selection. Messages name
// the fields as `field_prefix`.layers etc. (AnalyzeHeads passes "analysis").
absl::StatusOr<CaptureSpec> ValidateCaptureSpec(const v1::CaptureSpec& spec,
                                                const ModelConfig& config,
                                                const std::string& field_prefix = "capture");

// Checks that the input is present and non-empty and that ids are inside the vocabulary,
// then prepares it exactly as the command line does (server/engine/prompt.h).
absl::StatusOr<PreparedPrompt> ResolvePromptInput(const PromptInput& input, const ModelView& model);

// Prompt length, total length and capture size against the limits.
absl::Status CheckTokenLimits(int prompt_tokens, int max_new_tokens, const ModelConfig& config,
                              const ServerLimits& limits);
absl::Status CheckCaptureBytes(const CaptureSpec& capture, int total_tokens,
                               const ServerLimits& limits, uint64_t* estimate);

// Everything for GenerateWithAttention, in the order: parameters, capture spec, input, limits.
absl::StatusOr<PreparedGeneration> PrepareGeneration(const v1::GenerateRequest& request,
                                                     const ModelView& model,
                                                     const ServerLimits& limits);

// The input of any request that has the text/messages/ids oneof (Generate, Analyze, Tokenize).
template <typename Request>
absl::StatusOr<PreparedPrompt> ResolveRequestInput(const Request& request, const ModelView& model) {
  PromptInput input;
  input.parse_special_tokens = !request.plain_text();
  switch (request.input_case()) {
    case Request::kText:
      input.kind = PromptInput::Kind::kText;
      input.text = request.text();
      break;
    case Request::kMessages:
      input.kind = PromptInput::Kind::kChat;
      for (const auto& m : request.messages().messages()) {
        input.messages.push_back({m.role(), m.content()});
      }
      input.add_generation_prompt = !request.messages().no_generation_prompt();
      break;
    case Request::kIds:
      input.kind = PromptInput::Kind::kIds;
      input.ids.assign(request.ids().ids().begin(), request.ids().ids().end());
      break;
    default:
      return absl::InvalidArgumentError("input: empty request: set one of text, messages or ids");
  }
  return ResolvePromptInput(input, model);
}

}  // namespace attnscope::service
