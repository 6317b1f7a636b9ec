#include "client/cpp/generation_flags.h"

#include <fstream>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "nlohmann/json.hpp"

namespace attnscope::cli {

namespace {

absl::StatusOr<std::vector<ChatMessage>> ReadMessages(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("--chat: cannot open ", path));
  std::stringstream text;
  text << in.rdbuf();
  try {
    auto json = nlohmann::json::parse(text.str());
    if (json.is_object() && json.contains("messages")) json = json["messages"];
    std::vector<ChatMessage> messages;
    for (const auto& item : json) {
      messages.push_back(
          {item.at("role").get<std::string>(), item.at("content").get<std::string>()});
    }
    if (messages.empty())
      return absl::InvalidArgumentError(absl::StrCat("--chat: ", path, " has no messages"));
    return messages;
  } catch (const nlohmann::json::exception& error) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--chat: ", path, " is not a JSON list of {\"role\", \"content\"}: ", error.what()));
  }
}

}  // namespace

absl::StatusOr<GenerationFlags> ParseGenerationFlags(Flags& flags) {
  GenerationFlags result;
  const int inputs = flags.Has("ids") + flags.Has("text") + flags.Has("chat");
  if (inputs != 1) return absl::InvalidArgumentError("give exactly one of --ids, --text, --chat");
  if (flags.Has("ids")) {
    result.input.kind = PromptInput::Kind::kIds;
    for (absl::string_view part : absl::StrSplit(flags.Get("ids"), ',', absl::SkipEmpty())) {
      int64_t id = 0;
      if (!absl::SimpleAtoi(part, &id)) {
        return absl::InvalidArgumentError(
            absl::StrCat("--ids: '", std::string(part), "' is not an integer"));
      }
      result.input.ids.push_back(id);
    }
  } else if (flags.Has("text")) {
    result.input.kind = PromptInput::Kind::kText;
    result.input.text = flags.Get("text");
  } else {
    result.input.kind = PromptInput::Kind::kChat;
    auto messages = ReadMessages(flags.Get("chat"));
    if (!messages.ok()) return messages.status();
    result.input.messages = std::move(*messages);
    result.input.add_generation_prompt = !flags.Has("no-generation-prompt");
  }
  result.input.parse_special_tokens = !flags.Has("no-special");
  GenerationParams& params = result.params;
  params.max_new_tokens = flags.GetInt("max-new-tokens", 32);
  const bool sampling = flags.Has("temperature") || flags.Has("top-p") || flags.Has("top-k");
  params.greedy = flags.Has("greedy") || !sampling;
  if (flags.Has("greedy") && sampling) {
    return absl::InvalidArgumentError(
        "--greedy cannot be combined with --temperature/--top-p/--top-k");
  }
  params.temperature = static_cast<float>(flags.GetDouble("temperature", 1.0));
  params.top_p = static_cast<float>(flags.GetDouble("top-p", 1.0));
  params.top_k = flags.GetInt("top-k", 0);
  params.seed = static_cast<uint64_t>(flags.GetInt("seed", 0));
  params.repetition_penalty = static_cast<float>(flags.GetDouble("repetition-penalty", 1.0));
  params.save_logits = flags.Has("save-logits");
  params.ignore_eos = flags.Has("ignore-eos");
  for (absl::string_view stop : absl::StrSplit(flags.Get("stop"), ',', absl::SkipEmpty())) {
    params.stop_strings.emplace_back(stop);
  }
  if (!flags.error().empty()) return absl::InvalidArgumentError(flags.error());
  if (params.max_new_tokens < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--max-new-tokens: ", params.max_new_tokens, " is negative"));
  }
  result.layers = flags.Get("layers", "all");
  result.heads = flags.Get("heads", "all");
  result.dtype = flags.Get("dtype", "float32");
  result.rows = flags.Get("rows", "all");
  return result;
}

absl::StatusOr<CaptureSpec> ResolveCaptureSpec(const GenerationFlags& flags,
                                               const ModelConfig& config) {
  CaptureSpec spec;
  auto layers = ParseIndexList(flags.layers, config.num_hidden_layers, "layers");
  if (!layers.ok()) return layers.status();
  auto heads = ParseIndexList(flags.heads, config.num_attention_heads, "heads");
  if (!heads.ok()) return heads.status();
  auto dtype = ParseCaptureDType(flags.dtype);
  if (!dtype.ok()) return dtype.status();
  spec.layers = *layers;
  spec.heads = *heads;
  spec.dtype = *dtype;
  if (flags.rows == "all") {
    spec.rows = CaptureRows::kAll;
  } else if (flags.rows == "prompt") {
    spec.rows = CaptureRows::kPromptOnly;
  } else if (flags.rows == "generated") {
    spec.rows = CaptureRows::kGeneratedOnly;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("--rows: '", flags.rows, "' is not all, prompt or generated"));
  }
  return spec;
}

absl::StatusOr<LocalModel> LoadLocalModel(Flags& flags) {
  EngineOptions options;
  options.model_dir = flags.Get("model");
  if (options.model_dir.empty())
    return absl::InvalidArgumentError("--model DIR (or --server ADDR) is required");
  options.device = flags.Get("device", "cpu");
  options.dtype = flags.Get("run-dtype", "float32");
  for (absl::string_view device :
       absl::StrSplit(flags.Get("layer-devices"), ',', absl::SkipEmpty())) {
    options.layer_devices.emplace_back(device);
  }
  LocalModel model;
  auto engine = Engine::Load(options);
  if (!engine.ok()) return engine.status();
  model.engine = std::move(*engine);
  auto tools = LoadModelTextTools(options.model_dir);
  if (!tools.ok()) return tools.status();
  model.tools = std::move(*tools);
  return model;
}

}  // namespace attnscope::cli
