#include "server/engine/analysis_observer.h"

#include "absl/strings/str_cat.h"

namespace attnscope {

AnalysisObserver::AnalysisObserver(analysis::AnalysisInput input, analysis::AnalysisOptions options,
                                   TokenStringFn token_string)
    : input_(std::move(input)),
      options_(std::move(options)),
      token_string_(std::move(token_string)) {}

AnalysisObserver::~AnalysisObserver() = default;

std::string AnalysisObserver::TokenString(int64_t id) const {
  return token_string_ ? token_string_(id) : std::string();
}

absl::Status AnalysisObserver::OnStart(const std::vector<int64_t>& prompt_ids) {
  analysis::AnalysisInput input = input_;
  if (input.token_ids != prompt_ids) {
    // Token strings and spans describe another sequence: keep only what still applies.
    input.token_ids = prompt_ids;
    input.tokens.clear();
    input.spans.clear();
  }
  if (input.tokens.size() != prompt_ids.size()) {
    input.tokens.clear();
    for (int64_t id : prompt_ids) input.tokens.push_back(TokenString(id));
  }
  input.prompt_length = static_cast<int>(prompt_ids.size());
  analyzer_ = std::make_unique<analysis::StreamingAnalyzer>(std::move(input), options_);
  return absl::OkStatus();
}

absl::Status AnalysisObserver::EnsureStarted() {
  // Engine::Forward may skip OnStart: the prompt is then the input's ids.
  return analyzer_ ? absl::OkStatus() : OnStart(input_.token_ids);
}

absl::Status AnalysisObserver::OnAttention(const AttentionBlock& block) {
  if (absl::Status started = EnsureStarted(); !started.ok()) return started;
  if (block.heads == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("analysis observer: layer ", block.layer, " block has no head list"));
  }
  analysis::AttentionRows rows;
  rows.layer = block.layer;
  rows.heads = block.heads->data();
  rows.num_heads = static_cast<int>(block.heads->size());
  rows.first_row = block.first_row;
  rows.num_rows = block.num_rows;
  rows.key_length = block.key_length;
  rows.data = block.data;
  return analyzer_->AddRows(rows);
}

absl::Status AnalysisObserver::OnToken(int64_t token_id, int position) {
  if (absl::Status started = EnsureStarted(); !started.ok()) return started;
  if (position != analyzer_->num_tokens()) {
    return absl::InvalidArgumentError(absl::StrCat("analysis observer: token at position ",
                                                   position, " but ", analyzer_->num_tokens(),
                                                   " tokens are known"));
  }
  analyzer_->AddToken(token_id, TokenString(token_id));
  return absl::OkStatus();
}

absl::StatusOr<analysis::HeadReport> AnalysisObserver::Finish(const std::string& generated_text) {
  if (!analyzer_) return absl::FailedPreconditionError("analysis observer: nothing was analysed");
  return analyzer_->Finish(generated_text);
}

}  // namespace attnscope
