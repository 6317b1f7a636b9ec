#include "client/cpp/remote/request_flags.h"

#include <cstdlib>
#include <iostream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "analysis/report.h"
#include "client/cpp/request_flags.h"
#include "nlohmann/json.hpp"
#include "server/session/request_proto.h"

namespace attnscope::remote {
namespace {

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

int RunRemoteCapture(cli::Flags& flags) {
  const char* kCommand = "capture";
  const std::string out = flags.Get("out");
  if (out.empty()) return cli::Fail(kCommand, "--out FILE.safetensors is required");
  const bool quiet = flags.Has("quiet");
  absl::StatusOr<RemoteTarget> target = TargetFromFlags(flags);
  if (!target.ok()) return Fail(kCommand, target.status());
  absl::StatusOr<session::Request> request = cli::ParseCaptureFlags(flags);
  if (!request.ok()) return Fail(kCommand, request.status());
  if (absl::Status unread = CheckUnread(flags); !unread.ok()) return Fail(kCommand, unread);
  if (request->generation.save_logits) {
    return cli::Fail(kCommand,
                     "--save-logits is a local-mode flag; with --server the server decides");
  }
  absl::StatusOr<RemoteCaptureSummary> summary =
      RemoteCapture(*target, session::ToGenerateRequest(*request), out, /*progress=*/!quiet);
  if (!summary.ok()) return Fail(kCommand, summary.status());
  if (!quiet) {
    const v1::Final& final = summary->final_message;
    const v1::ResolvedCapture& capture = summary->header.capture();
    absl::StatusOr<DType> wire_dtype =
        session::FromWireDType(capture.dtype(), "header.capture.dtype");
    const char* dtype = wire_dtype.ok() ? DTypeName(*wire_dtype) : "?";
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
  absl::StatusOr<session::Request> request = cli::ParseAnalyzeFlags(flags);
  if (!request.ok()) return Fail(kCommand, request.status());
  if (absl::Status unread = CheckUnread(flags); !unread.ok()) return Fail(kCommand, unread);
  if (request->generation.save_logits) {
    return cli::Fail(kCommand,
                     "--save-logits is a local-mode flag; with --server the server decides");
  }
  absl::StatusOr<v1::AnalyzeResponse> response =
      RemoteAnalyze(*target, session::ToAnalyzeRequest(*request));
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
  session::Request input_request;
  if (flags.Has("ids") || flags.Has("chat")) {
    absl::StatusOr<PromptInput> input = cli::ParseInputFlags(flags);
    if (!input.ok()) return Fail(kCommand, input.status());
    input_request.input = *std::move(input);
  } else {
    if (flags.positionals().empty()) {
      return cli::Fail(kCommand, "give the TEXT to tokenize (or --ids / --chat)");
    }
    PromptInput input;
    input.kind = PromptInput::Kind::kText;
    input.text = flags.positionals()[0];
    for (size_t i = 1; i < flags.positionals().size(); ++i)
      input.text += " " + flags.positionals()[i];
    input.parse_special_tokens = !flags.Has("no-special");
    flags.Has("no-generation-prompt");
    input_request.input = std::move(input);
  }
  const v1::TokenizeRequest request = session::ToTokenizeRequest(input_request);
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
