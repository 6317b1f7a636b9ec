// IncrementalDecoder: the streamed pieces add up to the full decode, never split a UTF-8
// character, skip special tokens, and cost O(new tokens) per step.
#include "server/tokenizer/incremental_decoder.h"

#include <filesystem>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "server/tokenizer/tokenizer.h"

namespace attnscope {
namespace {

// The tiny byte-level tokenizer: ids 0..255 are single bytes, so every multi-byte character
// arrives cut across tokens; 256..258 are special.
const Tokenizer& Tiny() {
  static const Tokenizer* tokenizer = [] {
    const std::string dir =
        (std::filesystem::temp_directory_path() / "attnscope_incremental_decoder_test").string();
    std::filesystem::create_directories(dir);
    absl::Status written = WriteTinyTokenizerFiles(dir);
    EXPECT_TRUE(written.ok()) << written;
    auto loaded = LoadTokenizer(dir);
    EXPECT_TRUE(loaded.ok()) << loaded.status();
    return loaded->release();
  }();
  return *tokenizer;
}

bool ValidUtf8(const std::string& text) {
  size_t i = 0;
  while (i < text.size()) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    const int length = c < 0x80         ? 1
                       : (c >> 5) == 6  ? 2
                       : (c >> 4) == 14 ? 3
                       : (c >> 3) == 30 ? 4
                                        : 0;
    if (length == 0 || i + length > text.size()) return false;
    for (int k = 1; k < length; ++k) {
      if ((static_cast<unsigned char>(text[i + k]) >> 6) != 2) return false;
    }
    i += length;
  }
  return true;
}

TEST(IncrementalDecoderTest, PiecesAddUpToTheFullDecodeWithoutCuttingCharacters) {
  const std::string text =
      "Net sales rose 4% \xE2\x80\x94 \xE5\x88\xA9\xE6\xB6\xA6 \xE2\x98\x83 \xF0\x9F\x98\x80!";
  absl::StatusOr<Encoding> encoding = Tiny().Encode(text);
  ASSERT_TRUE(encoding.ok()) << encoding.status();
  std::vector<int64_t> ids = encoding->ids;
  ids.insert(ids.begin() + 5, 258);  // <|im_end|> in the middle: skipped
  IncrementalDecoder decoder(&Tiny());
  std::string joined;
  int empty_pieces = 0;
  for (int64_t id : ids) {
    const std::string piece = decoder.Next(id);
    EXPECT_TRUE(ValidUtf8(piece)) << "piece cut a character";
    EXPECT_EQ(piece.find("\xEF\xBF\xBD"), std::string::npos);
    empty_pieces += piece.empty();
    joined += piece;
  }
  EXPECT_EQ(joined, Tiny().Decode(ids, /*skip_special_tokens=*/true));
  EXPECT_EQ(joined, text);
  // The 4-byte emoji, 3-byte CJK/dash/snowman characters arrive byte by byte: their first
  // bytes give nothing yet (3 + 2 x 2 + 2 + 2 = 11), and so does the special token.
  EXPECT_EQ(empty_pieces, 12);
}

TEST(IncrementalDecoderTest, CostIsLinearInTheNumberOfTokens) {
  std::vector<int64_t> ids;
  for (int i = 0; i < 3000; ++i) ids.push_back('a' + i % 26);
  IncrementalDecoder decoder(&Tiny());
  std::string joined;
  for (int64_t id : ids) joined += decoder.Next(id);
  EXPECT_EQ(joined, Tiny().Decode(ids, true));
  // Re-decoding the whole continuation each step would decode 3000 x 3001 / 2 = 4.5 M ids;
  // the window decodes at most a few per step.
  EXPECT_LE(decoder.decoded_ids(), 4 * static_cast<int64_t>(ids.size()));
}

TEST(IncrementalDecoderTest, WithoutATokenizerEveryPieceIsEmpty) {
  IncrementalDecoder decoder(nullptr);
  EXPECT_EQ(decoder.Next(5), "");
  EXPECT_EQ(decoder.decoded_ids(), 0);
}

}  // namespace
}  // namespace attnscope
