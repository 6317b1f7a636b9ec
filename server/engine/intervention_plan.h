// Engine-internal (includes libtorch): an InterventionSet turned into per-layer edits of the
// transformer's forward, and the model behind an Engine.
#pragma once

#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "server/engine/interventions.h"
#include "server/model/transformer.h"

namespace attnscope {

class ModelRunner {
 public:
  explicit ModelRunner(std::unique_ptr<Transformer> model) : model(std::move(model)) {}
  std::unique_ptr<Transformer> model;
};

// One LayerEdits per layer for a validated set (runs the patch source once, without
// interventions, when there are patches). `prompt_length` tokens are the prompt.
absl::StatusOr<std::vector<LayerEdits>> PlanInterventions(Transformer& model,
                                                          const InterventionSet& set,
                                                          int prompt_length);

}  // namespace attnscope
