// Moving tensors between the host and a CUDA device without stalling the host, so a decode
// step synchronises once (for the sampled token) instead of at every small copy. On the CPU
// every function is the plain synchronous operation: the CPU path stays the reference.
#pragma once

#include <ATen/ATen.h>

#include <deque>
#include <functional>
#include <memory>

namespace attnscope {

// True when this build links libtorch's CUDA runtime (ATTNSCOPE_WITH_CUDA).
bool BuiltWithCuda();

// A small host tensor on `device`: for CUDA, staged through pinned memory and copied
// without blocking the host (ordered on the current stream); on the CPU, `host` itself.
at::Tensor HostToDevice(const at::Tensor& host, at::Device device);

// Waits until the work queued on `device` (its current stream) has run; nothing on the CPU.
void SynchronizeDevice(at::Device device);

// Peak bytes allocated on a CUDA device by libtorch's caching allocator since the last reset
// (0 on the CPU), and the reset.
double DevicePeakBytes(at::Device device);
void ResetDevicePeakBytes(at::Device device);

// Device-to-host copies on a side stream into pinned buffers, so a layer's captured rows
// travel while the next layer computes. Enqueue() returns at once on CUDA; Drain() waits for
// the copies and runs each one's `deliver` with the host tensor, in enqueue order. On the
// CPU, Enqueue() delivers at once (no copy when the tensor is already contiguous on the host).
class HostCopyQueue {
 public:
  using Deliver = std::function<bool(const at::Tensor& host)>;  // false: stop delivering
  HostCopyQueue();
  ~HostCopyQueue();

  // Copies `device_rows` (any device) to the host. Pending bytes above `max_pending_bytes`
  // drain the oldest copies first, bounding pinned memory. False when a delivery failed.
  bool Enqueue(const at::Tensor& device_rows, Deliver deliver);
  // Waits for every pending copy and delivers it; false when a delivery failed (the rest are
  // dropped).
  bool Drain();
  // Drops pending copies undelivered (an error path).
  void Clear();
  size_t pending() const;

  static constexpr int64_t kMaxPendingBytes = int64_t{512} << 20;

 private:
  struct Pending;
  std::deque<std::unique_ptr<Pending>> pending_;
  int64_t pending_bytes_ = 0;
  struct Streams;
  std::unique_ptr<Streams> streams_;  // CUDA only
};

}  // namespace attnscope
