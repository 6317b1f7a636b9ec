#include "server/engine/prompt.h"

#include <sys/stat.h>

#include "absl/strings/str_cat.h"

namespace attnscope {

namespace {
bool Exists(const std::string& path) {
  struct stat info;
  return stat(path.c_str(), &info) == 0;
}
}  // namespace

absl::StatusOr<ModelTextTools> LoadModelTextTools(const std::string& model_dir) {
  ModelTextTools tools;
  if (Exists(model_dir + "/tokenizer.json") || Exists(model_dir + "/tokenizer.model")) {
    auto tokenizer = LoadTokenizer(model_dir);
    if (!tokenizer.ok()) return tokenizer.status();
    tools.tokenizer = std::move(*tokenizer);
  }
  if (Exists(model_dir + "/tokenizer_config.json")) {
    auto chat = LoadChatTemplateConfig(model_dir);
    if (!chat.ok()) return chat.status();
    tools.chat = std::move(*chat);
  }
  return tools;
}

absl::StatusOr<PreparedPrompt> PreparePrompt(const PromptInput& input,
                                             const ModelTextTools& tools) {
  PreparedPrompt prompt;
  if (input.kind == PromptInput::Kind::kIds) {
    prompt.ids = input.ids;
    prompt.tokens = TokenStrings(input.ids, tools);
    if (!tools.tokenizer) prompt.tokens.clear();
    return prompt;
  }
  if (!tools.tokenizer) {
    return absl::FailedPreconditionError(
        "input: text and chat input need tokenizer files (tokenizer.json or tokenizer.model) in "
        "the model folder; this model has none, send token ids instead");
  }
  if (input.kind == PromptInput::Kind::kChat) {
    if (!tools.chat || !tools.chat->chat_template) {
      return absl::FailedPreconditionError(
          "messages: the model folder has no chat_template in tokenizer_config.json; send text");
    }
    if (!input.parse_special_tokens) {
      // The template's own markers must stay special, so user content is checked instead:
      // a special token inside a message is refused rather than silently obeyed.
      for (size_t i = 0; i < input.messages.size(); ++i) {
        auto encoded = tools.tokenizer->Encode(input.messages[i].content, true);
        if (!encoded.ok()) return encoded.status();
        for (int64_t id : encoded->ids) {
          if (tools.tokenizer->IsSpecial(id)) {
            return absl::InvalidArgumentError(absl::StrCat(
                "messages[", i, "].content contains the special token '",
                tools.tokenizer->TokenString(id), "' while special-token parsing is off"));
          }
        }
      }
    }
    auto rendered = tools.chat->chat_template->Render(input.messages, input.add_generation_prompt,
                                                      tools.chat->bos_token, tools.chat->eos_token);
    if (!rendered.ok()) return rendered.status();
    prompt.text = *rendered;
  } else {
    prompt.text = input.text;
  }
  // A rendered template carries its own special tokens; they are always parsed there.
  const bool parse_special =
      input.kind == PromptInput::Kind::kChat ? true : input.parse_special_tokens;
  auto encoding = tools.tokenizer->Encode(prompt.text, parse_special);
  if (!encoding.ok()) return encoding.status();
  prompt.ids = std::move(encoding->ids);
  prompt.tokens = std::move(encoding->tokens);
  prompt.spans = std::move(encoding->spans);
  return prompt;
}

std::vector<std::string> TokenStrings(const std::vector<int64_t>& ids,
                                      const ModelTextTools& tools) {
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int64_t id : ids) tokens.push_back(tools.tokenizer ? tools.tokenizer->TokenString(id) : "");
  return tokens;
}

absl::StatusOr<std::vector<int64_t>> EncodeContinuation(const std::string& text,
                                                        const ModelTextTools& tools) {
  if (tools.tokenizer == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("candidate \"", text, "\": text candidates need a tokenizer; give token ids"));
  }
  auto encoding = tools.tokenizer->Encode(text, /*parse_special_tokens=*/false);
  if (!encoding.ok()) return encoding.status();
  return encoding->ids;
}

}  // namespace attnscope
