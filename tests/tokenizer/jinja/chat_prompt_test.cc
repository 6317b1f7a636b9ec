// A model folder carrying Meta's Llama-3.1 chat template (which uses the `reject` filter in a
// branch plain chat never runs) loads, and prepares text, chat and chat-with-tools prompts
// through the same path the service and the command line use (server/engine/prompt.h).
#include <filesystem>
#include <fstream>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "server/engine/prompt.h"

namespace attnscope {
namespace {

std::string Llama31Template() {
  std::ifstream in(std::string(ATTNSCOPE_SOURCE_DIR) + "/tests/data/chat_templates/templates.json");
  const auto all = nlohmann::json::parse(in);
  for (const auto& entry : all) {
    if (entry.at("name") == "meta-llama/Llama-3.1-8B-Instruct") return entry.at("template");
  }
  return "";
}

class Llama31Folder : public testing::Test {
 protected:
  void SetUp() override {
    dir_ =
        (std::filesystem::temp_directory_path() / ("attnscope-llama31-" + std::to_string(getpid())))
            .string();
    ASSERT_TRUE(WriteTinyTokenizerFiles(dir_).ok());
    const std::string source = Llama31Template();
    ASSERT_NE(source.find("reject"), std::string::npos) << "the collection lost Meta's template";
    std::ifstream in(dir_ + "/tokenizer_config.json");
    auto config = nlohmann::json::parse(in);
    config["chat_template"] = source;
    config["bos_token"] = "<|endoftext|>";
    std::ofstream(dir_ + "/tokenizer_config.json") << config.dump(2);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string dir_;
};

TEST_F(Llama31Folder, LoadsAndPreparesTextChatAndTools) {
  auto tools = LoadModelTextTools(dir_);
  ASSERT_TRUE(tools.ok()) << tools.status();
  PromptInput text;
  text.kind = PromptInput::Kind::kText;
  text.text = "hi";
  EXPECT_TRUE(PreparePrompt(text, *tools).ok());

  auto chat = ParseChatJson(R"([{"role": "user", "content": "Revenue?"}])", "test");
  ASSERT_TRUE(chat.ok()) << chat.status();
  chat->template_date = "2025-01-15T09:30";
  auto prepared = PreparePrompt(*chat, *tools);
  ASSERT_TRUE(prepared.ok()) << prepared.status();
  // Meta's template: BOS, a system header with the knowledge cutoff and the default date.
  EXPECT_EQ(prepared->text.rfind("<|endoftext|><|start_header_id|>system<|end_header_id|>\n\n"
                                 "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024",
                                 0),
            0u)
      << prepared->text;
  EXPECT_NE(prepared->text.find("<|start_header_id|>user<|end_header_id|>\n\nRevenue?<|eot_id|>"),
            std::string::npos);
  EXPECT_FALSE(prepared->ids.empty());

  auto with_tools = ParseChatJson(R"({"messages": [
      {"role": "user", "content": "Weather in Paris?"},
      {"role": "assistant", "tool_calls": [{"type": "function", "function":
          {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
      {"role": "tool", "content": "22"}],
    "tools": [{"type": "function", "function": {"name": "get_weather",
      "description": "Weather", "parameters": {"type": "object",
      "properties": {"city": {"type": "string"}}}}}]})",
                                  "test");
  ASSERT_TRUE(with_tools.ok()) << with_tools.status();
  auto tool_prompt = PreparePrompt(*with_tools, *tools);
  ASSERT_TRUE(tool_prompt.ok()) << tool_prompt.status();
  // python3-jinja2 as transformers configures it renders exactly this (written out from
  // tests/tokenizer/jinja/oracle.py for these messages and tools).
  EXPECT_EQ(tool_prompt->text, R"EXPECTED(<|endoftext|><|start_header_id|>system<|end_header_id|>

Environment: ipython
Cutting Knowledge Date: December 2023
Today Date: 26 Jul 2024

<|eot_id|><|start_header_id|>user<|end_header_id|>

Given the following functions, please respond with a JSON for a function call with its proper arguments that best answers the given prompt.

Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.Do not use variables.

{
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {
                    "type": "string"
                }
            }
        }
    }
}

Weather in Paris?<|eot_id|><|start_header_id|>assistant<|end_header_id|>

{"name": "get_weather", "parameters": {"city": "Paris"}}<|eot_id|><|start_header_id|>ipython<|end_header_id|>

"22"<|eot_id|><|start_header_id|>assistant<|end_header_id|>

)EXPECTED");
}

TEST_F(Llama31Folder, ABrokenTemplateStillLoadsAndFailsOnlyChat) {
  std::ifstream in(dir_ + "/tokenizer_config.json");
  auto config = nlohmann::json::parse(in);
  config["chat_template"] = "{% if messages %}never closed";
  std::ofstream(dir_ + "/tokenizer_config.json") << config.dump(2);
  auto tools = LoadModelTextTools(dir_);
  ASSERT_TRUE(tools.ok()) << tools.status();
  PromptInput text;
  text.kind = PromptInput::Kind::kText;
  text.text = "hi";
  EXPECT_TRUE(PreparePrompt(text, *tools).ok());
  auto chat = ParseChatJson(R"([{"role": "user", "content": "x"}])", "test");
  ASSERT_TRUE(chat.ok());
  auto prepared = PreparePrompt(*chat, *tools);
  ASSERT_FALSE(prepared.ok());
  EXPECT_NE(prepared.status().message().find("endif"), std::string::npos) << prepared.status();
}

TEST_F(Llama31Folder, TheDateIsPinnedAndRecordedOnlyWhenTheTemplateReadsIt) {
  auto tools = LoadModelTextTools(dir_);
  ASSERT_TRUE(tools.ok()) << tools.status();
  auto chat = ParseChatJson(R"([{"role": "user", "content": "x"}])", "test");
  ASSERT_TRUE(chat.ok());
  chat->template_date = "2025-01-15T09:30";
  auto prepared = PreparePrompt(*chat, *tools);  // Meta's 3.1 template never calls strftime_now
  ASSERT_TRUE(prepared.ok());
  EXPECT_EQ(prepared->template_date, "");
  tools->chat->chat_template = ChatTemplate::CompileOrDefer(
      "{{ strftime_now('%d %b %Y') }}{% for m in messages %}{{ m.content }}{% endfor %}");
  prepared = PreparePrompt(*chat, *tools);
  ASSERT_TRUE(prepared.ok()) << prepared.status();
  EXPECT_EQ(prepared->text, "15 Jan 2025x");
  EXPECT_EQ(prepared->template_date, "2025-01-15T09:30");
  chat->template_date = "2025-13-01T00:00";
  prepared = PreparePrompt(*chat, *tools);
  ASSERT_FALSE(prepared.ok());
  EXPECT_NE(prepared.status().message().find("2025-13-01T00:00"), std::string::npos);
  chat->template_date = "";
  prepared = PreparePrompt(*chat, *tools);  // the clock now
  ASSERT_TRUE(prepared.ok());
  EXPECT_EQ(prepared->template_date.size(), 19u) << prepared->template_date;
}

TEST(ChatJson, HuggingFaceFormsAndErrorsNamingTheField) {
  auto plain = ParseChatJson(R"([{"role": "user", "content": [{"type": "text", "text": "a"},
                                   {"type": "text", "text": "b"}]}, {"role": "assistant", "content": null}])",
                             "f");
  ASSERT_TRUE(plain.ok()) << plain.status();
  ASSERT_EQ(plain->messages.size(), 2u);
  EXPECT_EQ(plain->messages[0].content, "ab");
  EXPECT_EQ(plain->messages[1].content, "");
  EXPECT_NE(plain->messages_json.find("null"), std::string::npos);
  auto kwargs = ParseChatJson(
      R"({"messages": [{"role": "user", "content": "x"}], "enable_thinking": false})", "f");
  ASSERT_TRUE(kwargs.ok());
  EXPECT_EQ(kwargs->template_kwargs_json, R"({"enable_thinking":false})");
  EXPECT_TRUE(kwargs->tools_json.empty());
  auto bad = ParseChatJson(R"([{"content": "x"}])", "f");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("role"), std::string::npos);
  std::string deep(100, '[');
  deep += std::string(100, ']');
  EXPECT_FALSE(ParseChatJson(deep, "f").ok());
}

}  // namespace
}  // namespace attnscope
