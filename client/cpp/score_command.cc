// attnscope score / attnscope sweep: log-probabilities of candidate continuations after the
// input, under causal interventions, and single-head ablation sweeps; local (--model) or
// remote (--server, ScoreAnswers). Both modes parse the same flags into the same engine types
// and print the same JSON (server/engine/interventions.h), so their numbers are identical.
//
//   attnscope score (--model DIR | --server ADDR) <input flags>
//       (--candidates increase,decrease | --candidate-ids "1,2;3")
//       [--ablate L:H[,H...][:zero|mean]]... [--knockout L:H[,H...]:ROWS:KEYS]...
//       [--patch-from TEXT|ids:1,2,3 --patch L:H[,H...][:P,P...]]... [--json]
//   attnscope sweep (--model DIR | --server ADDR) <input flags> --candidates a,b
//       [--layers all|0,5,-1] [--heads all|0,1] [--mode zero|mean] [--json]
//
// ROWS: all | generated | B-E (positions [B, E)); KEYS: comma list of positions and/or words
// of the input (terms, matched as `analyze --terms` matches them).
#include <unistd.h>

#include <cstdio>
#include <iostream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "client/cpp/command.h"
#include "client/cpp/request_flags.h"
#include "server/engine/interventions.h"
#include "server/session/prepare.h"
#include "server/session/prepare_score.h"
#include "server/session/session.h"

#ifdef ATTNSCOPE_WITH_GRPC
#include "client/cpp/remote/remote_client.h"
#include "client/cpp/remote/request_flags.h"
#include "server/session/intervention_wire.h"
#include "server/session/request_proto.h"
#endif

namespace attnscope::cli {
namespace {

// Flags that may be given several times; Flags keeps one value per name.
const std::vector<std::string> kRepeated = {"ablate", "knockout", "patch"};

absl::StatusOr<std::vector<int>> IntList(const std::string& flag, const std::string& text) {
  std::vector<int> values;
  if (text == "all") return values;
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipEmpty())) {
    int value = 0;
    if (!absl::SimpleAtoi(part, &value)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--", flag, ": '", std::string(part), "' is not an integer"));
    }
    values.push_back(value);
  }
  return values;
}

absl::StatusOr<std::vector<int64_t>> IdList(const std::string& flag, const std::string& text) {
  std::vector<int64_t> ids;
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipEmpty())) {
    int64_t id = 0;
    if (!absl::SimpleAtoi(part, &id)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--", flag, ": '", std::string(part), "' is not a token id"));
    }
    ids.push_back(id);
  }
  return ids;
}

struct ScoreFlags {
  std::vector<std::string> candidate_texts;         // --candidates
  std::vector<std::vector<int64_t>> candidate_ids;  // --candidate-ids
  std::vector<Intervention> interventions;
  bool has_patch_source = false;
  std::string patch_text;
  std::vector<int64_t> patch_ids;
  bool patch_is_ids = false;
  SweepSpec sweep;
  bool json = false;
};

absl::StatusOr<Intervention> ParseIntervention(const std::string& flag, const std::string& text) {
  const std::vector<std::string> parts = absl::StrSplit(text, ':');
  Intervention item;
  auto bad = [&](const std::string& why) {
    return absl::InvalidArgumentError(absl::StrCat("--", flag, " ", text, ": ", why));
  };
  const size_t least = flag == "knockout" ? 4 : 2;
  const size_t most = flag == "knockout" ? 4 : 3;
  if (parts.size() < least || parts.size() > most) {
    return bad(flag == "ablate"     ? "expected L:H[,H...][:zero|mean]"
               : flag == "knockout" ? "expected L:H[,H...]:ROWS:KEYS"
                                    : "expected L:H[,H...][:P,P...]");
  }
  if (!absl::SimpleAtoi(parts[0], &item.layer)) return bad("the layer is not an integer");
  absl::StatusOr<std::vector<int>> heads = IntList(flag, parts[1]);
  if (!heads.ok()) return heads.status();
  item.heads = *std::move(heads);
  if (flag == "ablate") {
    item.kind = Intervention::Kind::kAblate;
    if (parts.size() == 3) {
      if (parts[2] != "zero" && parts[2] != "mean") return bad("the mode is not zero or mean");
      item.mode = parts[2] == "mean" ? AblationMode::kMean : AblationMode::kZero;
    }
  } else if (flag == "knockout") {
    item.kind = Intervention::Kind::kKnockout;
    const std::string& rows = parts[2];
    if (rows == "all") {
      item.rows = KnockoutRows::kAll;
    } else if (rows == "generated") {
      item.rows = KnockoutRows::kGenerated;
    } else {
      const std::vector<std::string> range = absl::StrSplit(rows, '-');
      if (range.size() != 2 || !absl::SimpleAtoi(range[0], &item.row_begin) ||
          !absl::SimpleAtoi(range[1], &item.row_end)) {
        return bad("ROWS is not all, generated or B-E");
      }
      item.rows = KnockoutRows::kRange;
    }
    for (absl::string_view key : absl::StrSplit(parts[3], ',', absl::SkipEmpty())) {
      int position = 0;
      if (absl::SimpleAtoi(key, &position)) {
        item.key_positions.push_back(position);
      } else {
        item.key_terms.emplace_back(key);
      }
    }
  } else {
    item.kind = Intervention::Kind::kPatch;
    if (parts.size() == 3) {
      absl::StatusOr<std::vector<int>> positions = IntList(flag, parts[2]);
      if (!positions.ok()) return positions.status();
      item.positions = *std::move(positions);
    }
  }
  return item;
}

// Splits the repeatable flags off `args` (in order) and parses the rest with Flags.
absl::StatusOr<ScoreFlags> ParseScoreFlags(
    const std::vector<std::string>& args, Flags& flags,
    const std::vector<std::pair<std::string, std::string>>& repeated, bool sweep) {
  ScoreFlags parsed;
  parsed.json = flags.Has("json");
  for (const auto& [name, value] : repeated) {
    absl::StatusOr<Intervention> item = ParseIntervention(name, value);
    if (!item.ok()) return item.status();
    parsed.interventions.push_back(*std::move(item));
  }
  if (flags.Has("candidates") == flags.Has("candidate-ids")) {
    return absl::InvalidArgumentError("give exactly one of --candidates and --candidate-ids");
  }
  if (flags.Has("candidates")) {
    for (absl::string_view text : absl::StrSplit(flags.Get("candidates"), ',')) {
      parsed.candidate_texts.emplace_back(text);
    }
  } else {
    for (absl::string_view group : absl::StrSplit(flags.Get("candidate-ids"), ';')) {
      absl::StatusOr<std::vector<int64_t>> ids = IdList("candidate-ids", std::string(group));
      if (!ids.ok()) return ids.status();
      parsed.candidate_ids.push_back(*std::move(ids));
    }
  }
  if (flags.Has("patch-from")) {
    parsed.has_patch_source = true;
    const std::string source = flags.Get("patch-from");
    if (source.rfind("ids:", 0) == 0) {
      parsed.patch_is_ids = true;
      absl::StatusOr<std::vector<int64_t>> ids = IdList("patch-from", source.substr(4));
      if (!ids.ok()) return ids.status();
      parsed.patch_ids = *std::move(ids);
    } else {
      parsed.patch_text = source;
    }
  }
  if (sweep) {
    absl::StatusOr<std::vector<int>> layers = IntList("layers", flags.Get("layers", "all"));
    if (!layers.ok()) return layers.status();
    absl::StatusOr<std::vector<int>> heads = IntList("heads", flags.Get("heads", "all"));
    if (!heads.ok()) return heads.status();
    parsed.sweep.layers = *std::move(layers);
    parsed.sweep.heads = *std::move(heads);
    const std::string mode = flags.Get("mode", "zero");
    if (mode != "zero" && mode != "mean") {
      return absl::InvalidArgumentError(absl::StrCat("--mode: '", mode, "' is not zero or mean"));
    }
    parsed.sweep.mode = mode == "mean" ? AblationMode::kMean : AblationMode::kZero;
  }
  return parsed;
}

void PrintScore(const ScoreResult& result, bool json) {
  if (json) {
    std::cout << ScoreResultToJson(result) << "\n";
    return;
  }
  std::cout << absl::StrFormat("%-24s %-20s %14s %10s\n", "candidate", "token ids", "logprob",
                               "rank");
  for (const CandidateScore& c : result.candidates) {
    std::cout << absl::StrFormat("%-24s %-20s %14.6f %10d\n", "\"" + c.text + "\"",
                                 absl::StrJoin(c.token_ids, ","), c.logprob, c.first_token_rank);
  }
  if (result.has_logit_diff) {
    std::cout << absl::StrFormat("logit_diff (first - second): %.6f\n", result.logit_diff);
  }
}

void PrintSweep(const SweepResult& result, bool json) {
  if (json) {
    std::cout << SweepResultToJson(result) << "\n";
    return;
  }
  std::cout << absl::StrFormat("clean logit_diff %.6f; delta per ablated head (layer x head):\n",
                               result.clean.logit_diff);
  int layer = -1;
  for (const SweepCell& cell : result.cells) {
    if (cell.layer != layer) {
      if (layer >= 0) std::cout << "\n";
      layer = cell.layer;
      std::cout << absl::StrFormat("L%-3d", layer);
    }
    std::cout << absl::StrFormat(" %+9.4f", cell.delta);
  }
  std::cout << "\n";
}

void ShowProgress(int done, int total) {
  if (!isatty(2)) return;
  std::fprintf(stderr, "\rsweep: %d / %d heads%s", done, total, done == total ? "\n" : "");
}

// The request both modes send: input, interventions and patch source.
absl::StatusOr<session::Request> RequestFromFlags(Flags& flags, const ScoreFlags& parsed) {
  absl::StatusOr<PromptInput> input = ParseInputFlags(flags);
  if (!input.ok()) return input.status();
  session::Request request;
  request.input = *input;
  request.interventions = parsed.interventions;
  if (parsed.has_patch_source) {
    PromptInput source = *input;
    source.kind = parsed.patch_is_ids ? PromptInput::Kind::kIds : PromptInput::Kind::kText;
    source.ids = parsed.patch_ids;
    source.text = parsed.patch_text;
    request.patch_source = source;
  }
  return request;
}

// The same ScoreSpec RunRemote sends as a v1::ScoreRequest: candidates as given, the sweep.
session::ScoreSpec SpecFromFlags(session::Request request, const ScoreFlags& parsed, bool sweep) {
  session::ScoreSpec spec;
  spec.request = std::move(request);
  for (const std::string& text : parsed.candidate_texts) {
    spec.candidates.push_back({session::CandidateRequest::Kind::kText, text, {}});
  }
  for (const std::vector<int64_t>& ids : parsed.candidate_ids) {
    spec.candidates.push_back({session::CandidateRequest::Kind::kIds, "", ids});
  }
  if (sweep) spec.sweep = parsed.sweep;
  return spec;
}

int RunLocal(const std::string& command, Flags& flags, const ScoreFlags& parsed, bool sweep) {
  absl::StatusOr<session::Request> request = RequestFromFlags(flags, parsed);
  if (!request.ok()) return Fail(command, std::string(request.status().message()));
  absl::StatusOr<EngineOptions> options = ParseEngineFlags(flags);
  if (!options.ok()) return Fail(command, std::string(options.status().message()));
  for (const auto& unknown : flags.Unread()) return Fail(command, "unknown flag " + unknown);
  absl::StatusOr<std::unique_ptr<session::LoadedModel>> model = session::LoadModel(*options);
  if (!model.ok()) return Fail(command, std::string(model.status().message()));
  // The service's ScoreAnswers runs the same session::PrepareScore, with its configured limits.
  absl::StatusOr<session::PreparedScore> prepared =
      session::PrepareScore(SpecFromFlags(*std::move(request), parsed, sweep), **model,
                            session::RequestLimits::Unbounded());
  if (!prepared.ok()) return Fail(command, std::string(prepared.status().message()));
  // The service's ScoreAnswers runs the same session::RunScore.
  absl::StatusOr<SweepResult> result =
      session::RunScore(**model, *prepared, [](int done, int total) {
        ShowProgress(done, total);
        return absl::OkStatus();
      });
  if (!result.ok()) return Fail(command, std::string(result.status().message()));
  if (sweep) {
    PrintSweep(*result, parsed.json);
  } else {
    PrintScore(result->clean, parsed.json);
  }
  return 0;
}

#ifdef ATTNSCOPE_WITH_GRPC
int RunRemote(const std::string& command, Flags& flags, const ScoreFlags& parsed, bool sweep) {
  absl::StatusOr<remote::RemoteTarget> target = remote::TargetFromFlags(flags);
  if (!target.ok()) return Fail(command, std::string(target.status().message()));
  absl::StatusOr<session::Request> parsed_request = RequestFromFlags(flags, parsed);
  if (!parsed_request.ok()) return Fail(command, std::string(parsed_request.status().message()));
  for (const auto& unknown : flags.Unread()) return Fail(command, "unknown flag " + unknown);
  v1::ScoreRequest request;
  session::InputToScoreRequest(*parsed_request, &request);
  for (const std::string& text : parsed.candidate_texts) request.add_candidates()->set_text(text);
  for (const std::vector<int64_t>& ids : parsed.candidate_ids) {
    v1::TokenIds* wire = request.add_candidates()->mutable_ids();
    for (int64_t id : ids) wire->add_ids(id);
  }
  if (sweep) *request.mutable_sweep() = SweepToWire(parsed.sweep);
  absl::StatusOr<v1::ScoreResult> reply = remote::RemoteScore(
      *target, request,
      [](const v1::ScoreProgress& progress) { ShowProgress(progress.done(), progress.total()); });
  if (!reply.ok()) return Fail(command, std::string(reply.status().message()));
  if (sweep) {
    SweepResult result;
    result.clean = ScoreResultFromWire(*reply);
    result.cells = SweepCellsFromWire(*reply);
    PrintSweep(result, parsed.json);
  } else {
    PrintScore(ScoreResultFromWire(*reply), parsed.json);
  }
  return 0;
}
#endif

int Run(const std::string& command, const std::vector<std::string>& args, bool sweep) {
  std::vector<std::pair<std::string, std::string>> repeated;
  std::vector<std::string> rest;
  for (size_t i = 0; i < args.size(); ++i) {
    bool taken = false;
    for (const std::string& name : kRepeated) {
      const std::string flag = "--" + name;
      if (args[i] == flag && i + 1 < args.size()) {
        repeated.push_back({name, args[++i]});
        taken = true;
      } else if (args[i].rfind(flag + "=", 0) == 0) {
        repeated.push_back({name, args[i].substr(flag.size() + 1)});
        taken = true;
      }
      if (taken) break;
    }
    if (!taken) rest.push_back(args[i]);
  }
  if (sweep && !repeated.empty()) {
    return Fail(command, "--" + repeated.front().first +
                             ": a sweep ablates one head at a time from the clean run; use "
                             "`attnscope score` for interventions");
  }
  Flags flags(rest, kRequestSwitches);
  if (!flags.error().empty()) return Fail(command, flags.error());
  if (flags.Has("model") == flags.Has("server")) {
    return Fail(command, "give exactly one of --model DIR and --server ADDR");
  }
  absl::StatusOr<ScoreFlags> parsed = ParseScoreFlags(rest, flags, repeated, sweep);
  if (!parsed.ok()) return Fail(command, std::string(parsed.status().message()));
  if (flags.Has("server")) {
#ifdef ATTNSCOPE_WITH_GRPC
    return RunRemote(command, flags, *parsed, sweep);
#else
    return Fail(command,
                "--server: this build has no gRPC (configure with ATTNSCOPE_WITH_GRPC=ON)");
#endif
  }
  return RunLocal(command, flags, *parsed, sweep);
}

int RunScore(const std::vector<std::string>& args) { return Run("score", args, false); }
int RunSweep(const std::vector<std::string>& args) { return Run("sweep", args, true); }

}  // namespace

ATTNSCOPE_REGISTER_COMMAND(
    "score",
    "log-probabilities of candidate answers, optionally under ablation / knockout / patching",
    RunScore);
ATTNSCOPE_REGISTER_COMMAND("sweep",
                           "ablate each head alone and table the change of the logit difference",
                           RunSweep);

}  // namespace attnscope::cli
