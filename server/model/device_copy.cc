#include "server/model/device_copy.h"

#if defined(ATTNSCOPE_WITH_CUDA) && __has_include(<c10/cuda/CUDAStream.h>)
#include <ATen/cuda/CUDAEvent.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#define ATTNSCOPE_CUDA_COPIES 1
#endif

#include <map>

namespace attnscope {

#ifdef ATTNSCOPE_CUDA_COPIES
namespace {
// "cuda" (no index) means the current device.
c10::DeviceIndex IndexOf(at::Device device) {
  return device.has_index() ? device.index() : c10::cuda::current_device();
}
}  // namespace
#endif

bool BuiltWithCuda() {
#ifdef ATTNSCOPE_CUDA_COPIES
  return true;
#else
  return false;
#endif
}

at::Tensor HostToDevice(const at::Tensor& host, at::Device device) {
  if (!device.is_cuda()) return host.to(device);
#ifdef ATTNSCOPE_CUDA_COPIES
  // Pinned staging lets the copy be asynchronous; the caching host allocator keeps the
  // staging block alive until the copy has run.
  return host.contiguous().pin_memory().to(device, /*non_blocking=*/true);
#else
  return host.to(device);
#endif
}

void SynchronizeDevice(at::Device device) {
#ifdef ATTNSCOPE_CUDA_COPIES
  if (device.is_cuda()) c10::cuda::getCurrentCUDAStream(IndexOf(device)).synchronize();
#else
  (void)device;
#endif
}

double DevicePeakBytes(at::Device device) {
#ifdef ATTNSCOPE_CUDA_COPIES
  if (device.is_cuda()) {
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(IndexOf(device));
    return static_cast<double>(stats.allocated_bytes[0].peak);  // [0]: the aggregate pool
  }
#endif
  (void)device;
  return 0;
}

void ResetDevicePeakBytes(at::Device device) {
#ifdef ATTNSCOPE_CUDA_COPIES
  if (device.is_cuda()) c10::cuda::CUDACachingAllocator::resetPeakStats(IndexOf(device));
#endif
  (void)device;
}

struct HostCopyQueue::Pending {
  at::Tensor device_rows;  // kept alive until its copy has completed
  at::Tensor host;
  Deliver deliver;
#ifdef ATTNSCOPE_CUDA_COPIES
  std::unique_ptr<at::cuda::CUDAEvent> done;
#endif
};

struct HostCopyQueue::Streams {
#ifdef ATTNSCOPE_CUDA_COPIES
  std::map<c10::DeviceIndex, c10::cuda::CUDAStream> side;  // one copy stream per device
#endif
};

HostCopyQueue::HostCopyQueue() : streams_(std::make_unique<Streams>()) {}
HostCopyQueue::~HostCopyQueue() { Clear(); }

size_t HostCopyQueue::pending() const { return pending_.size(); }

bool HostCopyQueue::Enqueue(const at::Tensor& device_rows, Deliver deliver) {
  if (!device_rows.is_cuda()) {
    // CPU: deliver now, after anything still pending (order is kept).
    if (!Drain()) return false;
    return deliver(device_rows.contiguous());
  }
#ifdef ATTNSCOPE_CUDA_COPIES
  const int64_t bytes = device_rows.numel() * static_cast<int64_t>(device_rows.element_size());
  while (!pending_.empty() && pending_bytes_ + bytes > kMaxPendingBytes) {
    std::unique_ptr<Pending> oldest = std::move(pending_.front());
    pending_.pop_front();
    pending_bytes_ -= oldest->host.numel() * static_cast<int64_t>(oldest->host.element_size());
    oldest->done->synchronize();
    if (!oldest->deliver(oldest->host)) {
      Clear();
      return false;
    }
  }
  const c10::DeviceIndex index = device_rows.device().index();
  auto found = streams_->side.find(index);
  if (found == streams_->side.end()) {
    found = streams_->side.emplace(index, c10::cuda::getStreamFromPool(false, index)).first;
  }
  c10::cuda::CUDAStream compute = c10::cuda::getCurrentCUDAStream(index);
  c10::cuda::CUDAStream side = found->second;
  auto entry = std::make_unique<Pending>();
  entry->device_rows = device_rows.contiguous();
  entry->deliver = std::move(deliver);
  entry->host = at::empty(entry->device_rows.sizes(),
                          entry->device_rows.options().device(at::kCPU).pinned_memory(true));
  // The side stream waits for the rows to be computed, then copies while the compute stream
  // goes on with the next layer.
  at::cuda::CUDAEvent ready;
  ready.record(compute);
  ready.block(side);
  {
    c10::cuda::CUDAStreamGuard guard(side);
    entry->host.copy_(entry->device_rows, /*non_blocking=*/true);
  }
  entry->done = std::make_unique<at::cuda::CUDAEvent>();
  entry->done->record(side);
  pending_bytes_ += bytes;
  pending_.push_back(std::move(entry));
  return true;
#else
  if (!Drain()) return false;
  return deliver(device_rows.to(at::kCPU).contiguous());
#endif
}

bool HostCopyQueue::Drain() {
  while (!pending_.empty()) {
    std::unique_ptr<Pending> oldest = std::move(pending_.front());
    pending_.pop_front();
#ifdef ATTNSCOPE_CUDA_COPIES
    if (oldest->done) oldest->done->synchronize();
#endif
    if (!oldest->deliver(oldest->host)) {
      Clear();
      return false;
    }
  }
  pending_bytes_ = 0;
  return true;
}

void HostCopyQueue::Clear() {
#ifdef ATTNSCOPE_CUDA_COPIES
  // The copies may still be running: wait before their buffers are released.
  for (auto& entry : pending_) {
    if (entry->done) entry->done->synchronize();
  }
#endif
  pending_.clear();
  pending_bytes_ = 0;
}

}  // namespace attnscope
