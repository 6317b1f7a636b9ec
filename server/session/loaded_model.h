// The loaded model, the one type for it: the engine, the config it runs, and the model
// folder's tokenizer and chat template. Torch-free (Engine is only declared by engine.h) so
// that validation (prepare.h), its tests and the request fuzzer use the same type without an
// engine: there `engine` is null and `config` is filled in by hand.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "server/engine/engine.h"
#include "server/model/model_config.h"
#include "server/tokenizer/tokenizer.h"

namespace attnscope::session {

struct LoadedModel {
  // One owner (LoadModel's caller); shared_ptr only for its type-erased deleter: a LoadedModel
  // is then destroyed without naming Engine's destructor, which lives in the torch-linked
  // engine library, so the torch-free request library and its users link without it.
  std::shared_ptr<Engine> engine;          // null where only validation runs
  ModelConfig config;                      // the engine's config (a copy: no engine needed)
  std::unique_ptr<Tokenizer> tokenizer;    // null: the folder has no tokenizer files
  std::optional<ChatTemplateConfig> chat;  // tokenizer_config.json; its template may be absent
  std::string model_dir;                   // as given; error messages name it
  std::string name;                        // the model folder's base name

  const ChatTemplateConfig* chat_config() const { return chat ? &*chat : nullptr; }
  bool has_chat_template() const { return chat && chat->chat_template.has_value(); }
  // "NAME CONFIG_HASH": the capture file's `model` metadata, in every mode.
  std::string label() const;
};

// Loads MODEL_DIR's tokenizer and chat template into `model` when their files exist
// (tokenizer.json or tokenizer.model; tokenizer_config.json): a malformed file is an error, a
// missing one is not (a folder with weights only still serves token-id input).
absl::Status LoadTokenizerFiles(const std::string& model_dir, LoadedModel* model);

}  // namespace attnscope::session
