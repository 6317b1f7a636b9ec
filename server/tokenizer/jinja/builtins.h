// The builtin tables: filters, tests, globals and the Python methods of str, dict and list.
// Adding a filter is one entry in kFilters (filters.cc) or kSequenceFilters
// (sequence_filters.cc); a test one entry in kTests.
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "server/tokenizer/jinja/renderer.h"
#include "server/tokenizer/jinja/value.h"

namespace attnscope::jinja {

using FilterFunction = absl::StatusOr<Value> (*)(Renderer&, const Value&, CallArgs&);
using TestFunction = absl::StatusOr<bool> (*)(Renderer&, const Value&, CallArgs&);

// nullptr when there is no such filter / test.
FilterFunction FindFilter(const std::string& name);
TestFunction FindTest(const std::string& name);
// The filters over sequences and mappings (sequence_filters.cc); FindFilter looks here too.
FilterFunction FindSequenceFilter(const std::string& name);

// range, dict, namespace, raise_exception, strftime_now, joiner, cycler.
std::vector<std::pair<std::string, Value>> Globals();

// `self.name` as a bound Python method (str.strip, dict.items, ...); nullopt if there is none.
std::optional<Value> BoundMethod(const Value& self, const std::string& name);

// An optional boolean argument of a filter: its truthiness, or `fallback` when not given.
inline bool Flag(const Value* v, bool fallback = false) { return v ? v->Truthy() : fallback; }

// Python string helpers shared by filters and methods.
std::string PyStrip(const std::string& s, const Value* chars, bool left, bool right);
std::string PyUpper(const std::string& s);
std::string PyLower(const std::string& s);
std::string PyTitle(const std::string& s);  // str.title()
std::string PyCapitalize(const std::string& s);
absl::StatusOr<std::string> PyReplace(Renderer& r, const std::string& s, const std::string& old,
                                      const std::string& replacement, int64_t count);
absl::StatusOr<Value> PySplit(Renderer& r, const std::string& s, const Value* sep, int64_t maxsplit,
                              bool from_right);
// printf-style `format % args` (the format filter).
absl::StatusOr<std::string> PercentFormat(Renderer& r, const std::string& format,
                                          const std::vector<Value>& args);
// str.format(*args, **kwargs).
absl::StatusOr<std::string> BraceFormat(Renderer& r, const std::string& format, CallArgs& args);

}  // namespace attnscope::jinja
