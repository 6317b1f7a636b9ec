// The command line's flags turned into attnscope.v1 requests, with the same names and
// meanings as local mode (client/cpp/generation_flags.h):
//   --ids 1,2,3 | --text "..." | --chat messages.json   (one input; JSON list of {role, content})
//   --no-special  --no-generation-prompt
//   --max-new-tokens N (default 32; 0 = prompt only)  --greedy | --temperature --top-p --top-k
//   --seed  --repetition-penalty  --stop a,b
//   --layers all|0,5,-1  --heads all|0,-1  --dtype float32|float16|bfloat16  --rows
//   all|prompt|generated
// plus the connection: --server HOST:PORT  --token KEY (or $ATTNSCOPE_TOKEN)  --tls
//   --tls-ca FILE  --timeout SECONDS.
#pragma once

#include "absl/status/statusor.h"
#include "attnscope/v1/attnscope.pb.h"
#include "client/cpp/command.h"
#include "client/cpp/remote/remote_client.h"

namespace attnscope::remote {

absl::StatusOr<RemoteTarget> TargetFromFlags(cli::Flags& flags);

// Input, generation and capture flags.
absl::StatusOr<v1::GenerateRequest> GenerateRequestFromFlags(cli::Flags& flags);

// Input and generation flags plus the analysis flags of `attnscope analyze`: --terms a,b
// --query a,b --query-positions N --top-k-keys N --top-terms N --per-head --term-submatrix
// --beginning-k N --self-threshold X --focused-entropy X --probe induction:N:SEED.
absl::StatusOr<v1::AnalyzeRequest> AnalyzeRequestFromFlags(cli::Flags& flags);

// Whole remote commands, for the command files to call when --server is given; each returns
// the process exit code and reports errors as `attnscope <command>: <message>`.
// capture: needs --out FILE; prints the same summary as local mode unless --quiet.
int RunRemoteCapture(cli::Flags& flags);
// analyze: with --json prints report_json (pretty-printed, as local --json does); without,
// the same text tables as local mode.
int RunRemoteAnalyze(cli::Flags& flags);
// tokenize: TEXT positional (or --ids), prints {"ids", "tokens", "spans"} like local mode.
int RunRemoteTokenize(cli::Flags& flags);

}  // namespace attnscope::remote
