// attnscope render-chat --tokenizer DIR --messages FILE.json [--no-generation-prompt]
//                       [--template-date 2025-01-15T09:30]
// Prints the prompt that the model's chat template renders for the messages. The file is read
// as `capture --chat` reads it, and the generation prompt is added by default, as there.
#include <iostream>

#include "client/cpp/command.h"
#include "client/cpp/request_flags.h"
#include "server/tokenizer/tokenizer.h"

namespace attnscope::cli {
namespace {

constexpr char kName[] = "render-chat";

int RunRenderChat(const std::vector<std::string>& args) {
  // --add-generation-prompt is the default; the switch is still accepted for old scripts.
  Flags flags(args, {"add-generation-prompt", "no-generation-prompt"});
  const std::string dir = flags.Get("tokenizer");
  const std::string messages_path = flags.Get("messages");
  const std::string template_date = flags.Get("template-date");
  flags.Has("add-generation-prompt");
  const bool add_generation_prompt = !flags.Has("no-generation-prompt");
  if (!flags.error().empty()) return Fail(kName, flags.error());
  if (!flags.Unread().empty()) return Fail(kName, "unknown flag " + flags.Unread().front());
  if (!flags.positionals().empty())
    return Fail(kName, "unexpected argument " + flags.positionals()[0]);
  if (dir.empty() || messages_path.empty()) {
    return Fail(kName,
                "usage: attnscope render-chat --tokenizer DIR --messages FILE.json "
                "[--no-generation-prompt] [--template-date 2025-01-15T09:30]");
  }
  absl::StatusOr<PromptInput> input = ReadChatFile("--messages", messages_path);
  if (!input.ok()) return Fail(kName, std::string(input.status().message()));
  input->add_generation_prompt = add_generation_prompt;
  if (!template_date.empty()) {
    absl::StatusOr<std::tm> date = ParseTemplateDate(template_date);
    if (!date.ok()) return Fail(kName, "--template-date: " + std::string(date.status().message()));
    input->template_date = template_date;
  }
  auto config = LoadChatTemplateConfig(dir);
  if (!config.ok()) return Fail(kName, std::string(config.status().message()));
  if (!config->chat_template) {
    return Fail(kName, dir + "/tokenizer_config.json has no chat_template");
  }
  auto rendered = RenderChat(*input, *config, nullptr);
  if (!rendered.ok()) return Fail(kName, std::string(rendered.status().message()));
  std::cout << *rendered;
  std::cout.flush();
  return 0;
}

}  // namespace

ATTNSCOPE_REGISTER_COMMAND("render-chat",
                           "print the chat-template rendering of messages (--tokenizer DIR)",
                           RunRenderChat);
ATTNSCOPE_COMMAND_USAGE("render-chat", RunRenderChat,
                        "usage: attnscope render-chat --tokenizer DIR --messages FILE.json "
                        "[--no-generation-prompt]\n\nFILE.json: [{\"role\": \"user\", \"content\": "
                        "\"...\"}, ...] or {\"messages\": [...]}\n");

}  // namespace attnscope::cli
