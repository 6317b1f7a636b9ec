#include "server/service/prep_pool.h"

namespace attnscope::service {

std::unique_ptr<EngineWorker> MakePreparationPool(int queue_length, int concurrent_generations) {
  return std::make_unique<EngineWorker>(queue_length, concurrent_generations + 1,
                                        "prompt preparation",
                                        "preparation threads (concurrent_generations + 1)");
}

}  // namespace attnscope::service
