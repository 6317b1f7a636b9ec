// The decoded continuation of a generation, grown token by token: each Next() returns the text
// the new token adds, never a UTF-8 character cut in half. O(new tokens) per step: only the
// tokens since the last emitted piece, plus the window before them, are decoded (the prefix
// window keeps tokenizers whose decoding depends on the previous token, e.g. SentencePiece's
// leading-space rule, exact). The pieces concatenated equal Decode(all ids, skip_special).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "server/tokenizer/tokenizer.h"

namespace attnscope {

class IncrementalDecoder {
 public:
  // `tokenizer` may be null (every piece is then empty); it must outlive the decoder.
  explicit IncrementalDecoder(const Tokenizer* tokenizer, bool skip_special_tokens = true)
      : tokenizer_(tokenizer), skip_special_tokens_(skip_special_tokens) {}

  // Appends `id`; returns the newly complete text ("" while a character is still cut).
  std::string Next(int64_t id);

  // Ids passed to Decode so far, summed over calls (tests check the cost stays linear).
  int64_t decoded_ids() const { return decoded_ids_; }

 private:
  std::string DecodeRange(size_t begin, size_t end);

  const Tokenizer* tokenizer_;
  bool skip_special_tokens_;
  std::vector<int64_t> ids_;
  size_t prefix_offset_ = 0;  // start of the window decoded for context
  size_t read_offset_ = 0;    // tokens before this are emitted
  int64_t decoded_ids_ = 0;
};

}  // namespace attnscope
