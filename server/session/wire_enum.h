// Engine enums beside their attnscope.v1 values. Each pairing is written once, in a table that
// both directions of the conversion read; a refusal lists the accepted values from the same
// table, spelled as the proto's descriptor spells them.
#pragma once

#include <cstddef>
#include <string>
#include <utility>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/generated_enum_reflection.h"
#include "server/status/field_error.h"

namespace attnscope::session {

// The wire value of `value`; the table's first entry for a value the table lacks.
template <typename Local, typename Wire, size_t N>
Wire ToWireEnum(const std::pair<Local, Wire> (&table)[N], Local value) {
  for (const auto& [local, wire] : table) {
    if (local == value) return wire;
  }
  return table[0].second;
}

// The local value of wire number `value`, or INVALID_ARGUMENT refusing `field`:
// "<field> = <value>: unknown <what>; must be A (0), B (1) or C (2)".
template <typename Local, typename Wire, size_t N>
absl::StatusOr<Local> FromWireEnum(const std::pair<Local, Wire> (&table)[N], int value,
                                   const std::string& field, const char* what) {
  for (const auto& [local, wire] : table) {
    if (static_cast<int>(wire) == value) return local;
  }
  const google::protobuf::EnumDescriptor* descriptor = google::protobuf::GetEnumDescriptor<Wire>();
  std::string accepted;
  for (size_t i = 0; i < N; ++i) {
    const int number = static_cast<int>(table[i].second);
    absl::StrAppend(&accepted, i == 0 ? "" : (i + 1 == N ? " or " : ", "),
                    descriptor->FindValueByNumber(number)->name(), " (", number, ")");
  }
  return FieldError(field, absl::StrCat(value),
                    absl::StrCat("unknown ", what, "; must be ", accepted));
}

}  // namespace attnscope::session
