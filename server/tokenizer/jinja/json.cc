#include "server/tokenizer/jinja/json.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "server/tokenizer/jinja/renderer.h"

namespace attnscope::jinja {

namespace {

uint32_t DecodeUtf8(const std::string& s, size_t* i) {
  const unsigned char c = static_cast<unsigned char>(s[*i]);
  int extra = c < 0x80 ? 0 : c < 0xE0 ? 1 : c < 0xF0 ? 2 : 3;
  uint32_t cp = extra == 0 ? c : extra == 1 ? (c & 0x1F) : extra == 2 ? (c & 0x0F) : (c & 0x07);
  for (int k = 0; k < extra && *i + 1 < s.size(); ++k) {
    cp = (cp << 6) | (static_cast<unsigned char>(s[++*i]) & 0x3F);
  }
  return cp;
}

void JsonString(const std::string& s, bool ensure_ascii, std::string* out) {
  out->push_back('"');
  for (size_t i = 0; i < s.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    switch (c) {
      case '"':
        *out += "\\\"";
        continue;
      case '\\':
        *out += "\\\\";
        continue;
      case '\n':
        *out += "\\n";
        continue;
      case '\r':
        *out += "\\r";
        continue;
      case '\t':
        *out += "\\t";
        continue;
      case '\b':
        *out += "\\b";
        continue;
      case '\f':
        *out += "\\f";
        continue;
      default:
        break;
    }
    char hex[16];
    if (c < 0x20) {
      std::snprintf(hex, sizeof(hex), "\\u%04x", c);
      *out += hex;
    } else if (c >= 0x80 && ensure_ascii) {
      uint32_t cp = DecodeUtf8(s, &i);
      if (cp >= 0x10000) {
        cp -= 0x10000;
        std::snprintf(hex, sizeof(hex), "\\u%04x\\u%04x", 0xD800 + (cp >> 10),
                      0xDC00 + (cp & 0x3FF));
      } else {
        std::snprintf(hex, sizeof(hex), "\\u%04x", cp);
      }
      *out += hex;
    } else {
      out->push_back(static_cast<char>(c));
    }
  }
  out->push_back('"');
}

absl::Status Dump(Renderer& r, const Value& v, const JsonOptions& o, int depth, std::string* out) {
  if (depth > kMaxJsonDepth * 4)
    return absl::ResourceExhaustedError("tojson: value nested too deeply");
  if (out->size() > kMaxStringBytes)
    return SizeError("tojson output", out->size(), kMaxStringBytes);
  const auto newline = [&](int level) {
    if (!o.has_indent) return;
    out->push_back('\n');
    for (int k = 0; k < level; ++k) *out += o.indent;
  };
  switch (v.kind()) {
    case Value::Kind::kNone:
      *out += "null";
      return absl::OkStatus();
    case Value::Kind::kBool:
      *out += v.boolean() ? "true" : "false";
      return absl::OkStatus();
    case Value::Kind::kInt:
      *out += std::to_string(v.integer());
      return absl::OkStatus();
    case Value::Kind::kFloat:
      if (std::isnan(v.real())) {
        *out += "NaN";
      } else if (std::isinf(v.real())) {
        *out += v.real() > 0 ? "Infinity" : "-Infinity";
      } else {
        *out += FloatRepr(v.real());
      }
      return absl::OkStatus();
    case Value::Kind::kString:
      JsonString(v.str(), o.ensure_ascii, out);
      return absl::OkStatus();
    case Value::Kind::kList: {
      if (v.is_generator()) return TypeError("Object of type generator is not JSON serializable");
      if (v.list().empty()) {
        *out += "[]";
        return absl::OkStatus();
      }
      out->push_back('[');
      for (size_t i = 0; i < v.list().size(); ++i) {
        if (i) *out += o.item_separator;
        newline(depth + 1);
        absl::Status status = Dump(r, v.list()[i], o, depth + 1, out);
        if (!status.ok()) return status;
      }
      newline(depth);
      out->push_back(']');
      return absl::OkStatus();
    }
    case Value::Kind::kDict: {
      if (v.dict().is_namespace)
        return TypeError("Object of type Namespace is not JSON serializable");
      if (v.dict().items.empty()) {
        *out += "{}";
        return absl::OkStatus();
      }
      std::vector<const std::pair<std::string, Value>*> items;
      for (const auto& item : v.dict().items) items.push_back(&item);
      if (o.sort_keys) {
        std::stable_sort(items.begin(), items.end(),
                         [](auto* a, auto* b) { return a->first < b->first; });
      }
      out->push_back('{');
      for (size_t i = 0; i < items.size(); ++i) {
        if (i) *out += o.item_separator;
        newline(depth + 1);
        JsonString(items[i]->first, o.ensure_ascii, out);
        *out += o.key_separator;
        absl::Status status = Dump(r, items[i]->second, o, depth + 1, out);
        if (!status.ok()) return status;
      }
      newline(depth);
      out->push_back('}');
      return absl::OkStatus();
    }
    case Value::Kind::kUndefined:
      return TypeError("Object of type Undefined is not JSON serializable");
    case Value::Kind::kCallable:
      return TypeError("Object of type function is not JSON serializable");
  }
  return absl::OkStatus();
}

absl::StatusOr<Value> FromJson(const nlohmann::ordered_json& j, int depth,
                               const std::string& what) {
  if (depth > kMaxJsonDepth) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": JSON nested deeper than ", kMaxJsonDepth, " levels"));
  }
  switch (j.type()) {
    case nlohmann::ordered_json::value_t::null:
      return Value::None();
    case nlohmann::ordered_json::value_t::boolean:
      return Value::Bool(j.get<bool>());
    case nlohmann::ordered_json::value_t::number_integer:
      return Value::Int(j.get<int64_t>());
    case nlohmann::ordered_json::value_t::number_unsigned: {
      const uint64_t u = j.get<uint64_t>();
      if (u > static_cast<uint64_t>(INT64_MAX)) {
        return absl::InvalidArgumentError(
            absl::StrCat(what, ": integer ", u, " is beyond 64 bits"));
      }
      return Value::Int(static_cast<int64_t>(u));
    }
    case nlohmann::ordered_json::value_t::number_float:
      return Value::Float(j.get<double>());
    case nlohmann::ordered_json::value_t::string:
      return Value::Str(j.get<std::string>());
    case nlohmann::ordered_json::value_t::array: {
      List items;
      items.reserve(j.size());
      for (const auto& item : j) {
        auto value = FromJson(item, depth + 1, what);
        if (!value.ok()) return value;
        items.push_back(std::move(*value));
      }
      return Value::MakeList(std::move(items));
    }
    case nlohmann::ordered_json::value_t::object: {
      Value dict = Value::MakeDict();
      for (auto it = j.begin(); it != j.end(); ++it) {
        auto value = FromJson(it.value(), depth + 1, what);
        if (!value.ok()) return value;
        dict.dict().Set(it.key(), std::move(*value));
      }
      return dict;
    }
    default:
      return absl::InvalidArgumentError(absl::StrCat(what, ": unsupported JSON value"));
  }
}

}  // namespace

absl::StatusOr<std::string> ToJson(Renderer& r, const Value& v, const JsonOptions& options) {
  std::string out;
  absl::Status status = Dump(r, v, options, 0, &out);
  if (!status.ok()) return status;
  status = r.CheckString(out.size());
  if (!status.ok()) return status;
  return out;
}

absl::StatusOr<Value> ValueFromJsonText(const std::string& text, const std::string& what) {
  // The depth is checked while parsing, before any subtree is built.
  int depth = 0;
  bool too_deep = false;
  nlohmann::ordered_json::parser_callback_t limit =
      [&](int d, nlohmann::ordered_json::parse_event_t event, nlohmann::ordered_json&) {
        if (event == nlohmann::ordered_json::parse_event_t::object_start ||
            event == nlohmann::ordered_json::parse_event_t::array_start) {
          if (d >= kMaxJsonDepth) too_deep = true;
        }
        depth = d;
        return !too_deep;
      };
  nlohmann::ordered_json j;
  try {
    j = nlohmann::ordered_json::parse(text, limit, /*allow_exceptions=*/true,
                                      /*ignore_comments=*/false);
  } catch (const nlohmann::ordered_json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": bad JSON: ", e.what()));
  }
  if (too_deep) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": JSON nested deeper than ", kMaxJsonDepth, " levels"));
  }
  return FromJson(j, 0, what);
}

}  // namespace attnscope::jinja
