#include "server/service/api_keys.h"

#include <fstream>
#include <set>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace attnscope::service {

bool ConstantTimeEquals(std::string_view a, std::string_view b) {
  // Touch max(len) bytes of both whatever their contents, so timing reveals nothing about
  // where a guess first differs.
  const size_t n = a.size() > b.size() ? a.size() : b.size();
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < n; ++i) {
    const unsigned char x = i < a.size() ? static_cast<unsigned char>(a[i]) : 0;
    const unsigned char y = i < b.size() ? static_cast<unsigned char>(b[i]) : 0;
    diff |= static_cast<unsigned char>(x ^ y);
  }
  return diff == 0;
}

absl::StatusOr<ApiKeyTable> ApiKeyTable::Parse(const std::string& text, const std::string& source,
                                               int default_max_concurrent) {
  ApiKeyTable table;
  std::set<std::string> names;
  int line_number = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_number;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || line[0] == '#') continue;
    std::vector<std::string> fields =
        absl::StrSplit(line, absl::ByAnyChar(" \t"), absl::SkipEmpty());
    const std::string where = absl::StrCat(source, ":", line_number);
    if (fields.size() < 2 || fields.size() > 3) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, ": expected `NAME SECRET [MAX_CONCURRENT]`, got ", fields.size(), " fields"));
    }
    ApiKey key{fields[0], fields[1], default_max_concurrent};
    if (key.secret.size() < 16) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": the secret of key '", key.name,
                                                     "' has ", key.secret.size(),
                                                     " characters; at least 16 are required"));
    }
    if (fields.size() == 3 &&
        (!absl::SimpleAtoi(fields[2], &key.max_concurrent) || key.max_concurrent < 1)) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": MAX_CONCURRENT of key '", key.name,
                                                     "' = '", fields[2], "' must be >= 1"));
    }
    if (!names.insert(key.name).second) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": key name '", key.name, "' appears twice"));
    }
    table.in_flight_[key.name] = std::make_shared<std::atomic<int>>(0);
    table.keys_.push_back(std::move(key));
  }
  if (table.keys_.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": no keys (a keys file that is configured must hold at least one)"));
  }
  return table;
}

absl::StatusOr<ApiKeyTable> ApiKeyTable::Load(const std::string& path, int default_max_concurrent) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("auth.api_keys_file: cannot open ", path));
  std::stringstream text;
  text << in.rdbuf();
  return Parse(text.str(), path, default_max_concurrent);
}

absl::StatusOr<const ApiKey*> ApiKeyTable::Authenticate(
    const std::string_view* authorization) const {
  if (authorization == nullptr) {
    return absl::UnauthenticatedError(
        "missing API key: send metadata `authorization: Bearer <key>`");
  }
  constexpr std::string_view kPrefix = "Bearer ";
  if (authorization->size() <= kPrefix.size() ||
      authorization->substr(0, kPrefix.size()) != kPrefix) {
    return absl::UnauthenticatedError("malformed authorization metadata: expected `Bearer <key>`");
  }
  const std::string_view presented = authorization->substr(kPrefix.size());
  const ApiKey* match = nullptr;
  for (const ApiKey& key : keys_) {  // no early exit: every key is compared
    if (ConstantTimeEquals(presented, key.secret) && match == nullptr) match = &key;
  }
  if (match == nullptr) return absl::UnauthenticatedError("invalid API key");
  return match;
}

absl::StatusOr<KeyLease> ApiKeyTable::Acquire(const ApiKey& key) const {
  auto it = in_flight_.find(key.name);
  if (it == in_flight_.end()) return KeyLease();
  std::atomic<int>& counter = *it->second;
  int current = counter.load();
  while (true) {
    if (current >= key.max_concurrent) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "API key '", key.name, "' already has ", current, " requests in flight; its limit is ",
          key.max_concurrent, " (auth.max_concurrent_per_key or the keys file)"));
    }
    if (counter.compare_exchange_weak(current, current + 1)) break;
  }
  return KeyLease(it->second);
}

}  // namespace attnscope::service
