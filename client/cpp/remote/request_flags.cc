#include "client/cpp/remote/request_flags.h"

#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "analysis/report.h"
#include "nlohmann/json.hpp"

namespace attnscope::remote {
namespace {

std::vector<std::string> CommaList(const std::string& text) {
  return absl::StrSplit(text, ',', absl::SkipEmpty());
}

// "all" / "" -> empty (the server's "all"); otherwise integers, negatives from the end.
absl::StatusOr<std::vector<int>> IndexList(const std::string& flag, const std::string& text) {
  std::vector<int> indices;
  if (text.empty() || text == "all") return indices;
  for (const std::string& part : CommaList(text)) {
    int value = 0;
    if (!absl::SimpleAtoi(part, &value)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--", flag, ": '", part, "' is not an integer (use all or 0,5,-1)"));
    }
    indices.push_back(value);
  }
  return indices;
}

absl::StatusOr<v1::ChatMessages> ReadChat(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("--chat: cannot open ", path));
  std::stringstream text;
  text << in.rdbuf();
  v1::ChatMessages chat;
  try {
    const nlohmann::json messages = nlohmann::json::parse(text.str());
    if (!messages.is_array()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--chat ", path, ": expected a JSON list of {role, content}"));
    }
    for (size_t i = 0; i < messages.size(); ++i) {
      const nlohmann::json& m = messages[i];
      if (!m.is_object() || !m.contains("role") || !m.contains("content") ||
          !m["role"].is_string() || !m["content"].is_string()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "--chat ", path, ": message ", i, " must be {\"role\": str, \"content\": str}"));
      }
      v1::ChatMessage* message = chat.add_messages();
      message->set_role(m["role"].get<std::string>());
      message->set_content(m["content"].get<std::string>());
    }
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("--chat ", path, ": bad JSON: ", e.what()));
  }
  return chat;
}

// Fills the oneof input, plain_text and generation of a Generate/Analyze request.
template <typename Request>
absl::Status FillInputAndGeneration(cli::Flags& flags, Request* request) {
  const int inputs = flags.Has("ids") + flags.Has("text") + flags.Has("chat");
  if (inputs != 1) return absl::InvalidArgumentError("give exactly one of --ids, --text, --chat");
  if (flags.Has("ids")) {
    for (const std::string& part : CommaList(flags.Get("ids"))) {
      int64_t id = 0;
      if (!absl::SimpleAtoi(part, &id)) {
        return absl::InvalidArgumentError(absl::StrCat("--ids: '", part, "' is not an integer"));
      }
      request->mutable_ids()->add_ids(id);
    }
  } else if (flags.Has("text")) {
    request->set_text(flags.Get("text"));
  } else {
    absl::StatusOr<v1::ChatMessages> chat = ReadChat(flags.Get("chat"));
    if (!chat.ok()) return chat.status();
    *request->mutable_messages() = *std::move(chat);
    request->mutable_messages()->set_no_generation_prompt(flags.Has("no-generation-prompt"));
  }
  request->set_plain_text(flags.Has("no-special"));

  v1::GenerationParams* params = request->mutable_generation();
  const int max_new_tokens = flags.GetInt("max-new-tokens", 32);
  if (max_new_tokens == 0) {
    params->set_prompt_only(true);
  } else {
    params->set_max_new_tokens(max_new_tokens);  // negative: the server names the error
  }
  const bool sampling = flags.Has("temperature") || flags.Has("top-p") || flags.Has("top-k");
  if (flags.Has("greedy") && sampling) {
    return absl::InvalidArgumentError(
        "--greedy conflicts with --temperature/--top-p/--top-k (those mean sampling)");
  }
  params->set_sample(sampling);
  params->set_ignore_eos(flags.Has("ignore-eos"));
  // Only flags the user gave are sent; absent ones stay 0, the wire's "default".
  if (flags.Has("temperature")) {
    params->set_temperature(static_cast<float>(flags.GetDouble("temperature", 1.0)));
  }
  if (flags.Has("top-p")) params->set_top_p(static_cast<float>(flags.GetDouble("top-p", 1.0)));
  params->set_top_k(flags.GetInt("top-k", 0));
  params->set_seed(static_cast<uint64_t>(flags.GetInt("seed", 0)));
  if (flags.Has("repetition-penalty")) {
    params->set_repetition_penalty(static_cast<float>(flags.GetDouble("repetition-penalty", 1.0)));
  }
  for (const std::string& stop : CommaList(flags.Get("stop"))) params->add_stop_strings(stop);
  if (!flags.error().empty()) return absl::InvalidArgumentError(flags.error());
  return absl::OkStatus();
}

int Fail(const std::string& command, const absl::Status& status) {
  return cli::Fail(command, std::string(status.message()));
}

// Flags not consumed by a remote command: local-only ones get a clearer message.
absl::Status CheckUnread(cli::Flags& flags) {
  for (const std::string& flag : flags.Unread()) {
    if (flag == "--model" || flag == "--device" || flag == "--run-dtype" ||
        flag == "--layer-devices" || flag == "--save-logits") {
      return absl::InvalidArgumentError(
          absl::StrCat(flag, " is a local-mode flag; with --server the server decides"));
    }
    return absl::InvalidArgumentError(absl::StrCat("unknown flag ", flag));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<RemoteTarget> TargetFromFlags(cli::Flags& flags) {
  RemoteTarget target;
  target.address = flags.Get("server");
  if (target.address.empty()) return absl::InvalidArgumentError("--server HOST:PORT is required");
  target.token = flags.Get("token");
  if (target.token.empty()) {
    const char* env = std::getenv("ATTNSCOPE_TOKEN");
    if (env != nullptr) target.token = env;
  }
  target.tls = flags.Has("tls");
  target.tls_ca_file = flags.Get("tls-ca");
  target.timeout_seconds = flags.GetDouble("timeout", 0);
  if (!flags.error().empty()) return absl::InvalidArgumentError(flags.error());
  return target;
}

absl::StatusOr<v1::GenerateRequest> GenerateRequestFromFlags(cli::Flags& flags) {
  v1::GenerateRequest request;
  absl::Status filled = FillInputAndGeneration(flags, &request);
  if (!filled.ok()) return filled;
  v1::CaptureSpec* capture = request.mutable_capture();
  absl::StatusOr<std::vector<int>> layers = IndexList("layers", flags.Get("layers", "all"));
  if (!layers.ok()) return layers.status();
  for (int layer : *layers) capture->add_layers(layer);
  absl::StatusOr<std::vector<int>> heads = IndexList("heads", flags.Get("heads", "all"));
  if (!heads.ok()) return heads.status();
  for (int head : *heads) capture->add_heads(head);
  const std::string dtype = flags.Get("dtype", "float32");
  if (dtype == "float32") {
    capture->set_dtype(v1::DTYPE_FLOAT32);
  } else if (dtype == "float16") {
    capture->set_dtype(v1::DTYPE_FLOAT16);
  } else if (dtype == "bfloat16") {
    capture->set_dtype(v1::DTYPE_BFLOAT16);
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("--dtype: '", dtype, "' is not float32, float16 or bfloat16"));
  }
  const std::string rows = flags.Get("rows", "all");
  if (rows == "all") {
    capture->set_rows(v1::ROWS_ALL);
  } else if (rows == "prompt") {
    capture->set_rows(v1::ROWS_PROMPT_ONLY);
  } else if (rows == "generated") {
    capture->set_rows(v1::ROWS_GENERATED_ONLY);
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("--rows: '", rows, "' is not all, prompt or generated"));
  }
  return request;
}

absl::StatusOr<v1::AnalyzeRequest> AnalyzeRequestFromFlags(cli::Flags& flags) {
  v1::AnalyzeRequest request;
  v1::AnalysisSpec* spec = request.mutable_analysis();
  if (flags.Has("probe")) {
    const std::vector<std::string> parts = absl::StrSplit(flags.Get("probe"), ':');
    int length = 0;
    uint64_t seed = 0;
    if (parts.size() != 3 || parts[0] != "induction" || !absl::SimpleAtoi(parts[1], &length) ||
        !absl::SimpleAtoi(parts[2], &seed) || length < 2) {
      return absl::InvalidArgumentError(
          absl::StrCat("--probe: '", flags.Get("probe"), "' is not induction:N:SEED with N >= 2"));
    }
    if (flags.Has("ids") || flags.Has("text") || flags.Has("chat")) {
      return absl::InvalidArgumentError("--probe replaces the input: drop --ids/--text/--chat");
    }
    spec->mutable_induction_probe()->set_length(length);
    spec->mutable_induction_probe()->set_seed(seed);
  } else {
    absl::Status filled = FillInputAndGeneration(flags, &request);
    if (!filled.ok()) return filled;
  }
  absl::StatusOr<std::vector<int>> layers = IndexList("layers", flags.Get("layers", "all"));
  if (!layers.ok()) return layers.status();
  for (int layer : *layers) spec->add_layers(layer);
  absl::StatusOr<std::vector<int>> heads = IndexList("heads", flags.Get("heads", "all"));
  if (!heads.ok()) return heads.status();
  for (int head : *heads) spec->add_heads(head);
  if (flags.Has("terms")) {
    for (const std::string& term : CommaList(flags.Get("terms"))) spec->add_terms(term);
  }
  for (const std::string& query : CommaList(flags.Get("query"))) spec->add_queries(query);
  spec->set_query_positions(flags.GetInt("query-positions", 0));
  spec->set_top_k(flags.GetInt("top-k-keys", 0));
  spec->set_top_terms(flags.GetInt("top-terms", 0));
  spec->set_top_k_per_head(flags.Has("per-head"));
  spec->set_include_term_submatrix(flags.Has("term-submatrix"));
  spec->set_beginning_k(flags.GetInt("beginning-k", 0));
  spec->set_self_threshold(flags.GetDouble("self-threshold", 0));
  spec->set_focused_entropy_threshold(flags.GetDouble("focused-entropy", 0));
  // Analysis always runs on float32 rows of every position; capture-only flags are accepted
  // and ignored, as in local mode.
  flags.Get("dtype");
  flags.Get("rows");
  if (!flags.error().empty()) return absl::InvalidArgumentError(flags.error());
  return request;
}

int RunRemoteCapture(cli::Flags& flags) {
  const char* kCommand = "capture";
  const std::string out = flags.Get("out");
  if (out.empty()) return cli::Fail(kCommand, "--out FILE.safetensors is required");
  const bool quiet = flags.Has("quiet");
  absl::StatusOr<RemoteTarget> target = TargetFromFlags(flags);
  if (!target.ok()) return Fail(kCommand, target.status());
  absl::StatusOr<v1::GenerateRequest> request = GenerateRequestFromFlags(flags);
  if (!request.ok()) return Fail(kCommand, request.status());
  if (absl::Status unread = CheckUnread(flags); !unread.ok()) return Fail(kCommand, unread);
  absl::StatusOr<RemoteCaptureSummary> summary =
      RemoteCapture(*target, *request, out, /*progress=*/!quiet);
  if (!summary.ok()) return Fail(kCommand, summary.status());
  if (!quiet) {
    const v1::Final& final = summary->final_message;
    const v1::ResolvedCapture& capture = summary->header.capture();
    const char* dtype = capture.dtype() == v1::DTYPE_FLOAT16    ? "float16"
                        : capture.dtype() == v1::DTYPE_BFLOAT16 ? "bfloat16"
                                                                : "float32";
    std::cout << absl::StrFormat(
        "wrote %s: %d tokens (%d prompt + %d generated, stop: %s), %d layers x %d heads, %s\n"
        "prefill %.3f s, decode %.3f s; received %.1f MB in %.2f s from %s (request %s)\n",
        out, final.prompt_tokens() + final.generated_tokens(), final.prompt_tokens(),
        final.generated_tokens(), final.stop_reason(), capture.layers_size(), capture.heads_size(),
        dtype, final.timings().prefill_seconds(), final.timings().decode_seconds(),
        summary->attention_bytes / 1e6, summary->seconds, target->address,
        summary->header.request_id());
    if (!final.generated_text().empty()) {
      std::cout << "generated: " << final.generated_text() << "\n";
    }
  }
  return 0;
}

int RunRemoteAnalyze(cli::Flags& flags) {
  const char* kCommand = "analyze";
  const bool json = flags.Has("json");
  absl::StatusOr<RemoteTarget> target = TargetFromFlags(flags);
  if (!target.ok()) return Fail(kCommand, target.status());
  absl::StatusOr<v1::AnalyzeRequest> request = AnalyzeRequestFromFlags(flags);
  if (!request.ok()) return Fail(kCommand, request.status());
  if (absl::Status unread = CheckUnread(flags); !unread.ok()) return Fail(kCommand, unread);
  absl::StatusOr<v1::AnalyzeResponse> response = RemoteAnalyze(*target, *request);
  if (!response.ok()) return Fail(kCommand, response.status());
  nlohmann::json document;
  try {
    document = nlohmann::json::parse(response->report_json());
  } catch (const nlohmann::json::exception& e) {
    return cli::Fail(kCommand, absl::StrCat("the server's report_json is not JSON: ", e.what()));
  }
  if (json) {
    std::cout << document.dump(1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
    return 0;
  }
  // The same tables as local mode, from the same report.
  absl::StatusOr<analysis::HeadReport> report = analysis::ReportFromJson(document);
  if (!report.ok()) return Fail(kCommand, report.status());
  std::cout << analysis::FormatReportText(*report);
  return 0;
}

int RunRemoteTokenize(cli::Flags& flags) {
  const char* kCommand = "tokenize";
  absl::StatusOr<RemoteTarget> target = TargetFromFlags(flags);
  if (!target.ok()) return Fail(kCommand, target.status());
  v1::TokenizeRequest request;
  request.set_plain_text(flags.Has("no-special"));
  if (flags.Has("ids")) {
    for (const std::string& part : CommaList(flags.Get("ids"))) {
      int64_t id = 0;
      if (!absl::SimpleAtoi(part, &id)) {
        return cli::Fail(kCommand, absl::StrCat("--ids: '", part, "' is not an integer"));
      }
      request.mutable_ids()->add_ids(id);
    }
  } else if (flags.Has("chat")) {
    absl::StatusOr<v1::ChatMessages> chat = ReadChat(flags.Get("chat"));
    if (!chat.ok()) return Fail(kCommand, chat.status());
    *request.mutable_messages() = *std::move(chat);
    request.mutable_messages()->set_no_generation_prompt(flags.Has("no-generation-prompt"));
  } else {
    if (flags.positionals().empty()) {
      return cli::Fail(kCommand, "give the TEXT to tokenize (or --ids / --chat)");
    }
    std::string text = flags.positionals()[0];
    for (size_t i = 1; i < flags.positionals().size(); ++i) text += " " + flags.positionals()[i];
    request.set_text(text);
  }
  if (absl::Status unread = CheckUnread(flags); !unread.ok()) return Fail(kCommand, unread);
  absl::StatusOr<v1::TokenizeResponse> response = RemoteTokenize(*target, request);
  if (!response.ok()) return Fail(kCommand, response.status());
  nlohmann::ordered_json out;
  out["ids"] = std::vector<int64_t>(response->ids().begin(), response->ids().end());
  out["tokens"] = std::vector<std::string>(response->tokens().begin(), response->tokens().end());
  nlohmann::json spans = nlohmann::json::array();
  for (const v1::TokenSpan& span : response->spans()) spans.push_back({span.start(), span.end()});
  out["spans"] = spans;
  std::cout << out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
  return 0;
}

}  // namespace attnscope::remote
