// attnscope capture: generate while capturing the full causal attention matrix of the chosen
// layers and heads, and write it to a safetensors capture file (see capture_file.h).
#include <cstdio>
#include <iostream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/cpp/command.h"
#include "client/cpp/generation_flags.h"
#include "server/engine/capture_file.h"

#ifdef ATTNSCOPE_WITH_GRPC
#include "client/cpp/remote/request_flags.h"
#endif

namespace attnscope::cli {
namespace {

std::string ModelLabel(const std::string& model_dir, const ModelConfig& config) {
  std::string name = model_dir;
  while (name.size() > 1 && name.back() == '/') name.pop_back();
  const size_t slash = name.rfind('/');
  if (slash != std::string::npos) name = name.substr(slash + 1);
  return absl::StrCat(name, " ", config.config_hash);
}

int RunCapture(const std::vector<std::string>& args) {
  Flags flags(args, kGenerationSwitches);
  const std::string out = flags.Get("out");
  if (out.empty()) return Fail("capture", "--out FILE.safetensors is required");
  if (flags.Has("server")) {
#ifdef ATTNSCOPE_WITH_GRPC
    return remote::RunRemoteCapture(flags);
#else
    return Fail("capture",
                "--server: this build has no gRPC (configure with ATTNSCOPE_WITH_GRPC=ON)");
#endif
  }
  auto generation = ParseGenerationFlags(flags);
  if (!generation.ok()) return Fail("capture", std::string(generation.status().message()));
  const bool quiet = flags.Has("quiet");
  auto model = LoadLocalModel(flags);
  if (!model.ok()) return Fail("capture", std::string(model.status().message()));
  for (const auto& unknown : flags.Unread()) return Fail("capture", "unknown flag " + unknown);
  const ModelConfig& config = model->engine->config();
  auto spec = ResolveCaptureSpec(*generation, config);
  if (!spec.ok()) return Fail("capture", std::string(spec.status().message()));
  auto prompt = PreparePrompt(generation->input, model->tools);
  if (!prompt.ok()) return Fail("capture", std::string(prompt.status().message()));

  GenerationParams params = generation->params;
  if (model->tools.tokenizer) {
    const Tokenizer* tokenizer = model->tools.tokenizer.get();
    params.decode = [tokenizer](const std::vector<int64_t>& ids) {
      return tokenizer->Decode(ids, true);
    };
  }
  CaptureFileObserver observer(*spec);
  auto result = model->engine->Generate(prompt->ids, params, *spec, &observer);
  if (!result.ok()) return Fail("capture", std::string(result.status().message()));

  CaptureMetadata metadata;
  metadata.prompt_length = result->prompt_length;
  metadata.model = ModelLabel(model->engine->options().model_dir, config);
  metadata.stop_reason = result->stop_reason;
  if (model->tools.tokenizer) {
    metadata.tokens = TokenStrings(result->token_ids, model->tools);
    metadata.generated_text = model->tools.tokenizer->Decode(
        std::vector<int64_t>(result->token_ids.begin() + result->prompt_length,
                             result->token_ids.end()),
        true);
  }
  auto written =
      observer.assembler().Write(out, result->token_ids, metadata,
                                 params.save_logits ? &result->logits : nullptr, config.vocab_size);
  if (!written.ok()) return Fail("capture", std::string(written.message()));
  if (!quiet) {
    const int total = static_cast<int>(result->token_ids.size());
    std::cout << absl::StrFormat(
        "wrote %s: %d tokens (%d prompt + %d generated, stop: %s), %d layers x %d heads, %s\n"
        "prefill %.3f s, decode %.3f s\n",
        out, total, result->prompt_length, total - result->prompt_length, result->stop_reason,
        spec->layers.size(), spec->heads.size(), CaptureDTypeName(spec->dtype),
        result->prefill_seconds, result->decode_seconds);
    if (!metadata.generated_text.empty())
      std::cout << "generated: " << metadata.generated_text << "\n";
  }
  return 0;
}

}  // namespace

ATTNSCOPE_REGISTER_COMMAND("capture", "generate and capture attention into a safetensors file",
                           RunCapture);

}  // namespace attnscope::cli
