#include "server/status/field_error.h"

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"

namespace attnscope {
namespace {

// A payload key no other library uses; never sent on the wire as it is.
constexpr absl::string_view kRefusedFieldUrl = "attnscope/refused-field";

}  // namespace

absl::Status FieldError(absl::string_view field, absl::string_view value, absl::string_view limit) {
  return WithRefusedField(
      absl::InvalidArgumentError(absl::StrCat(field, " = ", value, ": ", limit)), field);
}

absl::Status WithRefusedField(absl::Status status, absl::string_view path) {
  if (!status.ok()) status.SetPayload(kRefusedFieldUrl, absl::Cord(path));
  return status;
}

std::optional<std::string> RefusedField(const absl::Status& status) {
  const auto payload = status.GetPayload(kRefusedFieldUrl);  // absl::optional<absl::Cord>
  if (!payload) return std::nullopt;
  return std::string(*payload);
}

}  // namespace attnscope
