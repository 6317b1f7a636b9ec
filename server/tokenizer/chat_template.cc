// Chat templates from tokenizer_config.json, rendered by the Jinja library (jinja/) with the
// arguments transformers' apply_chat_template passes: messages, tools, documents,
// add_generation_prompt, the special tokens and any extra keyword.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "server/json/bounded_json.h"
#include "server/tokenizer/jinja/json.h"
#include "server/tokenizer/jinja/template.h"
#include "server/tokenizer/tokenizer.h"

namespace attnscope {

struct ChatTemplateProgram {
  jinja::Template parsed;
};

namespace {

constexpr size_t kMaxTemplateBytes = 1u << 20;

absl::StatusOr<jinja::Value> JsonArgument(const std::string& text, const std::string& what,
                                          bool must_be_list) {
  auto value = jinja::ValueFromJsonText(text, what);
  if (!value.ok()) return value.status();
  if (must_be_list && !value->is_list()) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": expected a JSON array, got ", value->TypeName()));
  }
  return value;
}

}  // namespace

std::string SpecialTokens::Get(const std::string& name) const {
  for (const auto& [key, value] : named) {
    if (key == name) return value;
  }
  return "";
}

absl::StatusOr<std::tm> ParseTemplateDate(const std::string& date) {
  int year, month, day, hour, minute, second = 0;
  char tail = 0;
  const int fields = std::sscanf(date.c_str(), "%4d-%2d-%2dT%2d:%2d:%2d%c", &year, &month, &day,
                                 &hour, &minute, &second, &tail);
  if (fields < 5 || fields > 6 || month < 1 || month > 12 || day < 1 || day > 31 || hour > 23 ||
      minute > 59 || second > 60 || year < 1 || hour < 0 || minute < 0 || second < 0) {
    return absl::InvalidArgumentError(absl::StrCat("template date '", date.substr(0, 64),
                                                   "' is not of the form YYYY-MM-DDTHH:MM[:SS]"));
  }
  std::tm tm{};
  tm.tm_year = year - 1900;
  tm.tm_mon = month - 1;
  tm.tm_mday = day;
  tm.tm_hour = hour;
  tm.tm_min = minute;
  tm.tm_sec = second;
  std::tm normalised = tm;
  const time_t t = timegm(&normalised);  // fills weekday and day of year
  if (t == static_cast<time_t>(-1) || normalised.tm_mday != day) {
    return absl::InvalidArgumentError(
        absl::StrCat("template date '", date, "' is not a real date"));
  }
  return normalised;
}

std::string CurrentTemplateDate() {
  const time_t now = std::time(nullptr);
  std::tm local{};
  localtime_r(&now, &local);
  char buffer[32];
  std::strftime(buffer, sizeof(buffer), "%Y-%m-%dT%H:%M:%S", &local);
  return buffer;
}

std::string ChatMessagesJson(const std::vector<ChatMessage>& messages) {
  nlohmann::ordered_json list = nlohmann::ordered_json::array();
  for (const ChatMessage& m : messages) {
    list.push_back({{"role", m.role}, {"content", m.content}});
  }
  return list.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

absl::StatusOr<ChatTemplate> ChatTemplate::Compile(const std::string& source) {
  ChatTemplate compiled = CompileOrDefer(source);
  if (!compiled.compile_status_.ok()) return compiled.compile_status_;
  return compiled;
}

ChatTemplate ChatTemplate::CompileOrDefer(const std::string& source) {
  ChatTemplate compiled;
  compiled.source_ = source;
  if (source.size() > kMaxTemplateBytes) {
    compiled.compile_status_ = absl::InvalidArgumentError(absl::StrCat(
        "chat template: ", source.size(), " bytes, over the limit of ", kMaxTemplateBytes));
    return compiled;
  }
  auto parsed = jinja::Template::Parse(source);
  if (!parsed.ok()) {
    compiled.compile_status_ =
        absl::InvalidArgumentError(absl::StrCat("chat template: ", parsed.status().message()));
    return compiled;
  }
  compiled.program_ = std::make_shared<const ChatTemplateProgram>(ChatTemplateProgram{*parsed});
  return compiled;
}

absl::StatusOr<std::string> ChatTemplate::Render(const ChatTemplateArgs& args,
                                                 const SpecialTokens& special_tokens,
                                                 bool* clock_read) const {
  if (!compile_status_.ok()) return compile_status_;
  if (!program_) return absl::FailedPreconditionError("chat template was never compiled");
  std::vector<std::pair<std::string, jinja::Value>> globals;
  // As transformers: special tokens first, then the caller's keywords (which may override
  // them), then the named arguments.
  for (const auto& [name, token] : special_tokens.named) {
    globals.emplace_back(name, jinja::Value::Str(token));
  }
  if (!special_tokens.additional.empty()) {
    jinja::List tokens;
    for (const std::string& t : special_tokens.additional) tokens.push_back(jinja::Value::Str(t));
    globals.emplace_back("additional_special_tokens", jinja::Value::MakeList(std::move(tokens)));
  }
  if (!args.kwargs_json.empty()) {
    auto kwargs = JsonArgument(args.kwargs_json, "template_kwargs_json", false);
    if (!kwargs.ok()) return kwargs.status();
    if (!kwargs->is_dict()) {
      return absl::InvalidArgumentError("template_kwargs_json: expected a JSON object");
    }
    for (const auto& [key, value] : kwargs->dict().items) globals.emplace_back(key, value);
  }
  auto messages = JsonArgument(args.messages_json, "messages", true);
  if (!messages.ok()) return messages.status();
  globals.emplace_back("messages", *messages);
  for (const auto& [name, text] :
       {std::pair<const char*, const std::string*>{"tools", &args.tools_json},
        {"documents", &args.documents_json}}) {
    if (text->empty()) {
      globals.emplace_back(name, jinja::Value::None());
      continue;
    }
    auto value = JsonArgument(*text, absl::StrCat(name, "_json"), true);
    if (!value.ok()) return value.status();
    globals.emplace_back(name, *value);
  }
  globals.emplace_back("add_generation_prompt", jinja::Value::Bool(args.add_generation_prompt));
  jinja::RenderOptions options;
  options.clock_read = clock_read;
  if (clock_read != nullptr) *clock_read = false;
  if (args.date.empty()) {
    const time_t now = std::time(nullptr);
    localtime_r(&now, &options.now);
  } else {
    auto date = ParseTemplateDate(args.date);
    if (!date.ok()) return date.status();
    options.now = *date;
  }
  return program_->parsed.Render(std::move(globals), options);
}

absl::StatusOr<std::string> ChatTemplate::Render(const std::vector<ChatMessage>& messages,
                                                 bool add_generation_prompt,
                                                 const std::string& bos_token,
                                                 const std::string& eos_token) const {
  ChatTemplateArgs args;
  args.messages_json = ChatMessagesJson(messages);
  args.add_generation_prompt = add_generation_prompt;
  SpecialTokens special;
  if (!bos_token.empty()) special.named.emplace_back("bos_token", bos_token);
  if (!eos_token.empty()) special.named.emplace_back("eos_token", eos_token);
  return Render(args, special);
}

absl::StatusOr<ChatTemplateConfig> LoadChatTemplateConfig(const std::string& dir) {
  const std::string path = (std::filesystem::path(dir) / "tokenizer_config.json").string();
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  std::ostringstream buffer;
  buffer << in.rdbuf();
  ChatTemplateConfig config;
  try {
    absl::StatusOr<nlohmann::json> parsed = ParseBoundedJson(buffer.str(), path);
    if (!parsed.ok()) return parsed.status();
    const nlohmann::json& root = *parsed;
    if (!root.is_object()) return absl::InvalidArgumentError(path + ": expected a JSON object");
    const auto token_text = [](const nlohmann::json& value) -> std::string {
      if (value.is_string()) return value.get<std::string>();
      if (value.is_object() && value.contains("content") && value["content"].is_string()) {
        return value["content"].get<std::string>();
      }
      return "";
    };
    // transformers' SPECIAL_TOKENS_ATTRIBUTES, in its order; unset or empty ones are left out.
    for (const char* key : {"bos_token", "eos_token", "unk_token", "sep_token", "pad_token",
                            "cls_token", "mask_token"}) {
      if (!root.contains(key)) continue;
      const std::string text = token_text(root[key]);
      if (!text.empty()) config.special_tokens.named.emplace_back(key, text);
    }
    if (root.contains("additional_special_tokens") &&
        root["additional_special_tokens"].is_array()) {
      for (const auto& token : root["additional_special_tokens"]) {
        const std::string text = token_text(token);
        if (!text.empty()) config.special_tokens.additional.push_back(text);
      }
    }
    config.bos_token = config.special_tokens.Get("bos_token");
    config.eos_token = config.special_tokens.Get("eos_token");
    if (root.contains("chat_template") && !root["chat_template"].is_null()) {
      const auto& field = root["chat_template"];
      std::optional<std::string> source;
      if (field.is_string()) {
        source = field.get<std::string>();
      } else if (field.is_array()) {
        for (const auto& entry : field) {
          if (entry.is_object() && entry.value("name", "") == "default" &&
              entry.contains("template") && entry["template"].is_string()) {
            source = entry["template"].get<std::string>();
          }
        }
        if (!source) {
          return absl::InvalidArgumentError(
              absl::StrCat(path, ": chat_template is a list without a 'default' entry"));
        }
      } else {
        return absl::InvalidArgumentError(absl::StrCat(
            path, ": chat_template must be a string or a list, not ", field.type_name()));
      }
      config.chat_template = ChatTemplate::CompileOrDefer(*source);
    }
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": bad JSON: ", e.what()));
  }
  return config;
}

}  // namespace attnscope
