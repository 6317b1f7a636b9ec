// The command line's remote mode (`capture|analyze|tokenize --server HOST:PORT`): the flags
// are parsed by the one parser local mode uses (client/cpp/request_flags.h), checked by the
// same model-free checks, converted to attnscope.v1 by server/session/request_proto.h and
// sent. Connection flags: --server HOST:PORT  --token KEY (or $ATTNSCOPE_TOKEN)  --tls
// --tls-ca FILE  --timeout SECONDS.
#pragma once

#include "absl/status/statusor.h"
#include "client/cpp/command.h"
#include "client/cpp/remote/remote_client.h"

namespace attnscope::remote {

absl::StatusOr<RemoteTarget> TargetFromFlags(cli::Flags& flags);

// Whole remote commands, for the command files to call when --server is given; each returns
// the process exit code and reports errors as `attnscope <command>: <message>`.
// capture: needs --out FILE; prints the same summary as local mode unless --quiet.
int RunRemoteCapture(cli::Flags& flags);
// analyze: with --json prints report_json (pretty-printed, as local --json does); without,
// the same text tables as local mode.
int RunRemoteAnalyze(cli::Flags& flags);
// tokenize: TEXT positional (or --ids / --chat), prints {"ids", "tokens", "spans"} like local
// mode.
int RunRemoteTokenize(cli::Flags& flags);

}  // namespace attnscope::remote
