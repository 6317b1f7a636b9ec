#include "server/session/loaded_model.h"

#include <sys/stat.h>

#include "absl/strings/str_cat.h"

namespace attnscope::session {
namespace {

bool Exists(const std::string& path) {
  struct stat info;
  return stat(path.c_str(), &info) == 0;
}

}  // namespace

std::string LoadedModel::label() const { return absl::StrCat(name, " ", config.config_hash); }

absl::Status LoadTokenizerFiles(const std::string& model_dir, LoadedModel* model) {
  if (Exists(model_dir + "/tokenizer.json") || Exists(model_dir + "/tokenizer.model")) {
    absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = LoadTokenizer(model_dir);
    if (!tokenizer.ok()) return tokenizer.status();
    model->tokenizer = *std::move(tokenizer);
  }
  if (Exists(model_dir + "/tokenizer_config.json")) {
    absl::StatusOr<ChatTemplateConfig> chat = LoadChatTemplateConfig(model_dir);
    if (!chat.ok()) return chat.status();
    model->chat = *std::move(chat);
  }
  return absl::OkStatus();
}

}  // namespace attnscope::session
