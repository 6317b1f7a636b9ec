// Python str semantics for the methods and filters: strip, split (with maxsplit), replace
// (bounded), case mapping, and the two string formatting forms (`%` and str.format).
#include <cstdio>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "server/tokenizer/jinja/builtins.h"
#include "utf8proc.h"

namespace attnscope::jinja {

namespace {

// str.isspace() for ASCII and the C1/Unicode spaces Python also strips on split().
bool IsPySpace(unsigned char c) {
  return c == ' ' || (c >= '\t' && c <= '\r') || (c >= 0x1c && c <= 0x1f);
}

}  // namespace

std::string PyStrip(const std::string& s, const Value* chars, bool left, bool right) {
  const std::vector<std::string> set =
      chars ? CodePoints(ToText(*chars)) : std::vector<std::string>();
  std::vector<std::string> cps = CodePoints(s);
  const auto strip = [&](const std::string& c) {
    if (!chars) return c.size() == 1 && IsPySpace(static_cast<unsigned char>(c[0]));
    for (const auto& x : set) {
      if (x == c) return true;
    }
    return false;
  };
  size_t b = 0, e = cps.size();
  if (left) {
    while (b < e && strip(cps[b])) ++b;
  }
  if (right) {
    while (e > b && strip(cps[e - 1])) --e;
  }
  std::string out;
  for (size_t k = b; k < e; ++k) out += cps[k];
  return out;
}

namespace {

// Decodes one code point at s[*i] (advancing *i past it); invalid bytes map to themselves.
int32_t NextCodePoint(const std::string& s, size_t* i) {
  utf8proc_int32_t cp = 0;
  const utf8proc_ssize_t n =
      utf8proc_iterate(reinterpret_cast<const utf8proc_uint8_t*>(s.data()) + *i,
                       static_cast<utf8proc_ssize_t>(s.size() - *i), &cp);
  if (n <= 0) {
    cp = static_cast<unsigned char>(s[*i]);
    *i += 1;
    return -cp - 1;  // a raw byte, kept as is
  }
  *i += static_cast<size_t>(n);
  return cp;
}

void Append(int32_t cp, std::string* out) {
  if (cp < 0) {
    out->push_back(static_cast<char>(-cp - 1));
    return;
  }
  utf8proc_uint8_t buffer[4];
  const utf8proc_ssize_t n = utf8proc_encode_char(cp, buffer);
  out->append(reinterpret_cast<const char*>(buffer), static_cast<size_t>(n));
}

bool IsCased(int32_t cp) {
  return cp >= 0 &&
         (utf8proc_toupper(cp) != cp || utf8proc_tolower(cp) != cp || utf8proc_totitle(cp) != cp);
}

template <typename Map>
std::string MapCodePoints(const std::string& s, Map map) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    const int32_t cp = NextCodePoint(s, &i);
    Append(cp < 0 ? cp : map(cp), &out);
  }
  return out;
}

}  // namespace

std::string PyUpper(const std::string& s) {
  return MapCodePoints(s, [](int32_t cp) { return utf8proc_toupper(cp); });
}

std::string PyLower(const std::string& s) {
  return MapCodePoints(s, [](int32_t cp) { return utf8proc_tolower(cp); });
}

std::string PyTitle(const std::string& s) {
  // str.title(): a cased character after an uncased one starts a word.
  std::string out;
  bool previous_cased = false;
  for (size_t i = 0; i < s.size();) {
    const int32_t cp = NextCodePoint(s, &i);
    const bool cased = IsCased(cp);
    Append(cp < 0  ? cp
           : cased ? (previous_cased ? utf8proc_tolower(cp) : utf8proc_totitle(cp))
                   : cp,
           &out);
    previous_cased = cased;
  }
  return out;
}

std::string PyCapitalize(const std::string& s) {
  std::string out;
  bool first = true;
  for (size_t i = 0; i < s.size();) {
    const int32_t cp = NextCodePoint(s, &i);
    Append(cp < 0 ? cp : first ? utf8proc_totitle(cp) : utf8proc_tolower(cp), &out);
    first = false;
  }
  return out;
}

absl::StatusOr<std::string> PyReplace(Renderer& r, const std::string& s, const std::string& old,
                                      const std::string& replacement, int64_t count) {
  std::string out;
  if (old.empty()) {
    // Python inserts the replacement between every character (and at both ends).
    const std::vector<std::string> cps = CodePoints(s);
    const size_t slots =
        count < 0 ? cps.size() + 1 : std::min<size_t>(cps.size() + 1, static_cast<size_t>(count));
    if (replacement.size() != 0 && slots > kMaxStringBytes / replacement.size()) {
      return SizeError("a replace() result", kMaxStringBytes + 1, kMaxStringBytes);
    }
    absl::Status status = r.CheckString(s.size() + slots * replacement.size());
    if (!status.ok()) return status;
    size_t used = 0;
    for (size_t k = 0; k <= cps.size(); ++k) {
      if (used < slots) {
        out += replacement;
        ++used;
      }
      if (k < cps.size()) out += cps[k];
    }
    return out;
  }
  // Counted first, so the result's size is known (and refused) before it is built.
  size_t matches = 0;
  for (size_t at = s.find(old);
       at != std::string::npos && (count < 0 || matches < static_cast<size_t>(count));
       at = s.find(old, at + old.size())) {
    ++matches;
  }
  const size_t removed = matches * old.size();
  if (replacement.size() != 0 && matches > (kMaxStringBytes + removed) / replacement.size()) {
    return SizeError("a replace() result", kMaxStringBytes + 1, kMaxStringBytes);
  }
  absl::Status status = r.CheckString(s.size() - removed + matches * replacement.size());
  if (!status.ok()) return status;
  size_t pos = 0;
  for (size_t done = 0; done < matches; ++done) {
    const size_t at = s.find(old, pos);
    out.append(s, pos, at - pos);
    out += replacement;
    pos = at + old.size();
  }
  out.append(s, pos, std::string::npos);
  return out;
}

absl::StatusOr<Value> PySplit(Renderer& r, const std::string& s, const Value* sep, int64_t maxsplit,
                              bool from_right) {
  List parts;
  if (sep == nullptr || sep->is_none()) {
    // Runs of whitespace; leading/trailing whitespace never makes empty parts.
    if (!from_right) {
      size_t i = 0;
      while (true) {
        while (i < s.size() && IsPySpace(static_cast<unsigned char>(s[i]))) ++i;
        if (i >= s.size()) break;
        if (maxsplit >= 0 && static_cast<int64_t>(parts.size()) == maxsplit) {
          parts.push_back(Value::Str(s.substr(i)));
          break;
        }
        size_t j = i;
        while (j < s.size() && !IsPySpace(static_cast<unsigned char>(s[j]))) ++j;
        parts.push_back(Value::Str(s.substr(i, j - i)));
        i = j;
      }
    } else {
      size_t end = s.size();
      while (true) {
        while (end > 0 && IsPySpace(static_cast<unsigned char>(s[end - 1]))) --end;
        if (end == 0) break;
        if (maxsplit >= 0 && static_cast<int64_t>(parts.size()) == maxsplit) {
          parts.insert(parts.begin(), Value::Str(s.substr(0, end)));
          break;
        }
        size_t begin = end;
        while (begin > 0 && !IsPySpace(static_cast<unsigned char>(s[begin - 1]))) --begin;
        parts.insert(parts.begin(), Value::Str(s.substr(begin, end - begin)));
        end = begin;
      }
    }
  } else {
    if (!sep->is_string())
      return TypeError(absl::StrCat("must be str or None, not ", sep->TypeName()));
    const std::string& d = sep->str();
    if (d.empty()) return absl::InvalidArgumentError("chat template value error: empty separator");
    if (!from_right) {
      size_t pos = 0;
      while (maxsplit < 0 || static_cast<int64_t>(parts.size()) < maxsplit) {
        const size_t at = s.find(d, pos);
        if (at == std::string::npos) break;
        parts.push_back(Value::Str(s.substr(pos, at - pos)));
        pos = at + d.size();
      }
      parts.push_back(Value::Str(s.substr(pos)));
    } else {
      size_t end = s.size();
      int64_t splits = 0;
      while (maxsplit < 0 || splits < maxsplit) {
        if (end < d.size()) break;
        const size_t at = s.rfind(d, end - d.size());
        if (at == std::string::npos) break;
        parts.insert(parts.begin(), Value::Str(s.substr(at + d.size(), end - at - d.size())));
        end = at;
        ++splits;
      }
      parts.insert(parts.begin(), Value::Str(s.substr(0, end)));
    }
  }
  absl::Status status = r.CheckList(parts.size());
  if (!status.ok()) return status;
  return Value::MakeList(std::move(parts));
}

absl::StatusOr<std::string> PercentFormat(Renderer& r, const std::string& format,
                                          const std::vector<Value>& args) {
  std::string out;
  size_t next = 0;
  const Value* mapping = args.size() == 1 && args[0].is_dict() ? &args[0] : nullptr;
  for (size_t i = 0; i < format.size(); ++i) {
    if (format[i] != '%') {
      out.push_back(format[i]);
      continue;
    }
    if (++i >= format.size()) return TypeError("incomplete format");
    const Value* arg = nullptr;
    if (format[i] == '(') {
      const size_t close = format.find(')', i);
      if (close == std::string::npos || !mapping) return TypeError("format requires a mapping");
      arg = mapping->dict().Find(format.substr(i + 1, close - i - 1));
      if (!arg) return absl::InvalidArgumentError("chat template key error in format");
      i = close + 1;
    }
    std::string spec = "%";
    while (i < format.size() && std::strchr("-+ #0", format[i])) spec.push_back(format[i++]);
    while (i < format.size() &&
           (std::isdigit(static_cast<unsigned char>(format[i])) || format[i] == '.')) {
      spec.push_back(format[i++]);
    }
    if (i >= format.size()) return TypeError("incomplete format");
    const char conversion = format[i];
    if (conversion == '%') {
      out.push_back('%');
      continue;
    }
    if (!arg) {
      if (mapping && args.size() == 1 && conversion != 's') {
        return TypeError("format requires a mapping");
      }
      if (next >= args.size()) return TypeError("not enough arguments for format string");
      arg = &args[next++];
    }
    char buffer[512];
    if (std::strchr("sra", conversion)) {
      std::string text = conversion == 's' ? ToText(*arg) : Repr(*arg);
      std::snprintf(buffer, sizeof(buffer), (spec + "s").c_str(), "");
      const size_t width =
          spec.size() > 1 ? std::strtoul(spec.c_str() + 1 + (spec[1] == '-'), nullptr, 10) : 0;
      const size_t dot = spec.find('.');
      if (dot != std::string::npos) {
        text = text.substr(0, std::strtoul(spec.c_str() + dot + 1, nullptr, 10));
      }
      const size_t n = CodePointCount(text);
      if (n < width) {
        if (spec.find('-') != std::string::npos) {
          text += std::string(width - n, ' ');
        } else {
          text = std::string(width - n, ' ') + text;
        }
      }
      out += text;
    } else if (std::strchr("dixXo", conversion)) {
      if (!arg->IsNumber())
        return TypeError(absl::StrCat("%", std::string(1, conversion),
                                      " format: a real number is required, not ", arg->TypeName()));
      const long long value =
          arg->IsInteger() ? arg->integer() : static_cast<long long>(arg->real());
      std::snprintf(buffer, sizeof(buffer),
                    (spec + "ll" + (conversion == 'i' ? 'd' : conversion)).c_str(), value);
      out += buffer;
    } else if (std::strchr("eEfFgG", conversion)) {
      if (!arg->IsNumber()) return TypeError("must be real number");
      std::snprintf(buffer, sizeof(buffer), (spec + conversion).c_str(), arg->real());
      out += buffer;
    } else if (conversion == 'c') {
      out += ToText(*arg);
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("chat template value error: unsupported format character '",
                       std::string(1, conversion), "'"));
    }
    absl::Status status = r.CheckString(out.size());
    if (!status.ok()) return status;
  }
  if (next < args.size() && !mapping)
    return TypeError("not all arguments converted during string formatting");
  return out;
}

absl::StatusOr<std::string> BraceFormat(Renderer& r, const std::string& format, CallArgs& args) {
  std::string out;
  size_t auto_index = 0;
  for (size_t i = 0; i < format.size(); ++i) {
    const char c = format[i];
    if (c == '}') {
      if (i + 1 < format.size() && format[i + 1] == '}') ++i;
      out.push_back('}');
      continue;
    }
    if (c != '{') {
      out.push_back(c);
      continue;
    }
    if (i + 1 < format.size() && format[i + 1] == '{') {
      out.push_back('{');
      ++i;
      continue;
    }
    const size_t close = format.find('}', i);
    if (close == std::string::npos)
      return absl::InvalidArgumentError(
          "chat template value error: Single '{' encountered in format string");
    std::string field = format.substr(i + 1, close - i - 1);
    std::string spec;
    const size_t colon = field.find(':');
    if (colon != std::string::npos) {
      spec = field.substr(colon + 1);
      field = field.substr(0, colon);
    }
    const Value* value = nullptr;
    if (field.empty()) {
      value = args.Get(auto_index++, nullptr);
    } else if (std::isdigit(static_cast<unsigned char>(field[0]))) {
      value = args.Get(std::strtoul(field.c_str(), nullptr, 10), nullptr);
    } else {
      value = args.Get(SIZE_MAX, field.c_str());
    }
    if (!value)
      return absl::InvalidArgumentError(
          absl::StrCat("chat template error: format field '", field, "' has no argument"));
    std::string text = ToText(*value);
    if (!spec.empty()) {
      // Width and alignment only ("<10", ">5", "^8", "10").
      char align = value->IsNumber() ? '>' : '<';
      size_t k = 0;
      if (!spec.empty() && std::strchr("<>^", spec[0])) align = spec[k++];
      const size_t width = std::strtoul(spec.c_str() + k, nullptr, 10);
      const size_t n = CodePointCount(text);
      if (width > n) {
        const size_t pad = width - n;
        if (align == '<')
          text += std::string(pad, ' ');
        else if (align == '>')
          text = std::string(pad, ' ') + text;
        else
          text = std::string(pad / 2, ' ') + text + std::string(pad - pad / 2, ' ');
      }
    }
    out += text;
    absl::Status status = r.CheckString(out.size());
    if (!status.ok()) return status;
    i = close;
  }
  return out;
}

}  // namespace attnscope::jinja
