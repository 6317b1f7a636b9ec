// Jinja2's builtin filters over sequences and mappings (jinja2/filters.py: select/reject and
// their attr forms, map, sort, dictsort, unique, min, max, sum, join, batch, ...), one table
// entry each. FindFilter (filters.cc) looks here for what its own table lacks.
#include <algorithm>
#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "server/tokenizer/jinja/builtins.h"

namespace attnscope::jinja {

namespace {

using Result = absl::StatusOr<Value>;

// Jinja2's make_attrgetter: "a.b.0" looks up each part with getitem.
absl::StatusOr<Value> AttrPath(Renderer& r, const Value& item, const Value& attribute,
                               const Value* fallback = nullptr) {
  Value current = item;
  std::vector<Value> parts;
  if (attribute.is_string()) {
    size_t start = 0;
    const std::string& path = attribute.str();
    while (true) {
      const size_t dot = path.find('.', start);
      std::string part = path.substr(start, dot == std::string::npos ? dot : dot - start);
      const bool digits = !part.empty() && std::all_of(part.begin(), part.end(), ::isdigit);
      parts.push_back(digits ? Value::Int(std::strtoll(part.c_str(), nullptr, 10))
                             : Value::Str(part));
      if (dot == std::string::npos) break;
      start = dot + 1;
    }
  } else {
    parts.push_back(attribute);
  }
  for (const Value& part : parts) {
    auto next = r.GetItem(current, part);
    if (!next.ok()) return next;
    current = *next;
    if (current.is_undefined() && fallback) return *fallback;
  }
  return current;
}

// For sort/unique/min/max: strings compared case-insensitively unless case_sensitive.
Value SortKey(const Value& v, bool case_sensitive) {
  if (!case_sensitive && v.is_string()) return Value::Str(PyLower(v.str()));
  return v;
}

absl::Status SortValues(List* items, const std::vector<Value>& keys, bool reverse) {
  std::vector<size_t> order(items->size());
  for (size_t k = 0; k < order.size(); ++k) order[k] = k;
  absl::Status status;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    if (!status.ok()) return false;
    auto c = Compare(keys[a], keys[b]);
    if (!c.ok()) {
      status = c.status();
      return false;
    }
    return reverse ? *c > 0 : *c < 0;
  });
  if (!status.ok()) return status;
  List sorted;
  for (size_t k : order) sorted.push_back((*items)[k]);
  *items = std::move(sorted);
  return absl::OkStatus();
}

// select/reject/selectattr/rejectattr share Jinja2's select_or_reject.
Result SelectOrReject(Renderer& r, const Value& v, CallArgs& args, bool attribute, bool keep) {
  if (!v.Truthy()) return Value::MakeGenerator({});
  auto items = r.Iterate(v);
  if (!items.ok()) return items.status();
  size_t off = 0;
  Value attr;
  if (attribute) {
    if (args.positional.empty()) return TypeError("selectattr/rejectattr need an attribute");
    attr = args.positional[0];
    off = 1;
  }
  std::string test;
  CallArgs test_args;
  if (args.positional.size() > off) {
    test = ToText(args.positional[off]);
    test_args.positional.assign(args.positional.begin() + off + 1, args.positional.end());
    test_args.keyword = args.keyword;
  }
  List kept;
  for (const Value& item : *items) {
    Value subject = item;
    if (attribute) {
      auto looked_up = AttrPath(r, item, attr);
      if (!looked_up.ok()) return looked_up.status();
      subject = *looked_up;
    }
    bool pass;
    if (test.empty()) {
      pass = subject.Truthy();
    } else {
      auto result = r.ApplyTest(test, subject, test_args);
      if (!result.ok()) return result.status();
      pass = *result;
    }
    if (pass == keep) kept.push_back(item);
  }
  return Value::MakeGenerator(std::move(kept));
}

Result Select(Renderer& r, const Value& v, CallArgs& a) {
  return SelectOrReject(r, v, a, false, true);
}
Result Reject(Renderer& r, const Value& v, CallArgs& a) {
  return SelectOrReject(r, v, a, false, false);
}
Result SelectAttr(Renderer& r, const Value& v, CallArgs& a) {
  return SelectOrReject(r, v, a, true, true);
}
Result RejectAttr(Renderer& r, const Value& v, CallArgs& a) {
  return SelectOrReject(r, v, a, true, false);
}

Result Map(Renderer& r, const Value& v, CallArgs& args) {
  if (!v.Truthy()) return Value::MakeGenerator({});
  auto items = r.Iterate(v);
  if (!items.ok()) return items.status();
  const Value* attribute = args.Get(999, "attribute");
  List mapped;
  if (args.positional.empty() && attribute) {
    const Value* fallback = args.Get(999, "default");
    for (const Value& item : *items) {
      auto value = AttrPath(r, item, *attribute, fallback);
      if (!value.ok()) return value.status();
      mapped.push_back(*value);
    }
    return Value::MakeGenerator(std::move(mapped));
  }
  if (args.positional.empty()) return TypeError("map requires a filter argument");
  const std::string filter = ToText(args.positional[0]);
  for (const Value& item : *items) {
    CallArgs filter_args;
    filter_args.positional.assign(args.positional.begin() + 1, args.positional.end());
    filter_args.keyword = args.keyword;
    auto value = r.ApplyFilter(filter, item, std::move(filter_args));
    if (!value.ok()) return value.status();
    mapped.push_back(*value);
  }
  return Value::MakeGenerator(std::move(mapped));
}
Result ListFilter(Renderer& r, const Value& v, CallArgs&) {
  auto items = r.Iterate(v);
  if (!items.ok()) return items.status();
  return Value::MakeList(std::move(*items));
}

Result First(Renderer& r, const Value& v, CallArgs&) {
  auto items = r.Iterate(v);
  if (!items.ok()) return items.status();
  if (items->empty()) return Value::Undefined("No first item, sequence was empty.");
  return items->front();
}

Result Last(Renderer& r, const Value& v, CallArgs&) {
  if (v.is_generator()) return TypeError("'generator' object is not reversible");
  auto items = r.Iterate(v);
  if (!items.ok()) return items.status();
  if (items->empty()) return Value::Undefined("No last item, sequence was empty.");
  return items->back();
}

Result Reverse(Renderer& r, const Value& v, CallArgs&) {
  if (v.is_string()) {
    std::vector<std::string> chars = CodePoints(v.str());
    std::string out;
    for (auto it = chars.rbegin(); it != chars.rend(); ++it) out += *it;
    return Value::Str(std::move(out));
  }
  auto items = r.Iterate(v);
  if (!items.ok()) return items.status();
  std::reverse(items->begin(), items->end());
  if (v.is_generator()) return Value::MakeList(std::move(*items));
  return Value::MakeGenerator(std::move(*items));  // reversed(): an iterator
}

Result Join(Renderer& r, const Value& v, CallArgs& args) {
  const Value* separator = args.Get(0, "d");
  const Value* attribute = args.Get(1, "attribute");
  auto items = r.Iterate(v);
  if (!items.ok()) return items.status();
  const std::string sep = separator ? ToText(*separator) : "";
  std::string out;
  for (size_t k = 0; k < items->size(); ++k) {
    Value item = (*items)[k];
    if (attribute && !attribute->is_none()) {
      auto looked_up = AttrPath(r, item, *attribute);
      if (!looked_up.ok()) return looked_up.status();
      item = *looked_up;
    }
    if (k) out += sep;
    out += ToText(item);
    absl::Status status = r.CheckString(out.size());
    if (!status.ok()) return status;
  }
  return Value::Str(std::move(out));
}

Result Items(Renderer&, const Value& v, CallArgs&) {
  if (v.is_undefined()) return Value::MakeGenerator({});
  if (!v.is_dict() || v.dict().is_namespace) {
    return TypeError("Can only get item pairs from a mapping.");
  }
  List pairs;
  for (const auto& [key, item] : v.dict().items)
    pairs.push_back(Value::MakeList({Value::Str(key), item}, true));
  return Value::MakeGenerator(std::move(pairs));
}

Result DictSort(Renderer& r, const Value& v, CallArgs& args) {
  const bool case_sensitive = Flag(args.Get(0, "case_sensitive"));
  const Value* by = args.Get(1, "by");
  const bool reverse = Flag(args.Get(2, "reverse"));
  if (v.is_undefined()) return UndefinedError(v);
  if (!v.is_dict())
    return TypeError(absl::StrCat("'", v.TypeName(), "' object has no attribute 'items'"));
  const bool by_value = by && ToText(*by) == "value";
  List pairs;
  std::vector<Value> keys;
  for (const auto& [key, item] : v.dict().items) {
    pairs.push_back(Value::MakeList({Value::Str(key), item}, true));
    keys.push_back(SortKey(by_value ? item : Value::Str(key), case_sensitive));
  }
  absl::Status status = SortValues(&pairs, keys, reverse);
  if (!status.ok()) return status;
  (void)r;
  return Value::MakeList(std::move(pairs));
}

Result Sort(Renderer& r, const Value& v, CallArgs& args) {
  const bool reverse = Flag(args.Get(0, "reverse"));
  const bool case_sensitive = Flag(args.Get(1, "case_sensitive"));
  const Value* attribute = args.Get(2, "attribute");
  auto items = r.Iterate(v);
  if (!items.ok()) return items.status();
  std::vector<Value> keys;
  for (const Value& item : *items) {
    Value key = item;
    if (attribute && !attribute->is_none()) {
      auto looked_up = AttrPath(r, item, *attribute);
      if (!looked_up.ok()) return looked_up.status();
      key = *looked_up;
    }
    keys.push_back(SortKey(key, case_sensitive));
  }
  absl::Status status = SortValues(&*items, keys, reverse);
  if (!status.ok()) return status;
  return Value::MakeList(std::move(*items));
}

Result Unique(Renderer& r, const Value& v, CallArgs& args) {
  const bool case_sensitive = Flag(args.Get(0, "case_sensitive"));
  const Value* attribute = args.Get(1, "attribute");
  auto items = r.Iterate(v);
  if (!items.ok()) return items.status();
  List kept;
  std::vector<Value> seen;
  for (const Value& item : *items) {
    Value key = item;
    if (attribute && !attribute->is_none()) {
      auto looked_up = AttrPath(r, item, *attribute);
      if (!looked_up.ok()) return looked_up.status();
      key = *looked_up;
    }
    key = SortKey(key, case_sensitive);
    bool duplicate = false;
    for (const Value& s : seen) duplicate = duplicate || Equal(s, key);
    if (duplicate) continue;
    seen.push_back(key);
    kept.push_back(item);
  }
  return Value::MakeGenerator(std::move(kept));
}

Result MinMax(Renderer& r, const Value& v, CallArgs& args, bool want_max) {
  const bool case_sensitive = Flag(args.Get(0, "case_sensitive"));
  const Value* attribute = args.Get(1, "attribute");
  auto items = r.Iterate(v);
  if (!items.ok()) return items.status();
  if (items->empty())
    return Value::Undefined(absl::StrCat("No aggregated item, sequence was empty."));
  size_t best = 0;
  Value best_key;
  for (size_t k = 0; k < items->size(); ++k) {
    Value key = (*items)[k];
    if (attribute && !attribute->is_none()) {
      auto looked_up = AttrPath(r, key, *attribute);
      if (!looked_up.ok()) return looked_up.status();
      key = *looked_up;
    }
    key = SortKey(key, case_sensitive);
    if (k > 0) {
      auto c = Compare(key, best_key);
      if (!c.ok()) return c.status();
      if (want_max ? *c <= 0 : *c >= 0) continue;
    }
    best = k;
    best_key = key;
  }
  return (*items)[best];
}
Result Min(Renderer& r, const Value& v, CallArgs& a) { return MinMax(r, v, a, false); }
Result Max(Renderer& r, const Value& v, CallArgs& a) { return MinMax(r, v, a, true); }

Result Sum(Renderer& r, const Value& v, CallArgs& args) {
  const Value* attribute = args.Get(0, "attribute");
  const Value* start = args.Get(1, "start");
  auto items = r.Iterate(v);
  if (!items.ok()) return items.status();
  Value total = start ? *start : Value::Int(0);
  for (const Value& item : *items) {
    Value term = item;
    if (attribute && !attribute->is_none()) {
      auto looked_up = AttrPath(r, item, *attribute);
      if (!looked_up.ok()) return looked_up.status();
      term = *looked_up;
    }
    auto next = BinaryOp(r, "+", total, term);
    if (!next.ok()) return next;
    total = *next;
  }
  return total;
}

Result Batch(Renderer& r, const Value& v, CallArgs& args) {
  const Value* count = args.Get(0, "linecount");
  const Value* fill = args.Get(1, "fill_with");
  if (!count || !count->IsInteger() || count->integer() <= 0)
    return TypeError("batch needs a positive count");
  auto items = r.Iterate(v);
  if (!items.ok()) return items.status();
  List batches, current;
  for (const Value& item : *items) {
    current.push_back(item);
    if (static_cast<int64_t>(current.size()) == count->integer()) {
      batches.push_back(Value::MakeList(std::move(current)));
      current.clear();
    }
  }
  if (!current.empty()) {
    while (fill && !fill->is_none() && static_cast<int64_t>(current.size()) < count->integer()) {
      current.push_back(*fill);
    }
    batches.push_back(Value::MakeList(std::move(current)));
  }
  return Value::MakeGenerator(std::move(batches));
}

struct FilterEntry {
  const char* name;
  FilterFunction function;
};

constexpr FilterEntry kSequenceFilters[] = {
    {"batch", Batch},     {"dictsort", DictSort}, {"first", First},
    {"items", Items},     {"join", Join},         {"last", Last},
    {"list", ListFilter}, {"map", Map},           {"max", Max},
    {"min", Min},         {"reject", Reject},     {"rejectattr", RejectAttr},
    {"reverse", Reverse}, {"select", Select},     {"selectattr", SelectAttr},
    {"sort", Sort},       {"sum", Sum},           {"unique", Unique},
};

}  // namespace

FilterFunction FindSequenceFilter(const std::string& name) {
  for (const FilterEntry& entry : kSequenceFilters) {
    if (name == entry.name) return entry.function;
  }
  return nullptr;
}

}  // namespace attnscope::jinja
