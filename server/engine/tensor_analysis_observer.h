// TensorAnalysisObserver: the AnalysisObserver that AnalyzeHeads and `analyze --model` use.
// It takes captured probabilities where the engine computed them (device_attention()) and
// reduces them there with tensor ops (server/engine/tensor_reductions.h); only per-head
// accumulators reach the host, once, in Finish(), where the reference analyzer builds the
// report from them. Host blocks (OnAttention, e.g. from a test) still take the reference
// path. torch-free header.
#pragma once

#include <memory>
#include <string>

#include "server/engine/analysis_observer.h"

namespace attnscope {

class TensorAnalysisObserver : public AnalysisObserver {
 public:
  TensorAnalysisObserver(analysis::AnalysisInput input, analysis::AnalysisOptions options,
                         TokenStringFn token_string);
  ~TensorAnalysisObserver() override;

  DeviceAttentionConsumer* device_attention() override;
  absl::StatusOr<analysis::HeadReport> Finish(const std::string& generated_text) override;

 private:
  class Reductions;
  std::unique_ptr<Reductions> reductions_;
};

}  // namespace attnscope
