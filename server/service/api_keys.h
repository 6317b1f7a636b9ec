// API keys for a shared server: a file of named keys, checked in constant time against the
// `authorization: Bearer <key>` metadata, with a per-key limit of concurrent requests.
// Only a key's NAME ever reaches logs and error messages.
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace attnscope::service {

struct ApiKey {
  std::string name;
  std::string secret;
  int max_concurrent = 0;
};

// Releases its key's concurrency slot when destroyed.
class KeyLease {
 public:
  KeyLease() = default;
  explicit KeyLease(std::shared_ptr<std::atomic<int>> counter) : counter_(std::move(counter)) {}
  KeyLease(KeyLease&& other) noexcept = default;
  KeyLease& operator=(KeyLease&& other) noexcept {
    Release();
    counter_ = std::move(other.counter_);
    return *this;
  }
  KeyLease(const KeyLease&) = delete;
  KeyLease& operator=(const KeyLease&) = delete;
  ~KeyLease() { Release(); }

 private:
  void Release() {
    if (counter_) counter_->fetch_sub(1);
    counter_.reset();
  }
  std::shared_ptr<std::atomic<int>> counter_;
};

class ApiKeyTable {
 public:
  // No keys: authentication off, every caller is "anonymous".
  ApiKeyTable() = default;

  // File format: one key per line, `NAME SECRET [MAX_CONCURRENT]`, blank lines and lines
  // starting with '#' ignored. Secrets must be at least 16 characters; names unique.
  static absl::StatusOr<ApiKeyTable> Parse(const std::string& text, const std::string& source,
                                           int default_max_concurrent);
  static absl::StatusOr<ApiKeyTable> Load(const std::string& path, int default_max_concurrent);

  bool enabled() const { return !keys_.empty(); }

  // `authorization` is the metadata value ("Bearer <key>"), or nullptr when absent.
  // Returns the matching key, or UNAUTHENTICATED (never echoing the presented secret).
  absl::StatusOr<const ApiKey*> Authenticate(const std::string_view* authorization) const;

  // Takes one of the key's concurrent-request slots; RESOURCE_EXHAUSTED naming the key and
  // its limit when all are taken.
  absl::StatusOr<KeyLease> Acquire(const ApiKey& key) const;

 private:
  std::vector<ApiKey> keys_;
  std::map<std::string, std::shared_ptr<std::atomic<int>>> in_flight_;  // by name
};

// Equal-length-independent comparison whose time depends only on the lengths.
bool ConstantTimeEquals(std::string_view a, std::string_view b);

}  // namespace attnscope::service
