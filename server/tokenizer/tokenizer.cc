// LoadTokenizer (picks the file format) and the tiny default model's tokenizer files.
#include "server/tokenizer/tokenizer.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace attnscope {
namespace {

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  std::ostringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

absl::Status WriteFile(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
  out.close();
  if (!out) return absl::InternalError(absl::StrCat("cannot write ", path));
  return absl::OkStatus();
}

}  // namespace

// Qwen2-7B-Instruct's chat template, byte for byte
// (tests/data/tokenizer/qwen2/tokenizer_config.json).
extern const char kChatMlTemplate[] =
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizer(const std::string& dir) {
  namespace fs = std::filesystem;
  const std::string json_path = (fs::path(dir) / "tokenizer.json").string();
  const std::string model_path = (fs::path(dir) / "tokenizer.model").string();
  std::error_code error;
  if (fs::exists(json_path, error)) {
    auto text = ReadFile(json_path);
    if (!text.ok()) return text.status();
    auto tokenizer = LoadBpeTokenizerFromJson(*text, json_path);
    // A SentencePiece-style tokenizer.json (byte_fallback, Metaspace) is served by its
    // tokenizer.model when the directory has one.
    if (tokenizer.ok() || !absl::IsUnimplemented(tokenizer.status()) ||
        !fs::exists(model_path, error)) {
      return tokenizer;
    }
  }
  if (fs::exists(model_path, error)) return LoadSentencePieceTokenizer(model_path);
  return absl::NotFoundError(
      absl::StrCat("no tokenizer.json or tokenizer.model in directory ", dir));
}

absl::Status WriteTinyTokenizerFiles(const std::string& dir) {
  using json = nlohmann::ordered_json;
  std::error_code error;
  std::filesystem::create_directories(dir, error);
  if (error) return absl::InternalError(absl::StrCat("cannot create ", dir, ": ", error.message()));
  // GPT-2's bytes_to_unicode, in byte order, so byte b is id b.
  json vocab = json::object();
  int next = 256;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174);
    const int cp = printable ? b : next++;
    std::string s;
    if (cp < 0x80) {
      s.push_back(static_cast<char>(cp));
    } else {
      s.push_back(static_cast<char>(0xC0 | (cp >> 6)));
      s.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
    vocab[s] = b;
  }
  json added = json::array();
  const char* specials[] = {"<|endoftext|>", "<|im_start|>", "<|im_end|>"};
  for (int i = 0; i < 3; ++i) {
    added.push_back({{"id", 256 + i},
                     {"content", specials[i]},
                     {"single_word", false},
                     {"lstrip", false},
                     {"rstrip", false},
                     {"normalized", false},
                     {"special", true}});
  }
  const json byte_level = {{"type", "ByteLevel"},
                           {"add_prefix_space", false},
                           {"trim_offsets", false},
                           {"use_regex", false}};
  json tokenizer = {
      {"version", "1.0"},
      {"truncation", nullptr},
      {"padding", nullptr},
      {"added_tokens", added},
      {"normalizer", {{"type", "NFC"}}},
      {"pre_tokenizer",
       {{"type", "Sequence"},
        {"pretokenizers",
         json::array({{{"type", "Split"},
                       {"pattern",
                        {{"Regex",
                          "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| "
                          "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"}}},
                       {"behavior", "Isolated"},
                       {"invert", false}},
                      byte_level})}}},
      {"post_processor", byte_level},
      {"decoder", byte_level},
      {"model",
       {{"type", "BPE"},
        {"dropout", nullptr},
        {"unk_token", nullptr},
        {"continuing_subword_prefix", ""},
        {"end_of_word_suffix", ""},
        {"fuse_unk", false},
        {"byte_fallback", false},
        {"vocab", vocab},
        {"merges", json::array()}}}};
  json added_decoder = json::object();
  for (int i = 0; i < 3; ++i) {
    added_decoder[std::to_string(256 + i)] = {{"content", specials[i]}, {"lstrip", false},
                                              {"normalized", false},    {"rstrip", false},
                                              {"single_word", false},   {"special", true}};
  }
  json config = {{"add_prefix_space", false},
                 {"added_tokens_decoder", added_decoder},
                 {"additional_special_tokens", {"<|im_start|>", "<|im_end|>"}},
                 {"bos_token", nullptr},
                 {"chat_template", kChatMlTemplate},
                 {"clean_up_tokenization_spaces", false},
                 {"eos_token", "<|im_end|>"},
                 {"errors", "replace"},
                 {"model_max_length", 32768},
                 {"pad_token", "<|endoftext|>"},
                 {"split_special_tokens", false},
                 {"tokenizer_class", "Qwen2Tokenizer"},
                 {"unk_token", nullptr}};
  absl::Status status =
      WriteFile((std::filesystem::path(dir) / "tokenizer.json").string(), tokenizer.dump(2));
  if (!status.ok()) return status;
  return WriteFile((std::filesystem::path(dir) / "tokenizer_config.json").string(), config.dump(2));
}

}  // namespace attnscope
