// Refusals of a request field. The status message names the field, the value and the limit
// for people; the field's path also travels as a status payload so that the service can
// attach a google.rpc.BadRequest naming it (server/service/status_util.h). Proto-free and
// torch-free: the engine's, the session's and the service's validation all build their
// refusals here.
#pragma once

#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace attnscope {

// INVALID_ARGUMENT "<field> = <value>: <limit>", refusing `field` (its path in the request as
// the .proto spells it: "generation.max_new_tokens", "ids.ids[1]").
absl::Status FieldError(absl::string_view field, absl::string_view value, absl::string_view limit);

// `status` (any code but OK) refusing the field at `path`; replaces a path set before.
absl::Status WithRefusedField(absl::Status status, absl::string_view path);

// The refused field's path, when the status carries one.
std::optional<std::string> RefusedField(const absl::Status& status);

}  // namespace attnscope
