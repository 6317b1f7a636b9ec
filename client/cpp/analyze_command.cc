// attnscope analyze: the research notebook's analyses (per-layer statistics, head types,
// financial-term attention, token-to-token top-k) plus head detectors, either while a local
// model generates (rows streamed into per-head accumulators, no matrices kept) or offline
// from a capture file.
#include <cstdio>
#include <iostream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "analysis/analyzer.h"
#include "analysis/report.h"
#include "client/cpp/command.h"
#include "client/cpp/generation_flags.h"
#include "server/engine/analysis_observer.h"
#include "server/engine/capture_file.h"

#ifdef ATTNSCOPE_WITH_GRPC
#include "client/cpp/remote/request_flags.h"
#endif

namespace attnscope::cli {
namespace {

constexpr char kCommand[] = "analyze";

std::vector<std::string> CommaList(const std::string& text) {
  std::vector<std::string> items;
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipEmpty())) {
    items.emplace_back(part);
  }
  return items;
}

struct ProbeFlag {
  int length = 0;
  uint64_t seed = 0;
};

// "induction:N:SEED".
absl::StatusOr<ProbeFlag> ParseProbe(const std::string& text) {
  const std::vector<std::string> parts = absl::StrSplit(text, ':');
  ProbeFlag probe;
  if (parts.size() != 3 || parts[0] != "induction" || !absl::SimpleAtoi(parts[1], &probe.length) ||
      !absl::SimpleAtoi(parts[2], &probe.seed) || probe.length < 2) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--probe: '", text, "' is not induction:N:SEED with an integer N >= 2 and a seed"));
  }
  return probe;
}

// The analysis flags shared by every mode.
absl::StatusOr<analysis::AnalysisOptions> ParseAnalysisOptions(Flags& flags) {
  analysis::AnalysisOptions options;
  if (flags.Has("terms")) options.terms = CommaList(flags.Get("terms"));
  options.queries = CommaList(flags.Get("query"));
  options.max_query_positions = flags.GetInt("query-positions", 3);
  options.top_k_keys = flags.GetInt("top-k-keys", 10);
  options.top_terms = flags.GetInt("top-terms", 5);
  options.top_k_per_head = flags.Has("per-head");
  options.term_submatrix = flags.Has("term-submatrix");
  options.metrics.beginning_columns = flags.GetInt("beginning-k", 10);
  options.metrics.self_threshold = flags.GetDouble("self-threshold", 0.3);
  options.metrics.focused_entropy = flags.GetDouble("focused-entropy", 2.0);
  if (!flags.error().empty()) return absl::InvalidArgumentError(flags.error());
  if (options.max_query_positions < 1 || options.top_k_keys < 1 || options.top_terms < 0 ||
      options.metrics.beginning_columns < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("--query-positions (", options.max_query_positions, "), --top-k-keys (",
                     options.top_k_keys, ") and --beginning-k (", options.metrics.beginning_columns,
                     ") must be >= 1 and --top-terms (", options.top_terms, ") >= 0"));
  }
  return options;
}

int PrintReport(const analysis::HeadReport& report, bool json) {
  if (json) {
    // Token strings may carry invalid UTF-8 (a split character): replace, never throw.
    std::cout << analysis::ReportToJson(report).dump(1, ' ', false,
                                                     nlohmann::json::error_handler_t::replace)
              << "\n";
  } else {
    std::cout << analysis::FormatReportText(report);
  }
  return 0;
}

int AnalyzeCaptureFile(Flags& flags) {
  const std::string path = flags.Get("from");
  const bool json = flags.Has("json");
  auto options = ParseAnalysisOptions(flags);
  if (!options.ok()) return Fail(kCommand, std::string(options.status().message()));
  for (const auto& unknown : flags.Unread()) {
    return Fail(kCommand, "unknown flag " + unknown + " (with --from)");
  }
  auto capture = ReadCaptureFile(path);
  if (!capture.ok()) return Fail(kCommand, std::string(capture.status().message()));
  analysis::AnalysisInput input;
  input.token_ids = capture->token_ids;
  input.tokens = capture->tokens;
  input.prompt_length = capture->prompt_length;
  // No tokenizer here: the prompt's display strings, joined, stand in for the input text.
  if (static_cast<int>(input.tokens.size()) >= input.prompt_length) {
    analysis::JoinTokens(
        std::vector<std::string>(input.tokens.begin(), input.tokens.begin() + input.prompt_length),
        &input.text, &input.spans);
  }
  std::vector<analysis::LayerMatrices> layers;
  for (const auto& [layer, data] : capture->attention) {
    layers.push_back(
        {layer, capture->heads, static_cast<int>(capture->token_ids.size()), data.data()});
  }
  const auto generated = capture->metadata.find("generated_text");
  auto report = analysis::AnalyzeMatrices(
      input, layers, *options,
      generated == capture->metadata.end() ? std::string() : generated->second);
  if (!report.ok()) {
    return Fail(kCommand, absl::StrCat(path, ": ", report.status().message()));
  }
  return PrintReport(*report, json);
}

// The probe draws from [0, first special id at the top of the vocabulary): ordinary tokens.
int64_t OrdinaryVocabularyEnd(const ModelConfig& config, const ModelTextTools& tools) {
  int64_t end = config.vocab_size;
  if (tools.tokenizer) {
    end = std::min<int64_t>(end, tools.tokenizer->vocab_size());
    while (end > 1 && tools.tokenizer->IsSpecial(end - 1)) --end;
  }
  return end;
}

int AnalyzeWithLocalModel(Flags& flags) {
  const bool json = flags.Has("json");
  std::optional<ProbeFlag> probe;
  if (flags.Has("probe")) {
    auto parsed = ParseProbe(flags.Get("probe"));
    if (!parsed.ok()) return Fail(kCommand, std::string(parsed.status().message()));
    probe = *parsed;
  }
  GenerationFlags generation;
  if (probe) {
    if (flags.Has("ids") || flags.Has("text") || flags.Has("chat")) {
      return Fail(kCommand, "--probe replaces the input: drop --ids/--text/--chat");
    }
    generation.layers = flags.Get("layers", "all");
    generation.heads = flags.Get("heads", "all");
  } else {
    auto parsed = ParseGenerationFlags(flags);
    if (!parsed.ok()) return Fail(kCommand, std::string(parsed.status().message()));
    generation = std::move(*parsed);
  }
  // Analysis needs every row in float32, whatever a capture would store.
  generation.rows = "all";
  generation.dtype = "float32";
  auto options = ParseAnalysisOptions(flags);
  if (!options.ok()) return Fail(kCommand, std::string(options.status().message()));
  auto model = LoadLocalModel(flags);
  if (!model.ok()) return Fail(kCommand, std::string(model.status().message()));
  for (const auto& unknown : flags.Unread()) return Fail(kCommand, "unknown flag " + unknown);
  const ModelConfig& config = model->engine->config();
  auto spec = ResolveCaptureSpec(generation, config);
  if (!spec.ok()) return Fail(kCommand, std::string(spec.status().message()));
  const ModelTextTools& tools = model->tools;
  auto token_string = [&tools](int64_t id) { return TokenStrings({id}, tools)[0]; };

  analysis::AnalysisInput input;
  if (probe) {
    const int64_t end = OrdinaryVocabularyEnd(config, tools);
    input.token_ids = analysis::MakeInductionProbe(probe->length, probe->seed, 0, end);
    options->induction = analysis::InductionProbe{probe->length, 0};
  } else {
    auto prompt = PreparePrompt(generation.input, tools);
    if (!prompt.ok()) return Fail(kCommand, std::string(prompt.status().message()));
    input.token_ids = prompt->ids;
    input.tokens = prompt->tokens;
    input.text = prompt->text;
    for (const auto& [begin, end] : prompt->spans) {
      input.spans.push_back({static_cast<int>(begin), static_cast<int>(end)});
    }
  }
  input.prompt_length = static_cast<int>(input.token_ids.size());
  AnalysisObserver observer(input, *options, token_string);

  std::string generated_text;
  if (probe) {
    // One uncached forward over the probe: nothing is generated.
    auto logits = model->engine->Forward(input.token_ids, *spec, &observer);
    if (!logits.ok()) return Fail(kCommand, std::string(logits.status().message()));
  } else {
    GenerationParams params = generation.params;
    if (tools.tokenizer) {
      const Tokenizer* tokenizer = tools.tokenizer.get();
      params.decode = [tokenizer](const std::vector<int64_t>& ids) {
        return tokenizer->Decode(ids, true);
      };
    }
    auto result = model->engine->Generate(input.token_ids, params, *spec, &observer);
    if (!result.ok()) return Fail(kCommand, std::string(result.status().message()));
    if (tools.tokenizer) {
      generated_text = tools.tokenizer->Decode(
          std::vector<int64_t>(result->token_ids.begin() + result->prompt_length,
                               result->token_ids.end()),
          true);
    }
  }
  auto report = observer.Finish(generated_text);
  if (!report.ok()) return Fail(kCommand, std::string(report.status().message()));
  return PrintReport(*report, json);
}

int RunAnalyze(const std::vector<std::string>& args) {
  std::vector<std::string> switches = kGenerationSwitches;
  switches.insert(switches.end(), {"per-head", "term-submatrix"});
  Flags flags(args, switches);
  if (!flags.error().empty()) return Fail(kCommand, flags.error());
  const int modes = flags.Has("from") + flags.Has("model") + flags.Has("server");
  if (modes != 1) {
    return Fail(kCommand, "give exactly one of --model DIR, --server ADDR, --from CAPTURE_FILE");
  }
  if (flags.Has("from")) return AnalyzeCaptureFile(flags);
  if (flags.Has("server")) {
#ifdef ATTNSCOPE_WITH_GRPC
    return remote::RunRemoteAnalyze(flags);
#else
    return Fail(kCommand,
                "--server: this build has no gRPC (configure with ATTNSCOPE_WITH_GRPC=ON)");
#endif
  }
  return AnalyzeWithLocalModel(flags);
}

}  // namespace

ATTNSCOPE_REGISTER_COMMAND(
    "analyze",
    "per-head attention analysis (notebook metrics, terms, top-k, detectors); --from FILE offline",
    RunAnalyze);

}  // namespace attnscope::cli
