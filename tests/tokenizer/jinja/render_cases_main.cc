// Renders chat-template cases for the differential tests: one JSON object per input line
// ({"template", "messages", "tools", "documents", "kwargs", "add_generation_prompt",
// "special_tokens", "additional_special_tokens", "date"}), one JSON result per output line
// ({"ok": true, "text": ...} or {"ok": false, "error": ...}).
#include <iostream>
#include <map>
#include <string>

#include "nlohmann/json.hpp"
#include "server/tokenizer/tokenizer.h"

int main() {
  std::map<std::string, attnscope::ChatTemplate> compiled;
  std::string line;
  while (std::getline(std::cin, line)) {
    nlohmann::ordered_json result;
    try {
      const auto c = nlohmann::ordered_json::parse(line);
      const std::string source = c.at("template").get<std::string>();
      auto it = compiled.find(source);
      if (it == compiled.end()) {
        it = compiled.emplace(source, attnscope::ChatTemplate::CompileOrDefer(source)).first;
      }
      attnscope::ChatTemplateArgs args;
      args.messages_json = c.at("messages").dump();
      if (c.contains("tools") && !c["tools"].is_null()) args.tools_json = c["tools"].dump();
      if (c.contains("documents") && !c["documents"].is_null()) {
        args.documents_json = c["documents"].dump();
      }
      if (c.contains("kwargs")) args.kwargs_json = c["kwargs"].dump();
      args.add_generation_prompt = c.value("add_generation_prompt", false);
      args.date = c.value("date", "");
      attnscope::SpecialTokens special;
      if (c.contains("special_tokens")) {
        for (auto& [key, value] : c["special_tokens"].items()) {
          special.named.emplace_back(key, value.get<std::string>());
        }
      }
      if (c.contains("additional_special_tokens")) {
        for (const auto& t : c["additional_special_tokens"]) special.additional.push_back(t);
      }
      auto rendered = it->second.Render(args, special);
      if (rendered.ok()) {
        result["ok"] = true;
        result["text"] = *rendered;
      } else {
        result["ok"] = false;
        result["error"] = std::string(rendered.status().message());
      }
    } catch (const std::exception& e) {
      result["ok"] = false;
      result["error"] = std::string("harness: ") + e.what();
    }
    std::cout << result.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
    std::cout.flush();
  }
  return 0;
}
