// The tensor side of GenerationObserver: an observer that reduces attention where it is
// computed returns one of these from device_attention(), and the engine hands it the captured
// probabilities as tensors on the model's device instead of copying rows to the host.
#pragma once

#include <ATen/ATen.h>

#include <vector>

#include "absl/status/status.h"

namespace attnscope {

class DeviceAttentionConsumer {
 public:
  virtual ~DeviceAttentionConsumer() = default;
  // probs: float32 [heads.size(), num_rows, key_length], query rows first_row ..., on the
  // layer's device, zeros above the causal diagonal. Per layer, rows arrive in order. The
  // tensor may be kept (the engine never writes it again); work may be queued on it
  // asynchronously on the current stream.
  virtual absl::Status OnDeviceAttention(int layer, const std::vector<int>& heads, int first_row,
                                         const at::Tensor& probs) = 0;
};

}  // namespace attnscope
