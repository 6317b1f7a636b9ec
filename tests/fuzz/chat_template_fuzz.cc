// libFuzzer entry point: arbitrary bytes as a Jinja chat template. Compile must fail cleanly
// or give a template whose Render returns output or an error, never a crash or a hang.
#include <cstddef>
#include <cstdint>
#include <string>

#include "server/tokenizer/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string source(reinterpret_cast<const char*>(data), size);
  auto compiled = attnscope::ChatTemplate::Compile(source);
  if (!compiled.ok()) return 0;
  const std::vector<attnscope::ChatMessage> messages = {{"system", "You are a financial analyst."},
                                                        {"user", " Revenue {{ 1 }} {% if %} "},
                                                        {"assistant", "Up 12%."},
                                                        {"user", ""}};
  for (bool add_generation_prompt : {false, true}) {
    (void)compiled->Render(messages, add_generation_prompt, "<s>", "</s>");
    (void)compiled->Render({}, add_generation_prompt, "", "");
  }
  return 0;
}
