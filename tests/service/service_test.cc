// The service against a real server on loopback: golden captures, local/remote equality,
// validation statuses, cancellation, deadlines, queue limits and stalls. Auth, TLS, health and
// the process's drain are in service_access_test.cc.
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <functional>
#include <thread>

#include "absl/strings/str_split.h"
#include "client/cpp/command.h"
#include "client/cpp/remote/remote_client.h"
#include "client/cpp/remote/request_flags.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "server/engine/capture_file_observer.h"
#include "server/engine/engine.h"
#include "server/model/tiny_model.h"
#include "server/tokenizer/tokenizer.h"
#include "tests/service/test_server.h"

namespace attnscope::testing {
namespace {

using Clock = std::chrono::steady_clock;

// Waits in tests that also run under valgrind (tests/service/CMakeLists.txt) are scaled by
// $ATTNSCOPE_TEST_TIME_SCALE (default 1).
double TimeScale() {
  const char* scale = std::getenv("ATTNSCOPE_TEST_TIME_SCALE");
  return scale != nullptr && std::atof(scale) > 0 ? std::atof(scale) : 1.0;
}

// ---------------------------------------------------------------------------------------
// Golden model (no tokenizer files): captures, equality with local mode, validation.

class GoldenServerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    service::ServerConfig config = TestConfig(GoldenDir() + "/model");
    config.limits.max_prompt_tokens = 64;
    config.limits.max_new_tokens = 100;
    config.limits.max_total_tokens = 128;
    config.limits.max_capture_bytes = 400000;
    server_ = TestServer::Start(config).release();
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }
  void SetUp() override { ASSERT_NE(server_, nullptr); }
  remote::RemoteTarget Target() const {
    remote::RemoteTarget target;
    target.address = server_->address();
    return target;
  }
  static TestServer* server_;
};
TestServer* GoldenServerTest::server_ = nullptr;

TEST_F(GoldenServerTest, CaptureOverGrpcMatchesTheGoldenDumps) {
  const std::string path = TempPath("golden_remote.safetensors");
  absl::StatusOr<remote::RemoteCaptureSummary> summary =
      remote::RemoteCapture(Target(), GoldenRequest(12), path, false);
  ASSERT_TRUE(summary.ok()) << summary.status();
  absl::StatusOr<CaptureFileContents> file = ReadCaptureFile(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(file->token_ids, GoldenIds("full_ids.npy"));  // prompt + greedy continuation
  const int T = static_cast<int>(file->token_ids.size());
  ASSERT_EQ(T, 49);
  EXPECT_EQ(file->prompt_length, 37);
  for (int layer = 0; layer < 2; ++layer) {
    absl::StatusOr<NpyArray> golden =
        ReadNpy(GoldenDir() + "/all_tokens_attn_L" + std::to_string(layer) + ".npy");
    ASSERT_TRUE(golden.ok());
    const int golden_t = static_cast<int>(golden->shape[1]);
    const std::vector<float>& got = file->attention.at(layer);
    ASSERT_EQ(got.size(), 4u * T * T);
    double worst = 0;
    for (int h = 0; h < 4; ++h) {
      for (int i = 0; i < T; ++i) {
        for (int j = 0; j < T; ++j) {
          const double expected = golden->values[(h * golden_t + i) * golden_t + j];
          worst = std::max(worst, std::abs(got[(h * T + i) * T + j] - expected));
        }
      }
    }
    EXPECT_LT(worst, 1e-4) << "layer " << layer;
  }
  EXPECT_EQ(summary->final_message.stop_reason(), "max_new_tokens");
  EXPECT_GT(summary->final_message.total_chunks(), 0u);
  EXPECT_EQ(summary->header.max_new_tokens(), 12);  // the resolved length, before Final
}

TEST_F(GoldenServerTest, CaptureOverGrpcEqualsTheLocalFileTensorForTensor) {
  struct Case {
    std::vector<int> layers, heads;
    v1::DType wire;
    DType local;
    v1::RowSelection rows;
    CaptureRows local_rows;
  };
  const std::vector<Case> cases = {
      {{}, {}, v1::DTYPE_FLOAT32, DType::kFloat32, v1::ROWS_ALL, CaptureRows::kAll},
      {{-1}, {0, 2}, v1::DTYPE_FLOAT16, DType::kFloat16, v1::ROWS_ALL, CaptureRows::kAll},
      {{0},
       {3},
       v1::DTYPE_BFLOAT16,
       DType::kBFloat16,
       v1::ROWS_GENERATED_ONLY,
       CaptureRows::kGeneratedOnly},
  };
  EngineOptions options;
  options.model_dir = GoldenDir() + "/model";
  absl::StatusOr<std::unique_ptr<Engine>> engine = Engine::Load(options);
  ASSERT_TRUE(engine.ok()) << engine.status();
  for (size_t c = 0; c < cases.size(); ++c) {
    const Case& test = cases[c];
    v1::GenerateRequest request = GoldenRequest(20);
    for (int layer : test.layers) request.mutable_capture()->add_layers(layer);
    for (int head : test.heads) request.mutable_capture()->add_heads(head);
    request.mutable_capture()->set_dtype(test.wire);
    request.mutable_capture()->set_rows(test.rows);
    const std::string remote_path = TempPath("remote_" + std::to_string(c) + ".safetensors");
    absl::StatusOr<remote::RemoteCaptureSummary> summary =
        remote::RemoteCapture(Target(), request, remote_path, false);
    ASSERT_TRUE(summary.ok()) << summary.status();

    CaptureSpec spec;
    spec.layers = *ResolveIndices(test.layers, 2, "layers");
    spec.heads = *ResolveIndices(test.heads, 4, "heads");
    spec.dtype = test.local;
    spec.rows = test.local_rows;
    GenerationParams params;
    params.max_new_tokens = 20;
    CaptureFileObserver observer(spec);
    absl::StatusOr<GenerationResult> local =
        (*engine)->Generate(GoldenIds("prompt_ids.npy"), params, spec, &observer);
    ASSERT_TRUE(local.ok()) << local.status();
    CaptureMetadata metadata;
    metadata.prompt_length = local->prompt_length;
    metadata.stop_reason = local->stop_reason;
    const std::string local_path = TempPath("local_" + std::to_string(c) + ".safetensors");
    ASSERT_TRUE(
        observer.assembler().Write(local_path, local->token_ids, metadata, nullptr, 0).ok());

    absl::StatusOr<CaptureFileContents> remote_file = ReadCaptureFile(remote_path);
    absl::StatusOr<CaptureFileContents> local_file = ReadCaptureFile(local_path);
    ASSERT_TRUE(remote_file.ok() && local_file.ok());
    EXPECT_EQ(remote_file->token_ids, local_file->token_ids) << "case " << c;
    EXPECT_EQ(remote_file->layers, local_file->layers) << "case " << c;
    EXPECT_EQ(remote_file->heads, local_file->heads) << "case " << c;
    ASSERT_EQ(remote_file->attention.size(), local_file->attention.size());
    for (const auto& [layer, values] : local_file->attention) {
      EXPECT_EQ(remote_file->attention.at(layer), values) << "case " << c << " layer " << layer;
    }
  }
}

struct BadInput {
  std::string name;
  std::function<void(v1::GenerateRequest*)> mutate;
  grpc::StatusCode code;
  std::string message_part;
  // The field path the status details' google.rpc.BadRequest must name; empty: no details
  // (the refusal is not about one request field).
  std::string field;
};

TEST_F(GoldenServerTest, CommandLineRemoteModeWritesTheCaptureAndPrintsAnalyses) {
  std::string ids;
  for (int64_t id : GoldenIds("prompt_ids.npy"))
    ids += (ids.empty() ? "" : ",") + std::to_string(id);
  const std::string path = TempPath("cli_remote.safetensors");
  std::vector<std::string> args = {
      "--server", server_->address(), "--ids", ids,  "--max-new-tokens",
      "12",       "--greedy",         "--out", path, "--quiet"};
  cli::Flags capture_flags(args, {"greedy", "quiet"});
  ASSERT_EQ(remote::RunRemoteCapture(capture_flags), 0);
  absl::StatusOr<CaptureFileContents> file = ReadCaptureFile(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(file->token_ids, GoldenIds("full_ids.npy"));

  cli::Flags analyze_flags(
      {"--server", server_->address(), "--ids", ids, "--max-new-tokens", "3", "--json"}, {"json"});
  EXPECT_EQ(remote::RunRemoteAnalyze(analyze_flags), 0);
  // A local-only flag is refused with a clear message, not ignored.
  cli::Flags bad_flags(
      {"--server", server_->address(), "--ids", "1,2", "--out", path, "--model", "/x"}, {});
  EXPECT_EQ(remote::RunRemoteCapture(bad_flags), 1);
  // A server error reaches the exit code.
  cli::Flags server_error({"--server", server_->address(), "--ids", "1,999", "--out", path}, {});
  EXPECT_EQ(remote::RunRemoteCapture(server_error), 1);
}

TEST_F(GoldenServerTest, EveryBadInputGetsItsStatusAndTheServerStillServes) {
  const float nan = std::nanf("");
  const std::vector<BadInput> cases = {
      {"no input", [](v1::GenerateRequest* r) { r->clear_ids(); },
       grpc::StatusCode::INVALID_ARGUMENT, "set one of text, messages or ids", "input"},
      {"empty text", [](v1::GenerateRequest* r) { r->set_text(""); },
       grpc::StatusCode::INVALID_ARGUMENT, "text = \"\"", "text"},
      {"empty ids", [](v1::GenerateRequest* r) { r->mutable_ids()->clear_ids(); },
       grpc::StatusCode::INVALID_ARGUMENT, "ids.ids = []", "ids.ids"},
      {"id outside vocabulary", [](v1::GenerateRequest* r) { r->mutable_ids()->set_ids(1, 512); },
       grpc::StatusCode::INVALID_ARGUMENT, "ids.ids[1] = 512: must be in [0, vocab_size = 512)",
       "ids.ids[1]"},
      {"text without tokenizer", [](v1::GenerateRequest* r) { r->set_text("hello"); },
       grpc::StatusCode::FAILED_PRECONDITION, "tokenizer", ""},
      {"negative max_new_tokens",
       [](v1::GenerateRequest* r) { r->mutable_generation()->set_max_new_tokens(-1); },
       grpc::StatusCode::INVALID_ARGUMENT, "generation.max_new_tokens = -1",
       "generation.max_new_tokens"},
      {"max_new_tokens over the limit",
       [](v1::GenerateRequest* r) { r->mutable_generation()->set_max_new_tokens(101); },
       grpc::StatusCode::INVALID_ARGUMENT,
       "generation.max_new_tokens = 101: exceeds the server limit limits.max_new_tokens = 100",
       "generation.max_new_tokens"},
      {"prompt over the limit",
       [](v1::GenerateRequest* r) {
         for (int i = 0; i < 28; ++i) r->mutable_ids()->add_ids(7);  // 37 + 28 = 65
       },
       grpc::StatusCode::INVALID_ARGUMENT,
       "prompt tokens = 65: exceeds the server limit limits.max_prompt_tokens = 64", "input"},
      {"total over the limit",
       [](v1::GenerateRequest* r) { r->mutable_generation()->set_max_new_tokens(92); },
       grpc::StatusCode::INVALID_ARGUMENT,
       "37 + 92 = 129: exceeds the server limit "
       "limits.max_total_tokens = 128",
       "generation.max_new_tokens"},
      {"capture bytes over the limit",
       [](v1::GenerateRequest* r) { r->mutable_generation()->set_max_new_tokens(90); },
       // 2 layers x 4 heads x (37 + 90)^2 tokens x 4 bytes (float32) = 516128 bytes.
       grpc::StatusCode::RESOURCE_EXHAUSTED,
       "capture size = 516128 bytes (2 layers x 4 heads x 127 x 127 tokens x 4 bytes): exceeds "
       "the server limit limits.max_capture_bytes = 400000",
       "capture"},
      {"layer out of range", [](v1::GenerateRequest* r) { r->mutable_capture()->add_layers(2); },
       grpc::StatusCode::INVALID_ARGUMENT, "capture.layers", "capture.layers"},
      {"head out of range", [](v1::GenerateRequest* r) { r->mutable_capture()->add_heads(-5); },
       grpc::StatusCode::INVALID_ARGUMENT, "capture.heads", "capture.heads"},
      {"unknown dtype",
       [](v1::GenerateRequest* r) { r->mutable_capture()->set_dtype(static_cast<v1::DType>(9)); },
       grpc::StatusCode::INVALID_ARGUMENT, "capture.dtype = 9", "capture.dtype"},
      {"unknown row selection",
       [](v1::GenerateRequest* r) {
         r->mutable_capture()->set_rows(static_cast<v1::RowSelection>(7));
       },
       grpc::StatusCode::INVALID_ARGUMENT, "capture.rows = 7", "capture.rows"},
      {"NaN temperature",
       [nan](v1::GenerateRequest* r) { r->mutable_generation()->set_temperature(nan); },
       grpc::StatusCode::INVALID_ARGUMENT, "generation.temperature = NaN",
       "generation.temperature"},
      {"negative temperature",
       [](v1::GenerateRequest* r) { r->mutable_generation()->set_temperature(-0.5f); },
       grpc::StatusCode::INVALID_ARGUMENT, "generation.temperature = -0.5",
       "generation.temperature"},
      {"top_p above 1", [](v1::GenerateRequest* r) { r->mutable_generation()->set_top_p(1.5f); },
       grpc::StatusCode::INVALID_ARGUMENT, "generation.top_p = 1.5: must be in (0, 1]",
       "generation.top_p"},
      {"negative top_p", [](v1::GenerateRequest* r) { r->mutable_generation()->set_top_p(-0.25f); },
       grpc::StatusCode::INVALID_ARGUMENT, "generation.top_p = -0.25", "generation.top_p"},
      {"negative top_k", [](v1::GenerateRequest* r) { r->mutable_generation()->set_top_k(-3); },
       grpc::StatusCode::INVALID_ARGUMENT, "generation.top_k = -3", "generation.top_k"},
      {"empty chat", [](v1::GenerateRequest* r) { r->mutable_messages(); },
       grpc::StatusCode::INVALID_ARGUMENT, "messages.messages = []", "messages.messages"},
      // Interventions: the message keeps its short name, the violation the .proto path.
      {"intervention head out of range",
       [](v1::GenerateRequest* r) {
         v1::HeadAblation* a = r->mutable_interventions()->add_items()->mutable_ablate();
         a->add_heads(0);
         a->add_heads(4);
       },
       grpc::StatusCode::INVALID_ARGUMENT,
       "interventions[0].heads: index 4 is out of range; the model has 4",
       "interventions.items[0].ablate.heads[1]"},
      {"intervention layer out of range",
       [](v1::GenerateRequest* r) {
         r->mutable_interventions()->add_items()->mutable_ablate();
         v1::AttentionKnockout* k = r->mutable_interventions()->add_items()->mutable_knockout();
         k->set_layer(2);
         k->add_key_positions(3);
       },
       grpc::StatusCode::INVALID_ARGUMENT,
       "interventions[1].layer = 2: out of range; the model has 2 layers",
       "interventions.items[1].knockout.layer"},
      {"knockout key past the sequence",
       [](v1::GenerateRequest* r) {
         v1::AttentionKnockout* k = r->mutable_interventions()->add_items()->mutable_knockout();
         k->add_key_positions(3);
         k->add_key_positions(200);
       },
       grpc::StatusCode::INVALID_ARGUMENT, "interventions[0].keys[1] = 200: must be in [0, ",
       "interventions.items[0].knockout.key_positions[1]"},
      {"unknown ablation mode",
       [](v1::GenerateRequest* r) {
         r->mutable_interventions()->add_items()->mutable_ablate()->set_mode(
             static_cast<v1::AblationMode>(7));
       },
       grpc::StatusCode::INVALID_ARGUMENT, "interventions[0].mode = 7",
       "interventions.items[0].ablate.mode"},
      {"intervention without kind",
       [](v1::GenerateRequest* r) { r->mutable_interventions()->add_items(); },
       grpc::StatusCode::INVALID_ARGUMENT, "interventions[0] = {}: set one of ablate",
       "interventions.items[0]"},
      {"patch source id outside vocabulary",
       [](v1::GenerateRequest* r) {
         r->mutable_interventions()->add_items()->mutable_patch();
         r->mutable_interventions()->mutable_patch_source()->mutable_ids()->add_ids(1);
         r->mutable_interventions()->mutable_patch_source()->mutable_ids()->add_ids(999);
       },
       grpc::StatusCode::INVALID_ARGUMENT,
       "patch_source: ids.ids[1] = 999: must be in [0, vocab_size = 512)",
       "interventions.patch_source.ids.ids[1]"},
  };
  auto stub = server_->Stub();
  for (const BadInput& bad : cases) {
    v1::GenerateRequest request = GoldenRequest(4);
    bad.mutate(&request);
    StreamResult result = RunStream(stub.get(), request);
    EXPECT_EQ(result.status.error_code(), bad.code)
        << bad.name << ": " << result.status.error_message();
    EXPECT_NE(result.status.error_message().find(bad.message_part), std::string::npos)
        << bad.name << ": got \"" << result.status.error_message() << "\"";
    EXPECT_EQ(result.headers, 0) << bad.name << ": refused before any model work";
    EXPECT_EQ(RefusedFieldOf(result.status), bad.field) << bad.name;
    if (!bad.field.empty()) {
      EXPECT_TRUE(PathResolvesIn(v1::GenerateRequest::descriptor(), bad.field)) << bad.field;
    }
    // The server still serves a good request.
    StreamResult good = RunStream(stub.get(), GoldenRequest(2));
    ASSERT_TRUE(good.status.ok()) << "after " << bad.name << ": " << good.status.error_message();
    EXPECT_EQ(good.finals, 1);
  }
}

TEST_F(GoldenServerTest, GetModelInfoDescribesTheCheckpoint) {
  auto stub = server_->Stub();
  grpc::ClientContext context;
  v1::GetModelInfoResponse response;
  ASSERT_TRUE(stub->GetModelInfo(&context, v1::GetModelInfoRequest(), &response).ok());
  // Values of the golden config.json.
  EXPECT_EQ(response.model().architecture(), "Qwen2ForCausalLM");
  EXPECT_EQ(response.model().num_layers(), 2);
  EXPECT_EQ(response.model().num_attention_heads(), 4);
  EXPECT_EQ(response.model().num_key_value_heads(), 2);
  EXPECT_EQ(response.model().query_heads_per_kv_head(), 2);  // 4 / 2: heads 0,1 -> kv 0
  EXPECT_EQ(response.model().vocab_size(), 512);
  EXPECT_EQ(response.model().name(), "model");
  EXPECT_FALSE(response.model().has_tokenizer());
  EXPECT_EQ(response.limits().max_new_tokens(), 100);
  EXPECT_EQ(response.limits().max_capture_bytes(), 400000u);
}

TEST_F(GoldenServerTest, AnalyzeHeadsReportsMetricsOfTheGoldenAttention) {
  auto stub = server_->Stub();
  v1::AnalyzeRequest request;
  for (int64_t id : GoldenIds("prompt_ids.npy")) request.mutable_ids()->add_ids(id);
  request.mutable_generation()->set_max_new_tokens(12);
  grpc::ClientContext context;
  v1::AnalyzeResponse response;
  grpc::Status status = stub->AnalyzeHeads(&context, request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(response.heads_size(), 8);
  EXPECT_EQ(response.prompt_length(), 37);
  EXPECT_EQ(response.token_ids_size(), 49);
  for (int layer = 0; layer < 2; ++layer) {
    absl::StatusOr<NpyArray> golden =
        ReadNpy(GoldenDir() + "/all_tokens_attn_L" + std::to_string(layer) + ".npy");
    ASSERT_TRUE(golden.ok());
    const int T = static_cast<int>(golden->shape[1]);
    for (int h = 0; h < 4; ++h) {
      double diagonal = 0, sink = 0;
      for (int i = 0; i < T; ++i) {
        diagonal += golden->values[(h * T + i) * T + i];
        sink += golden->values[(h * T + i) * T + 0];
      }
      const v1::HeadSummary& head = response.heads(layer * 4 + h);
      ASSERT_EQ(head.layer(), layer);
      ASSERT_EQ(head.head(), h);
      EXPECT_NEAR(head.all_rows().diagonal(), diagonal / T, 1e-4);
      EXPECT_NEAR(head.all_rows().sink(), sink / T, 1e-4);
      EXPECT_FALSE(head.type().empty());
    }
  }
  const nlohmann::json report = nlohmann::json::parse(response.report_json());
  EXPECT_EQ(report["prompt_length"], 37);
  EXPECT_EQ(report["layers"].size(), 2u);
}

TEST_F(GoldenServerTest, AnalyzeHeadsValidatesBeforeWork) {
  auto stub = server_->Stub();
  v1::AnalyzeRequest request;
  request.mutable_ids()->add_ids(1);
  request.mutable_analysis()->add_layers(7);
  grpc::ClientContext context;
  v1::AnalyzeResponse response;
  grpc::Status status = stub->AnalyzeHeads(&context, request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  // The request's field is analysis.layers (AnalyzeRequest has no capture spec).
  EXPECT_NE(status.error_message().find("analysis.layers"), std::string::npos)
      << status.error_message();
  EXPECT_EQ(status.error_message().find("capture."), std::string::npos) << status.error_message();

  // A probe of 2 x (2^31 - 1) tokens is refused by arithmetic, before anything is built.
  v1::AnalyzeRequest probe;
  probe.mutable_analysis()->mutable_induction_probe()->set_length(2147483647);
  grpc::ClientContext probe_context;
  probe_context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  const long rss_before = ResidentKilobytes();
  const auto start = Clock::now();
  status = stub->AnalyzeHeads(&probe_context, probe, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << status.error_message();
  for (const char* word : {"analysis.induction_probe.length", "2147483647",
                           "limits.max_prompt_tokens = ", "4294967294"}) {
    EXPECT_NE(status.error_message().find(word), std::string::npos)
        << word << " missing from: " << status.error_message();
  }
  EXPECT_LT(std::chrono::duration<double>(Clock::now() - start).count(), 1.0);
  EXPECT_LT(ResidentKilobytes() - rss_before, 64 * 1024);
}

TEST_F(GoldenServerTest, TwoHundredCancelledRequestsLeaveDescriptorsAndMemoryWhereTheyWere) {
  auto stub = server_->Stub();
  auto cancel_one = [&] {
    grpc::ClientContext context;
    auto reader = stub->GenerateWithAttention(&context, GoldenRequest(400));
    v1::GenerateResponse message;
    reader->Read(&message);  // the header: the request is running
    context.TryCancel();
    while (reader->Read(&message)) {
    }
    return reader->Finish();
  };
  for (int i = 0; i < 10; ++i) cancel_one();  // warm the channel and allocator
  ASSERT_TRUE(WaitFor([&] { return server_->server().service().in_flight() == 0; }, 5));
  const int fds_before = OpenFileDescriptors();
  const long rss_before = ResidentKilobytes();
  int cancelled = 0;
  for (int i = 0; i < 200; ++i) {
    grpc::Status status = cancel_one();
    cancelled += status.error_code() == grpc::StatusCode::CANCELLED;
  }
  EXPECT_GT(cancelled, 150);  // a few may finish before the cancel lands
  ASSERT_TRUE(WaitFor([&] { return server_->server().service().in_flight() == 0; }, 5));
  EXPECT_LE(OpenFileDescriptors(), fds_before + 4);
  EXPECT_LE(ResidentKilobytes(), rss_before + 32 * 1024) << "RSS grew by more than 32 MB";
  StreamResult good = RunStream(stub.get(), GoldenRequest(2));
  EXPECT_TRUE(good.status.ok());
}

// ---------------------------------------------------------------------------------------
// The generated tiny model (tokenizer, 4 layers x 8 heads, 4096 positions): long requests for
// cancellation, deadlines, the queue and stalls; text input and Tokenize.

class TinyServerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    model_dir_ = new std::string(TempPath("tiny_model"));
    absl::Status written = WriteTinyModel(*model_dir_, 7);
    ASSERT_TRUE(written.ok()) << written;
    service::ServerConfig config = TestConfig(*model_dir_);
    config.queue_length = 1;
    config.concurrent_generations = 2;
    config.streaming.stall_timeout_seconds = 1.5;
    config.streaming.stream_queue_bytes = 1 << 20;
    server_ = TestServer::Start(config).release();
    if (server_ == nullptr) return;
    // This machine's speed now (loaded, or under valgrind): tokens of LongRequest's shape.
    // Under valgrind (TimeScale > 1) one short measured run: start-up alone takes minutes there.
    const bool slow = TimeScale() > 1;
    const int warm_tokens = slow ? 4 : 20;
    auto stub = server_->Stub();
    v1::GenerateRequest warm_up = LongRequest();
    warm_up.mutable_generation()->set_max_new_tokens(warm_tokens);
    if (!slow) RunStream(stub.get(), warm_up);
    const auto start = Clock::now();
    const grpc::Status status = RunStream(stub.get(), warm_up).status;
    ASSERT_TRUE(status.ok()) << status.error_message();
    token_seconds_ = std::chrono::duration<double>(Clock::now() - start).count() / warm_tokens;
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }
  void SetUp() override { ASSERT_NE(server_, nullptr); }

  // How long the engine may take to stop after a cancel or a deadline: it stops at its next
  // check, at most a prefill of `prompt_tokens` or one decode step away. Scaled from the
  // measured speed with a wide margin, so a busy machine passes and a hang (never idle) fails.
  static double StopCeiling(int prompt_tokens) {
    return std::max(0.5, 10 * token_seconds_ * (prompt_tokens + 1));
  }

  // A request that runs for seconds and streams ~100 MB unless stopped.
  static v1::GenerateRequest LongRequest() {
    v1::GenerateRequest request;
    for (int i = 0; i < 24; ++i) request.mutable_ids()->add_ids(40 + i);
    request.mutable_generation()->set_max_new_tokens(1000);
    request.mutable_generation()->set_ignore_eos(true);  // a random model stops anywhere
    return request;
  }
  bool WaitIdle(double seconds) {
    return WaitFor(
        [&] {
          return server_->server().service().in_flight() == 0 &&
                 !server_->server().service().worker().busy();
        },
        seconds);
  }
  static TestServer* server_;
  static std::string* model_dir_;
  static double token_seconds_;  // seconds per generated token, measured in SetUpTestSuite
};
double TinyServerTest::token_seconds_ = 0;
TestServer* TinyServerTest::server_ = nullptr;
std::string* TinyServerTest::model_dir_ = nullptr;

TEST_F(TinyServerTest, TokenizeAndTextInputUseTheModelsTokenizer) {
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = LoadTokenizer(*model_dir_);
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  const std::string text = "Revenue rose 12%.<|im_end|>";
  absl::StatusOr<Encoding> expected = (*tokenizer)->Encode(text, true);
  ASSERT_TRUE(expected.ok());
  auto stub = server_->Stub();
  v1::TokenizeRequest tokenize;
  tokenize.set_text(text);
  grpc::ClientContext context;
  v1::TokenizeResponse response;
  ASSERT_TRUE(stub->Tokenize(&context, tokenize, &response).ok());
  EXPECT_EQ(std::vector<int64_t>(response.ids().begin(), response.ids().end()), expected->ids);
  EXPECT_EQ(response.ids(response.ids_size() - 1), 258);  // <|im_end|> recognised

  // plain_text: the special token's spelling becomes ordinary byte tokens.
  tokenize.set_plain_text(true);
  grpc::ClientContext plain_context;
  v1::TokenizeResponse plain;
  ASSERT_TRUE(stub->Tokenize(&plain_context, tokenize, &plain).ok());
  for (int64_t id : plain.ids()) EXPECT_LT(id, 256);

  v1::GenerateRequest generate;
  generate.set_text(text);
  generate.mutable_generation()->set_max_new_tokens(8);
  StreamResult result = RunStream(stub.get(), generate);
  ASSERT_TRUE(result.status.ok()) << result.status.error_message();
  EXPECT_EQ(
      std::vector<int64_t>(result.header.prompt_ids().begin(), result.header.prompt_ids().end()),
      expected->ids);
  EXPECT_EQ(result.header.prompt_text(), text);
  EXPECT_EQ(result.header.prompt_spans_size(), result.header.prompt_ids_size());
  // The live text pieces add up to the final text (up to an incomplete last character).
  EXPECT_EQ(result.final_message.generated_text().rfind(result.text_pieces, 0), 0u);
}

TEST_F(TinyServerTest, CancelMidStreamStopsTheEngineAtOnce) {
  auto stub = server_->Stub();
  grpc::ClientContext context;
  auto reader = stub->GenerateWithAttention(&context, LongRequest());
  v1::GenerateResponse message;
  int tokens = 0;
  while (tokens < 20 && reader->Read(&message)) tokens += message.has_token();
  ASSERT_EQ(tokens, 20);
  ASSERT_TRUE(server_->server().service().worker().busy());
  const auto cancelled_at = Clock::now();
  context.TryCancel();
  bool saw_final = false;
  while (reader->Read(&message)) saw_final |= message.has_final();
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_FALSE(saw_final);
  // A decode step of this model takes milliseconds; the engine must stop within about one.
  ASSERT_TRUE(WaitIdle(StopCeiling(24))) << "the engine kept running after the cancel";
  const double stop_seconds = std::chrono::duration<double>(Clock::now() - cancelled_at).count();
  EXPECT_LT(stop_seconds, StopCeiling(24)) << "seconds per token: " << token_seconds_;
  v1::GenerateRequest short_request;
  short_request.mutable_ids()->add_ids(40);
  short_request.mutable_generation()->set_max_new_tokens(2);
  EXPECT_TRUE(RunStream(stub.get(), short_request).status.ok());
}

TEST_F(TinyServerTest, ShortDeadlineStopsTheRequest) {
  auto stub = server_->Stub();
  const auto start = Clock::now();
  StreamResult result = RunStream(stub.get(), LongRequest(), [](grpc::ClientContext* context) {
    context->set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(300));
  });
  EXPECT_EQ(result.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_EQ(result.finals, 0);
  ASSERT_TRUE(WaitIdle(StopCeiling(24))) << "the engine kept running after the deadline";
  EXPECT_LT(std::chrono::duration<double>(Clock::now() - start).count(), 1 + StopCeiling(24));
}

TEST_F(TinyServerTest, AnalyzeHeadsStopsAtItsDeadline) {
  auto stub = server_->Stub();
  v1::AnalyzeRequest request;
  *request.mutable_ids() = LongRequest().ids();
  *request.mutable_generation() = LongRequest().generation();
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(300));
  v1::AnalyzeResponse response;
  const grpc::Status status = stub->AnalyzeHeads(&context, request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  ASSERT_TRUE(WaitIdle(StopCeiling(24))) << "the analysis kept running after the deadline";
  // The server still answers.
  v1::AnalyzeRequest small;
  small.mutable_ids()->add_ids(40);
  small.mutable_ids()->add_ids(41);
  small.mutable_generation()->set_max_new_tokens(2);
  grpc::ClientContext small_context;
  EXPECT_TRUE(stub->AnalyzeHeads(&small_context, small, &response).ok());
}

TEST_F(TinyServerTest, AnalyzeHeadsClientGoneMidAnalysisLeavesTheServerServing) {
  // The client goes away while the engine still analyses: the call finishes (CANCELLED) at
  // once and is deleted, while the engine job runs on until its next check. The job must
  // never touch the finished call (this crashed the server: use after free, which the
  // service_memcheck_analyze_client_gone test sees under valgrind even when it does not crash).
  auto stub = server_->Stub();
  v1::AnalyzeRequest request;
  for (int i = 0; i < 600; ++i) request.mutable_ids()->add_ids(40 + i % 200);
  request.mutable_generation()->set_max_new_tokens(200);
  request.mutable_generation()->set_ignore_eos(true);
  const int rounds = TimeScale() > 1 ? 1 : 3;  // one under valgrind: it is slow
  for (int round = 0; round < rounds; ++round) {
    grpc::ClientContext context;
    v1::AnalyzeResponse response;
    grpc::Status status;
    std::thread caller([&] { status = stub->AnalyzeHeads(&context, request, &response); });
    ASSERT_TRUE(
        WaitFor([&] { return server_->server().service().worker().busy(); }, 5 * TimeScale()));
    std::this_thread::sleep_for(std::chrono::milliseconds(100 * round));
    context.TryCancel();
    caller.join();
    EXPECT_EQ(status.error_code(), grpc::StatusCode::CANCELLED) << status.error_message();
    ASSERT_TRUE(WaitIdle(2 + StopCeiling(600)))
        << "the analysis kept running after the client went away (seconds per token: "
        << token_seconds_ << ")";
  }
  v1::AnalyzeRequest small;
  small.mutable_ids()->add_ids(40);
  small.mutable_ids()->add_ids(41);
  small.mutable_generation()->set_max_new_tokens(2);
  grpc::ClientContext small_context;
  v1::AnalyzeResponse response;
  const grpc::Status status = stub->AnalyzeHeads(&small_context, small, &response);
  EXPECT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(response.prompt_length(), 2);
}

TEST_F(TinyServerTest, LargeAnalyzeHeadsReplyIsServedUpToMaxReplyBytes) {
  // Term submatrices of every head over a 1300-token word: a reply of several MB (it used to
  // fail in the transport: "Sent message larger than max (... vs. 2097152)").
  v1::AnalyzeRequest request;
  request.set_text(std::string(1300, 'x'));
  request.mutable_generation()->set_max_new_tokens(4);
  request.mutable_generation()->set_ignore_eos(true);
  request.mutable_analysis()->add_terms("x");
  request.mutable_analysis()->set_include_term_submatrix(true);
  auto stub = server_->Stub();
  grpc::ClientContext context;
  v1::AnalyzeResponse response;
  grpc::Status status = stub->AnalyzeHeads(&context, request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_GT(response.ByteSizeLong(), 3u << 20);
  EXPECT_FALSE(nlohmann::json::parse(response.report_json()).is_discarded());

  // The same reply from a server whose limit is below it: a clear status naming the key.
  service::ServerConfig config = TestConfig(*model_dir_);
  config.warmup = false;
  config.limits.max_reply_bytes = 1 << 20;
  std::unique_ptr<TestServer> small = TestServer::Start(config);
  ASSERT_NE(small, nullptr);
  auto small_stub = small->Stub();
  grpc::ClientContext small_context;
  status = small_stub->AnalyzeHeads(&small_context, request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_NE(status.error_message().find("limits.max_reply_bytes = 1048576"), std::string::npos)
      << status.error_message();
}

TEST_F(TinyServerTest, QueueFullIsResourceExhaustedAtOnce) {
  auto stub = server_->Stub();
  const service::EngineWorker& worker = server_->server().service().worker();
  // A and B: run (concurrent_generations 2). C: waits (queue_length 1). D: refused.
  grpc::ClientContext context_a, context_b, context_c;
  auto reader_a = stub->GenerateWithAttention(&context_a, LongRequest());
  ASSERT_TRUE(WaitFor([&] { return worker.running() == 1; }, 5));
  auto reader_b = stub->GenerateWithAttention(&context_b, LongRequest());
  ASSERT_TRUE(WaitFor([&] { return worker.running() == 2; }, 5));
  auto reader_c = stub->GenerateWithAttention(&context_c, LongRequest());
  const bool c_waits = WaitFor([&] { return worker.waiting() == 1; }, 5);
  EXPECT_TRUE(c_waits) << "C never waited in the queue; running " << worker.running();
  if (c_waits) {
    const auto start = Clock::now();
    StreamResult d = RunStream(stub.get(), LongRequest());
    EXPECT_EQ(d.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
    EXPECT_NE(d.status.error_message().find("queue_length = 1"), std::string::npos)
        << d.status.error_message();
    EXPECT_LT(std::chrono::duration<double>(Clock::now() - start).count(), 0.5);
  }
  context_a.TryCancel();
  context_b.TryCancel();
  context_c.TryCancel();
  v1::GenerateResponse message;
  for (auto* reader : {reader_a.get(), reader_b.get(), reader_c.get()}) {
    while (reader->Read(&message)) {
    }
    reader->Finish();
  }
  EXPECT_TRUE(WaitIdle(2 + 3 * StopCeiling(24)));
}

TEST_F(TinyServerTest, StalledReaderIsCutOffAfterTheStallTimeout) {
  auto stub = server_->Stub();
  grpc::ClientContext context;
  auto reader = stub->GenerateWithAttention(&context, LongRequest());
  v1::GenerateResponse message;
  ASSERT_TRUE(reader->Read(&message));  // header; then stop reading
  // stall_timeout_seconds = 1.5: the server gives up on its own, long before 1000 tokens.
  ASSERT_TRUE(WaitIdle(10 + StopCeiling(24))) << "the stalled stream was never cut off";
  bool saw_final = false;
  while (reader->Read(&message)) saw_final |= message.has_final();
  // The server cancelled the RPC (its log line says ABORTED: client stopped reading).
  const grpc::Status status = reader->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::CANCELLED) << status.error_message();
  EXPECT_FALSE(saw_final);
}

}  // namespace
}  // namespace attnscope::testing
