// Byte-level BPE against the reference ids that transformers produced for Qwen2
// (tests/data/tokenizer/qwen2/cases.jsonl), plus invariants that need no reference.
#include <utf8proc.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "server/tokenizer/tokenizer.h"
#include "tests/common/npy.h"

namespace attnscope {
namespace {

std::string Nfc(const std::string& text) {
  utf8proc_uint8_t* out = nullptr;
  const auto n =
      utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(text.data()), text.size(), &out,
                   static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_COMPOSE));
  std::string result(reinterpret_cast<char*>(out), n < 0 ? 0 : n);
  std::free(out);
  return result;
}

std::string QwenDir() { return testing::DataDir() + "/tokenizer/qwen2"; }

const Tokenizer* Qwen() {
  static const Tokenizer* tokenizer = []() -> const Tokenizer* {
    auto loaded = LoadTokenizer(QwenDir());
    if (!loaded.ok()) {
      ADD_FAILURE() << loaded.status();
      return nullptr;
    }
    return loaded->release();
  }();
  return tokenizer;
}

#define REQUIRE_QWEN()            \
  const Tokenizer* qwen = Qwen(); \
  ASSERT_NE(qwen, nullptr)

struct Case {
  std::string text, category;
  std::vector<int64_t> ids;
};

std::vector<Case> ReadCases() {
  std::vector<Case> cases;
  std::ifstream in(QwenDir() + "/cases.jsonl");
  EXPECT_TRUE(in) << QwenDir() << "/cases.jsonl: cannot open";
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    const auto j = nlohmann::json::parse(line);
    cases.push_back({j.at("text"), j.value("category", ""), j.at("ids")});
  }
  return cases;
}

TEST(QwenBpe, EveryReferenceCaseMatchesIdsExactly) {
  REQUIRE_QWEN();
  const std::vector<Case> cases = ReadCases();
  ASSERT_GE(cases.size(), 100u);
  int mismatches = 0;
  for (const Case& c : cases) {
    auto encoding = qwen->Encode(c.text);
    ASSERT_TRUE(encoding.ok()) << c.text << ": " << encoding.status();
    if (encoding->ids != c.ids) {
      ++mismatches;
      ADD_FAILURE() << "category " << c.category << " text " << nlohmann::json(c.text).dump()
                    << "\n expected " << nlohmann::json(c.ids).dump() << "\n got      "
                    << nlohmann::json(encoding->ids).dump();
    }
  }
  EXPECT_EQ(mismatches, 0);
}

TEST(QwenBpe, DecodeOfEncodeIsNfcOfInput) {
  REQUIRE_QWEN();
  for (const Case& c : ReadCases()) {
    auto encoding = qwen->Encode(c.text);
    ASSERT_TRUE(encoding.ok());
    EXPECT_EQ(qwen->Decode(encoding->ids), Nfc(c.text)) << c.text;
  }
}

// Spans tile the original text, and every token that is whole characters covers exactly its
// own bytes in the original (checked where NFC leaves the text unchanged).
TEST(QwenBpe, SpansTileTheOriginalAndHoldEachTokensBytes) {
  REQUIRE_QWEN();
  for (const Case& c : ReadCases()) {
    auto encoding = qwen->Encode(c.text);
    ASSERT_TRUE(encoding.ok());
    ASSERT_EQ(encoding->spans.size(), encoding->ids.size());
    ASSERT_EQ(encoding->tokens.size(), encoding->ids.size());
    int64_t cursor = 0;
    for (size_t i = 0; i < encoding->ids.size(); ++i) {
      const auto [begin, end] = encoding->spans[i];
      EXPECT_LE(begin, cursor) << c.text << " token " << i;  // pieces of one char may share bytes
      EXPECT_GE(end, begin);
      cursor = std::max(cursor, end);
      const std::string decoded = qwen->Decode({encoding->ids[i]});
      if (Nfc(c.text) == c.text && decoded.find("\xEF\xBF\xBD") == std::string::npos &&
          !qwen->IsSpecial(encoding->ids[i])) {
        EXPECT_EQ(c.text.substr(begin, end - begin), decoded) << c.text << " token " << i;
        EXPECT_EQ(encoding->tokens[i], decoded);
      }
    }
    EXPECT_EQ(cursor, static_cast<int64_t>(c.text.size())) << c.text;
  }
}

TEST(QwenBpe, HandCheckedTokensSpansAndDisplayStrings) {
  REQUIRE_QWEN();
  const std::string text = "Net sales rose";
  auto encoding = qwen->Encode(text);
  ASSERT_TRUE(encoding.ok());
  // " sales" is one token: bytes [3, 9) of the text, displayed without the byte-level 'Ġ'.
  bool found = false;
  for (size_t i = 0; i < encoding->ids.size(); ++i) {
    if (encoding->tokens[i] == " sales") {
      found = true;
      EXPECT_EQ(encoding->spans[i], std::make_pair(int64_t{3}, int64_t{9}));
      EXPECT_EQ(qwen->TokenToId("Ġsales"), encoding->ids[i]);
    }
  }
  EXPECT_TRUE(found) << nlohmann::json(encoding->tokens).dump();
  // "e" + U+0301 normalizes to "é": the token's span covers both original characters.
  const std::string decomposed = "caf\x65\xCC\x81";
  auto accent = qwen->Encode(decomposed);
  ASSERT_TRUE(accent.ok());
  EXPECT_EQ(qwen->Decode(accent->ids), "caf\xC3\xA9");
  EXPECT_EQ(accent->spans.back().second, static_cast<int64_t>(decomposed.size()));
  // The reference's own ids for known strings.
  EXPECT_EQ(qwen->TokenToId("<|im_start|>"), 151644);
  EXPECT_TRUE(qwen->IsSpecial(151645));
  EXPECT_FALSE(qwen->IsSpecial(100));
  EXPECT_EQ(qwen->vocab_size(), 151646);
  EXPECT_EQ(qwen->TokenString(151644), "<|im_start|>");
  EXPECT_EQ(qwen->TokenString(-1), "");
  EXPECT_EQ(qwen->TokenString(151646), "");
}

TEST(QwenBpe, SpecialTokensCanBeTreatedAsPlainText) {
  REQUIRE_QWEN();
  const std::string text = "<|im_start|>user\nhi<|im_end|>";
  auto recognised = qwen->Encode(text);
  ASSERT_TRUE(recognised.ok());
  ASSERT_FALSE(recognised->ids.empty());
  EXPECT_EQ(recognised->ids.front(), 151644);
  EXPECT_EQ(recognised->ids.back(), 151645);
  EXPECT_EQ(recognised->spans.front(), std::make_pair(int64_t{0}, int64_t{12}));
  auto plain = qwen->Encode(text, /*parse_special_tokens=*/false);
  ASSERT_TRUE(plain.ok());
  for (int64_t id : plain->ids) EXPECT_FALSE(qwen->IsSpecial(id)) << id;
  EXPECT_GT(plain->ids.size(), recognised->ids.size());
  EXPECT_EQ(qwen->Decode(plain->ids), text);
  // skip_special_tokens drops only the special ones.
  EXPECT_EQ(qwen->Decode(recognised->ids, /*skip_special_tokens=*/true), "user\nhi");
}

TEST(QwenBpe, InvalidUtf8IsAnErrorNamingTheOffset) {
  REQUIRE_QWEN();
  for (const std::string bad : {std::string("abc\xFF"), std::string("\xC3"),
                                std::string("x\xED\xA0\x80y"), std::string("\xC0\xAF")}) {
    auto encoding = qwen->Encode(bad);
    ASSERT_FALSE(encoding.ok());
    EXPECT_EQ(encoding.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(encoding.status().message().find("offset"), std::string::npos);
  }
}

TEST(QwenBpe, DecodeReplacesACutCharacterWithReplacementChar) {
  REQUIRE_QWEN();
  // Rare characters are several byte-level tokens; decoding only the first cuts the character.
  int checked = 0;
  for (const std::string text : {"\xF0\xA0\x80\x80", "\xF0\x9D\x84\x9E", "\xEA\xAF\x8D"}) {
    auto encoding = qwen->Encode(text);
    ASSERT_TRUE(encoding.ok());
    EXPECT_EQ(qwen->Decode(encoding->ids), text);
    if (encoding->ids.size() < 2) continue;
    ++checked;
    const std::string first = qwen->Decode({encoding->ids[0]});
    EXPECT_EQ(first.substr(first.size() - 3), "\xEF\xBF\xBD");
  }
  EXPECT_GT(checked, 0);
}

TEST(QwenBpe, EmptyTextGivesNoIds) {
  REQUIRE_QWEN();
  auto encoding = qwen->Encode("");
  ASSERT_TRUE(encoding.ok());
  EXPECT_TRUE(encoding->ids.empty());
  EXPECT_TRUE(encoding->spans.empty());
}

// 1 MB of one character must tokenize (no quadratic blow-up, no regex stack exhaustion).
TEST(QwenBpe, OneMegabyteOfOneCharacterCompletes) {
  REQUIRE_QWEN();
  for (char c : {'a', ' ', '.', '7', '\n'}) {
    const std::string text(1 << 20, c);
    auto encoding = qwen->Encode(text);
    ASSERT_TRUE(encoding.ok()) << int(c) << ": " << encoding.status();
    EXPECT_EQ(qwen->Decode(encoding->ids), text);
    EXPECT_EQ(encoding->spans.back().second, static_cast<int64_t>(text.size()));
  }
}

TEST(LoadTokenizer, MissingFilesNameTheDirectory) {
  auto loaded = LoadTokenizer("/nonexistent/attnscope-dir");
  ASSERT_FALSE(loaded.ok());
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(loaded.status().message().find("/nonexistent/attnscope-dir"), std::string::npos);
}

TEST(LoadTokenizer, UnsupportedComponentIsNamed) {
  auto loaded = LoadBpeTokenizerFromJson(
      R"({"model": {"type": "BPE", "vocab": {}, "merges": []},
          "pre_tokenizer": {"type": "Metaspace"}})",
      "t.json");
  ASSERT_FALSE(loaded.ok());
  EXPECT_NE(loaded.status().message().find("Metaspace"), std::string::npos);
}

// Merges given as [left, right] arrays (newer tokenizer.json) apply by rank like strings.
TEST(LoadTokenizer, MergesAsArraysApplyByRank) {
  const std::string json = R"({
    "model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "c": 2, "ab": 3, "bc": 4, "abc": 5},
              "merges": [["b", "c"], ["a", "b"], ["a", "bc"]]},
    "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "use_regex": true},
    "decoder": {"type": "ByteLevel"}})";
  auto loaded = LoadBpeTokenizerFromJson(json, "t.json");
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  auto encoding = (*loaded)->Encode("abcab");
  ASSERT_TRUE(encoding.ok());
  // "abcab": b+c merges first (rank 0) -> a bc a b; then a+b (rank 1) -> a bc ab; then a+bc.
  EXPECT_EQ(encoding->ids, (std::vector<int64_t>{5, 3}));
}

// Found by tokenizer_json_fuzz: a float id used to reach an undefined float->int conversion.
TEST(LoadTokenizer, NonIntegerIdsAreRefused) {
  auto vocab_float = LoadBpeTokenizerFromJson(
      R"({"model": {"type": "BPE", "vocab": {"a": 2.11111e+101}, "merges": []},
          "pre_tokenizer": {"type": "ByteLevel"}, "decoder": {"type": "ByteLevel"}})",
      "t.json");
  ASSERT_FALSE(vocab_float.ok());
  EXPECT_NE(vocab_float.status().message().find("vocab id of 'a' is not an integer"),
            std::string::npos)
      << vocab_float.status();
  auto added_float = LoadBpeTokenizerFromJson(
      R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []},
          "added_tokens": [{"id": 1.5, "content": "<x>"}],
          "pre_tokenizer": {"type": "ByteLevel"}, "decoder": {"type": "ByteLevel"}})",
      "t.json");
  ASSERT_FALSE(added_float.ok());
  EXPECT_NE(added_float.status().message().find("without an integer id"), std::string::npos)
      << added_float.status();
}

TEST(TinyTokenizer, WrittenFilesRoundTrip) {
  const std::string dir =
      (std::filesystem::temp_directory_path() / ("attnscope-tiny-" + std::to_string(getpid())))
          .string();
  ASSERT_TRUE(WriteTinyTokenizerFiles(dir).ok());
  auto loaded = LoadTokenizer(dir);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  const Tokenizer& tiny = **loaded;
  EXPECT_EQ(tiny.vocab_size(), 259);
  auto encoding = tiny.Encode("hi <|im_end|>\xC3\xA9");
  ASSERT_TRUE(encoding.ok());
  EXPECT_EQ(encoding->ids, (std::vector<int64_t>{'h', 'i', ' ', 258, 0xC3, 0xA9}));
  EXPECT_EQ(tiny.Decode(encoding->ids), "hi <|im_end|>\xC3\xA9");
  EXPECT_EQ(tiny.TokenToId("<|endoftext|>"), 256);
  EXPECT_EQ(tiny.TokenToId("<|im_start|>"), 257);
  EXPECT_TRUE(tiny.IsSpecial(258));
  EXPECT_EQ(tiny.TokenToId("Ġ"), 32);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace attnscope

namespace attnscope {
namespace {

// The tiny tokenizer (byte b is id b) with a changed pre-tokenizer/model, for hand-computed
// checks of the pipeline pieces Qwen2 does not use.
nlohmann::json TinyTokenizerJson() {
  const std::string dir =
      (std::filesystem::temp_directory_path() / ("attnscope-tiny-json-" + std::to_string(getpid())))
          .string();
  EXPECT_TRUE(WriteTinyTokenizerFiles(dir).ok());
  std::ifstream in(dir + "/tokenizer.json");
  nlohmann::json json = nlohmann::json::parse(in);
  std::filesystem::remove_all(dir);
  return json;
}

std::vector<int64_t> Ids(const nlohmann::json& json, const std::string& text) {
  auto tokenizer = LoadBpeTokenizerFromJson(json.dump(), "test.json");
  EXPECT_TRUE(tokenizer.ok()) << tokenizer.status();
  if (!tokenizer.ok()) return {};
  auto encoding = (*tokenizer)->Encode(text);
  EXPECT_TRUE(encoding.ok());
  return encoding.ok() ? encoding->ids : std::vector<int64_t>{};
}

TEST(BpePipeline, SplitBehavioursDecideWhichBytesMayMerge) {
  nlohmann::json json = TinyTokenizerJson();
  json["model"]["vocab"]["a\xC4\xA0"] = 300;  // "aĠ" = "a "
  json["model"]["merges"] = {"a \xC4\xA0"};
  const nlohmann::json byte_level = {
      {"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}};
  const auto with_split = [&](const std::string& behavior) {
    nlohmann::json copy = json;
    nlohmann::json split = {
        {"type", "Split"}, {"pattern", {{"String", " "}}}, {"behavior", behavior}};
    copy["pre_tokenizer"] = {{"type", "Sequence"},
                             {"pretokenizers", nlohmann::json::array({split, byte_level})}};
    return Ids(copy, "a b");
  };
  EXPECT_EQ(with_split("Isolated"), (std::vector<int64_t>{'a', ' ', 'b'}));
  EXPECT_EQ(with_split("Removed"), (std::vector<int64_t>{'a', 'b'}));
  EXPECT_EQ(with_split("MergedWithPrevious"), (std::vector<int64_t>{300, 'b'}));
  EXPECT_EQ(with_split("MergedWithNext"), (std::vector<int64_t>{'a', ' ', 'b'}));
}

TEST(BpePipeline, ByteLevelPrefixSpaceHasAnEmptySpan) {
  nlohmann::json json = TinyTokenizerJson();
  json["pre_tokenizer"] = {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"use_regex", true}};
  auto tokenizer = LoadBpeTokenizerFromJson(json.dump(), "test.json");
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  auto encoding = (*tokenizer)->Encode("hi");
  ASSERT_TRUE(encoding.ok());
  EXPECT_EQ(encoding->ids, (std::vector<int64_t>{' ', 'h', 'i'}));
  EXPECT_EQ(encoding->spans, (std::vector<std::pair<int64_t, int64_t>>{{0, 0}, {0, 1}, {1, 2}}));
}

TEST(BpePipeline, IgnoreMergesTakesWholeWordsFromTheVocab) {
  nlohmann::json json = TinyTokenizerJson();
  json["model"]["vocab"]["abc"] = 300;  // reachable by no merge
  EXPECT_EQ(Ids(json, "abc"), (std::vector<int64_t>{'a', 'b', 'c'}));
  json["model"]["ignore_merges"] = true;
  EXPECT_EQ(Ids(json, "abc"), (std::vector<int64_t>{300}));
  EXPECT_EQ(Ids(json, "abcd"), (std::vector<int64_t>{'a', 'b', 'c', 'd'}));
}

TEST(BpePipeline, LongWordsUseTheHeapPathWithTheSameResult) {
  // 200 'a's with merges a+a (rank 0) and aa+aa (rank 1): leftmost pairs merge first, giving
  // 50 "aaaa" tokens, whichever BPE path (short-word loop or heap) runs.
  nlohmann::json json = TinyTokenizerJson();
  json["model"]["vocab"]["aa"] = 300;
  json["model"]["vocab"]["aaaa"] = 301;
  json["model"]["merges"] = {"a a", "aa aa"};
  EXPECT_EQ(Ids(json, std::string(200, 'a')), std::vector<int64_t>(50, 301));
  EXPECT_EQ(Ids(json, std::string(7, 'a')), (std::vector<int64_t>{301, 300, 'a'}));
  EXPECT_EQ(Ids(json, std::string(199, 'a')).back(), 'a');
}

}  // namespace
}  // namespace attnscope
