// What the service serves: one engine plus the model folder's tokenizer and chat template
// (both optional: a checkpoint without tokenizer files still serves token-id input).
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "server/engine/engine.h"
#include "server/engine/prompt.h"
#include "server/tokenizer/tokenizer.h"

namespace attnscope::service {

struct ModelContext {
  std::unique_ptr<Engine> engine;
  ModelTextTools tools;  // tokenizer and chat template, each absent without its files
  std::string name;      // model folder's base name

  const ModelConfig& config() const { return engine->config(); }
  const Tokenizer* tokenizer() const { return tools.tokenizer.get(); }
  bool has_chat_template() const { return tools.chat && tools.chat->chat_template.has_value(); }
};

// Loads the engine, then the tokenizer and chat template when their files exist (a
// malformed file is an error: no partial start).
absl::StatusOr<std::unique_ptr<ModelContext>> LoadModelContext(const EngineOptions& options);

}  // namespace attnscope::service
