#include "server/tokenizer/incremental_decoder.h"

namespace attnscope {
namespace {

constexpr char kReplacement[] = "\xEF\xBF\xBD";  // U+FFFD, what Decode makes of a cut character

bool EndsWithReplacement(const std::string& text) {
  return text.size() >= 3 && text.compare(text.size() - 3, 3, kReplacement) == 0;
}

}  // namespace

std::string IncrementalDecoder::DecodeRange(size_t begin, size_t end) {
  decoded_ids_ += static_cast<int64_t>(end - begin);
  return tokenizer_->Decode(std::vector<int64_t>(ids_.begin() + begin, ids_.begin() + end),
                            skip_special_tokens_);
}

std::string IncrementalDecoder::Next(int64_t id) {
  if (tokenizer_ == nullptr) return "";
  ids_.push_back(id);
  const std::string prefix = DecodeRange(prefix_offset_, read_offset_);
  const std::string text = DecodeRange(prefix_offset_, ids_.size());
  // A trailing U+FFFD is a character cut in half: wait for the token that completes it.
  if (text.size() <= prefix.size() || EndsWithReplacement(text) ||
      text.compare(0, prefix.size(), prefix) != 0) {
    return "";
  }
  prefix_offset_ = read_offset_;
  read_offset_ = ids_.size();
  return text.substr(prefix.size());
}

}  // namespace attnscope
