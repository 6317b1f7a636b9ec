// The input, generation and capture flags that `capture` and `analyze` share, parsed once
// into engine types for local mode.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "client/cpp/command.h"
#include "server/engine/engine.h"
#include "server/engine/prompt.h"

namespace attnscope::cli {

// Flags that take no value.
inline const std::vector<std::string> kGenerationSwitches = {
    "greedy",     "save-logits", "no-special", "tls",
    "ignore-eos", "json",        "quiet",      "no-generation-prompt"};

struct GenerationFlags {
  PromptInput input;
  GenerationParams params;
  std::string layers = "all";
  std::string heads = "all";
  std::string dtype = "float32";
  std::string rows = "all";
};

// --ids 1,2,3 | --text "..." | --chat messages.json (a JSON list of {role, content}),
// --max-new-tokens, --greedy | --temperature --top-p --top-k --seed, --repetition-penalty,
// --stop (repeatable as a comma list), --layers, --heads, --dtype, --rows, --no-special.
absl::StatusOr<GenerationFlags> ParseGenerationFlags(Flags& flags);

// Resolves --layers/--heads/--dtype/--rows against the model.
absl::StatusOr<CaptureSpec> ResolveCaptureSpec(const GenerationFlags& flags,
                                               const ModelConfig& config);

// Loads the engine (--model, --device, --run-dtype) and the folder's tokenizer/template.
struct LocalModel {
  std::unique_ptr<Engine> engine;
  ModelTextTools tools;
};
absl::StatusOr<LocalModel> LoadLocalModel(Flags& flags);

}  // namespace attnscope::cli
