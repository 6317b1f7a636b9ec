// libFuzzer target: attnscope.v1 requests built from fuzz bytes, through the same conversion
// and validation the service runs before any model work (server/session/request_proto.h,
// server/session/prepare.h), against the
// tiny default model's config and tokenizer. Validation must answer with a status, never crash,
// hang or allocate without bound, whatever the numbers, strings and ids.
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <string>

#include "attnscope/v1/attnscope.pb.h"
#include "server/engine/prompt.h"
#include "server/model/model_config.h"
#include "server/session/loaded_model.h"
#include "server/session/prepare.h"
#include "server/session/request_proto.h"
#include "server/tokenizer/tokenizer.h"

namespace {

struct Fixture {
  attnscope::session::LoadedModel model;  // no engine: validation needs none
  attnscope::session::RequestLimits limits;
};

const Fixture& GetFixture() {
  static Fixture* fixture = [] {
    auto* f = new Fixture();
    // The tiny default model's shape: 4 layers, 8 query heads, vocabulary of 259.
    auto config = attnscope::ParseModelConfig(
        R"({"architectures":["Qwen2ForCausalLM"],"hidden_size":128,"intermediate_size":256,
            "num_hidden_layers":4,"num_attention_heads":8,"num_key_value_heads":2,
            "vocab_size":259,"max_position_embeddings":4096,"eos_token_id":258})",
        "", "fuzz config");
    if (!config.ok()) std::abort();
    f->model.config = *config;
    char dir[] = "/tmp/attnscope-fuzz-XXXXXX";
    if (mkdtemp(dir) == nullptr || !attnscope::WriteTinyTokenizerFiles(dir).ok()) std::abort();
    if (!attnscope::session::LoadTokenizerFiles(dir, &f->model).ok()) std::abort();
    f->model.model_dir = dir;
    // Small limits keep each input's work bounded (the shipped defaults allow 4096 tokens).
    f->limits.max_prompt_tokens = 512;
    f->limits.max_total_tokens = 768;
    f->limits.max_new_tokens = 256;
    return f;
  }();
  return *fixture;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const Fixture& fixture = GetFixture();
  attnscope::v1::GenerateRequest request;
  if (!request.ParseFromArray(data, static_cast<int>(size))) return 0;
  auto converted = attnscope::session::FromProto(request);
  if (!converted.ok()) {
    if (converted.status().message().empty()) __builtin_trap();  // every refusal says why
    return 0;
  }
  auto prepared = attnscope::session::PrepareGeneration(*converted, fixture.model, fixture.limits);
  if (prepared.ok()) {
    // What validation accepted must respect the limits it enforces.
    const int total = static_cast<int>(prepared->prompt.ids.size()) + prepared->max_new_tokens;
    if (total > fixture.limits.max_total_tokens) __builtin_trap();
    for (int64_t id : prepared->prompt.ids) {
      if (id < 0 || id >= fixture.model.config.vocab_size) __builtin_trap();
    }
    for (int layer : prepared->capture.layers) {
      if (layer < 0 || layer >= fixture.model.config.num_hidden_layers) __builtin_trap();
    }
  } else if (prepared.status().message().empty()) {
    __builtin_trap();  // every refusal says why
  }
  return 0;
}
