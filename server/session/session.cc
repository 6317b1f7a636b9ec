#include "server/session/session.h"

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "server/engine/tensor_analysis_observer.h"

namespace attnscope::session {
namespace {

// The analysis observer (reductions as tensor ops where the probabilities are, the reference
// analyzer building the report) that counts generated tokens and stops when told to.
class StoppableAnalysisObserver : public TensorAnalysisObserver {
 public:
  StoppableAnalysisObserver(analysis::AnalysisInput input, analysis::AnalysisOptions options,
                            TokenStringFn token_string,
                            std::function<absl::Status()> check_continue)
      : TensorAnalysisObserver(std::move(input), std::move(options), std::move(token_string)),
        check_continue_(std::move(check_continue)) {}
  absl::Status OnToken(int64_t token_id, int position) override {
    ++generated_;
    return AnalysisObserver::OnToken(token_id, position);
  }
  absl::Status CheckContinue() override {
    return check_continue_ ? check_continue_() : absl::OkStatus();
  }
  int generated() const { return generated_; }

 private:
  std::function<absl::Status()> check_continue_;
  int generated_ = 0;
};

std::string DecodeContinuation(const LoadedModel& model, const GenerationResult& result) {
  if (model.tokenizer == nullptr) return "";
  return model.tokenizer->Decode(
      std::vector<int64_t>(result.token_ids.begin() + result.prompt_length, result.token_ids.end()),
      /*skip_special_tokens=*/true);
}

}  // namespace

absl::StatusOr<std::unique_ptr<LoadedModel>> LoadModel(const EngineOptions& options) {
  auto model = std::make_unique<LoadedModel>();
  absl::StatusOr<std::unique_ptr<Engine>> engine = Engine::Load(options);
  if (!engine.ok()) return engine.status();
  model->config = (*engine)->config();
  model->model_dir = options.model_dir;
  model->engine = *std::move(engine);
  std::string name = options.model_dir;
  while (name.size() > 1 && name.back() == '/') name.pop_back();
  model->name = std::filesystem::path(name).filename().string();
  const absl::Status tokenizer_files = LoadTokenizerFiles(options.model_dir, model.get());
  if (!tokenizer_files.ok()) {
    return absl::Status(
        tokenizer_files.code(),
        absl::StrCat("tokenizer files of ", options.model_dir, ": ", tokenizer_files.message()));
  }
  // Ids index the embedding: a tokenizer with ids past the config's vocabulary would start
  // fine and then fail every text request as if the client had sent bad ids.
  const Tokenizer* tokenizer = model->tokenizer.get();
  const int64_t config_vocab = model->config.vocab_size;
  if (tokenizer != nullptr && tokenizer->vocab_size() > config_vocab) {
    const bool json = std::filesystem::exists(options.model_dir + "/tokenizer.json");
    return absl::InvalidArgumentError(absl::StrCat(
        options.model_dir, json ? "/tokenizer.json" : "/tokenizer.model", ": largest token id ",
        tokenizer->vocab_size() - 1, " is not below vocab_size = ", config_vocab, " of ",
        options.model_dir, "/config.json"));
  }
  return model;
}

absl::StatusOr<CaptureOutcome> RunCapture(const LoadedModel& model,
                                          const PreparedGeneration& prepared,
                                          GenerationObserver* sink) {
  absl::StatusOr<GenerationResult> result = model.engine->Generate(
      prepared.prompt.ids, prepared.params, prepared.capture, sink, &prepared.interventions);
  if (!result.ok()) return result.status();
  CaptureOutcome outcome;
  outcome.result = *std::move(result);
  outcome.generated_text = DecodeContinuation(model, outcome.result);
  CaptureMetadata& metadata = outcome.metadata;
  metadata.prompt_length = outcome.result.prompt_length;
  metadata.model = model.label();
  metadata.stop_reason = outcome.result.stop_reason;
  metadata.template_date = prepared.prompt.template_date;
  if (model.tokenizer != nullptr) {
    metadata.tokens = TokenStrings(outcome.result.token_ids, model.tokenizer.get());
    metadata.generated_text = outcome.generated_text;
  }
  return outcome;
}

absl::StatusOr<AnalysisOutcome> RunAnalysis(const LoadedModel& model,
                                            const PreparedAnalysis& prepared,
                                            std::function<absl::Status()> check_continue) {
  AnalysisObserver::TokenStringFn token_string;
  if (const Tokenizer* tokenizer = model.tokenizer.get()) {
    token_string = [tokenizer](int64_t id) { return tokenizer->TokenString(id); };
  }
  StoppableAnalysisObserver observer(prepared.input, prepared.options, token_string,
                                     std::move(check_continue));
  AnalysisOutcome outcome;
  if (prepared.probe) {
    // One uncached forward over the probe: nothing is generated.
    absl::StatusOr<std::vector<float>> logits = model.engine->Forward(
        prepared.prompt.ids, prepared.capture, &observer, &prepared.interventions);
    if (!logits.ok()) return logits.status();
    outcome.result.token_ids = prepared.prompt.ids;
    outcome.result.prompt_length = static_cast<int>(prepared.prompt.ids.size());
    outcome.result.stop_reason = "probe";
  } else {
    absl::StatusOr<GenerationResult> result = model.engine->Generate(
        prepared.prompt.ids, prepared.params, prepared.capture, &observer, &prepared.interventions);
    outcome.generated_tokens = observer.generated();
    if (!result.ok()) return result.status();
    outcome.result = *std::move(result);
  }
  outcome.generated_tokens = observer.generated();
  outcome.generated_text = DecodeContinuation(model, outcome.result);
  absl::StatusOr<analysis::HeadReport> report = observer.Finish(outcome.generated_text);
  if (!report.ok()) return report.status();
  outcome.report = *std::move(report);
  return outcome;
}

absl::StatusOr<SweepResult> RunScore(const LoadedModel& model, const PreparedScore& prepared,
                                     const SweepProgress& progress,
                                     const InterventionLimits& limits) {
  if (prepared.sweep_mode) {
    return model.engine->Sweep(prepared.prompt.ids, prepared.candidates, prepared.sweep, progress,
                               limits);
  }
  absl::StatusOr<ScoreResult> score = model.engine->Score(prepared.prompt.ids, prepared.candidates,
                                                          &prepared.interventions, limits);
  if (!score.ok()) return score.status();
  SweepResult result;
  result.clean = *std::move(score);
  return result;
}

}  // namespace attnscope::session
