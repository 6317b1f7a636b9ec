// libFuzzer entry point: arbitrary bytes as a tokenizer.json. Loading must fail cleanly or
// give a tokenizer whose Encode/Decode never crash and whose spans stay inside the text.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "server/tokenizer/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string input(reinterpret_cast<const char*>(data), size);
  auto tokenizer = attnscope::LoadBpeTokenizerFromJson(input, "fuzz.json");
  if (!tokenizer.ok()) return 0;
  for (const std::string& text :
       {std::string("Net sales rose 12% to $1,234.<|im_end|> caf\xC3\xA9 e\xCC\x81 \xE6\x97\xA5"),
        input.substr(0, 256), std::string(300, 'a')}) {
    for (bool special : {true, false}) {
      auto encoding = (*tokenizer)->Encode(text, special);
      if (!encoding.ok()) continue;
      for (const auto& [begin, end] : encoding->spans) {
        if (begin < 0 || end < begin || end > static_cast<int64_t>(text.size())) std::abort();
      }
      (*tokenizer)->Decode(encoding->ids, !special);
    }
  }
  for (int64_t id : {int64_t{-1}, int64_t{0}, (*tokenizer)->vocab_size()}) {
    (*tokenizer)->TokenString(id);
    (*tokenizer)->IsSpecial(id);
  }
  return 0;
}
