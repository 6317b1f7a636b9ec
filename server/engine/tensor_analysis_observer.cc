#include "server/engine/tensor_analysis_observer.h"

#include <map>

#include "absl/strings/str_cat.h"
#include "server/engine/device_attention.h"
#include "server/engine/tensor_reductions.h"

namespace attnscope {

class TensorAnalysisObserver::Reductions : public DeviceAttentionConsumer {
 public:
  explicit Reductions(TensorAnalysisObserver* owner) : owner_(owner) {}

  absl::Status OnDeviceAttention(int layer, const std::vector<int>& heads, int first_row,
                                 const at::Tensor& probs) override {
    if (absl::Status started = owner_->EnsureStarted(); !started.ok()) return started;
    const analysis::StreamingAnalyzer& analyzer = *owner_->analyzer();
    const int end_row = first_row + static_cast<int>(probs.size(1));
    if (end_row > analyzer.num_tokens()) {
      return absl::FailedPreconditionError(absl::StrCat("analysis: layer ", layer, " row ",
                                                        end_row - 1, " arrived before its token (",
                                                        analyzer.num_tokens(), " tokens known)"));
    }
    auto it = layers_.find(layer);
    if (it == layers_.end()) {
      it = layers_
               .emplace(layer, std::make_unique<LayerReductions>(
                                   layer, heads, analyzer.prompt_length(), analyzer.options()))
               .first;
    } else if (it->second->heads() != heads) {
      return absl::InvalidArgumentError(
          absl::StrCat("analysis: layer ", layer, " changed its head list between blocks"));
    }
    return it->second->Add(probs, first_row, analyzer.ids(), analyzer.term_positions(),
                           analyzer.query_positions());
  }

  // Hands every layer's accumulators to the analyzer (once).
  absl::Status Merge() {
    if (merged_) return absl::OkStatus();
    merged_ = true;
    for (const auto& [layer, reductions] : layers_) {
      if (reductions->rows_seen() == 0) continue;
      absl::Status added = owner_->analyzer()->AddReducedRows(reductions->Finish());
      if (!added.ok()) return added;
    }
    layers_.clear();
    return absl::OkStatus();
  }

 private:
  TensorAnalysisObserver* owner_;
  std::map<int, std::unique_ptr<LayerReductions>> layers_;
  bool merged_ = false;
};

TensorAnalysisObserver::TensorAnalysisObserver(analysis::AnalysisInput input,
                                               analysis::AnalysisOptions options,
                                               TokenStringFn token_string)
    : AnalysisObserver(std::move(input), std::move(options), std::move(token_string)),
      reductions_(std::make_unique<Reductions>(this)) {}

TensorAnalysisObserver::~TensorAnalysisObserver() = default;

DeviceAttentionConsumer* TensorAnalysisObserver::device_attention() { return reductions_.get(); }

absl::StatusOr<analysis::HeadReport> TensorAnalysisObserver::Finish(
    const std::string& generated_text) {
  if (analyzer() != nullptr) {
    if (absl::Status merged = reductions_->Merge(); !merged.ok()) return merged;
  }
  return AnalysisObserver::Finish(generated_text);
}

}  // namespace attnscope
