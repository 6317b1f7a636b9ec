// Tokenizers (Hugging Face byte-level BPE from tokenizer.json, SentencePiece from
// tokenizer.model) and Jinja chat templates from tokenizer_config.json. Token boundaries decide
// every position of every attention matrix, so both must match the reference id for id.
#pragma once

#include <cstdint>
#include <ctime>
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

// The arguments transformers' apply_chat_template gives a template, as JSON documents so that
// every field a caller sends reaches the template unchanged.
struct ChatTemplateArgs {
  // JSON array of message objects, each whole: tool_calls (arguments as objects),
  // tool_call_id, name, content that is null or a list of parts, anything else.
  std::string messages_json = "[]";
  std::string tools_json;      // JSON array of tool schemas; empty: tools is None
  std::string documents_json;  // JSON array; empty: documents is None
  // JSON object of extra template variables (enable_thinking, date_string, ...); empty: none.
  std::string kwargs_json;
  bool add_generation_prompt = false;
  // The moment strftime_now() formats, "YYYY-MM-DDTHH:MM[:SS]"; empty: the local clock now.
  std::string date;
};

// Special tokens of tokenizer_config.json as transformers' special_tokens_map passes them:
// only the ones that are set (a null bos_token stays undefined in the template).
struct SpecialTokens {
  std::vector<std::pair<std::string, std::string>> named;  // bos_token, eos_token, pad_token, ...
  std::vector<std::string> additional;                     // additional_special_tokens
  std::string Get(const std::string& name) const;          // "" when unset
};

// "YYYY-MM-DDTHH:MM[:SS]" -> broken-down time; InvalidArgument naming the value otherwise.
absl::StatusOr<std::tm> ParseTemplateDate(const std::string& date);
// The local clock now, in the same form (what a capture records when no date was pinned).
std::string CurrentTemplateDate();

struct ChatTemplateProgram;  // the parsed template (server/tokenizer/jinja)

// A Hugging Face chat template, rendered as transformers renders it (Jinja2's sandbox with
// trim_blocks and lstrip_blocks, loopcontrols, tojson without ASCII escaping,
// raise_exception, strftime_now, {% generation %}).
class ChatTemplate {
 public:
  // Syntax errors -> InvalidArgument naming the construct. Unknown filters, tests and names are
  // not errors here: they fail when a render reaches them, as in Jinja2.
  static absl::StatusOr<ChatTemplate> Compile(const std::string& source);
  // Never fails: a template that does not parse fails at Render with the syntax error, so a
  // model with an unusable template still loads and serves text and token ids.
  static ChatTemplate CompileOrDefer(const std::string& source);

  // raise_exception(msg) in the template -> FailedPrecondition "chat template raised: msg".
  // *clock_read (when given) tells whether the template called strftime_now().
  absl::StatusOr<std::string> Render(const ChatTemplateArgs& args,
                                     const SpecialTokens& special_tokens,
                                     bool* clock_read = nullptr) const;
  // Messages with string content only; bos/eos passed when non-empty.
  absl::StatusOr<std::string> Render(const std::vector<ChatMessage>& messages,
                                     bool add_generation_prompt, const std::string& bos_token,
                                     const std::string& eos_token) const;
  const std::string& source() const { return source_; }
  const absl::Status& compile_status() const { return compile_status_; }

 private:
  std::string source_;
  absl::Status compile_status_;
  std::shared_ptr<const ChatTemplateProgram> program_;
};

// JSON array text of `messages` ([{"role": ..., "content": ...}, ...]).
std::string ChatMessagesJson(const std::vector<ChatMessage>& messages);

// Reads DIR/tokenizer_config.json: chat_template (string, or list of {name, template}: takes
// "default"), and every special token (string or {content}). A template that does not parse
// is kept (its error surfaces when rendering), so the model still loads.
struct ChatTemplateConfig {
  std::optional<ChatTemplate> chat_template;
  std::string bos_token, eos_token;  // "" when unset
  SpecialTokens special_tokens;
};
absl::StatusOr<ChatTemplateConfig> LoadChatTemplateConfig(const std::string& dir);

// Writes tokenizer.json and tokenizer_config.json of the tiny default model into DIR:
// byte-level BPE with the 256 byte tokens as ids 0..255, a few merges, special tokens
// <|endoftext|>=256, <|im_start|>=257, <|im_end|>=258, Qwen2's normalizer, pre-tokenizer and
// decoder, and Qwen2-7B-Instruct's ChatML template.
absl::Status WriteTinyTokenizerFiles(const std::string& dir);

}  // namespace attnscope
