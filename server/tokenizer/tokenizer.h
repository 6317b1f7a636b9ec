// Tokenizers (Hugging Face byte-level BPE from tokenizer.json, SentencePiece from
// tokenizer.model) and Jinja chat templates from tokenizer_config.json. Token boundaries decide
// every position of every attention matrix, so both must match the reference id for id.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace attnscope {

struct Encoding {
  std::vector<int64_t> ids;
  // Readable display strings (' sales', not 'Ġsales'). A token holding only part of a UTF-8
  // character is shown in its byte-level form (e.g. "æĪ") so the string stays valid UTF-8.
  std::vector<std::string> tokens;
  std::vector<std::pair<int64_t, int64_t>> spans;  // byte [begin, end) in the ORIGINAL input text
};

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  // Input must be valid UTF-8 (InvalidArgument naming the byte offset otherwise). Special
  // tokens written in the text are recognised unless parse_special_tokens is false, in which
  // case they are tokenized as plain text. No BOS/EOS is added.
  virtual absl::StatusOr<Encoding> Encode(const std::string& text,
                                          bool parse_special_tokens = true) const = 0;
  // Invalid UTF-8 (e.g. a cut inside a character) becomes U+FFFD. Unknown ids are skipped.
  virtual std::string Decode(const std::vector<int64_t>& ids,
                             bool skip_special_tokens = false) const = 0;
  virtual std::string TokenString(int64_t id) const = 0;  // display string ("" if out of range)
  virtual int64_t vocab_size() const = 0;                 // including added tokens
  virtual bool IsSpecial(int64_t id) const = 0;
  // Raw vocabulary string (e.g. "Ġsales") or added token content.
  virtual std::optional<int64_t> TokenToId(const std::string& token) const = 0;
};

// DIR/tokenizer.json (byte-level BPE) or DIR/tokenizer.model (SentencePiece). NotFound naming
// DIR if neither exists.
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizer(const std::string& dir);

// Byte-level BPE from the text of a tokenizer.json; `origin` names it in error messages.
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadBpeTokenizerFromJson(const std::string& json_text,
                                                                    const std::string& origin);

// SentencePiece model file, through the isolated shim library (see sentencepiece_tokenizer.cc).
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadSentencePieceTokenizer(const std::string& path);

struct ChatMessage {
  std::string role;
  std::string content;
};

struct ChatTemplateProgram;  // compiled syntax tree, defined in chat_template.cc

// A compiled Jinja chat template (the subset Hugging Face chat templates use, with
// trim_blocks and lstrip_blocks on, as transformers renders them).
class ChatTemplate {
 public:
  // Unsupported construct -> InvalidArgument naming it.
  static absl::StatusOr<ChatTemplate> Compile(const std::string& source);
  // raise_exception(msg) in the template -> FailedPrecondition carrying msg.
  absl::StatusOr<std::string> Render(const std::vector<ChatMessage>& messages,
                                     bool add_generation_prompt, const std::string& bos_token,
                                     const std::string& eos_token) const;
  const std::string& source() const { return source_; }

 private:
  std::string source_;
  std::shared_ptr<const ChatTemplateProgram> program_;
};

// Reads DIR/tokenizer_config.json: chat_template (string, or list of {name, template}: takes
// "default"), bos_token/eos_token (string or {content}).
struct ChatTemplateConfig {
  std::optional<ChatTemplate> chat_template;
  std::string bos_token, eos_token;
};
absl::StatusOr<ChatTemplateConfig> LoadChatTemplateConfig(const std::string& dir);

// Writes tokenizer.json and tokenizer_config.json of the tiny default model into DIR:
// byte-level BPE with the 256 byte tokens as ids 0..255, a few merges, special tokens
// <|endoftext|>=256, <|im_start|>=257, <|im_end|>=258, Qwen2's normalizer, pre-tokenizer and
// decoder, and Qwen2-7B-Instruct's ChatML template.
absl::Status WriteTinyTokenizerFiles(const std::string& dir);

}  // namespace attnscope
