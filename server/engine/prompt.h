// Turns a request's input (token ids, raw text, or chat messages rendered with the model's
// template) into prompt ids plus display strings and byte spans. Shared by the command line
// and the service so both tokenize the same way.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "server/tokenizer/tokenizer.h"

namespace attnscope {

// The tokenizer side of a model folder; either part may be absent (a folder with weights only
// still serves token-id input).
struct ModelTextTools {
  std::unique_ptr<Tokenizer> tokenizer;
  std::optional<ChatTemplateConfig> chat;
};
// Loads DIR's tokenizer and chat template when present; a malformed file is an error, a
// missing one is not.
absl::StatusOr<ModelTextTools> LoadModelTextTools(const std::string& model_dir);

struct PromptInput {
  enum class Kind { kIds, kText, kChat } kind = Kind::kIds;
  std::vector<int64_t> ids;
  std::string text;
  std::vector<ChatMessage> messages;
  bool add_generation_prompt = true;  // chat only
  bool parse_special_tokens = true;   // false: "<|im_start|>" in text is plain text
};

struct PreparedPrompt {
  std::vector<int64_t> ids;
  std::vector<std::string> tokens;                 // display strings; empty without a tokenizer
  std::vector<std::pair<int64_t, int64_t>> spans;  // byte spans in `text`; empty for ids input
  std::string text;                                // the text that was tokenized (rendered chat)
};

// Errors: FailedPrecondition when text/chat input meets a model without tokenizer or template.
absl::StatusOr<PreparedPrompt> PreparePrompt(const PromptInput& input, const ModelTextTools& tools);

// A continuation to score ("increase"): its text tokenized as plain text (special-token
// spellings are ordinary text), no BOS. FailedPrecondition without a tokenizer.
absl::StatusOr<std::vector<int64_t>> EncodeContinuation(const std::string& text,
                                                        const ModelTextTools& tools);

// Display strings of `ids` ("" each without a tokenizer).
std::vector<std::string> TokenStrings(const std::vector<int64_t>& ids, const ModelTextTools& tools);

}  // namespace attnscope
