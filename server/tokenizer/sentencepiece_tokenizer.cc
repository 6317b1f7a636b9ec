#include "server/tokenizer/tokenizer.h"
namespace attnscope {
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadSentencePieceTokenizer(const std::string& path) {
  return absl::UnimplementedError("SentencePiece is not implemented yet");
}
}  // namespace attnscope
