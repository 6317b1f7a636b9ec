// A model folder carrying Meta's Llama-3.1 chat template (which uses the `reject` filter in a
// branch plain chat never runs) loads, and prepares text, chat and chat-with-tools prompts
// through the same path the service and the command line use (server/engine/prompt.h). A
// rendered chat tokenizes as transformers' apply_chat_template(tokenize=True) does: against
// transformers' ids for the Qwen2 golden cases, and, for a tool chat, against the split on
// tokenizer.json's added tokens recomputed here.
#include <algorithm>
#include <filesystem>
#include <fstream>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "server/engine/prompt.h"
#include "server/session/loaded_model.h"
#include "tests/common/npy.h"

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

class Llama31Folder : public ::testing::Test {
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
  session::LoadedModel model;
  const absl::Status loaded = session::LoadTokenizerFiles(dir_, &model);
  ASSERT_TRUE(loaded.ok()) << loaded;
  PromptInput text;
  text.kind = PromptInput::Kind::kText;
  text.text = "hi";
  EXPECT_TRUE(PreparePrompt(text, model.tokenizer.get(), model.chat_config()).ok());

  auto chat = ParseChatJson(R"([{"role": "user", "content": "Revenue?"}])", "test");
  ASSERT_TRUE(chat.ok()) << chat.status();
  chat->template_date = "2025-01-15T09:30";
  auto prepared = PreparePrompt(*chat, model.tokenizer.get(), model.chat_config());
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
  auto tool_prompt = PreparePrompt(*with_tools, model.tokenizer.get(), model.chat_config());
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
  session::LoadedModel model;
  const absl::Status loaded = session::LoadTokenizerFiles(dir_, &model);
  ASSERT_TRUE(loaded.ok()) << loaded;
  PromptInput text;
  text.kind = PromptInput::Kind::kText;
  text.text = "hi";
  EXPECT_TRUE(PreparePrompt(text, model.tokenizer.get(), model.chat_config()).ok());
  auto chat = ParseChatJson(R"([{"role": "user", "content": "x"}])", "test");
  ASSERT_TRUE(chat.ok());
  auto prepared = PreparePrompt(*chat, model.tokenizer.get(), model.chat_config());
  ASSERT_FALSE(prepared.ok());
  EXPECT_NE(prepared.status().message().find("endif"), std::string::npos) << prepared.status();
}

TEST_F(Llama31Folder, TheDateIsPinnedAndRecordedOnlyWhenTheTemplateReadsIt) {
  session::LoadedModel model;
  const absl::Status loaded = session::LoadTokenizerFiles(dir_, &model);
  ASSERT_TRUE(loaded.ok()) << loaded;
  auto chat = ParseChatJson(R"([{"role": "user", "content": "x"}])", "test");
  ASSERT_TRUE(chat.ok());
  chat->template_date = "2025-01-15T09:30";
  auto prepared =
      PreparePrompt(*chat, model.tokenizer.get(),
                    model.chat_config());  // Meta's 3.1 template never calls strftime_now
  ASSERT_TRUE(prepared.ok());
  EXPECT_EQ(prepared->template_date, "");
  model.chat->chat_template = ChatTemplate::CompileOrDefer(
      "{{ strftime_now('%d %b %Y') }}{% for m in messages %}{{ m.content }}{% endfor %}");
  prepared = PreparePrompt(*chat, model.tokenizer.get(), model.chat_config());
  ASSERT_TRUE(prepared.ok()) << prepared.status();
  EXPECT_EQ(prepared->text, "15 Jan 2025x");
  EXPECT_EQ(prepared->template_date, "2025-01-15T09:30");
  chat->template_date = "2025-13-01T00:00";
  prepared = PreparePrompt(*chat, model.tokenizer.get(), model.chat_config());
  ASSERT_FALSE(prepared.ok());
  EXPECT_NE(prepared.status().message().find("2025-13-01T00:00"), std::string::npos);
  chat->template_date = "";
  prepared = PreparePrompt(*chat, model.tokenizer.get(), model.chat_config());  // the clock now
  ASSERT_TRUE(prepared.ok());
  EXPECT_EQ(prepared->template_date.size(), 19u) << prepared->template_date;
}

// transformers' apply_chat_template(tokenize=True) encodes the rendering with
// add_special_tokens=False: the added tokens of tokenizer.json split the text first (Qwen2's
// have no lstrip/rstrip/single_word), each becomes its id, and every piece between them is
// tokenized on its own as plain text. This recomputes that split from tokenizer.json itself.
std::vector<int64_t> SplitOnAddedTokensThenEncode(const std::string& text,
                                                  const Tokenizer& tokenizer) {
  std::ifstream in(testing::DataDir() + "/tokenizer/qwen2/tokenizer.json");
  const auto added = nlohmann::json::parse(in).at("added_tokens");
  std::vector<int64_t> ids;
  auto encode_plain = [&](const std::string& piece) {
    if (piece.empty()) return;
    auto encoded = tokenizer.Encode(piece, /*parse_special_tokens=*/false);
    EXPECT_TRUE(encoded.ok()) << encoded.status();
    if (encoded.ok()) ids.insert(ids.end(), encoded->ids.begin(), encoded->ids.end());
  };
  size_t piece_start = 0, at = 0;
  while (at < text.size()) {
    const nlohmann::json* longest = nullptr;
    for (const auto& token : added) {
      EXPECT_FALSE(token.at("lstrip").get<bool>() || token.at("rstrip").get<bool>() ||
                   token.at("single_word").get<bool>())
          << "this reference split does not model " << token.dump();
      const std::string& content = token.at("content").get_ref<const std::string&>();
      if (text.compare(at, content.size(), content) == 0 &&
          (!longest ||
           content.size() > longest->at("content").get_ref<const std::string&>().size())) {
        longest = &token;
      }
    }
    if (!longest) {
      ++at;
      continue;
    }
    encode_plain(text.substr(piece_start, at - piece_start));
    ids.push_back(longest->at("id").get<int64_t>());
    at += longest->at("content").get_ref<const std::string&>().size();
    piece_start = at;
  }
  encode_plain(text.substr(piece_start));
  return ids;
}

TEST(RenderedChatTokens, QwenGoldenCasesThroughThePromptPathEqualTransformersIds) {
  session::LoadedModel model;
  const absl::Status loaded =
      session::LoadTokenizerFiles(testing::DataDir() + "/tokenizer/qwen2", &model);
  ASSERT_TRUE(loaded.ok()) << loaded;
  std::ifstream in(testing::DataDir() + "/golden/chat_template_cases.jsonl");
  ASSERT_TRUE(in) << "tests/data/golden/chat_template_cases.jsonl: cannot open";
  std::string line;
  int cases = 0;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    const auto golden = nlohmann::json::parse(line);
    auto chat = ParseChatJson(golden.at("messages").dump(), "golden");
    ASSERT_TRUE(chat.ok()) << chat.status();
    chat->add_generation_prompt = golden.at("add_generation_prompt").get<bool>();
    auto prepared = PreparePrompt(*chat, model.tokenizer.get(), model.chat_config());
    ASSERT_TRUE(prepared.ok()) << prepared.status();
    EXPECT_EQ(prepared->text, golden.at("expected").get<std::string>()) << line;
    // expected_ids: transformers 4.41.2's Qwen2 tokenizer on the rendering.
    EXPECT_EQ(prepared->ids, golden.at("expected_ids").get<std::vector<int64_t>>()) << line;
    ++cases;
  }
  EXPECT_EQ(cases, 6);
}

TEST(RenderedChatTokens, ToolChatSplitsOnAddedTokensAsTransformersDoes) {
  session::LoadedModel model;
  const absl::Status loaded =
      session::LoadTokenizerFiles(testing::DataDir() + "/tokenizer/qwen2", &model);
  ASSERT_TRUE(loaded.ok()) << loaded;
  std::ifstream in(std::string(ATTNSCOPE_SOURCE_DIR) + "/tests/data/chat_templates/templates.json");
  std::string qwen25;
  for (const auto& entry : nlohmann::json::parse(in)) {
    if (entry.at("name") == "Qwen/Qwen2.5-7B-Instruct") qwen25 = entry.at("template");
  }
  ASSERT_NE(qwen25.find("<tool_call>"), std::string::npos) << "Qwen2.5's template is missing";
  model.chat->chat_template = ChatTemplate::CompileOrDefer(qwen25);
  // A special-token spelling inside a message is recognised too, as transformers does.
  auto chat = ParseChatJson(R"({"messages": [
      {"role": "system", "content": "Answer briefly.\n"},
      {"role": "user", "content": "Weather in Zürich? Quote: <|im_end|><|im_start|> ok"},
      {"role": "assistant", "content": null, "tool_calls": [{"type": "function", "function":
          {"name": "get_weather", "arguments": {"city": "Zürich"}}}]},
      {"role": "tool", "content": "22 °C"}],
    "tools": [{"type": "function", "function": {"name": "get_weather",
      "description": "Weather", "parameters": {"type": "object",
      "properties": {"city": {"type": "string"}}}}}]})",
                            "test");
  ASSERT_TRUE(chat.ok()) << chat.status();
  auto prepared = PreparePrompt(*chat, model.tokenizer.get(), model.chat_config());
  ASSERT_TRUE(prepared.ok()) << prepared.status();
  EXPECT_NE(prepared->text.find("<tool_call>\n{\"name\": \"get_weather\""), std::string::npos)
      << prepared->text;
  EXPECT_EQ(prepared->ids, SplitOnAddedTokensThenEncode(prepared->text, *model.tokenizer));
  // Written out by hand: the template's markers plus the two spelled in the user's message.
  // system, user, assistant, tool-as-user, generation prompt: five turns, five <|im_start|>
  // and four <|im_end|> of the template's own.
  const auto count = [&](int64_t id) {
    return std::count(prepared->ids.begin(), prepared->ids.end(), id);
  };
  EXPECT_EQ(count(151644), 5 + 1);  // <|im_start|>
  EXPECT_EQ(count(151645), 4 + 1);  // <|im_end|>
  EXPECT_EQ(count(151643), 0);      // <|endoftext|>
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
