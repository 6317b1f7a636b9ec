// attnscope analyze: the research notebook's analyses (per-layer statistics, head types,
// financial-term attention, token-to-token top-k) plus head detectors, either while a local
// model generates (rows streamed into per-head accumulators, no matrices kept) or offline
// from a capture file.
#include <cstdio>
#include <iostream>

#include "absl/strings/str_cat.h"
#include "analysis/analyzer.h"
#include "analysis/report.h"
#include "client/cpp/command.h"
#include "client/cpp/request_flags.h"
#include "server/capture/capture_file.h"
#include "server/session/prepare.h"
#include "server/session/session.h"

#ifdef ATTNSCOPE_WITH_GRPC
#include "client/cpp/remote/request_flags.h"
#endif

namespace attnscope::cli {
namespace {

constexpr char kCommand[] = "analyze";

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
  absl::StatusOr<session::AnalysisSpec> spec = ParseAnalysisFlags(flags);
  if (!spec.ok()) return Fail(kCommand, std::string(spec.status().message()));
  absl::StatusOr<analysis::AnalysisOptions> options = session::ResolveAnalysisOptions(*spec);
  if (!options.ok()) return Fail(kCommand, std::string(options.status().message()));
  if (spec->induction_probe) {
    return Fail(kCommand, "--probe needs a model (--model or --server), not --from");
  }
  if (!spec->layers.empty() || !spec->heads.empty()) {
    return Fail(kCommand, "--layers/--heads choose what is captured; with --from the file decides");
  }
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

int AnalyzeWithLocalModel(Flags& flags) {
  const bool json = flags.Has("json");
  absl::StatusOr<session::Request> request = ParseAnalyzeFlags(flags);
  if (!request.ok()) return Fail(kCommand, std::string(request.status().message()));
  absl::StatusOr<EngineOptions> options = ParseEngineFlags(flags);
  if (!options.ok()) return Fail(kCommand, std::string(options.status().message()));
  for (const auto& unknown : flags.Unread()) return Fail(kCommand, "unknown flag " + unknown);
  absl::StatusOr<std::unique_ptr<session::LoadedModel>> model = session::LoadModel(*options);
  if (!model.ok()) return Fail(kCommand, std::string(model.status().message()));
  absl::StatusOr<session::PreparedAnalysis> prepared =
      session::PrepareAnalysis(*request, **model, session::RequestLimits::Unbounded());
  if (!prepared.ok()) return Fail(kCommand, std::string(prepared.status().message()));
  absl::StatusOr<session::AnalysisOutcome> outcome =
      session::RunAnalysis(**model, *prepared, nullptr);
  if (!outcome.ok()) return Fail(kCommand, std::string(outcome.status().message()));
  return PrintReport(outcome->report, json);
}

int RunAnalyze(const std::vector<std::string>& args) {
  Flags flags(args, kRequestSwitches);
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
ATTNSCOPE_COMMAND_USAGE("analyze", RunAnalyze,
                        std::string("usage: attnscope analyze (--model DIR | --server HOST:PORT | "
                                    "--from CAPTURE_FILE) (INPUT | --probe induction:N:SEED) "
                                    "[flags]\n\n") +
                            kModeFlagsHelp + "  --from CAPTURE_FILE (offline, from a capture)\n" +
                            kRequestFlagsHelp + kAnalysisFlagsHelp);

}  // namespace attnscope::cli
