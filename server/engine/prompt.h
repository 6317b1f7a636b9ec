// Turns a request's input (token ids, raw text, or chat messages rendered with the model's
// template) into prompt ids plus display strings and byte spans. Shared by the command line
// and the service so both tokenize the same way. The functions take the tokenizer and chat
// template they use rather than the loaded model: that type (session::LoadedModel) belongs to
// the session layer above, which owns the engine too, and this layer must not depend on it.
// Either pointer may be null: a model folder with weights only still serves token-id input.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "server/tokenizer/tokenizer.h"

namespace attnscope {

struct PromptInput {
  enum class Kind { kIds, kText, kChat } kind = Kind::kIds;
  std::vector<int64_t> ids;
  std::string text;
  std::vector<ChatMessage> messages;  // role and the text of each turn
  // Chat in Hugging Face's form, as JSON text; when messages_json is set it is what the
  // template sees (every field of every message), and `messages` only mirrors roles and text.
  std::string messages_json;
  std::string tools_json;             // JSON array of tool schemas; empty: tools is None
  std::string documents_json;         // JSON array; empty: documents is None
  std::string template_kwargs_json;   // JSON object of extra template variables
  std::string template_date;          // what strftime_now() sees; empty: the clock now
  bool add_generation_prompt = true;  // chat only
  bool parse_special_tokens = true;   // false: "<|im_start|>" in text is plain text
};

struct PreparedPrompt {
  std::vector<int64_t> ids;
  std::vector<std::string> tokens;                 // display strings; empty without a tokenizer
  std::vector<std::pair<int64_t, int64_t>> spans;  // byte spans in `text`; empty for ids input
  std::string text;                                // the text that was tokenized (rendered chat)
  // Chat: the moment the template's strftime_now() saw; empty when it never called it.
  std::string template_date;
};

// Renders a chat input with the model's template as transformers would (special tokens of
// tokenizer_config.json, tools, documents, extra keywords); *date_used gets the moment
// strftime_now() saw (the input's template_date, or the clock now), or "" when the template
// never called it.
absl::StatusOr<std::string> RenderChat(const PromptInput& input, const ChatTemplateConfig& chat,
                                       std::string* date_used);

// Reads a chat from JSON text: a list of messages, or {"messages": [...], "tools": [...],
// "documents": [...], other keys: extra template variables} as Hugging Face's
// apply_chat_template takes them. Each message needs a string "role"; "content" may be a
// string, null, absent or a list of parts; every other field is kept. `what` names the source
// in errors.
absl::StatusOr<PromptInput> ParseChatJson(const std::string& text, const std::string& what);

// Errors: FailedPrecondition when text/chat input meets a model without tokenizer or template.
absl::StatusOr<PreparedPrompt> PreparePrompt(const PromptInput& input, const Tokenizer* tokenizer,
                                             const ChatTemplateConfig* chat);

// A continuation to score ("increase"): its text tokenized as plain text (special-token
// spellings are ordinary text), no BOS. FailedPrecondition without a tokenizer.
absl::StatusOr<std::vector<int64_t>> EncodeContinuation(const std::string& text,
                                                        const Tokenizer* tokenizer);

// Display strings of `ids` ("" each without a tokenizer).
std::vector<std::string> TokenStrings(const std::vector<int64_t>& ids, const Tokenizer* tokenizer);

}  // namespace attnscope
