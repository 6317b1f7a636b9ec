// attnscope capture: generate while capturing the full causal attention matrix of the chosen
// layers and heads, and write it to a safetensors capture file (see server/capture/capture_file.h).
// Local mode runs the session library in-process; --server sends the same request to a server.
#include <cstdio>
#include <iostream>

#include "absl/strings/str_format.h"
#include "client/cpp/command.h"
#include "client/cpp/request_flags.h"
#include "server/engine/capture_file_observer.h"
#include "server/session/prepare.h"
#include "server/session/session.h"

#ifdef ATTNSCOPE_WITH_GRPC
#include "client/cpp/remote/request_flags.h"
#endif

namespace attnscope::cli {
namespace {

constexpr char kCommand[] = "capture";

int Failed(const absl::Status& status) { return Fail(kCommand, std::string(status.message())); }

int RunCapture(const std::vector<std::string>& args) {
  Flags flags(args, kRequestSwitches);
  const std::string out = flags.Get("out");
  if (out.empty()) return Fail(kCommand, "--out FILE.safetensors is required");
  if (flags.Has("server")) {
#ifdef ATTNSCOPE_WITH_GRPC
    return remote::RunRemoteCapture(flags);
#else
    return Fail(kCommand,
                "--server: this build has no gRPC (configure with ATTNSCOPE_WITH_GRPC=ON)");
#endif
  }
  absl::StatusOr<session::Request> request = ParseCaptureFlags(flags);
  if (!request.ok()) return Failed(request.status());
  const bool quiet = flags.Has("quiet");
  absl::StatusOr<EngineOptions> options = ParseEngineFlags(flags);
  if (!options.ok()) return Failed(options.status());
  for (const auto& unknown : flags.Unread()) return Fail(kCommand, "unknown flag " + unknown);
  absl::StatusOr<std::unique_ptr<session::LoadedModel>> model = session::LoadModel(*options);
  if (!model.ok()) return Failed(model.status());
  absl::StatusOr<session::PreparedGeneration> prepared =
      session::PrepareGeneration(*request, **model, session::RequestLimits::Unbounded());
  if (!prepared.ok()) return Failed(prepared.status());

  // Preallocated for the longest sequence the request can produce.
  CaptureFileObserver observer(
      prepared->capture, static_cast<int>(SequencePositions(prepared->prompt.ids.size(),
                                                            prepared->params.max_new_tokens)));
  absl::StatusOr<session::CaptureOutcome> outcome =
      session::RunCapture(**model, *prepared, &observer);
  if (!outcome.ok()) return Failed(outcome.status());
  const GenerationResult& result = outcome->result;
  absl::Status written = observer.assembler().Write(
      out, result.token_ids, outcome->metadata,
      prepared->params.save_logits ? &result.logits : nullptr, (*model)->config.vocab_size);
  if (!written.ok()) return Failed(written);
  if (!quiet) {
    const int total = static_cast<int>(result.token_ids.size());
    std::cout << absl::StrFormat(
        "wrote %s: %d tokens (%d prompt + %d generated, stop: %s), %d layers x %d heads, %s\n"
        "prefill %.3f s, decode %.3f s\n",
        out, total, result.prompt_length, total - result.prompt_length, result.stop_reason,
        prepared->capture.layers.size(), prepared->capture.heads.size(),
        DTypeName(prepared->capture.dtype), result.prefill_seconds, result.decode_seconds);
    if (!outcome->generated_text.empty()) {
      std::cout << "generated: " << outcome->generated_text << "\n";
    }
  }
  return 0;
}

}  // namespace

ATTNSCOPE_REGISTER_COMMAND("capture", "generate and capture attention into a safetensors file",
                           RunCapture);
ATTNSCOPE_COMMAND_USAGE("capture", RunCapture,
                        std::string("usage: attnscope capture (--model DIR | --server HOST:PORT) "
                                    "INPUT [flags] --out FILE.safetensors [--quiet]\n\n") +
                            kModeFlagsHelp + kRequestFlagsHelp + kCaptureFlagsHelp);

}  // namespace attnscope::cli
