// attnscope tokenize --tokenizer DIR [--jsonl FILE | TEXT] [--no-special]
// Prints one JSON object per input: {"ids": [...], "tokens": [...], "spans": [[b, e], ...]}.
#include <fstream>
#include <iostream>

#include "client/cpp/command.h"
#include "nlohmann/json.hpp"
#include "server/tokenizer/tokenizer.h"

#ifdef ATTNSCOPE_WITH_GRPC
#include "client/cpp/remote/request_flags.h"
#endif

namespace attnscope::cli {
namespace {

constexpr char kName[] = "tokenize";

std::string EncodingJson(const Encoding& encoding) {
  nlohmann::ordered_json out;
  out["ids"] = encoding.ids;
  out["tokens"] = encoding.tokens;
  nlohmann::json spans = nlohmann::json::array();
  for (const auto& [begin, end] : encoding.spans) spans.push_back({begin, end});
  out["spans"] = spans;
  return out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

int RunTokenize(const std::vector<std::string>& args) {
  Flags flags(args, {"no-special", "no-generation-prompt", "tls"});
  if (flags.Has("server")) {
#ifdef ATTNSCOPE_WITH_GRPC
    return remote::RunRemoteTokenize(flags);
#else
    return Fail(kName, "--server: this build has no gRPC (configure with ATTNSCOPE_WITH_GRPC=ON)");
#endif
  }
  const std::string dir = flags.Get("tokenizer");
  const std::string jsonl = flags.Get("jsonl");
  const bool parse_special = !flags.Has("no-special");
  if (!flags.error().empty()) return Fail(kName, flags.error());
  if (!flags.Unread().empty()) return Fail(kName, "unknown flag " + flags.Unread().front());
  if (dir.empty()) return Fail(kName, "--tokenizer DIR is required");
  if (jsonl.empty() == flags.positionals().empty()) {
    return Fail(kName,
                "give either --jsonl FILE or the TEXT to tokenize (usage: attnscope "
                "tokenize --tokenizer DIR [--jsonl FILE | TEXT] [--no-special])");
  }
  auto tokenizer = LoadTokenizer(dir);
  if (!tokenizer.ok()) return Fail(kName, std::string(tokenizer.status().message()));
  auto encode_and_print = [&](const std::string& text, const std::string& where) {
    auto encoding = (*tokenizer)->Encode(text, parse_special);
    if (!encoding.ok()) return Fail(kName, where + std::string(encoding.status().message()));
    std::cout << EncodingJson(*encoding) << "\n";
    return 0;
  };
  if (jsonl.empty()) {
    std::string text = flags.positionals()[0];
    for (size_t i = 1; i < flags.positionals().size(); ++i) text += " " + flags.positionals()[i];
    return encode_and_print(text, "");
  }
  std::ifstream in(jsonl, std::ios::binary);
  if (!in) return Fail(kName, "cannot open --jsonl file " + jsonl);
  std::string line;
  int line_number = 0;
  while (std::getline(in, line)) {
    ++line_number;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = jsonl + ":" + std::to_string(line_number) + ": ";
    std::string text;
    try {
      const auto object = nlohmann::json::parse(line);
      if (!object.is_object() || !object.contains("text") || !object["text"].is_string()) {
        return Fail(kName, where + "expected an object with a string field \"text\"");
      }
      text = object["text"].get<std::string>();
    } catch (const nlohmann::json::exception& e) {
      return Fail(kName, where + "bad JSON: " + e.what());
    }
    if (int rc = encode_and_print(text, where); rc != 0) return rc;
  }
  return 0;
}

}  // namespace

ATTNSCOPE_REGISTER_COMMAND("tokenize",
                           "print ids, display tokens and byte spans of text (--tokenizer DIR)",
                           RunTokenize);
ATTNSCOPE_COMMAND_USAGE("tokenize", RunTokenize,
                        "usage: attnscope tokenize --tokenizer DIR [--jsonl FILE | TEXT] "
                        "[--no-special]\n       attnscope tokenize --server HOST:PORT (TEXT | "
                        "--ids 1,2 | --chat FILE.json) [--no-special] [--no-generation-prompt]\n");

}  // namespace attnscope::cli
