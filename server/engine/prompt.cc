#include "server/engine/prompt.h"

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "server/status/field_error.h"

namespace attnscope {

absl::StatusOr<PreparedPrompt> PreparePrompt(const PromptInput& input, const Tokenizer* tokenizer,
                                             const ChatTemplateConfig* chat) {
  PreparedPrompt prompt;
  if (input.kind == PromptInput::Kind::kIds) {
    prompt.ids = input.ids;
    prompt.tokens = TokenStrings(input.ids, tokenizer);
    if (tokenizer == nullptr) prompt.tokens.clear();
    return prompt;
  }
  if (tokenizer == nullptr) {
    return absl::FailedPreconditionError(
        "input: text and chat input need tokenizer files (tokenizer.json or tokenizer.model) in "
        "the model folder; this model has none, send token ids instead");
  }
  if (input.kind == PromptInput::Kind::kChat) {
    if (chat == nullptr || !chat->chat_template) {
      return absl::FailedPreconditionError(
          "messages: the model folder has no chat_template in tokenizer_config.json; send text");
    }
    if (!input.parse_special_tokens) {
      // The template's own markers must stay special, so user content is checked instead:
      // a special token inside a message is refused rather than silently obeyed.
      for (size_t i = 0; i < input.messages.size(); ++i) {
        auto encoded = tokenizer->Encode(input.messages[i].content, true);
        if (!encoded.ok()) return encoded.status();
        for (int64_t id : encoded->ids) {
          if (tokenizer->IsSpecial(id)) {
            return WithRefusedField(
                absl::InvalidArgumentError(absl::StrCat(
                    "messages[", i, "].content contains the special token '",
                    tokenizer->TokenString(id), "' while special-token parsing is off")),
                absl::StrCat("messages.messages[", i, "].content"));
          }
        }
      }
    }
    auto rendered = RenderChat(input, *chat, &prompt.template_date);
    if (!rendered.ok()) return rendered.status();
    prompt.text = *rendered;
  } else {
    prompt.text = input.text;
  }
  // A rendered template carries its own special tokens; they are always parsed there.
  const bool parse_special =
      input.kind == PromptInput::Kind::kChat ? true : input.parse_special_tokens;
  auto encoding = tokenizer->Encode(prompt.text, parse_special);
  if (!encoding.ok()) return encoding.status();
  prompt.ids = std::move(encoding->ids);
  prompt.tokens = std::move(encoding->tokens);
  prompt.spans = std::move(encoding->spans);
  return prompt;
}

absl::StatusOr<std::string> RenderChat(const PromptInput& input, const ChatTemplateConfig& chat,
                                       std::string* date_used) {
  if (!chat.chat_template) {
    return absl::FailedPreconditionError(
        "messages: the model folder has no chat_template in tokenizer_config.json; send text");
  }
  ChatTemplateArgs args;
  args.messages_json =
      input.messages_json.empty() ? ChatMessagesJson(input.messages) : input.messages_json;
  args.tools_json = input.tools_json;
  args.documents_json = input.documents_json;
  args.kwargs_json = input.template_kwargs_json;
  args.add_generation_prompt = input.add_generation_prompt;
  args.date = input.template_date.empty() ? CurrentTemplateDate() : input.template_date;
  bool clock_read = false;
  auto rendered = chat.chat_template->Render(args, chat.special_tokens, &clock_read);
  // Only a template that called strftime_now() depends on the date, so only then is it part
  // of the prompt's provenance (a capture stays reproducible byte for byte otherwise).
  if (date_used != nullptr) *date_used = clock_read ? args.date : "";
  return rendered;
}

absl::StatusOr<PromptInput> ParseChatJson(const std::string& text, const std::string& what) {
  PromptInput input;
  input.kind = PromptInput::Kind::kChat;
  try {
    // The depth bound keeps a hostile file from exhausting the stack (jinja::kMaxJsonDepth).
    bool too_deep = false;
    nlohmann::ordered_json::parser_callback_t limit =
        [&](int depth, nlohmann::ordered_json::parse_event_t, nlohmann::ordered_json&) {
          if (depth > 64) too_deep = true;
          return !too_deep;
        };
    nlohmann::ordered_json root = nlohmann::ordered_json::parse(text, limit);
    if (too_deep) return absl::InvalidArgumentError(what + ": JSON nested deeper than 64 levels");
    nlohmann::ordered_json messages = root;
    if (root.is_object()) {
      if (!root.contains("messages")) {
        return absl::InvalidArgumentError(what + ": a JSON object needs a \"messages\" list");
      }
      messages = root["messages"];
      nlohmann::ordered_json kwargs = nlohmann::ordered_json::object();
      for (auto it = root.begin(); it != root.end(); ++it) {
        if (it.key() == "messages") continue;
        if (it.key() == "tools" || it.key() == "documents") {
          if (it.value().is_null()) continue;
          if (!it.value().is_array()) {
            return absl::InvalidArgumentError(
                absl::StrCat(what, ": \"", it.key(), "\" must be a list"));
          }
          (it.key() == "tools" ? input.tools_json : input.documents_json) = it.value().dump();
          continue;
        }
        kwargs[it.key()] = it.value();
      }
      if (!kwargs.empty()) input.template_kwargs_json = kwargs.dump();
    }
    if (!messages.is_array()) {
      return absl::InvalidArgumentError(
          what + ": expected a JSON list of messages or {\"messages\": [...], \"tools\": [...]}");
    }
    for (size_t i = 0; i < messages.size(); ++i) {
      const auto& m = messages[i];
      if (!m.is_object() || !m.contains("role") || !m["role"].is_string()) {
        return absl::InvalidArgumentError(
            absl::StrCat(what, ": message ", i, " must be an object with a string \"role\""));
      }
      std::string content;
      if (m.contains("content")) {
        const auto& c = m["content"];
        if (c.is_string()) {
          content = c.get<std::string>();
        } else if (c.is_array()) {
          for (const auto& part : c) {
            if (part.is_object() && part.contains("text") && part["text"].is_string()) {
              content += part["text"].get<std::string>();
            }
          }
        } else if (!c.is_null()) {
          return absl::InvalidArgumentError(absl::StrCat(
              what, ": message ", i, " content must be a string, null or a list of parts"));
        }
      }
      input.messages.push_back({m["role"].get<std::string>(), content});
    }
    input.messages_json = messages.dump(-1, ' ', false, nlohmann::json::error_handler_t::strict);
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": bad JSON: ", e.what()));
  }
  return input;
}

std::vector<std::string> TokenStrings(const std::vector<int64_t>& ids, const Tokenizer* tokenizer) {
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int64_t id : ids) tokens.push_back(tokenizer ? tokenizer->TokenString(id) : "");
  return tokens;
}

absl::StatusOr<std::vector<int64_t>> EncodeContinuation(const std::string& text,
                                                        const Tokenizer* tokenizer) {
  if (tokenizer == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("candidate \"", text, "\": text candidates need a tokenizer; give token ids"));
  }
  auto encoding = tokenizer->Encode(text, /*parse_special_tokens=*/false);
  if (!encoding.ok()) return encoding.status();
  return encoding->ids;
}

}  // namespace attnscope
