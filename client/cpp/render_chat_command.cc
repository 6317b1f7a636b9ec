// attnscope render-chat --tokenizer DIR --messages FILE.json [--add-generation-prompt]
// Prints the prompt that the model's chat template renders for the messages.
#include <fstream>
#include <iostream>
#include <sstream>

#include "client/cpp/command.h"
#include "nlohmann/json.hpp"
#include "server/tokenizer/tokenizer.h"

namespace attnscope::cli {
namespace {

constexpr char kName[] = "render-chat";

int RunRenderChat(const std::vector<std::string>& args) {
  Flags flags(args, {"add-generation-prompt"});
  const std::string dir = flags.Get("tokenizer");
  const std::string messages_path = flags.Get("messages");
  const bool add_generation_prompt = flags.Has("add-generation-prompt");
  if (!flags.error().empty()) return Fail(kName, flags.error());
  if (!flags.Unread().empty()) return Fail(kName, "unknown flag " + flags.Unread().front());
  if (!flags.positionals().empty())
    return Fail(kName, "unexpected argument " + flags.positionals()[0]);
  if (dir.empty() || messages_path.empty()) {
    return Fail(kName,
                "usage: attnscope render-chat --tokenizer DIR --messages FILE.json "
                "[--add-generation-prompt]");
  }
  std::ifstream in(messages_path, std::ios::binary);
  if (!in) return Fail(kName, "cannot open --messages file " + messages_path);
  std::ostringstream buffer;
  buffer << in.rdbuf();
  std::vector<ChatMessage> messages;
  try {
    auto root = nlohmann::json::parse(buffer.str());
    // Either a list of messages or {"messages": [...]}.
    if (root.is_object() && root.contains("messages")) root = root["messages"];
    if (!root.is_array()) return Fail(kName, messages_path + ": expected a JSON list of messages");
    for (size_t i = 0; i < root.size(); ++i) {
      const auto& m = root[i];
      if (!m.is_object() || !m.contains("role") || !m["role"].is_string() ||
          !m.contains("content") || !m["content"].is_string()) {
        return Fail(kName, messages_path + ": message " + std::to_string(i) +
                               " needs string fields \"role\" and \"content\"");
      }
      messages.push_back({m["role"].get<std::string>(), m["content"].get<std::string>()});
    }
  } catch (const nlohmann::json::exception& e) {
    return Fail(kName, messages_path + ": bad JSON: " + e.what());
  }
  auto config = LoadChatTemplateConfig(dir);
  if (!config.ok()) return Fail(kName, std::string(config.status().message()));
  if (!config->chat_template) {
    return Fail(kName, dir + "/tokenizer_config.json has no chat_template");
  }
  auto rendered = config->chat_template->Render(messages, add_generation_prompt, config->bos_token,
                                                config->eos_token);
  if (!rendered.ok()) return Fail(kName, std::string(rendered.status().message()));
  std::cout << *rendered;
  std::cout.flush();
  return 0;
}

}  // namespace

ATTNSCOPE_REGISTER_COMMAND("render-chat",
                           "print the chat-template rendering of messages (--tokenizer DIR)",
                           RunRenderChat);

}  // namespace attnscope::cli
