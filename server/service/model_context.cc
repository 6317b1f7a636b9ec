#include "server/service/model_context.h"

#include <spdlog/spdlog.h>

#include <filesystem>

#include "absl/strings/str_cat.h"

namespace attnscope::service {

absl::StatusOr<std::unique_ptr<ModelContext>> LoadModelContext(const EngineOptions& options) {
  auto context = std::make_unique<ModelContext>();
  absl::StatusOr<std::unique_ptr<Engine>> engine = Engine::Load(options);
  if (!engine.ok()) return engine.status();
  context->engine = *std::move(engine);
  std::string name = options.model_dir;
  while (name.size() > 1 && name.back() == '/') name.pop_back();
  context->name = std::filesystem::path(name).filename().string();

  absl::StatusOr<ModelTextTools> tools = LoadModelTextTools(options.model_dir);
  if (!tools.ok()) {
    return absl::Status(
        tools.status().code(),
        absl::StrCat("tokenizer files of ", options.model_dir, ": ", tools.status().message()));
  }
  context->tools = *std::move(tools);
  if (context->tools.tokenizer == nullptr) {
    spdlog::warn("no tokenizer in {}: only token-id input will be served", options.model_dir);
  }
  return context;
}

}  // namespace attnscope::service
