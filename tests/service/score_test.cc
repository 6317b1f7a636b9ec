// ScoreAnswers and interventions over a real gRPC server on loopback: the reference numbers
// of tests/engine/intervention_reference.py, the same bytes as local mode, sweep progress,
// the Header's echo, and every bad input refused before any model work while the server keeps
// serving. The command line's `score` and `sweep` in local and remote mode print the same.
#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <memory>

#include "server/engine/engine.h"
#include "server/session/intervention_wire.h"
#include "tests/common/intervention_cases.h"
#include "tests/service/test_server.h"

namespace attnscope {
namespace {

using testing::GoldenDir;
using testing::PathResolvesIn;
using testing::RefusedFieldOf;
using testing::TestServer;

constexpr double kTolerance = 1e-4;

class ScoreServerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (GoldenDir().empty()) return;
    service::ServerConfig config = testing::TestConfig(GoldenDir() + "/model");
    config.limits.max_prompt_tokens = 64;
    config.limits.max_total_tokens = 128;
    config.limits.max_sweep_heads = 6;  // 2 layers x 3 heads; the full 2 x 4 is over it
    config.limits.max_candidates = 3;
    config.limits.max_candidate_tokens = 4;
    server_ = TestServer::Start(config).release();
    EngineOptions options;
    options.model_dir = GoldenDir() + "/model";
    auto engine = Engine::Load(options);
    if (engine.ok()) engine_ = engine->release();
  }
  static void TearDownTestSuite() {
    delete server_;
    delete engine_;
    server_ = nullptr;
    engine_ = nullptr;
  }
  void SetUp() override {
    ASSERT_NE(server_, nullptr);
    ASSERT_NE(engine_, nullptr);
    doc_ = testing::LoadInterventionReference("qwen2-tiny");
    prompt_ = doc_.at("prompt").get<std::vector<int64_t>>();
  }

  v1::ScoreRequest Request(const std::vector<Candidate>& candidates) const {
    v1::ScoreRequest request;
    for (int64_t id : prompt_) request.mutable_ids()->add_ids(id);
    for (const Candidate& c : candidates) {
      v1::TokenIds* ids = request.add_candidates()->mutable_ids();
      for (int64_t id : c.ids) ids->add_ids(id);
    }
    return request;
  }
  static void SetInterventions(const InterventionSet& set, v1::ScoreRequest* request) {
    InterventionsToWire(set.items, request->mutable_interventions()->mutable_items());
    if (!set.patch_source_ids.empty()) {
      v1::TokenIds* ids = request->mutable_interventions()->mutable_patch_source()->mutable_ids();
      for (int64_t id : set.patch_source_ids) ids->add_ids(id);
    }
  }

  struct Reply {
    grpc::Status status;
    std::vector<v1::ScoreProgress> progress;
    std::vector<v1::ScoreResult> results;
  };
  Reply Call(const v1::ScoreRequest& request) const {
    auto stub = server_->Stub();
    grpc::ClientContext context;
    auto reader = stub->ScoreAnswers(&context, request);
    Reply reply;
    v1::ScoreResponse message;
    while (reader->Read(&message)) {
      if (message.has_progress()) reply.progress.push_back(message.progress());
      if (message.has_result()) reply.results.push_back(message.result());
    }
    reply.status = reader->Finish();
    return reply;
  }

  static TestServer* server_;
  static Engine* engine_;
  nlohmann::json doc_;
  std::vector<int64_t> prompt_;
};
TestServer* ScoreServerTest::server_ = nullptr;
Engine* ScoreServerTest::engine_ = nullptr;

TEST_F(ScoreServerTest, ScoresEqualTheReferenceAndLocalModeBitForBit) {
  // The reference scores three candidates; the server allows three.
  const std::vector<Candidate> candidates = testing::CandidatesFromJson(doc_);
  for (const auto& c : doc_.at("cases")) {
    SCOPED_TRACE(c.at("name").get<std::string>());
    InterventionSet set =
        testing::InterventionsFromJson(c.at("interventions"), c.value("source", nlohmann::json()));
    v1::ScoreRequest request = Request(candidates);
    SetInterventions(set, &request);
    Reply reply = Call(request);
    ASSERT_TRUE(reply.status.ok()) << reply.status.error_message();
    ASSERT_EQ(reply.results.size(), 1u);
    EXPECT_TRUE(reply.progress.empty());
    const ScoreResult remote = ScoreResultFromWire(reply.results[0]);
    for (size_t k = 0; k < candidates.size(); ++k) {
      EXPECT_NEAR(remote.candidates[k].logprob, c.at("scores")[k].at("logprob").get<double>(),
                  kTolerance);
      EXPECT_EQ(remote.candidates[k].first_token_rank,
                c.at("scores")[k].at("first_token_rank").get<int>());
    }
    auto local = engine_->Score(prompt_, candidates, &set);
    ASSERT_TRUE(local.ok()) << local.status();
    EXPECT_EQ(ScoreResultToJson(remote), ScoreResultToJson(*local));
    // The resolved interventions come back: as many items, same kinds.
    EXPECT_EQ(reply.results[0].interventions_size(), static_cast<int>(set.items.size()));
  }
}

TEST_F(ScoreServerTest, SweepStreamsProgressAndEqualsTheReference) {
  v1::ScoreRequest request = Request(testing::CandidatesFromJson(doc_));
  request.mutable_sweep()->add_heads(0);
  request.mutable_sweep()->add_heads(-1);  // head 3
  request.mutable_sweep()->add_heads(2);
  request.mutable_sweep()->set_mode(v1::ABLATION_MEAN);
  Reply reply = Call(request);
  ASSERT_TRUE(reply.status.ok()) << reply.status.error_message();
  ASSERT_EQ(reply.results.size(), 1u);
  ASSERT_FALSE(reply.progress.empty());
  EXPECT_EQ(reply.progress.back().done(), 6);
  EXPECT_EQ(reply.progress.back().total(), 6);
  const auto table = doc_.at("sweep").at("mean");
  const v1::ScoreResult& result = reply.results[0];
  ASSERT_EQ(result.sweep_heads_size(), 6);
  for (const v1::SweepHead& cell : result.sweep_heads()) {
    const auto& expected = table[cell.layer() * 4 + cell.head()];
    EXPECT_NEAR(cell.logit_diff(), expected.at("logit_diff").get<double>(), kTolerance);
  }
  EXPECT_EQ(result.sweep_heads(1).head(), 2);  // ascending heads
  SweepSpec sweep;
  sweep.heads = {0, 2, 3};
  sweep.mode = AblationMode::kMean;
  auto local = engine_->Sweep(prompt_, testing::CandidatesFromJson(doc_), sweep, nullptr);
  ASSERT_TRUE(local.ok()) << local.status();
  SweepResult remote;
  remote.clean = ScoreResultFromWire(result);
  remote.cells = SweepCellsFromWire(result);
  EXPECT_EQ(SweepResultToJson(remote), SweepResultToJson(*local));
}

TEST_F(ScoreServerTest, GenerateHeaderEchoesTheResolvedInterventions) {
  v1::GenerateRequest request;
  for (int64_t id : prompt_) request.mutable_ids()->add_ids(id);
  request.mutable_generation()->set_max_new_tokens(4);
  request.mutable_generation()->set_ignore_eos(true);
  request.mutable_capture()->set_disabled(true);
  v1::Intervention* item = request.mutable_interventions()->add_items();
  item->mutable_ablate()->set_layer(-1);
  item->mutable_ablate()->set_mode(v1::ABLATION_MEAN);
  auto stub = server_->Stub();
  grpc::ClientContext context;
  auto reader = stub->GenerateWithAttention(&context, request);
  v1::GenerateResponse message;
  std::vector<int64_t> generated;
  std::optional<v1::Header> header;
  while (reader->Read(&message)) {
    if (message.has_header()) header = message.header();
    if (message.has_token()) generated.push_back(message.token().id());
  }
  ASSERT_TRUE(reader->Finish().ok());
  ASSERT_TRUE(header.has_value());
  ASSERT_EQ(header->interventions_size(), 1);
  EXPECT_EQ(header->interventions(0).ablate().layer(), 1);
  EXPECT_EQ(header->interventions(0).ablate().heads_size(), 4);
  // The continuation is the reference's under the same intervention.
  InterventionSet set;
  Intervention ablate;
  ablate.layer = 1;
  ablate.mode = AblationMode::kMean;
  set.items.push_back(ablate);
  GenerationParams params;
  params.max_new_tokens = 4;
  params.ignore_eos = true;
  auto local = engine_->Generate(prompt_, params, CaptureSpec(), nullptr, &set);
  ASSERT_TRUE(local.ok());
  EXPECT_EQ(generated, std::vector<int64_t>(local->token_ids.begin() + prompt_.size(),
                                            local->token_ids.end()));
}

struct BadScore {
  std::string name;
  std::function<void(v1::ScoreRequest*)> mutate;
  std::string message;
  // The .proto path the status details' google.rpc.BadRequest names; empty: no details.
  std::string field;
};

TEST_F(ScoreServerTest, EveryBadInputIsRefusedBeforeModelWorkAndTheServerKeepsServing) {
  auto ablate = [](v1::ScoreRequest* r, int layer, std::vector<int> heads) {
    v1::HeadAblation* a = r->mutable_interventions()->add_items()->mutable_ablate();
    a->set_layer(layer);
    for (int h : heads) a->add_heads(h);
  };
  const std::vector<BadScore> cases = {
      {"head out of range", [&](v1::ScoreRequest* r) { ablate(r, 0, {4}); },
       "interventions[0].heads: index 4 is out of range", "interventions.items[0].ablate.heads[0]"},
      {"layer out of range", [&](v1::ScoreRequest* r) { ablate(r, 2, {0}); },
       "interventions[0].layer = 2: out of range; the model has 2 layers",
       "interventions.items[0].ablate.layer"},
      {"overlapping interventions",
       [&](v1::ScoreRequest* r) {
         ablate(r, 1, {0, 1});
         v1::AttentionKnockout* k = r->mutable_interventions()->add_items()->mutable_knockout();
         k->set_layer(-1);
         k->add_heads(1);
         k->add_key_positions(3);
       },
       "interventions[1] = layer 1 head 1: already edited by interventions[0]",
       "interventions.items[1].knockout.heads"},
      {"patch source of the wrong length",
       [&](v1::ScoreRequest* r) {
         r->mutable_interventions()->add_items()->mutable_patch()->set_layer(0);
         r->mutable_interventions()->mutable_patch_source()->mutable_ids()->add_ids(5);
       },
       "patch_source = 1 tokens: the target prompt has 37 tokens", "interventions.patch_source"},
      {"sweep over the limit", [](v1::ScoreRequest* r) { r->mutable_sweep(); },
       "sweep = 2 layers x 4 heads = 8 ablated forwards: exceeds the server limit "
       "limits.max_sweep_heads = 6",
       "sweep"},
      {"empty candidates", [](v1::ScoreRequest* r) { r->clear_candidates(); },
       "candidates = 0 candidates: give at least one candidate continuation", "candidates"},
      {"a candidate with no tokens",
       [](v1::ScoreRequest* r) { r->add_candidates()->mutable_ids(); },
       "candidates[2] = \"\": has no tokens", "candidates[2]"},
      {"a candidate without kind", [](v1::ScoreRequest* r) { r->add_candidates(); },
       "candidates[2] = {}: set text or ids", "candidates[2]"},
      {"too many candidates",
       [](v1::ScoreRequest* r) {
         for (int i = 0; i < 2; ++i) r->add_candidates()->mutable_ids()->add_ids(3);
       },
       "candidates = 4 candidates: exceeds the server limit limits.max_candidates = 3",
       "candidates"},
      {"candidate too long",
       [](v1::ScoreRequest* r) {
         for (int i = 0; i < 4; ++i) r->mutable_candidates(0)->mutable_ids()->add_ids(3);
       },
       "candidates[0] = 5 tokens: exceeds the server limit limits.max_candidate_tokens = 4",
       "candidates[0]"},
      {"candidate id outside the vocabulary",
       [](v1::ScoreRequest* r) { r->mutable_candidates(1)->mutable_ids()->set_ids(0, 512); },
       "candidates[1].ids[0] = 512: must be in [0, vocab_size = 512)", "candidates[1].ids.ids[0]"},
      {"text candidate without a tokenizer",
       [](v1::ScoreRequest* r) { r->add_candidates()->set_text("increase"); }, "tokenizer", ""},
      {"interventions with a sweep",
       [&](v1::ScoreRequest* r) {
         r->mutable_sweep()->add_layers(0);
         ablate(r, 0, {0});
       },
       "does not combine with interventions", "interventions"},
      {"every visible key knocked out",
       [](v1::ScoreRequest* r) {
         v1::AttentionKnockout* k = r->mutable_interventions()->add_items()->mutable_knockout();
         k->add_key_positions(0);
       },
       "knocks out every key query row 0 can see", "interventions.items[0].knockout.key_positions"},
      {"unknown ablation mode",
       [&](v1::ScoreRequest* r) {
         ablate(r, 0, {0});
         r->mutable_interventions()->mutable_items(0)->mutable_ablate()->set_mode(
             static_cast<v1::AblationMode>(7));
       },
       "interventions[0].mode = 7", "interventions.items[0].ablate.mode"},
  };
  const std::vector<Candidate> two = {{"", {399}}, {"", {17}}};
  for (const BadScore& bad : cases) {
    v1::ScoreRequest request = Request(two);
    bad.mutate(&request);
    Reply reply = Call(request);
    EXPECT_EQ(reply.status.error_code(), bad.name == "text candidate without a tokenizer"
                                             ? grpc::StatusCode::FAILED_PRECONDITION
                                             : grpc::StatusCode::INVALID_ARGUMENT)
        << bad.name << ": " << reply.status.error_message();
    EXPECT_NE(reply.status.error_message().find(bad.message), std::string::npos)
        << bad.name << ": got \"" << reply.status.error_message() << "\"";
    EXPECT_EQ(RefusedFieldOf(reply.status), bad.field) << bad.name;
    if (!bad.field.empty()) {
      EXPECT_TRUE(PathResolvesIn(v1::ScoreRequest::descriptor(), bad.field)) << bad.field;
    }
    // Refused in the RPC handler: nothing reached the engine's queue.
    EXPECT_TRUE(reply.results.empty() && reply.progress.empty()) << bad.name;
    Reply good = Call(Request(two));
    ASSERT_TRUE(good.status.ok()) << "after " << bad.name << ": " << good.status.error_message();
    EXPECT_EQ(good.results.size(), 1u);
  }
}

std::string RunCommand(const std::string& command) {
  std::string output;
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return output;
  std::array<char, 4096> buffer;
  size_t count;
  while ((count = fread(buffer.data(), 1, buffer.size(), pipe)) > 0)
    output.append(buffer.data(), count);
  const int status = pclose(pipe);
  if (status != 0) output += "\n(exit status " + std::to_string(status) + ")";
  return output;
}

TEST_F(ScoreServerTest, CommandLineScoreAndSweepPrintTheSameInBothModes) {
  std::string ids;
  for (int64_t id : prompt_) ids += (ids.empty() ? "" : ",") + std::to_string(id);
  const std::string binary = ATTNSCOPE_CLI_BINARY;
  const std::string score_flags = " --ids " + ids +
                                  " --candidate-ids '399,125,155;17' --ablate 1:0,2:mean"
                                  " --knockout 0:1:generated:0,3 --patch-from ids:" +
                                  ids + " --patch 0:3:2,4 --json";
  const std::string local =
      RunCommand(binary + " score --model " + GoldenDir() + "/model" + score_flags);
  const std::string remote =
      RunCommand(binary + " score --server " + server_->address() + score_flags);
  EXPECT_EQ(local, remote);
  const auto doc = nlohmann::json::parse(local);
  ASSERT_EQ(doc.at("candidates").size(), 2u);
  for (const char* key : {"text", "token_ids", "token_logprobs", "logprob", "first_token_rank"}) {
    EXPECT_TRUE(doc.at("candidates")[0].contains(key)) << key;
  }
  EXPECT_NEAR(doc.at("logit_diff").get<double>(),
              doc.at("candidates")[0].at("logprob").get<double>() -
                  doc.at("candidates")[1].at("logprob").get<double>(),
              1e-12);

  const std::string sweep_flags =
      " --ids " + ids + " --candidate-ids '399;17' --heads 0,1,2 --mode zero --json";
  const std::string local_sweep =
      RunCommand(binary + " sweep --model " + GoldenDir() + "/model" + sweep_flags);
  const std::string remote_sweep =
      RunCommand(binary + " sweep --server " + server_->address() + sweep_flags);
  EXPECT_EQ(local_sweep, remote_sweep);
  const auto sweep = nlohmann::json::parse(local_sweep);
  ASSERT_EQ(sweep.at("heads").size(), 6u);
  const auto table = doc_.at("sweep").at("zero");
  // The reference's candidates are the first two of its three; here [399] and [17] differ
  // from [399,125,155], so compare the clean difference with the engine instead.
  auto clean = engine_->Score(prompt_, {{"", {399}}, {"", {17}}}, nullptr);
  ASSERT_TRUE(clean.ok());
  EXPECT_NEAR(sweep.at("clean_logit_diff").get<double>(), clean->logit_diff, 1e-9);
  for (const auto& cell : sweep.at("heads")) {
    EXPECT_NEAR(cell.at("delta").get<double>(),
                cell.at("logit_diff").get<double>() - clean->logit_diff, 1e-9);
  }
  (void)table;
}

}  // namespace
}  // namespace attnscope
