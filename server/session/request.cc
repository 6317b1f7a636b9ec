#include "server/session/request.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "server/status/field_error.h"

namespace attnscope::session {
namespace {

std::string FloatText(double value) {
  if (std::isnan(value)) return "NaN";
  return absl::StrCat(value);
}

}  // namespace

absl::Status CheckGenerationSpec(const GenerationSpec& p) {
  if (p.max_new_tokens < 0) {
    return FieldError("generation.max_new_tokens", absl::StrCat(p.max_new_tokens),
                      "must be >= 0 (0 means the default)");
  }
  // Sampling fields are checked even when greedy, so that a bad value never passes silently.
  if (!std::isfinite(p.temperature) || p.temperature < 0) {
    return FieldError("generation.temperature", FloatText(p.temperature),
                      "must be a finite number > 0 (0 means 1.0)");
  }
  if (p.top_k < 0) {
    return FieldError("generation.top_k", absl::StrCat(p.top_k), "must be >= 0 (0 means off)");
  }
  if (!(p.top_p >= 0 && p.top_p <= 1)) {  // NaN fails both comparisons
    return FieldError("generation.top_p", FloatText(p.top_p),
                      "must be in (0, 1] (0 means 1.0, off)");
  }
  if (!std::isfinite(p.repetition_penalty) || p.repetition_penalty < 0) {
    return FieldError("generation.repetition_penalty", FloatText(p.repetition_penalty),
                      "must be a finite number > 0 (0 means 1.0, off)");
  }
  for (size_t i = 0; i < p.stop_strings.size(); ++i) {
    if (p.stop_strings[i].empty()) {
      return FieldError(absl::StrCat("generation.stop_strings[", i, "]"), "\"\"",
                        "must not be empty");
    }
  }
  return absl::OkStatus();
}

absl::Status CheckAnalysisSpec(const AnalysisSpec& spec) {
  for (const auto& [field, value] :
       {std::pair<const char*, int>{"analysis.query_positions", spec.query_positions},
        {"analysis.top_k", spec.top_k},
        {"analysis.beginning_k", spec.beginning_k},
        {"analysis.top_terms", spec.top_terms}}) {
    if (value < 0) {
      return FieldError(field, absl::StrCat(value), "must be >= 0 (0 means the default)");
    }
  }
  if (!(spec.self_threshold >= 0)) {
    return FieldError("analysis.self_threshold", FloatText(spec.self_threshold),
                      "must be >= 0 (0 means the default)");
  }
  if (!(spec.focused_entropy_threshold >= 0)) {
    return FieldError("analysis.focused_entropy_threshold",
                      FloatText(spec.focused_entropy_threshold),
                      "must be >= 0 (0 means the default)");
  }
  if (spec.induction_probe && spec.induction_probe->length < 2) {
    return FieldError("analysis.induction_probe.length", absl::StrCat(spec.induction_probe->length),
                      "must be >= 2");
  }
  return absl::OkStatus();
}

}  // namespace attnscope::session
