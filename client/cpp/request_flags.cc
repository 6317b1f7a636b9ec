#include "client/cpp/request_flags.h"

#include <fstream>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "nlohmann/json.hpp"

namespace attnscope::cli {
namespace {

std::vector<std::string> CommaList(const std::string& text) {
  return absl::StrSplit(text, ',', absl::SkipEmpty());
}

// "all" / "" -> empty (all); otherwise integers, negatives counted from the end. Resolved
// against the model by the session (capture.layers / analysis.layers).
absl::StatusOr<std::vector<int>> IndexList(const std::string& flag, const std::string& text) {
  std::vector<int> indices;
  const std::string trimmed(absl::StripAsciiWhitespace(text));
  if (trimmed.empty() || trimmed == "all") return indices;
  for (absl::string_view part : absl::StrSplit(trimmed, ',')) {
    int value = 0;
    if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(part), &value)) {
      return absl::InvalidArgumentError(absl::StrCat("--", flag, ": '", std::string(part),
                                                     "' is not an integer (use all or 0,5,-1)"));
    }
    indices.push_back(value);
  }
  return indices;
}

absl::Status ParseGenerationFlags(Flags& flags, session::GenerationSpec* spec) {
  // 0 means prompt only on the command line; absent means the default length.
  if (flags.Has("max-new-tokens")) {
    const int max_new_tokens = flags.GetInt("max-new-tokens", 0);
    if (max_new_tokens == 0) {
      spec->prompt_only = true;
    } else {
      spec->max_new_tokens = max_new_tokens;
    }
  }
  const bool sampling = flags.Has("temperature") || flags.Has("top-p") || flags.Has("top-k");
  if (flags.Has("greedy") && sampling) {
    return absl::InvalidArgumentError(
        "--greedy conflicts with --temperature/--top-p/--top-k (those mean sampling)");
  }
  spec->sample = sampling;
  // Absent flags stay 0: "the default" (session/request.h).
  spec->temperature = static_cast<float>(flags.GetDouble("temperature", 0));
  spec->top_p = static_cast<float>(flags.GetDouble("top-p", 0));
  spec->top_k = flags.GetInt("top-k", 0);
  spec->seed = static_cast<uint64_t>(flags.GetInt("seed", 0));
  spec->repetition_penalty = static_cast<float>(flags.GetDouble("repetition-penalty", 0));
  spec->ignore_eos = flags.Has("ignore-eos");
  spec->save_logits = flags.Has("save-logits");
  spec->stop_strings = CommaList(flags.Get("stop"));
  if (!flags.error().empty()) return absl::InvalidArgumentError(flags.error());
  return session::CheckGenerationSpec(*spec);
}

}  // namespace

absl::StatusOr<PromptInput> ReadChatFile(const std::string& flag, const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(flag, ": cannot open ", path));
  std::stringstream text;
  text << in.rdbuf();
  absl::StatusOr<PromptInput> input = ParseChatJson(text.str(), absl::StrCat(flag, " ", path));
  if (!input.ok()) return input.status();
  if (input->messages.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(flag, " ", path, ": has no messages"));
  }
  return input;
}

absl::StatusOr<PromptInput> ParseInputFlags(Flags& flags) {
  const int inputs = flags.Has("ids") + flags.Has("text") + flags.Has("chat");
  if (inputs != 1) return absl::InvalidArgumentError("give exactly one of --ids, --text, --chat");
  PromptInput input;
  if (flags.Has("ids")) {
    input.kind = PromptInput::Kind::kIds;
    for (const std::string& part : CommaList(flags.Get("ids"))) {
      int64_t id = 0;
      if (!absl::SimpleAtoi(part, &id)) {
        return absl::InvalidArgumentError(absl::StrCat("--ids: '", part, "' is not an integer"));
      }
      input.ids.push_back(id);
    }
  } else if (flags.Has("text")) {
    input.kind = PromptInput::Kind::kText;
    input.text = flags.Get("text");
  } else {
    absl::StatusOr<PromptInput> chat = ReadChatFile("--chat", flags.Get("chat"));
    if (!chat.ok()) return chat.status();
    input = *std::move(chat);
  }
  if (flags.Has("template-date")) {
    input.template_date = flags.Get("template-date");
    absl::StatusOr<std::tm> date = ParseTemplateDate(input.template_date);
    if (!date.ok())
      return absl::InvalidArgumentError(absl::StrCat("--template-date: ", date.status().message()));
  }
  input.add_generation_prompt = !flags.Has("no-generation-prompt");
  input.parse_special_tokens = !flags.Has("no-special");
  return input;
}

absl::StatusOr<session::Request> ParseCaptureFlags(Flags& flags) {
  session::Request request;
  absl::StatusOr<PromptInput> input = ParseInputFlags(flags);
  if (!input.ok()) return input.status();
  request.input = *std::move(input);
  if (absl::Status status = ParseGenerationFlags(flags, &request.generation); !status.ok()) {
    return status;
  }
  session::CaptureRequest& capture = request.capture;
  absl::StatusOr<std::vector<int>> layers = IndexList("layers", flags.Get("layers", "all"));
  if (!layers.ok()) return layers.status();
  capture.layers = *std::move(layers);
  absl::StatusOr<std::vector<int>> heads = IndexList("heads", flags.Get("heads", "all"));
  if (!heads.ok()) return heads.status();
  capture.heads = *std::move(heads);
  absl::StatusOr<DType> dtype = ParseDType(flags.Get("dtype", "float32"), "--dtype");
  if (!dtype.ok()) return dtype.status();
  capture.dtype = *dtype;
  const std::string rows = flags.Get("rows", "all");
  if (rows == "all") {
    capture.rows = CaptureRows::kAll;
  } else if (rows == "prompt") {
    capture.rows = CaptureRows::kPromptOnly;
  } else if (rows == "generated") {
    capture.rows = CaptureRows::kGeneratedOnly;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("--rows: '", rows, "' is not all, prompt or generated"));
  }
  return request;
}

absl::StatusOr<session::AnalysisSpec> ParseAnalysisFlags(Flags& flags) {
  session::AnalysisSpec spec;
  if (flags.Has("probe")) {
    const std::vector<std::string> parts = absl::StrSplit(flags.Get("probe"), ':');
    session::InductionProbeSpec probe;
    if (parts.size() != 3 || parts[0] != "induction" ||
        !absl::SimpleAtoi(parts[1], &probe.length) || !absl::SimpleAtoi(parts[2], &probe.seed) ||
        probe.length < 2) {
      return absl::InvalidArgumentError(
          absl::StrCat("--probe: '", flags.Get("probe"),
                       "' is not induction:N:SEED with an integer N >= 2 and a seed"));
    }
    spec.induction_probe = probe;
  }
  absl::StatusOr<std::vector<int>> layers = IndexList("layers", flags.Get("layers", "all"));
  if (!layers.ok()) return layers.status();
  spec.layers = *std::move(layers);
  absl::StatusOr<std::vector<int>> heads = IndexList("heads", flags.Get("heads", "all"));
  if (!heads.ok()) return heads.status();
  spec.heads = *std::move(heads);
  spec.terms = CommaList(flags.Get("terms"));
  spec.queries = CommaList(flags.Get("query"));
  spec.query_positions = flags.GetInt("query-positions", 0);
  spec.top_k = flags.GetInt("top-k-keys", 0);
  spec.top_terms = flags.GetInt("top-terms", 0);
  spec.top_k_per_head = flags.Has("per-head");
  spec.include_term_submatrix = flags.Has("term-submatrix");
  spec.beginning_k = flags.GetInt("beginning-k", 0);
  spec.self_threshold = flags.GetDouble("self-threshold", 0);
  spec.focused_entropy_threshold = flags.GetDouble("focused-entropy", 0);
  if (!flags.error().empty()) return absl::InvalidArgumentError(flags.error());
  if (absl::Status status = session::CheckAnalysisSpec(spec); !status.ok()) return status;
  return spec;
}

absl::StatusOr<session::Request> ParseAnalyzeFlags(Flags& flags) {
  session::Request request;
  absl::StatusOr<session::AnalysisSpec> analysis = ParseAnalysisFlags(flags);
  if (!analysis.ok()) return analysis.status();
  request.analysis = *std::move(analysis);
  if (request.analysis.induction_probe) {
    if (flags.Has("ids") || flags.Has("text") || flags.Has("chat")) {
      return absl::InvalidArgumentError("--probe replaces the input: drop --ids/--text/--chat");
    }
  } else {
    absl::StatusOr<PromptInput> input = ParseInputFlags(flags);
    if (!input.ok()) return input.status();
    request.input = *std::move(input);
  }
  if (absl::Status status = ParseGenerationFlags(flags, &request.generation); !status.ok()) {
    return status;
  }
  // Analysis reads every row in float32; capture-only flags are accepted and ignored.
  flags.Get("dtype");
  flags.Get("rows");
  return request;
}

absl::StatusOr<EngineOptions> ParseEngineFlags(Flags& flags) {
  EngineOptions options;
  options.model_dir = flags.Get("model");
  if (options.model_dir.empty()) {
    return absl::InvalidArgumentError("--model DIR (or --server ADDR) is required");
  }
  options.device = flags.Get("device", "cpu");
  absl::StatusOr<DType> run_dtype = ParseDType(flags.Get("run-dtype", "float32"), "--run-dtype");
  if (!run_dtype.ok()) return run_dtype.status();
  options.dtype = *run_dtype;
  options.layer_devices = CommaList(flags.Get("layer-devices"));
  return options;
}

}  // namespace attnscope::cli
