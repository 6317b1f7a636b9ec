// The embedded default model: a complete Hugging Face style Qwen2 folder small enough to
// write in a moment, so the project runs on a fresh machine with no downloads. Its weights
// are random (deterministic per seed): attention patterns are real computations of a real
// architecture, but they mean nothing about language.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"

namespace attnscope {

struct TinyModelShape {
  int num_layers = 4;
  int num_heads = 8;     // query heads
  int num_kv_heads = 2;  // so the model shows grouped-query attention
  int hidden_size = 128;
  int intermediate_size = 256;
  int vocab_size = 259;  // 256 byte tokens + <|endoftext|>, <|im_start|>, <|im_end|>
  int max_position_embeddings = 4096;
  bool with_tokenizer = true;
};

// Qwen2-0.5B's shape (random weights, no tokenizer): the benchmarks' realistic model.
inline TinyModelShape Qwen2HalfBillionShape() {
  TinyModelShape shape;
  shape.num_layers = 24;
  shape.num_heads = 14;
  shape.num_kv_heads = 2;
  shape.hidden_size = 896;
  shape.intermediate_size = 4864;
  shape.vocab_size = 151936;
  shape.max_position_embeddings = 32768;
  shape.with_tokenizer = false;
  return shape;
}

// Writes config.json, generation_config.json, model.safetensors and (with_tokenizer) the
// byte-level tokenizer.json + tokenizer_config.json with a ChatML template into `dir`.
absl::Status WriteTinyModel(const std::string& dir, uint64_t seed,
                            const TinyModelShape& shape = TinyModelShape());

}  // namespace attnscope
