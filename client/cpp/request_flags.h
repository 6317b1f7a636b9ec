// The one flag parser of the command line: `capture` and `analyze`, in local (--model) and
// remote (--server) mode alike, turn their flags into one session::Request here. Local mode
// hands it to the session library in-process, remote mode converts it to the proto
// (server/session/request_proto.h); so the same flags mean the same request either way.
//
//   input (exactly one):  --ids 1,2,3 | --text "..." | --chat FILE.json
//                         --no-special (text is plain text) --no-generation-prompt (chat)
//                         --template-date 2025-01-15T09:30 (what the chat template's
//                         strftime_now() sees; default: the clock now; recorded in the capture)
//   generation:           --max-new-tokens N (default 32; 0: prompt only) --ignore-eos
//                         --greedy | --temperature X --top-p X --top-k N --seed N
//                         --repetition-penalty X --stop a,b --save-logits (local capture)
//   capture:              --layers all|0,5,-1 --heads all|0,-1
//                         --dtype float32|fp32|F32|float16|fp16|F16|bfloat16|bf16|BF16
//                         --rows all|prompt|generated
//   analysis:             --probe induction:N:SEED (replaces the input) --terms a,b
//                         --query a,b --query-positions N --top-k-keys N --top-terms N
//                         --per-head --term-submatrix --beginning-k N --self-threshold X
//                         --focused-entropy X   (0 or absent: the analyzer's default)
//
// The --chat file is JSON in Hugging Face's chat form (what `render-chat --messages` reads
// too): a list of messages, or {"messages": [...], "tools": [...], "documents": [...], and any
// other key as an extra template variable, e.g. "enable_thinking": false}. A message needs a
// string "role"; "content" may be a string, null or a list of parts; every other field
// (tool_calls with dict arguments, tool_call_id, name, ...) reaches the template unchanged.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "client/cpp/command.h"
#include "server/engine/engine.h"
#include "server/engine/prompt.h"
#include "server/session/request.h"

namespace attnscope::cli {

// The request flags above, as `attnscope capture|analyze --help` prints them.
inline constexpr char kRequestFlagsHelp[] =
    "input (exactly one):\n"
    "  --ids 1,2,3 | --text \"...\" | --chat FILE.json\n"
    "  --no-special            special-token spellings in --text are plain text\n"
    "  --no-generation-prompt  --chat: do not append the assistant prefix\n"
    "  --chat FILE.json: [{\"role\": \"user\", \"content\": \"...\"}, ...] or {\"messages\": "
    "[...]}\n"
    "generation:\n"
    "  --max-new-tokens N (default 32; 0: prompt only)  --ignore-eos  --stop a,b\n"
    "  --greedy (default) | --temperature X --top-p X --top-k N --seed N\n"
    "  --repetition-penalty X\n";
inline constexpr char kCaptureFlagsHelp[] =
    "capture:\n"
    "  --layers all|0,5,-1  --heads all|0,-1  --rows all|prompt|generated\n"
    "  --dtype float32|fp32|F32|float16|fp16|F16|bfloat16|bf16|BF16\n";
inline constexpr char kAnalysisFlagsHelp[] =
    "analysis (0 or absent: the analyzer's default):\n"
    "  --probe induction:N:SEED (replaces the input)  --layers all|0,-1  --heads all|0,-1\n"
    "  --terms a,b  --query a,b  --query-positions N  --top-k-keys N  --top-terms N\n"
    "  --per-head  --term-submatrix  --beginning-k N  --self-threshold X  --focused-entropy X\n"
    "  --json (the report as JSON)\n";
inline constexpr char kModeFlagsHelp[] =
    "mode (exactly one):\n"
    "  --model DIR [--device cpu|cuda[:N]] [--run-dtype float32|bfloat16|float16]\n"
    "              [--layer-devices cuda:0,cuda:1] [--save-logits]   (local, in-process)\n"
    "  --server HOST:PORT [--token KEY | $ATTNSCOPE_TOKEN] [--tls] [--tls-ca FILE]\n"
    "                     [--timeout SECONDS]                         (remote)\n";

// Flags that take no value, for every command that parses requests.
inline const std::vector<std::string> kRequestSwitches = {
    "greedy",     "save-logits",    "no-special", "tls",
    "ignore-eos", "json",           "quiet",      "no-generation-prompt",
    "per-head",   "term-submatrix", "help"};

// Reads a --chat file (format above). `flag` names the flag in errors ("--chat").
absl::StatusOr<PromptInput> ReadChatFile(const std::string& flag, const std::string& path);

// --ids | --text | --chat with --no-special and --no-generation-prompt.
absl::StatusOr<PromptInput> ParseInputFlags(Flags& flags);

// Input, generation and capture flags (`capture`).
absl::StatusOr<session::Request> ParseCaptureFlags(Flags& flags);

// Input (or --probe), generation and analysis flags (`analyze`). Capture-only flags (--dtype,
// --rows) are accepted and ignored: analysis reads every row in float32.
absl::StatusOr<session::Request> ParseAnalyzeFlags(Flags& flags);

// The analysis flags alone (`analyze --from FILE`).
absl::StatusOr<session::AnalysisSpec> ParseAnalysisFlags(Flags& flags);

// Local mode's model: --model DIR (required) --device cpu|cuda[:N] --run-dtype
// float32|bfloat16|float16 --layer-devices cuda:0,cuda:1.
absl::StatusOr<EngineOptions> ParseEngineFlags(Flags& flags);

}  // namespace attnscope::cli
