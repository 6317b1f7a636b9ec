// Hugging Face tokenizer.json byte-level BPE (Qwen2, Qwen2.5, Llama-3, GPT-2): normalizer,
// pre-tokenizer pipeline, BPE model, ByteLevel decoder and added tokens, read as the file
// describes them. Byte spans into the original text are carried through every stage.
#include <utf8proc.h>

#include <algorithm>
#include <array>
#include <climits>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <queue>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "server/json/bounded_json.h"
#include "server/tokenizer/pre_tokenizer.h"
#include "server/tokenizer/tokenizer.h"
#include "server/tokenizer/utf8_util.h"

namespace attnscope {
namespace {

using json = nlohmann::json;
using pretokenizer::ApplyStep;
using pretokenizer::PreToken;
using pretokenizer::PreTokenizerStep;
using pretokenizer::QuoteRegexLiteral;
using pretokenizer::SplitBehavior;

// GPT-2's bytes_to_unicode: printable bytes map to themselves, the rest to U+0100 upwards.
struct ByteLevelAlphabet {
  std::array<std::string, 256> byte_to_string;
  std::array<int, 512> code_point_to_byte;
  ByteLevelAlphabet() {
    code_point_to_byte.fill(-1);
    int next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174);
      const int cp = printable ? b : next++;
      utf8::AppendCodePoint(cp, &byte_to_string[b]);
      code_point_to_byte[cp] = b;
    }
  }
  // Raw bytes of a byte-level vocabulary string, or nullopt if it uses other characters.
  std::optional<std::string> ToBytes(const std::string& s) const {
    std::string out;
    size_t pos = 0;
    while (pos < s.size()) {
      const int length = utf8::WellFormedLength(s, pos);
      if (length == 0) return std::nullopt;
      const int32_t cp = utf8::DecodeAt(s, pos, length);
      if (cp >= 512 || code_point_to_byte[cp] < 0) return std::nullopt;
      out.push_back(static_cast<char>(code_point_to_byte[cp]));
      pos += length;
    }
    return out;
  }
  std::string FromBytes(const std::string& bytes) const {
    std::string out;
    for (unsigned char c : bytes) out += byte_to_string[c];
    return out;
  }
};

const ByteLevelAlphabet& Alphabet() {
  static const ByteLevelAlphabet* alphabet = new ByteLevelAlphabet();
  return *alphabet;
}

// ---------------------------------------------------------------------------------------
// Normalization with an alignment back to the original bytes.

struct AlignedText {
  struct Piece {
    int64_t norm_begin, norm_length, orig_begin, orig_length;
    bool identity;  // byte-for-byte copy, so offsets inside map exactly
  };
  std::string text;
  std::vector<Piece> pieces;

  void Append(const std::string& original, int64_t orig_begin, int64_t orig_length,
              const std::string& normalized) {
    const bool identity = normalized.size() == static_cast<size_t>(orig_length) &&
                          original.compare(orig_begin, orig_length, normalized) == 0;
    if (identity && !pieces.empty() && pieces.back().identity &&
        pieces.back().orig_begin + pieces.back().orig_length == orig_begin) {
      pieces.back().norm_length += orig_length;
      pieces.back().orig_length += orig_length;
    } else {
      pieces.push_back({static_cast<int64_t>(text.size()), static_cast<int64_t>(normalized.size()),
                        orig_begin, orig_length, identity});
    }
    text += normalized;
  }
  // Appends original[orig_begin, +length) unchanged.
  void AppendIdentity(const std::string& original, int64_t orig_begin, int64_t length) {
    if (!pieces.empty() && pieces.back().identity &&
        pieces.back().orig_begin + pieces.back().orig_length == orig_begin) {
      pieces.back().norm_length += length;
      pieces.back().orig_length += length;
    } else {
      pieces.push_back({static_cast<int64_t>(text.size()), length, orig_begin, length, true});
    }
    text.append(original, orig_begin, length);
  }
  const Piece& PieceAt(int64_t norm_pos) const {
    auto it = std::upper_bound(pieces.begin(), pieces.end(), norm_pos,
                               [](int64_t pos, const Piece& p) { return pos < p.norm_begin; });
    return *(it == pieces.begin() ? it : it - 1);
  }
  // Original offset where a token starting at normalized byte `pos` begins.
  int64_t OrigBegin(int64_t pos) const {
    if (pieces.empty()) return 0;
    if (pos >= static_cast<int64_t>(text.size())) {
      return pieces.back().orig_begin + pieces.back().orig_length;
    }
    const Piece& p = PieceAt(pos);
    return p.identity ? p.orig_begin + (pos - p.norm_begin) : p.orig_begin;
  }
  // Original offset where a token ending (exclusive) at normalized byte `end` ends.
  int64_t OrigEnd(int64_t end) const {
    if (pieces.empty()) return 0;
    if (end <= 0) return pieces.front().orig_begin;
    const Piece& p = PieceAt(end - 1);
    return p.identity ? p.orig_begin + (end - p.norm_begin) : p.orig_begin + p.orig_length;
  }
};

std::string Nfc(const char* data, size_t length) {
  utf8proc_uint8_t* out = nullptr;
  const utf8proc_ssize_t n =
      utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(data), length, &out,
                   static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_COMPOSE));
  if (n < 0) return std::string(data, length);  // input was validated; keep it unchanged
  std::string result(reinterpret_cast<char*>(out), n);
  std::free(out);
  return result;
}

// NFC of original[begin, end), split into runs so spans stay precise: a run starts at every
// starter (combining class 0); runs of characters that NFC may touch are normalized together
// with the run before them (a starter can compose with a following mark or, for Hangul and a
// few Indic vowels, with a following starter). Code points below U+0300 and CJK/Hangul
// syllables are never changed by NFC nor composed onto what precedes them.
void AppendNfc(const std::string& original, int64_t begin, int64_t end, AlignedText* out) {
  struct Run {
    int64_t begin, end;
    bool may_change;
  };
  // Fast path: nothing NFC could touch (ASCII, Latin-1, CJK ideographs, Hangul syllables).
  bool all_stable = true;
  for (int64_t at = begin; at < end && all_stable;) {
    const unsigned char lead = static_cast<unsigned char>(original[at]);
    if (lead < 0x80) {
      ++at;
      continue;
    }
    const int length = utf8::WellFormedLength(original, at);
    const int32_t cp = utf8::DecodeAt(original, at, length);
    all_stable = cp < 0x300 || (cp >= 0x4E00 && cp <= 0x9FFF) || (cp >= 0xAC00 && cp <= 0xD7A3);
    at += length;
  }
  if (all_stable) {
    out->AppendIdentity(original, begin, end - begin);
    return;
  }
  std::vector<Run> runs;
  int64_t pos = begin;
  while (pos < end) {
    const unsigned char lead = static_cast<unsigned char>(original[pos]);
    int length = 1;
    int32_t cp = lead;
    if (lead >= 0x80) {
      length = utf8::WellFormedLength(original, pos);
      cp = utf8::DecodeAt(original, pos, length);
    }
    const bool stable =
        cp < 0x300 || (cp >= 0x4E00 && cp <= 0x9FFF) || (cp >= 0xAC00 && cp <= 0xD7A3);
    const bool starter = stable || utf8proc_get_property(cp)->combining_class == 0;
    if (starter || runs.empty()) {
      runs.push_back({pos, pos + length, !stable});
    } else {
      runs.back().end = pos + length;
      runs.back().may_change = true;
    }
    pos += length;
  }
  size_t i = 0;
  while (i < runs.size()) {
    if (!runs[i].may_change && (i + 1 >= runs.size() || !runs[i + 1].may_change)) {
      out->AppendIdentity(original, runs[i].begin, runs[i].end - runs[i].begin);
      ++i;
      continue;
    }
    size_t j = i + 1;
    while (j < runs.size() && runs[j].may_change) ++j;
    const int64_t group_begin = runs[i].begin, group_end = runs[j - 1].end;
    const std::string whole = Nfc(original.data() + group_begin, group_end - group_begin);
    std::vector<std::string> parts;
    std::string joined;
    for (size_t k = i; k < j; ++k) {
      parts.push_back(Nfc(original.data() + runs[k].begin, runs[k].end - runs[k].begin));
      joined += parts.back();
    }
    if (joined == whole) {
      for (size_t k = i; k < j; ++k) {
        out->Append(original, runs[k].begin, runs[k].end - runs[k].begin, parts[k - i]);
      }
    } else {
      out->Append(original, group_begin, group_end - group_begin, whole);
    }
    i = j;
  }
}

// ---------------------------------------------------------------------------------------

struct AddedToken {
  std::string content;
  int64_t id;
  bool special, lstrip, rstrip;
};

bool IsAsciiSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

class BpeTokenizer : public Tokenizer {
 public:
  static absl::StatusOr<std::unique_ptr<BpeTokenizer>> FromJson(const json& root,
                                                                const std::string& origin);

  absl::StatusOr<Encoding> Encode(const std::string& text,
                                  bool parse_special_tokens) const override;
  std::string Decode(const std::vector<int64_t>& ids, bool skip_special_tokens) const override;
  std::string TokenString(int64_t id) const override {
    return id >= 0 && id < vocab_size() ? display_[id] : "";
  }
  int64_t vocab_size() const override { return static_cast<int64_t>(token_bytes_.size()); }
  bool IsSpecial(int64_t id) const override { return id >= 0 && id < vocab_size() && special_[id]; }
  std::optional<int64_t> TokenToId(const std::string& token) const override {
    auto added = added_by_content_.find(token);
    if (added != added_by_content_.end()) return added->second;
    auto it = vocab_.find(token);
    if (it == vocab_.end()) return std::nullopt;
    return it->second;
  }

 private:
  struct Merge {
    int32_t rank;
    int32_t merged_id;
  };
  static uint64_t PairKey(int32_t left, int32_t right) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) |
           static_cast<uint32_t>(right);
  }
  const Merge* FindMerge(int32_t left, int32_t right) const {
    auto it = merges_.find(PairKey(left, right));
    return it == merges_.end() ? nullptr : &it->second;
  }

  // BPE of one pre-token's bytes; appends ids.
  void BpeWord(const std::string& word, std::vector<int32_t>* ids) const;
  void BpeShort(const std::string& word, std::vector<int32_t>* ids) const;
  void BpeLong(const std::string& word, std::vector<int32_t>* ids) const;
  absl::Status EncodeSegment(const std::string& text, int64_t begin, int64_t end,
                             Encoding* encoding) const;

  absl::flat_hash_map<std::string, int64_t> vocab_;      // byte-level string -> id
  absl::flat_hash_map<std::string, int64_t> raw_vocab_;  // raw bytes -> id (ignore_merges only)
  absl::flat_hash_map<uint64_t, Merge> merges_;
  std::array<int32_t, 256> byte_ids_;
  std::vector<std::string> token_bytes_;  // raw bytes of each id (added: content)
  std::vector<std::string> display_;
  std::vector<bool> special_;
  std::vector<AddedToken> added_;  // longest first
  std::array<bool, 256> added_first_byte_{};
  absl::flat_hash_map<std::string, int64_t> added_by_content_;
  bool nfc_ = false;
  bool ignore_merges_ = false;
  std::vector<PreTokenizerStep> steps_;

  // Pre-token -> ids. Words repeat, so this skips most BPE work.
  mutable std::mutex cache_mutex_;
  mutable absl::flat_hash_map<std::string, std::vector<int32_t>> cache_;
};

constexpr size_t kMaxCachedWordBytes = 64;
constexpr size_t kMaxCacheEntries = 1 << 18;
constexpr size_t kShortWordBytes = 48;

absl::Status ParseNormalizer(const json& node, const std::string& origin, bool* nfc) {
  if (node.is_null()) return absl::OkStatus();
  const std::string type = node.value("type", "");
  if (type == "NFC") {
    *nfc = true;
    return absl::OkStatus();
  }
  if (type == "Sequence") {
    for (const json& child : node.at("normalizers")) {
      absl::Status status = ParseNormalizer(child, origin, nfc);
      if (!status.ok()) return status;
    }
    return absl::OkStatus();
  }
  return absl::UnimplementedError(absl::StrCat(origin, ": normalizer type '", type,
                                               "' is not supported (NFC, Sequence, null)"));
}

absl::Status ParsePreTokenizer(const json& node, const std::string& origin,
                               std::vector<PreTokenizerStep>* steps) {
  if (node.is_null()) return absl::OkStatus();
  const std::string type = node.value("type", "");
  if (type == "Sequence") {
    for (const json& child : node.at("pretokenizers")) {
      absl::Status status = ParsePreTokenizer(child, origin, steps);
      if (!status.ok()) return status;
    }
    return absl::OkStatus();
  }
  PreTokenizerStep step;
  if (type == "Split") {
    step.kind = PreTokenizerStep::Kind::kSplit;
    const json& pattern = node.at("pattern");
    std::string regex_text;
    if (pattern.contains("Regex")) {
      regex_text = pattern.at("Regex").get<std::string>();
    } else if (pattern.contains("String")) {
      regex_text = QuoteRegexLiteral(pattern.at("String").get<std::string>());
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          origin, ": Split pattern needs 'Regex' or 'String': ", DescribeJson(pattern)));
    }
    auto regex = pretokenizer::CompileRegex(regex_text, origin);
    if (!regex.ok()) return regex.status();
    step.regex = *regex;
    const std::string behavior = node.value("behavior", "Isolated");
    static const std::pair<const char*, SplitBehavior> kBehaviors[] = {
        {"Removed", SplitBehavior::kRemoved},
        {"Isolated", SplitBehavior::kIsolated},
        {"MergedWithPrevious", SplitBehavior::kMergedWithPrevious},
        {"MergedWithNext", SplitBehavior::kMergedWithNext},
        {"Contiguous", SplitBehavior::kContiguous}};
    bool known = false;
    for (const auto& [name, value] : kBehaviors) {
      if (behavior == name) {
        step.behavior = value;
        known = true;
      }
    }
    if (!known) {
      return absl::UnimplementedError(
          absl::StrCat(origin, ": Split behavior '", behavior, "' is not supported"));
    }
    step.invert = node.value("invert", false);
  } else if (type == "ByteLevel") {
    step.kind = PreTokenizerStep::Kind::kByteLevel;
    step.add_prefix_space = node.value("add_prefix_space", false);
    if (node.value("use_regex", true)) {
      auto regex = pretokenizer::CompileRegex(pretokenizer::kGpt2Pattern, origin);
      if (!regex.ok()) return regex.status();
      step.regex = *regex;
    }
  } else {
    return absl::UnimplementedError(absl::StrCat(
        origin, ": pre_tokenizer type '", type, "' is not supported (Split, ByteLevel, Sequence)"));
  }
  steps->push_back(std::move(step));
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<BpeTokenizer>> BpeTokenizer::FromJson(const json& root,
                                                                     const std::string& origin) {
  auto tokenizer = std::make_unique<BpeTokenizer>();
  const json& model = root.at("model");
  const std::string model_type = model.value("type", "BPE");
  if (model_type != "BPE") {
    return absl::UnimplementedError(
        absl::StrCat(origin, ": model type '", model_type, "' is not supported (BPE only)"));
  }
  if (model.value("byte_fallback", false)) {
    return absl::UnimplementedError(
        absl::StrCat(origin,
                     ": BPE byte_fallback (SentencePiece-style BPE) is not supported; "
                     "use the model's tokenizer.model"));
  }
  for (const char* affix : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    if (model.contains(affix) && model[affix].is_string() &&
        !model[affix].get<std::string>().empty()) {
      return absl::UnimplementedError(absl::StrCat(
          origin, ": BPE ", affix, " '", model[affix].get<std::string>(), "' is not supported"));
    }
  }
  if (model.contains("dropout") && model["dropout"].is_number() &&
      model["dropout"].get<double>() > 0) {
    return absl::UnimplementedError(absl::StrCat(origin, ": BPE dropout is not supported"));
  }
  tokenizer->ignore_merges_ = model.value("ignore_merges", false);
  if (root.contains("decoder") && !root["decoder"].is_null()) {
    const std::string decoder = root["decoder"].value("type", "");
    if (decoder != "ByteLevel") {
      return absl::UnimplementedError(
          absl::StrCat(origin, ": decoder type '", decoder, "' is not supported (ByteLevel)"));
    }
  }
  absl::Status status = ParseNormalizer(root.value("normalizer", json()), origin, &tokenizer->nfc_);
  if (!status.ok()) return status;
  status = ParsePreTokenizer(root.value("pre_tokenizer", json()), origin, &tokenizer->steps_);
  if (!status.ok()) return status;
  bool has_byte_level = false;
  for (const auto& step : tokenizer->steps_) {
    has_byte_level |= step.kind == PreTokenizerStep::Kind::kByteLevel;
  }
  if (!has_byte_level) {
    return absl::UnimplementedError(
        absl::StrCat(origin, ": only byte-level BPE is supported (no ByteLevel pre-tokenizer)"));
  }

  const ByteLevelAlphabet& alphabet = Alphabet();
  int64_t max_id = -1;
  const json& vocab = model.at("vocab");
  tokenizer->vocab_.reserve(vocab.size());
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    // A float id (2.1e101) must not reach get<int64_t>(): its conversion is undefined.
    if (!it.value().is_number_integer()) {
      return absl::InvalidArgumentError(absl::StrCat(
          origin, ": vocab id of '", it.key(), "' is not an integer: ", DescribeJson(it.value())));
    }
    const int64_t id = it.value().get<int64_t>();
    if (id < 0 || id > INT32_MAX) {
      return absl::InvalidArgumentError(
          absl::StrCat(origin, ": vocab id ", id, " of '", it.key(), "' is out of range"));
    }
    tokenizer->vocab_[it.key()] = id;
    max_id = std::max(max_id, id);
  }
  std::vector<AddedToken> added;
  if (root.contains("added_tokens") && root["added_tokens"].is_array()) {
    for (const json& entry : root["added_tokens"]) {
      if (!entry.is_object() || !entry.contains("id") || !entry["id"].is_number_integer()) {
        return absl::InvalidArgumentError(absl::StrCat(
            origin, ": added_tokens entry without an integer id: ", DescribeJson(entry)));
      }
      AddedToken token{entry.at("content").get<std::string>(), entry.at("id").get<int64_t>(),
                       entry.value("special", false), entry.value("lstrip", false),
                       entry.value("rstrip", false)};
      if (token.content.empty() || token.id < 0) continue;
      max_id = std::max(max_id, token.id);
      added.push_back(std::move(token));
    }
  }
  // Ids index dense tables: refuse absurd ones instead of allocating for them.
  constexpr int64_t kMaxTokenId = (int64_t{1} << 24) - 1;
  if (max_id > kMaxTokenId) {
    return absl::InvalidArgumentError(
        absl::StrCat(origin, ": token id ", max_id, " exceeds the limit ", kMaxTokenId));
  }
  const int64_t size = max_id + 1;
  tokenizer->token_bytes_.assign(size, "");
  tokenizer->display_.assign(size, "");
  tokenizer->special_.assign(size, false);
  for (const auto& [text, id] : tokenizer->vocab_) {
    std::optional<std::string> bytes = alphabet.ToBytes(text);
    tokenizer->token_bytes_[id] = bytes ? *bytes : text;
    const std::string& raw = tokenizer->token_bytes_[id];
    tokenizer->display_[id] = utf8::FirstInvalidOffset(raw) == std::string::npos ? raw : text;
    if (tokenizer->ignore_merges_ && bytes) tokenizer->raw_vocab_[*bytes] = id;
  }
  for (int b = 0; b < 256; ++b) {
    auto it = tokenizer->vocab_.find(alphabet.byte_to_string[b]);
    tokenizer->byte_ids_[b] = it == tokenizer->vocab_.end() ? -1 : static_cast<int32_t>(it->second);
  }
  for (AddedToken& token : added) {
    tokenizer->token_bytes_[token.id] = token.content;
    tokenizer->display_[token.id] = token.content;
    tokenizer->special_[token.id] = token.special;
    tokenizer->added_by_content_[token.content] = token.id;
    tokenizer->added_first_byte_[static_cast<unsigned char>(token.content[0])] = true;
  }
  std::stable_sort(added.begin(), added.end(), [](const AddedToken& a, const AddedToken& b) {
    return a.content.size() > b.content.size();
  });
  tokenizer->added_ = std::move(added);

  const json& merges = model.at("merges");
  tokenizer->merges_.reserve(merges.size());
  int32_t rank = 0;
  for (const json& merge : merges) {
    std::string left, right;
    if (merge.is_string()) {
      const std::string& text = merge.get_ref<const std::string&>();
      const size_t space = text.find(' ', 1);
      if (space == std::string::npos) {
        return absl::InvalidArgumentError(
            absl::StrCat(origin, ": merge #", rank, " '", text, "' is not 'left right'"));
      }
      left = text.substr(0, space);
      right = text.substr(space + 1);
    } else if (merge.is_array() && merge.size() == 2) {
      left = merge[0].get<std::string>();
      right = merge[1].get<std::string>();
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          origin, ": merge #", rank, " is neither a string nor a pair: ", DescribeJson(merge)));
    }
    auto l = tokenizer->vocab_.find(left), r = tokenizer->vocab_.find(right),
         m = tokenizer->vocab_.find(left + right);
    if (l == tokenizer->vocab_.end() || r == tokenizer->vocab_.end() ||
        m == tokenizer->vocab_.end()) {
      return absl::InvalidArgumentError(absl::StrCat(origin, ": merge #", rank, " ('", left, "', '",
                                                     right, "') uses a token not in the vocab"));
    }
    tokenizer->merges_.try_emplace(
        PairKey(static_cast<int32_t>(l->second), static_cast<int32_t>(r->second)),
        Merge{rank, static_cast<int32_t>(m->second)});
    ++rank;
  }
  return tokenizer;
}

void BpeTokenizer::BpeShort(const std::string& word, std::vector<int32_t>* ids) const {
  int32_t symbols[kShortWordBytes];
  int n = 0;
  for (unsigned char c : word) {
    if (byte_ids_[c] >= 0) symbols[n++] = byte_ids_[c];
  }
  while (n > 1) {
    int32_t best_rank = INT32_MAX, best_at = -1, best_id = -1;
    for (int i = 0; i + 1 < n; ++i) {
      const Merge* merge = FindMerge(symbols[i], symbols[i + 1]);
      if (merge != nullptr && merge->rank < best_rank) {
        best_rank = merge->rank;
        best_at = i;
        best_id = merge->merged_id;
      }
    }
    if (best_at < 0) break;
    symbols[best_at] = best_id;
    std::copy(symbols + best_at + 2, symbols + n, symbols + best_at + 1);
    --n;
  }
  ids->insert(ids->end(), symbols, symbols + n);
}

// O(n log n) BPE with a heap of candidate merges over a linked list of symbols; stale heap
// entries are skipped. Ties on rank go to the leftmost pair, as in the reference.
void BpeTokenizer::BpeLong(const std::string& word, std::vector<int32_t>* ids) const {
  struct Symbol {
    int32_t id, prev, next;
  };
  std::vector<Symbol> symbols;
  symbols.reserve(word.size());
  for (unsigned char c : word) {
    if (byte_ids_[c] < 0) continue;
    const int32_t index = static_cast<int32_t>(symbols.size());
    symbols.push_back({byte_ids_[c], index - 1, index + 1});
  }
  if (symbols.empty()) return;
  symbols.back().next = -1;
  struct Candidate {
    int32_t rank, left, left_id, right_id;
    bool operator>(const Candidate& o) const {
      return rank != o.rank ? rank > o.rank : left > o.left;
    }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> heap;
  auto push = [&](int32_t left) {
    const int32_t right = symbols[left].next;
    if (right < 0) return;
    const Merge* merge = FindMerge(symbols[left].id, symbols[right].id);
    if (merge != nullptr) heap.push({merge->rank, left, symbols[left].id, symbols[right].id});
  };
  for (int32_t i = 0; i + 1 < static_cast<int32_t>(symbols.size()); ++i) push(i);
  while (!heap.empty()) {
    const Candidate top = heap.top();
    heap.pop();
    Symbol& left = symbols[top.left];
    if (left.id < 0 || left.id != top.left_id || left.next < 0) continue;
    Symbol& right = symbols[left.next];
    if (right.id != top.right_id) continue;
    left.id = FindMerge(top.left_id, top.right_id)->merged_id;
    right.id = -1;  // removed
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = top.left;
    if (left.prev >= 0) push(left.prev);
    push(top.left);
  }
  for (int32_t i = 0; i >= 0; i = symbols[i].next) ids->push_back(symbols[i].id);
}

void BpeTokenizer::BpeWord(const std::string& word, std::vector<int32_t>* ids) const {
  if (ignore_merges_) {
    auto it = raw_vocab_.find(word);
    if (it != raw_vocab_.end()) {
      ids->push_back(static_cast<int32_t>(it->second));
      return;
    }
  }
  const bool cacheable = word.size() <= kMaxCachedWordBytes;
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    auto it = cache_.find(word);
    if (it != cache_.end()) {
      ids->insert(ids->end(), it->second.begin(), it->second.end());
      return;
    }
  }
  const size_t first = ids->size();
  if (word.size() <= kShortWordBytes) {
    BpeShort(word, ids);
  } else {
    BpeLong(word, ids);
  }
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    if (cache_.size() >= kMaxCacheEntries) cache_.clear();
    cache_.emplace(word, std::vector<int32_t>(ids->begin() + first, ids->end()));
  }
}

absl::Status BpeTokenizer::EncodeSegment(const std::string& text, int64_t begin, int64_t end,
                                         Encoding* encoding) const {
  if (end <= begin) return absl::OkStatus();
  AlignedText aligned;
  if (nfc_) {
    AppendNfc(text, begin, end, &aligned);
  } else {
    aligned.AppendIdentity(text, begin, end - begin);
  }
  std::vector<PreToken> pre_tokens = {{0, static_cast<int64_t>(aligned.text.size()), false}};
  for (const PreTokenizerStep& step : steps_) {
    absl::Status status = ApplyStep(step, aligned.text, &pre_tokens);
    if (!status.ok()) return status;
  }
  std::string word;
  std::vector<int32_t> ids;
  for (const PreToken& pre : pre_tokens) {
    word.clear();
    if (pre.prefix_space) word.push_back(' ');
    word.append(aligned.text, pre.begin, pre.end - pre.begin);
    ids.clear();
    BpeWord(word, &ids);
    // Walk the word's bytes: byte k of the word is normalized byte pre.begin + k - shift.
    const int64_t shift = pre.prefix_space ? 1 : 0;
    int64_t offset = 0;
    for (int32_t id : ids) {
      const int64_t length = static_cast<int64_t>(token_bytes_[id].size());
      // Clamped to the pre-token, so even a file whose added tokens reuse vocab ids with
      // other content cannot produce spans outside the text.
      const int64_t norm_begin =
          std::min(pre.end, pre.begin + std::max<int64_t>(0, offset - shift));
      const int64_t norm_end = std::min(pre.end, pre.begin + offset + length - shift);
      offset += length;
      int64_t span_begin, span_end;
      if (norm_end <= norm_begin) {  // only the inserted prefix space
        span_begin = span_end = aligned.OrigBegin(norm_begin);
      } else {
        span_begin = aligned.OrigBegin(norm_begin);
        span_end = aligned.OrigEnd(norm_end);
      }
      encoding->ids.push_back(id);
      encoding->tokens.push_back(display_[id]);
      encoding->spans.emplace_back(span_begin, span_end);
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<Encoding> BpeTokenizer::Encode(const std::string& text,
                                              bool parse_special_tokens) const {
  const size_t invalid = utf8::FirstInvalidOffset(text);
  if (invalid != std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat(
        "text is not valid UTF-8: byte 0x", absl::Hex(static_cast<unsigned char>(text[invalid])),
        " at offset ", invalid, " does not start a well-formed character"));
  }
  Encoding encoding;
  int64_t segment_begin = 0;
  int64_t pos = 0;
  const int64_t size = static_cast<int64_t>(text.size());
  while (pos < size) {
    if (!added_first_byte_[static_cast<unsigned char>(text[pos])]) {
      ++pos;
      continue;
    }
    const AddedToken* found = nullptr;
    for (const AddedToken& token : added_) {
      if ((!parse_special_tokens && token.special) ||
          text.compare(pos, token.content.size(), token.content) != 0) {
        continue;
      }
      found = &token;
      break;
    }
    if (found == nullptr) {
      ++pos;
      continue;
    }
    int64_t match_begin = pos, match_end = pos + static_cast<int64_t>(found->content.size());
    if (found->lstrip) {
      while (match_begin > segment_begin && IsAsciiSpace(text[match_begin - 1])) --match_begin;
    }
    if (found->rstrip) {
      while (match_end < size && IsAsciiSpace(text[match_end])) ++match_end;
    }
    absl::Status status = EncodeSegment(text, segment_begin, match_begin, &encoding);
    if (!status.ok()) return status;
    encoding.ids.push_back(found->id);
    encoding.tokens.push_back(found->content);
    encoding.spans.emplace_back(match_begin, match_end);
    segment_begin = pos = match_end;
  }
  absl::Status status = EncodeSegment(text, segment_begin, size, &encoding);
  if (!status.ok()) return status;
  return encoding;
}

std::string BpeTokenizer::Decode(const std::vector<int64_t>& ids, bool skip_special_tokens) const {
  std::string bytes;
  for (int64_t id : ids) {
    if (id < 0 || id >= vocab_size()) continue;
    if (skip_special_tokens && special_[id]) continue;
    bytes += token_bytes_[id];
  }
  return utf8::ReplaceInvalid(bytes);
}

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadBpeTokenizerFromJson(const std::string& json_text,
                                                                    const std::string& origin) {
  try {
    absl::StatusOr<json> parsed = ParseBoundedJson(json_text, origin);
    if (!parsed.ok()) return parsed.status();
    const json& root = *parsed;
    auto tokenizer = BpeTokenizer::FromJson(root, origin);
    if (!tokenizer.ok()) return tokenizer.status();
    return std::unique_ptr<Tokenizer>(std::move(*tokenizer));
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(origin, ": bad tokenizer JSON: ", e.what()));
  }
}

}  // namespace attnscope
