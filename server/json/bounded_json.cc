#include "server/json/bounded_json.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace attnscope {

absl::Status CheckJsonDepth(std::string_view text, const std::string& source, int max_depth) {
  int depth = 0;
  bool in_string = false;
  bool escaped = false;
  bool collecting_key = false;  // a string directly inside the top-level object
  std::string key, last_key;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
        if (collecting_key) last_key = key;
        collecting_key = false;
        continue;
      }
      if (collecting_key && key.size() < 128) key.push_back(c);
      continue;
    }
    if (c == '"') {
      in_string = true;
      collecting_key = depth == 1;
      key.clear();
    } else if (c == '[' || c == '{') {
      if (++depth > max_depth) {
        return absl::InvalidArgumentError(
            absl::StrCat(source, ": ",
                         last_key.empty() ? "the document" : absl::StrCat("field '", last_key, "'"),
                         " is nested deeper than ", max_depth, " levels (at byte ", i, ")"));
      }
    } else if (c == ']' || c == '}') {
      if (depth > 0) --depth;
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<nlohmann::json> ParseBoundedJson(std::string_view text, const std::string& source,
                                                int max_depth) {
  if (absl::Status depth = CheckJsonDepth(text, source, max_depth); !depth.ok()) return depth;
  nlohmann::json value = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (value.is_discarded()) {
    // Parse again for the message (nlohmann reports the position only through an exception).
    try {
      nlohmann::json unused = nlohmann::json::parse(text);
      static_cast<void>(unused);
    } catch (const nlohmann::json::exception& error) {
      return absl::InvalidArgumentError(absl::StrCat(source, ": not valid JSON: ", error.what()));
    }
    return absl::InvalidArgumentError(absl::StrCat(source, ": not valid JSON"));
  }
  return value;
}

std::string DescribeJson(const nlohmann::json& value) {
  switch (value.type()) {
    case nlohmann::json::value_t::array:
      return absl::StrCat("an array of ", value.size(), " items");
    case nlohmann::json::value_t::object:
      return absl::StrCat("an object of ", value.size(), " keys");
    case nlohmann::json::value_t::string: {
      const std::string& text = value.get_ref<const std::string&>();
      if (text.size() <= 64) {
        return value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
      }
      return absl::StrCat(nlohmann::json(text.substr(0, 64))
                              .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace),
                          "... (", text.size(), " bytes)");
    }
    default:
      return value.dump();
  }
}

}  // namespace attnscope
