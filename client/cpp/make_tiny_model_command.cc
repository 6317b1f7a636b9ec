// attnscope make-tiny-model DIR [--seed S] [--no-tokenizer] [--layers N] [--heads N]
//   [--kv-heads N] [--hidden N] [--intermediate N] [--vocab N]: writes the embedded default
//   model, or a random-weight model of another shape (e.g. the organism's, as a baseline).
#include <iostream>
#include <utility>

#include "absl/strings/numbers.h"
#include "client/cpp/command.h"
#include "server/model/tiny_model.h"

namespace attnscope::cli {
namespace {

constexpr char kUsage[] =
    "usage: attnscope make-tiny-model DIR [--seed S] [--no-tokenizer] [--layers N] [--heads N] "
    "[--kv-heads N] [--hidden N] [--intermediate N] [--vocab N]";

int RunMakeTinyModel(const std::vector<std::string>& args) {
  Flags flags(args, {"no-tokenizer"});
  if (flags.positionals().size() != 1) return Fail("make-tiny-model", kUsage);
  uint64_t seed = 0;
  if (flags.Has("seed") && !absl::SimpleAtoi(flags.Get("seed"), &seed)) {
    return Fail("make-tiny-model",
                "--seed must be a non-negative integer, got '" + flags.Get("seed") + "'");
  }
  TinyModelShape shape;
  shape.with_tokenizer = !flags.Has("no-tokenizer");
  // Bounded so a typo cannot ask for gigabytes of random weights.
  const std::pair<const char*, int*> sizes[] = {{"layers", &shape.num_layers},
                                                {"heads", &shape.num_heads},
                                                {"kv-heads", &shape.num_kv_heads},
                                                {"hidden", &shape.hidden_size},
                                                {"intermediate", &shape.intermediate_size},
                                                {"vocab", &shape.vocab_size}};
  for (const auto& [name, value] : sizes) {
    if (!flags.Has(name)) continue;
    const std::string text = flags.Get(name);
    if (!absl::SimpleAtoi(text, value) || *value < 1 || *value > 65536) {
      return Fail("make-tiny-model", std::string("--") + name +
                                         " must be an integer in [1, 65536], got '" + text + "'");
    }
  }
  if (shape.num_heads % shape.num_kv_heads != 0 || shape.hidden_size % shape.num_heads != 0 ||
      (shape.hidden_size / shape.num_heads) % 2 != 0) {
    return Fail("make-tiny-model",
                "--heads must be a multiple of --kv-heads and divide --hidden "
                "into an even head size");
  }
  if (shape.with_tokenizer && shape.vocab_size < 259) {
    return Fail("make-tiny-model",
                "--vocab must be at least 259 for the byte-level tokenizer (or --no-tokenizer)");
  }
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
ATTNSCOPE_COMMAND_USAGE("make-tiny-model", RunMakeTinyModel,
                        "usage: attnscope make-tiny-model DIR [--seed S] [--no-tokenizer]\n");

}  // namespace attnscope::cli
