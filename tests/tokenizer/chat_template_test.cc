// Chat templates: Qwen2-7B-Instruct's against the transformers renderings in
// tests/data/golden/chat_template_cases.jsonl, and the Qwen2.5, Llama-2, Llama-3 and Mistral
// templates against renderings written out by hand from the templates' logic.
#include <filesystem>
#include <fstream>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "server/tokenizer/tokenizer.h"
#include "tests/common/npy.h"

namespace attnscope {
namespace {

std::string Render(const std::string& source, const std::vector<ChatMessage>& messages,
                   bool add_generation_prompt, const std::string& bos = "",
                   const std::string& eos = "") {
  auto compiled = ChatTemplate::Compile(source);
  if (!compiled.ok()) return "COMPILE ERROR: " + std::string(compiled.status().message());
  auto rendered = compiled->Render(messages, add_generation_prompt, bos, eos);
  if (!rendered.ok()) return "RENDER ERROR: " + std::string(rendered.status().message());
  return *rendered;
}

TEST(ChatTemplate, Qwen2GoldenCasesRenderByteForByteAndEncodeToReferenceIds) {
  const std::string data = testing::DataDir();
  auto config = LoadChatTemplateConfig(data + "/tokenizer/qwen2");
  ASSERT_TRUE(config.ok()) << config.status();
  ASSERT_TRUE(config->chat_template.has_value());
  EXPECT_EQ(config->eos_token, "<|im_end|>");
  EXPECT_EQ(config->bos_token, "");
  auto tokenizer = LoadTokenizer(data + "/tokenizer/qwen2");
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  std::ifstream in(data + "/golden/chat_template_cases.jsonl");
  ASSERT_TRUE(in) << data << "/golden/chat_template_cases.jsonl: cannot open";
  std::string line;
  int cases = 0;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    const auto j = nlohmann::json::parse(line);
    std::vector<ChatMessage> messages;
    for (const auto& m : j.at("messages")) messages.push_back({m.at("role"), m.at("content")});
    auto rendered = config->chat_template->Render(messages, j.at("add_generation_prompt"),
                                                  config->bos_token, config->eos_token);
    ASSERT_TRUE(rendered.ok()) << rendered.status();
    EXPECT_EQ(*rendered, j.at("expected").get<std::string>()) << line;
    auto encoding = (*tokenizer)->Encode(*rendered);
    ASSERT_TRUE(encoding.ok());
    EXPECT_EQ(encoding->ids, j.at("expected_ids").get<std::vector<int64_t>>()) << line;
    ++cases;
  }
  EXPECT_GE(cases, 3);
}

TEST(ChatTemplate, TinyTokenizerConfigCarriesQwen2Template) {
  const std::string dir =
      (std::filesystem::temp_directory_path() / ("attnscope-tiny-chat-" + std::to_string(getpid())))
          .string();
  ASSERT_TRUE(WriteTinyTokenizerFiles(dir).ok());
  auto config = LoadChatTemplateConfig(dir);
  ASSERT_TRUE(config.ok()) << config.status();
  ASSERT_TRUE(config->chat_template.has_value());
  EXPECT_EQ(config->eos_token, "<|im_end|>");
  auto rendered = config->chat_template->Render({{"user", "Hi"}}, true, "", "<|im_end|>");
  ASSERT_TRUE(rendered.ok());
  EXPECT_EQ(
      *rendered,
      "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
      "<|im_start|>assistant\n");
  std::ifstream in(testing::DataDir() + "/tokenizer/qwen2/tokenizer_config.json");
  ASSERT_TRUE(in) << "tests/data/tokenizer/qwen2/tokenizer_config.json: cannot open";
  const auto qwen = nlohmann::json::parse(in);
  EXPECT_EQ(config->chat_template->source(), qwen.at("chat_template").get<std::string>());
  std::filesystem::remove_all(dir);
}

// Qwen2.5-7B-Instruct's template (the tools-free path is what these messages exercise).
constexpr char kQwen25Template[] = R"({%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}
    {%- else %}
        {{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\n<tool_call>\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {{- message.content }}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
)";

TEST(ChatTemplate, Qwen25) {
  EXPECT_EQ(Render(kQwen25Template, {{"user", "Revenue?"}}, true),
            "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
            "assistant.<|im_end|>\n<|im_start|>user\nRevenue?<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(Render(kQwen25Template,
                   {{"system", "Be brief."},
                    {"user", "Q1"},
                    {"assistant", "A1"},
                    {"tool", "42"},
                    {"tool", "43"},
                    {"user", "Q2"}},
                   false),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nQ1<|im_end|>\n"
            "<|im_start|>assistant\nA1<|im_end|>\n<|im_start|>user\n<tool_response>\n42\n"
            "</tool_response>\n<tool_response>\n43\n</tool_response><|im_end|>\n"
            "<|im_start|>user\nQ2<|im_end|>\n");
}

constexpr char kLlama2Template[] =
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set "
    "system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set "
    "system_message = false %}{% endif %}{% for message in loop_messages %}{% if "
    "(message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation "
    "roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if loop.index0 == 0 "
    "and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + "
    "'\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% "
    "endif %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' "
    "[/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + "
    "eos_token }}{% endif %}{% endfor %}";

TEST(ChatTemplate, Llama2) {
  // strip() applies to the whole content, so the user's leading space survives after <</SYS>>.
  EXPECT_EQ(
      Render(kLlama2Template,
             {{"system", "Be exact."}, {"user", " Hi "}, {"assistant", "Hello."}, {"user", "Sum?"}},
             false, "<s>", "</s>"),
      "<s>[INST] <<SYS>>\nBe exact.\n<</SYS>>\n\n Hi [/INST] Hello. </s><s>[INST] Sum? [/INST]");
  EXPECT_EQ(Render(kLlama2Template, {{"user", "a"}, {"user", "b"}}, false, "<s>", "</s>"),
            "RENDER ERROR: chat template raised: Conversation roles must alternate "
            "user/assistant/user/assistant/...");
}

constexpr char kLlama3Template[] =
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | "
    "trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% "
    "endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ "
    "'<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}";

TEST(ChatTemplate, Llama3) {
  EXPECT_EQ(Render(kLlama3Template, {{"system", "S"}, {"user", "  Net income?\n"}}, true,
                   "<|begin_of_text|>", "<|eot_id|>"),
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nS<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nNet income?<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
}

constexpr char kMistralTemplate[] =
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != "
    "(loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate "
    "user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] "
    "' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ "
    "message['content'] + eos_token + ' ' }}{% else %}{{ raise_exception('Only user and assistant "
    "roles are supported!') }}{% endif %}{% endfor %}";

TEST(ChatTemplate, Mistral) {
  EXPECT_EQ(Render(kMistralTemplate, {{"user", "Hi"}, {"assistant", "Hello"}, {"user", "Q"}}, false,
                   "<s>", "</s>"),
            "<s>[INST] Hi [/INST]Hello</s> [INST] Q [/INST]");
  EXPECT_EQ(Render(kMistralTemplate, {{"system", "x"}}, false, "<s>", "</s>"),
            "RENDER ERROR: chat template raised: Conversation roles must alternate "
            "user/assistant/user/assistant/...");
}

TEST(ChatTemplate, WhitespaceControlTrimBlocksAndLstripBlocks) {
  // trim_blocks eats the newline after a block tag; lstrip_blocks the indentation before it.
  EXPECT_EQ(Render("{% for m in messages %}\n  {% if true %}\n[{{ m.role }}]\n  {% endif %}\n{% "
                   "endfor %}\nend",
                   {{"a", ""}, {"b", ""}}, false),
            "[a]\n[b]\nend");
  EXPECT_EQ(Render("x  {%- if true -%}  y  {%- endif %}", {}, false), "xy");
  EXPECT_EQ(Render("a {{ 'b' }} {% if true %}c{% endif %}", {}, false), "a b c");
  EXPECT_EQ(Render("{# comment #}\nq{{- ' r ' -}} s", {}, false), "q r s");
  EXPECT_EQ(Render("  {%+ if true %}k{% endif %}", {}, false), "  k");
}

TEST(ChatTemplate, ExpressionsFiltersTestsAndLoops) {
  const std::vector<ChatMessage> two = {{"user", " a "}, {"assistant", "b"}};
  EXPECT_EQ(Render("{% for m in messages %}{{ loop.index }}/{{ loop.index0 }}/{{ loop.length }}"
                   "{{ '^' if loop.first }}{{ '$' if loop.last }};{% endfor %}",
                   two, false),
            "1/0/2^;2/1/2$;");
  EXPECT_EQ(
      Render("{% set ns = namespace(n=0, s='') %}{% for m in messages %}{% set ns.n = ns.n + 1 %}"
             "{% set ns.s = ns.s ~ m.role[0] %}{% endfor %}{{ ns.n }}{{ ns.s }}",
             two, false),
      "2ua");
  // A plain set inside a loop does not leak out of it (Jinja scoping).
  EXPECT_EQ(Render("{% set x = 1 %}{% for m in messages %}{% set x = 5 %}{% endfor %}{{ x }}", two,
                   false),
            "1");
  EXPECT_EQ(Render("{{ messages[0].content | trim | upper }}|{{ messages[0]['content'].strip() }}|"
                   "{{ messages | length }}|{{ 'x' in 'axb' }}|{{ 'z' not in ['z'] }}",
                   two, false),
            "A|a|2|True|False");
  EXPECT_EQ(Render("{{ undefined_var is defined }}{{ none is none }}{{ 'a' is string }}"
                   "{{ undefined_var | default('dflt') }}{{ 3 is not string }}",
                   {}, false),
            "FalseTrueTruedfltTrue");
  EXPECT_EQ(Render("{{ {'b': [1, 2.5, none, true], 'a': 'é\"'} | tojson }}", {}, false),
            "{\"b\": [1, 2.5, null, true], \"a\": \"é\\\"\"}");
  EXPECT_EQ(Render("{{ messages[1:] | length }}{{ messages[-1].role }}{{ 'abc'[::-1] }}"
                   "{{ 7 // 2 }}{{ -7 % 3 }}{{ 1 + 2 * 3 }}{{ (1 + 2) * 3 }}",
                   two, false),
            "1assistantcba3279");
  EXPECT_EQ(
      Render("{% if 1 > 2 %}a{% elif 'x'.startswith('x') and not false %}b{% else %}c{% endif %}",
             {}, false),
      "b");
  EXPECT_EQ(
      Render("{% for m in messages if m.role == 'assistant' %}{{ m.content }}{% endfor %}"
             "{% for i in range(5) %}{% if i == 3 %}{% break %}{% endif %}{{ i }}{% endfor %}",
             two, false),
      "b012");
  EXPECT_EQ(Render("{{ messages | selectattr('role', 'equalto', 'user') | map(attribute='role') | "
                   "join(',') }}",
                   two, false),
            "user");
}

TEST(ChatTemplate, SyntaxErrorsFailAtCompileUnknownNamesWhenEvaluatedNamingThem) {
  struct Bad {
    const char* source;
    const char* named;
  };
  // Syntax errors fail at compile, naming the construct.
  for (const Bad& bad :
       {Bad{"{% include 'x' %}", "include"}, Bad{"{% if x %}never closed", "endif"},
        Bad{"{{ 'unterminated }}", "never closed"}}) {
    auto compiled = ChatTemplate::Compile(bad.source);
    ASSERT_FALSE(compiled.ok()) << bad.source;
    EXPECT_NE(compiled.status().message().find(bad.named), std::string::npos)
        << bad.source << " -> " << compiled.status().message();
  }
  // Unknown filters, tests and methods fail only when evaluated, as in Jinja2: a branch that
  // never runs does not stop the template (Llama 3.1's `reject` case).
  for (const Bad& bad :
       {Bad{"{{ x | wordwrap }}", "wordwrap"}, Bad{"{{ x is frobnicated }}", "frobnicated"},
        Bad{"{{ 'a'.zfillz(3) }}", "undefined"}}) {
    auto compiled = ChatTemplate::Compile(bad.source);
    ASSERT_TRUE(compiled.ok()) << bad.source << " -> " << compiled.status();
    auto rendered = compiled->Render({}, false, "", "");
    ASSERT_FALSE(rendered.ok()) << bad.source;
    EXPECT_NE(rendered.status().message().find(bad.named), std::string::npos)
        << bad.source << " -> " << rendered.status().message();
    auto guarded =
        ChatTemplate::Compile(std::string("{% if false %}") + bad.source + "{% endif %}ok");
    ASSERT_TRUE(guarded.ok());
    EXPECT_EQ(*guarded->Render({}, false, "", ""), "ok");
  }
  // A macro is supported now.
  auto macro = ChatTemplate::Compile(
      "{% macro f(a, b='2') %}{{ a }}{{ b }}{% endmacro %}{{ f(1) }}{{ f(3, b=4) }}");
  ASSERT_TRUE(macro.ok()) << macro.status();
  EXPECT_EQ(*macro->Render({}, false, "", ""), "1234");
}

TEST(ChatTemplateConfig, ListFormTakesDefaultAndTokensMayBeObjects) {
  const std::string dir =
      (std::filesystem::temp_directory_path() / ("attnscope-cfg-" + std::to_string(getpid())))
          .string();
  std::filesystem::create_directories(dir);
  std::ofstream(dir + "/tokenizer_config.json")
      << R"({"chat_template": [{"name": "tool_use", "template": "T"},
                                {"name": "default", "template": "{{ bos_token }}D{{ eos_token }}"}],
             "bos_token": {"content": "<s>", "lstrip": false}, "eos_token": "</s>"})";
  auto config = LoadChatTemplateConfig(dir);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->bos_token, "<s>");
  auto rendered = config->chat_template->Render({}, false, config->bos_token, config->eos_token);
  ASSERT_TRUE(rendered.ok());
  EXPECT_EQ(*rendered, "<s>D</s>");
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace attnscope
