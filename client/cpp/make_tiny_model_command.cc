// attnscope make-tiny-model DIR [--seed S]: writes the embedded default model.
#include <iostream>

#include "absl/strings/numbers.h"
#include "client/cpp/command.h"
#include "server/model/tiny_model.h"

namespace attnscope::cli {
namespace {

int RunMakeTinyModel(const std::vector<std::string>& args) {
  Flags flags(args, {"no-tokenizer"});
  if (flags.positionals().size() != 1)
    return Fail("make-tiny-model", "usage: attnscope make-tiny-model DIR [--seed S]");
  uint64_t seed = 0;
  if (flags.Has("seed") && !absl::SimpleAtoi(flags.Get("seed"), &seed)) {
    return Fail("make-tiny-model",
                "--seed must be a non-negative integer, got '" + flags.Get("seed") + "'");
  }
  TinyModelShape shape;
  shape.with_tokenizer = !flags.Has("no-tokenizer");
  for (const auto& unknown : flags.Unread())
    return Fail("make-tiny-model", "unknown flag " + unknown);
  const std::string dir = flags.positionals()[0];
  if (auto status = WriteTinyModel(dir, seed, shape); !status.ok()) {
    return Fail("make-tiny-model", std::string(status.message()));
  }
  std::cout << "wrote tiny Qwen2 model (random weights, seed " << seed << ") to " << dir << "\n";
  return 0;
}

}  // namespace

ATTNSCOPE_REGISTER_COMMAND("make-tiny-model", "write the embedded default model (random weights)",
                           RunMakeTinyModel);

}  // namespace attnscope::cli
