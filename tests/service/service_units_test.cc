// Unit tests of the service's parts that need no model: config, API keys, chunking, the
// per-stream queue, the engine worker queue, and the client's stream reassembly checks.
#include <zlib.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <functional>
#include <mutex>
#include <thread>
#include <utility>

#include "client/cpp/remote/remote_client.h"
#include "gtest/gtest.h"
#include "server/service/api_keys.h"
#include "server/service/attention_chunker.h"
#include "server/service/engine_worker.h"
#include "server/service/in_flight.h"
#include "server/service/response_stream.h"
#include "server/service/server_config.h"
#include "server/session/intervention_wire.h"
#include "server/session/prepare.h"
#include "server/session/request_proto.h"
#include "server/status/field_error.h"

namespace attnscope::service {
namespace {

// The drain's bookkeeping (in_flight.h): queued calls end first, running ones only with
// EndAll, a call that registers after the drain began is ended at once, and a finished call
// leaves the count.
TEST(InFlightCallsTest, DrainEndsQueuedCallsFirstAndRunningOnesAtTheGrace) {
  InFlightCalls calls;
  std::vector<std::string> ended;  // "<call>:<message>"
  auto end_fn = [&ended](const std::string& name) {
    return [&ended, name](const grpc::Status& status) {
      ended.push_back(name + ":" + status.error_message());
    };
  };
  std::unique_ptr<InFlightToken> running = calls.Add();
  std::unique_ptr<InFlightToken> queued = calls.Add();
  std::unique_ptr<InFlightToken> done = calls.Add();
  running->SetEnd(end_fn("running"));
  queued->SetEnd(end_fn("queued"));
  running->MarkStarted();
  EXPECT_EQ(calls.count(), 3);
  done.reset();
  EXPECT_EQ(calls.count(), 2);

  EXPECT_EQ(calls.EndQueued(grpc::Status(grpc::StatusCode::UNAVAILABLE, "q")), 1);
  EXPECT_EQ(ended, std::vector<std::string>({"queued:q"}));
  // Admitted just before the drain, registering its end just after: ended at once.
  std::unique_ptr<InFlightToken> late = calls.Add();
  late->SetEnd(end_fn("late"));
  EXPECT_EQ(ended.back(), "late:q");

  ended.clear();
  EXPECT_EQ(calls.EndAll(grpc::Status(grpc::StatusCode::UNAVAILABLE, "grace")), 3);
  std::sort(ended.begin(), ended.end());
  EXPECT_EQ(ended, std::vector<std::string>({"late:grace", "queued:grace", "running:grace"}));
  queued.reset();
  late.reset();
  running.reset();
  EXPECT_EQ(calls.count(), 0);
}

TEST(ServerConfigTest, EmptyDocumentGivesDocumentedDefaults) {
  absl::StatusOr<ServerConfig> config = ParseServerConfig("", "test.yaml");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->listen, "127.0.0.1:50051");
  EXPECT_EQ(config->streaming.max_message_bytes, 1u << 20);
  EXPECT_EQ(config->queue_length, 16);
  EXPECT_TRUE(config->auth.api_keys_file.empty());
}

TEST(ServerConfigTest, ShippedConfigParsesToTheDefaults) {
  absl::StatusOr<ServerConfig> shipped =
      LoadServerConfig(std::string(ATTNSCOPE_SOURCE_DIR) + "/config/server.yaml");
  ASSERT_TRUE(shipped.ok()) << shipped.status();
  const ServerConfig defaults;
  EXPECT_EQ(shipped->listen, defaults.listen);
  EXPECT_EQ(shipped->queue_length, defaults.queue_length);
  EXPECT_EQ(shipped->concurrent_generations, defaults.concurrent_generations);
  EXPECT_EQ(shipped->limits.max_reply_bytes, defaults.limits.max_reply_bytes);
  EXPECT_EQ(defaults.limits.max_reply_bytes, 64u << 20);
  EXPECT_EQ(shipped->limits.max_capture_bytes, defaults.limits.max_capture_bytes);
  EXPECT_EQ(shipped->limits.max_total_tokens, defaults.limits.max_total_tokens);
  EXPECT_EQ(shipped->streaming.stream_queue_bytes, defaults.streaming.stream_queue_bytes);
  EXPECT_EQ(shipped->streaming.stall_timeout_seconds, defaults.streaming.stall_timeout_seconds);
  EXPECT_EQ(shipped->auth.max_concurrent_per_key, defaults.auth.max_concurrent_per_key);
  EXPECT_EQ(shipped->drain_grace_seconds, defaults.drain_grace_seconds);
  // The request size limits (issue 16), each named in its failure.
  const std::pair<const char*, int ServerLimits::*> size_limits[] = {
      {"max_prompt_bytes_per_token", &ServerLimits::max_prompt_bytes_per_token},
      {"max_stop_strings", &ServerLimits::max_stop_strings},
      {"max_stop_string_bytes", &ServerLimits::max_stop_string_bytes},
      {"max_eos_token_ids", &ServerLimits::max_eos_token_ids},
      {"max_index_entries", &ServerLimits::max_index_entries},
      {"max_terms", &ServerLimits::max_terms},
      {"max_queries", &ServerLimits::max_queries},
      {"max_term_bytes", &ServerLimits::max_term_bytes},
  };
  for (const auto& [name, limit] : size_limits) {
    EXPECT_EQ(shipped->limits.*limit, defaults.limits.*limit) << "limits." << name;
  }
  // The connections section (issue 16).
  const ConnectionOptions& c = shipped->connections;
  EXPECT_EQ(c.idle_timeout_seconds, defaults.connections.idle_timeout_seconds);
  EXPECT_EQ(c.max_age_seconds, defaults.connections.max_age_seconds);
  EXPECT_EQ(c.max_metadata_bytes, defaults.connections.max_metadata_bytes);
  EXPECT_EQ(c.memory_quota_bytes, defaults.connections.memory_quota_bytes);
  EXPECT_EQ(c.max_threads, defaults.connections.max_threads);
  EXPECT_EQ(defaults.auth.max_concurrent_per_key, 0);  // 0: concurrent_generations
}

TEST(ServerConfigTest, LayerDevicesListReachesTheConfig) {
  absl::StatusOr<ServerConfig> config =
      ParseServerConfig("device: cuda\nlayer_devices: [\"cuda:0\", \"cuda:1\"]\n", "test.yaml");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->layer_devices, (std::vector<std::string>{"cuda:0", "cuda:1"}));
  EXPECT_TRUE(ServerConfig().layer_devices.empty());
}

TEST(ServerConfigTest, UnknownKeyIsNamed) {
  absl::StatusOr<ServerConfig> config =
      ParseServerConfig("limits:\n  max_prompt_tokenz: 5\n", "test.yaml");
  ASSERT_FALSE(config.ok());
  EXPECT_NE(config.status().message().find("limits.max_prompt_tokenz"), std::string::npos)
      << config.status();
}

TEST(ServerConfigTest, OutOfRangeValueNamesKeyValueAndLimit) {
  absl::StatusOr<ServerConfig> config =
      ParseServerConfig("streaming:\n  stream_queue_bytes: 10\n", "test.yaml");
  ASSERT_FALSE(config.ok());
  const std::string message(config.status().message());
  EXPECT_NE(message.find("streaming.stream_queue_bytes = 10"), std::string::npos) << message;
  EXPECT_NE(message.find("1048576"), std::string::npos) << message;
}

TEST(ServerConfigTest, WrongTypeIsAnError) {
  EXPECT_FALSE(ParseServerConfig("queue_length: many\n", "test.yaml").ok());
}

// Both sums of prompt and max_new_tokens (the server's limit, then the model's positions)
// refuse generation.max_new_tokens, naming the sum and the limit; the prompt alone over its
// limit refuses the input.
TEST(TokenLimitsTest, EachLimitNamesTheSumAndRefusesMaxNewTokens) {
  session::RequestLimits limits;
  limits.max_prompt_tokens = 50;
  limits.max_total_tokens = 100;
  ModelConfig config;
  config.max_position_embeddings = 80;
  EXPECT_TRUE(session::CheckTokenLimits(30, 50, config, limits).ok());
  const auto expect_refused = [](const absl::Status& status, const std::string& message,
                                 const std::string& field) {
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(status.message(), message);
    EXPECT_EQ(RefusedField(status), field);
  };
  expect_refused(session::CheckTokenLimits(30, 71, ModelConfig(), limits),
                 "prompt tokens + generation.max_new_tokens = 30 + 71 = 101: exceeds the server "
                 "limit limits.max_total_tokens = 100",
                 "generation.max_new_tokens");
  expect_refused(session::CheckTokenLimits(30, 51, config, limits),
                 "prompt tokens + generation.max_new_tokens = 30 + 51 = 81: exceeds the model's "
                 "max_position_embeddings = 80",
                 "generation.max_new_tokens");
  expect_refused(session::CheckTokenLimits(51, 0, config, limits),
                 "prompt tokens = 51: exceeds the server limit limits.max_prompt_tokens = 50",
                 "input");
}

// The engine enums against the proto's numbers, written out here by hand, in both
// directions; an unknown number is refused naming the field, the value and every accepted
// value.
TEST(WireEnumTest, EachValueMapsBothWaysAndAnUnknownNumberListsTheAcceptedOnes) {
  const std::pair<DType, int> dtypes[] = {
      {DType::kFloat32, 1}, {DType::kFloat16, 2}, {DType::kBFloat16, 3}};
  for (const auto& [dtype, number] : dtypes) {
    EXPECT_EQ(session::ToWireDType(dtype), number);
    EXPECT_EQ(*session::FromWireDType(number, "capture.dtype"), dtype);
  }
  EXPECT_EQ(*session::FromWireDType(0, "capture.dtype"), DType::kFloat32);  // unspecified
  const std::pair<CaptureRows, int> rows[] = {
      {CaptureRows::kAll, 0}, {CaptureRows::kPromptOnly, 1}, {CaptureRows::kGeneratedOnly, 2}};
  for (const auto& [selection, number] : rows) {
    EXPECT_EQ(session::ToWireRows(selection), number);
    EXPECT_EQ(*session::FromWireRows(number, "capture.rows"), selection);
  }
  EXPECT_EQ(session::FromWireDType(9, "capture.dtype").status().message(),
            "capture.dtype = 9: unknown dtype; must be DTYPE_FLOAT32 (1), DTYPE_FLOAT16 (2) or "
            "DTYPE_BFLOAT16 (3)");
  EXPECT_EQ(RefusedField(session::FromWireRows(7, "capture.rows").status()), "capture.rows");
  EXPECT_EQ(session::FromWireRows(7, "capture.rows").status().message(),
            "capture.rows = 7: unknown row selection; must be ROWS_ALL (0), ROWS_PROMPT_ONLY (1) "
            "or ROWS_GENERATED_ONLY (2)");

  v1::Interventions wire;
  v1::HeadAblation* ablate = wire.add_items()->mutable_ablate();
  ablate->set_mode(static_cast<v1::AblationMode>(1));  // ABLATION_MEAN
  v1::AttentionKnockout* knockout = wire.add_items()->mutable_knockout();
  knockout->set_rows(static_cast<v1::KnockoutRows>(2));  // KNOCKOUT_ROWS_RANGE
  knockout->set_row_begin(3);
  knockout->set_row_end(5);
  v1::AttentionKnockout* generated = wire.add_items()->mutable_knockout();
  generated->set_rows(static_cast<v1::KnockoutRows>(1));  // KNOCKOUT_ROWS_GENERATED
  generated->set_row_begin(3);                            // ignored outside a range
  absl::StatusOr<std::vector<Intervention>> items = InterventionsFromWire(wire);
  ASSERT_TRUE(items.ok()) << items.status();
  EXPECT_EQ((*items)[0].mode, AblationMode::kMean);
  EXPECT_EQ((*items)[1].rows, KnockoutRows::kRange);
  EXPECT_EQ((*items)[1].row_begin, 3);
  EXPECT_EQ((*items)[1].row_end, 5);
  EXPECT_EQ((*items)[2].rows, KnockoutRows::kGenerated);
  EXPECT_EQ((*items)[2].row_begin, 0);
  google::protobuf::RepeatedPtrField<v1::Intervention> back;
  InterventionsToWire(*items, &back);
  EXPECT_EQ(static_cast<int>(back[0].ablate().mode()), 1);
  EXPECT_EQ(static_cast<int>(back[1].knockout().rows()), 2);
  EXPECT_EQ(static_cast<int>(back[2].knockout().rows()), 1);

  ablate->set_mode(static_cast<v1::AblationMode>(5));
  EXPECT_EQ(InterventionsFromWire(wire).status().message(),
            "interventions[0].mode = 5: unknown mode; must be ABLATION_ZERO (0) or "
            "ABLATION_MEAN (1)");
  ablate->set_mode(static_cast<v1::AblationMode>(0));
  knockout->set_rows(static_cast<v1::KnockoutRows>(4));
  EXPECT_EQ(InterventionsFromWire(wire).status().message(),
            "interventions[1].rows = 4: unknown row selection; must be KNOCKOUT_ROWS_ALL (0), "
            "KNOCKOUT_ROWS_GENERATED (1) or KNOCKOUT_ROWS_RANGE (2)");
}

TEST(ApiKeysTest, ConstantTimeEqualsCompares) {
  EXPECT_TRUE(ConstantTimeEquals("abcdef", "abcdef"));
  EXPECT_FALSE(ConstantTimeEquals("abcdef", "abcdeg"));
  EXPECT_FALSE(ConstantTimeEquals("abcdef", "abcde"));
  EXPECT_FALSE(ConstantTimeEquals("", "a"));
}

TEST(ApiKeysTest, AuthenticatesByBearerSecretAndReturnsTheName) {
  absl::StatusOr<ApiKeyTable> table = ApiKeyTable::Parse(
      "# lab keys\nalice 0123456789abcdef0123\nbob   fedcba9876543210fedc 1\n", "keys", 4);
  ASSERT_TRUE(table.ok()) << table.status();
  std::string_view good = "Bearer fedcba9876543210fedc";
  absl::StatusOr<const ApiKey*> key = table->Authenticate(&good);
  ASSERT_TRUE(key.ok());
  EXPECT_EQ((*key)->name, "bob");
  EXPECT_EQ((*key)->max_concurrent, 1);
  std::string_view wrong = "Bearer fedcba9876543210fedX";
  EXPECT_EQ(table->Authenticate(&wrong).status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(table->Authenticate(nullptr).status().code(), absl::StatusCode::kUnauthenticated);
  std::string_view no_scheme = "fedcba9876543210fedc";
  EXPECT_EQ(table->Authenticate(&no_scheme).status().code(), absl::StatusCode::kUnauthenticated);
  // The presented secret never appears in the message.
  EXPECT_EQ(table->Authenticate(&wrong).status().message().find("fedcba"), std::string::npos);
}

TEST(ApiKeysTest, PerKeyConcurrencyLimitAndRelease) {
  absl::StatusOr<ApiKeyTable> table = ApiKeyTable::Parse("bob fedcba9876543210fedc 2\n", "keys", 4);
  ASSERT_TRUE(table.ok());
  std::string_view header = "Bearer fedcba9876543210fedc";
  const ApiKey* key = *table->Authenticate(&header);
  absl::StatusOr<KeyLease> first = table->Acquire(*key);
  absl::StatusOr<KeyLease> second = table->Acquire(*key);
  ASSERT_TRUE(first.ok() && second.ok());
  absl::StatusOr<KeyLease> third = table->Acquire(*key);
  ASSERT_EQ(third.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(third.status().message().find("'bob'"), std::string::npos);
  *first = KeyLease();  // releases one slot
  EXPECT_TRUE(table->Acquire(*key).ok());
}

TEST(ApiKeysTest, RejectsShortSecretsAndDuplicateNames) {
  EXPECT_FALSE(ApiKeyTable::Parse("alice short\n", "keys", 4).ok());
  EXPECT_FALSE(ApiKeyTable::Parse("a 0123456789abcdef0\na 0123456789abcdef1\n", "keys", 4).ok());
  EXPECT_FALSE(ApiKeyTable::Parse("# only comments\n", "keys", 4).ok());
}

// A [H, R, K] block whose value at (h, r, k) is a distinct number for k <= row, zero after.
struct TestBlock {
  std::vector<int> heads;
  std::vector<float> data;
  AttentionBlock block;
  TestBlock(int layer, std::vector<int> head_list, int first_row, int num_rows, int key_length)
      : heads(std::move(head_list)) {
    data.resize(heads.size() * num_rows * key_length);
    for (size_t h = 0; h < heads.size(); ++h) {
      for (int r = 0; r < num_rows; ++r) {
        for (int k = 0; k < key_length; ++k) {
          data[(h * num_rows + r) * key_length + k] =
              k <= first_row + r ? 1000.0f * h + 10.0f * (first_row + r) + k + 1 : 0.0f;
        }
      }
    }
    block.layer = layer;
    block.heads = &heads;
    block.first_row = first_row;
    block.num_rows = num_rows;
    block.key_length = key_length;
    block.data = data.data();
  }
};

// Value the TestBlock puts at (head position h, row, key).
float Expected(int h, int row, int key) {
  return key <= row ? 1000.0f * h + 10.0f * row + key + 1 : 0.0f;
}

TEST(AttentionChunkerTest, ChunksRespectTheLimitAndReassembleExactly) {
  CaptureSpec spec;
  spec.layers = {0};
  spec.heads = {1, 3};
  const int prompt = 20;
  const uint64_t limit = 2 * 21 * 4 * 5;  // five full rows of 21 keys, two heads
  std::vector<v1::AttentionChunk> chunks;
  AttentionChunker chunker(spec, prompt, limit, [&](v1::AttentionChunk&& chunk) {
    chunks.push_back(std::move(chunk));
    return absl::OkStatus();
  });
  TestBlock prefill(0, spec.heads, 0, prompt, prompt);
  ASSERT_TRUE(chunker.Add(prefill.block).ok());
  for (int row = prompt; row < prompt + 6; ++row) {
    TestBlock decode(0, spec.heads, row, 1, row + 1);
    ASSERT_TRUE(chunker.Add(decode.block).ok());
  }
  ASSERT_TRUE(chunker.Flush().ok());

  const int total = prompt + 6;
  std::vector<int> seen(total, 0);
  uint32_t crc = 0;
  uint64_t bytes = 0;
  for (size_t i = 0; i < chunks.size(); ++i) {
    const v1::AttentionChunk& c = chunks[i];
    EXPECT_EQ(c.sequence_number(), i);
    EXPECT_LE(c.data().size(), limit);
    ASSERT_EQ(c.data().size(), 2u * c.num_rows() * c.key_length() * 4);
    EXPECT_LE(c.key_length(), c.first_row() + c.num_rows());
    const float* values = reinterpret_cast<const float*>(c.data().data());
    for (int h = 0; h < 2; ++h) {
      for (int r = 0; r < c.num_rows(); ++r) {
        const int row = c.first_row() + r;
        for (int k = 0; k < c.key_length(); ++k) {
          ASSERT_EQ(values[(h * c.num_rows() + r) * c.key_length() + k], Expected(h, row, k))
              << "chunk " << i << " head " << h << " row " << row << " key " << k;
        }
      }
    }
    for (int r = 0; r < c.num_rows(); ++r) ++seen[c.first_row() + r];
    crc = crc32_z(crc, reinterpret_cast<const Bytef*>(c.data().data()), c.data().size());
    bytes += c.data().size();
  }
  for (int row = 0; row < total; ++row) EXPECT_EQ(seen[row], 1) << "row " << row;
  EXPECT_EQ(chunker.chunks_sent(), chunks.size());
  EXPECT_EQ(chunker.bytes_sent(), bytes);
  EXPECT_EQ(chunker.data_crc32(), crc);
  // Decode rows were batched: 6 rows of at most 26 keys fit in two chunks, not six.
  int decode_chunks = 0;
  for (const auto& c : chunks) decode_chunks += c.first_row() >= prompt;
  EXPECT_LE(decode_chunks, 2);
}

TEST(AttentionChunkerTest, RowTooBigForOneMessageIsSplitByHeads) {
  CaptureSpec spec;
  spec.layers = {2};
  spec.heads = {0, 1, 2, 3, 4};
  const uint64_t limit = 2 * 16 * 4;  // two heads of a 16-key row
  std::vector<v1::AttentionChunk> chunks;
  AttentionChunker chunker(spec, 16, limit, [&](v1::AttentionChunk&& chunk) {
    chunks.push_back(std::move(chunk));
    return absl::OkStatus();
  });
  TestBlock block(2, spec.heads, 15, 1, 16);
  ASSERT_TRUE(chunker.Add(block.block).ok());
  ASSERT_TRUE(chunker.Flush().ok());
  ASSERT_EQ(chunks.size(), 3u);  // heads {0,1}, {2,3}, {4}
  EXPECT_EQ(chunks[2].heads_size(), 1);
  EXPECT_EQ(chunks[2].heads(0), 4);
  for (const auto& c : chunks) {
    EXPECT_LE(c.data().size(), limit);
    EXPECT_EQ(c.shape(0), c.heads_size());
  }
  const float* last = reinterpret_cast<const float*>(chunks[2].data().data());
  EXPECT_EQ(last[3], Expected(4, 15, 3));
}

TEST(AttentionChunkerTest, RowSelectionDropsRows) {
  CaptureSpec spec;
  spec.layers = {0};
  spec.heads = {0};
  spec.rows = CaptureRows::kGeneratedOnly;
  std::vector<v1::AttentionChunk> chunks;
  AttentionChunker chunker(spec, 4, 1 << 20, [&](v1::AttentionChunk&& chunk) {
    chunks.push_back(std::move(chunk));
    return absl::OkStatus();
  });
  TestBlock prefill(0, spec.heads, 0, 4, 4);
  TestBlock decode(0, spec.heads, 4, 1, 5);
  ASSERT_TRUE(chunker.Add(prefill.block).ok());
  ASSERT_TRUE(chunker.Add(decode.block).ok());
  ASSERT_TRUE(chunker.Flush().ok());
  ASSERT_EQ(chunks.size(), 1u);
  EXPECT_EQ(chunks[0].first_row(), 4);
  EXPECT_EQ(chunks[0].num_rows(), 1);
}

v1::GenerateResponse TokenMessage(int64_t id) {
  v1::GenerateResponse message;
  message.mutable_token()->set_id(id);
  message.mutable_token()->set_text(std::string(1000, 'x'));  // ~1 KB each
  return message;
}

// The reactor side simulated: writes are recorded and completed when the test says.
struct FakeReactor {
  std::mutex mutex;
  std::vector<int64_t> written;
  int pending_writes = 0;
  bool finished = false;
  grpc::Status status;
};

TEST(ResponseStreamTest, ProducerBlocksWhenFullAndResumesWhenTheReaderReads) {
  FakeReactor fake;
  ResponseStream* stream_ptr = nullptr;
  ResponseStream stream(
      3000, std::chrono::seconds(10),
      [&](const v1::GenerateResponse* message) {
        std::lock_guard<std::mutex> lock(fake.mutex);
        fake.written.push_back(message->token().id());
        ++fake.pending_writes;
      },
      [&](const grpc::Status& status) {
        std::lock_guard<std::mutex> lock(fake.mutex);
        fake.finished = true;
        fake.status = status;
      });
  stream_ptr = &stream;
  std::atomic<int> pushed{0};
  std::thread producer([&] {
    for (int i = 0; i < 6; ++i) {
      ASSERT_TRUE(stream_ptr->Push(TokenMessage(i)).ok());
      pushed.store(i + 1);
    }
    stream_ptr->Close(grpc::Status::OK);
  });
  // Waits on the fake reactor's state (never a fixed sleep): the machine may be loaded.
  const auto wait_until = [&](const std::function<bool()>& done) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (!done() && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return done();
  };
  const auto started = std::chrono::steady_clock::now();
  ASSERT_TRUE(wait_until([&] { return pushed.load() >= 2; }));
  // No write has completed, so the producer must now be blocked: give it ten times as long
  // as the first two pushes took (at least 50 ms) to overrun the bound, then check it did not.
  // ~1 KB messages, 3000-byte bound: in flight + queued stop at 2 (a third would exceed it).
  std::this_thread::sleep_for(std::max<std::chrono::steady_clock::duration>(
      10 * (std::chrono::steady_clock::now() - started), std::chrono::milliseconds(50)));
  EXPECT_LE(pushed.load(), 3);
  for (int completed = 0; completed < 6; ++completed) {
    // Complete a write only once one is in flight, as gRPC does.
    ASSERT_TRUE(wait_until([&] {
      std::lock_guard<std::mutex> lock(fake.mutex);
      return fake.pending_writes > completed;
    })) << "write "
        << completed << " never started";
    stream.OnWriteDone(true);
  }
  producer.join();
  ASSERT_TRUE(wait_until([&] {
    std::lock_guard<std::mutex> lock(fake.mutex);
    return fake.finished;
  }));
  std::lock_guard<std::mutex> lock(fake.mutex);
  EXPECT_EQ(fake.written, (std::vector<int64_t>{0, 1, 2, 3, 4, 5}));
  EXPECT_TRUE(fake.finished);
  EXPECT_TRUE(fake.status.ok());
}

TEST(ResponseStreamTest, StalledReaderIsAbortedAfterTheTimeout) {
  bool finished = false;
  bool cancelled = false;
  grpc::Status status;
  ResponseStream* self = nullptr;
  ResponseStream stream(
      1500, std::chrono::milliseconds(300), [](const v1::GenerateResponse*) {},
      [&](const grpc::Status& s) {
        finished = true;
        status = s;
      },
      [&] {
        cancelled = true;
        self->OnCancel();  // what gRPC reports for a server-side cancel
      });
  self = &stream;
  ASSERT_TRUE(stream.Push(TokenMessage(0)).ok());  // in flight, never completes
  const auto start = std::chrono::steady_clock::now();
  absl::Status blocked = stream.Push(TokenMessage(1));
  const double waited =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(blocked.code(), absl::StatusCode::kAborted);
  EXPECT_NE(blocked.message().find("stopped reading"), std::string::npos);
  EXPECT_GE(waited, 0.25);
  EXPECT_LT(waited, 2.0);
  EXPECT_TRUE(cancelled);  // the RPC is cancelled so the stuck write can complete
  EXPECT_FALSE(finished);  // the in-flight write must complete before Finish
  stream.OnWriteDone(false);
  EXPECT_TRUE(finished);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::ABORTED);
}

TEST(ResponseStreamTest, CancelWakesABlockedProducer) {
  ResponseStream stream(
      1500, std::chrono::seconds(30), [](const v1::GenerateResponse*) {},
      [](const grpc::Status&) {});
  ASSERT_TRUE(stream.Push(TokenMessage(0)).ok());
  std::thread canceller([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    stream.OnCancel();
  });
  EXPECT_EQ(stream.Push(TokenMessage(1)).code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(stream.CheckOpen().code(), absl::StatusCode::kCancelled);
  canceller.join();
}

TEST(EngineWorkerTest, RunsInArrivalOrderAndRefusesBeyondTheQueueLength) {
  std::mutex mutex;
  std::condition_variable cv;
  bool release = false;
  std::vector<int> order;
  {
    EngineWorker worker(2);
    ASSERT_TRUE(worker
                    .Submit([&] {
                      std::unique_lock<std::mutex> lock(mutex);
                      cv.wait(lock, [&] { return release; });
                      order.push_back(0);
                    })
                    .ok());
    while (!worker.busy()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    ASSERT_TRUE(worker.Submit([&] { order.push_back(1); }).ok());
    ASSERT_TRUE(worker.Submit([&] { order.push_back(2); }).ok());
    absl::Status refused = worker.Submit([&] { order.push_back(3); });
    EXPECT_EQ(refused.code(), absl::StatusCode::kResourceExhausted);
    EXPECT_NE(refused.message().find("queue_length = 2"), std::string::npos);
    {
      std::lock_guard<std::mutex> lock(mutex);
      release = true;
    }
    cv.notify_all();
  }  // the destructor runs what was queued
  EXPECT_EQ(order, (std::vector<int>{0, 1, 2}));
}

TEST(EngineWorkerTest, ABlockedJobHoldsOnlyItsOwnWorker) {
  // A job blocked on its reader (here: on a flag) must not stop the next job from running.
  // (EXPECT, not ASSERT, inside the scope: leaving it early would join a blocked worker.)
  std::mutex mutex;
  std::condition_variable cv;
  bool release = false;
  std::atomic<bool> second_ran{false};
  std::vector<int> started;
  {
    EngineWorker worker(/*queue_length=*/1, /*workers=*/2);
    EXPECT_TRUE(worker
                    .Submit([&] {
                      std::unique_lock<std::mutex> lock(mutex);
                      started.push_back(0);
                      cv.wait(lock, [&] { return release; });
                    })
                    .ok());
    while (!worker.busy()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    EXPECT_TRUE(worker
                    .Submit([&] {
                      {
                        std::lock_guard<std::mutex> lock(mutex);
                        started.push_back(1);
                      }
                      second_ran = true;
                    })
                    .ok());
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (!second_ran && std::chrono::steady_clock::now() < give_up) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    EXPECT_TRUE(second_ran) << "the second job waited behind the blocked one";
    while (worker.running() != 1) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    // One worker blocked, one free: job 2 runs (and blocks), job 3 waits (queue_length 1),
    // job 4 is refused.
    auto blocking_job = [&](int id) {
      return [&, id] {
        std::unique_lock<std::mutex> lock(mutex);
        started.push_back(id);
        cv.wait(lock, [&] { return release; });
      };
    };
    EXPECT_TRUE(worker.Submit(blocking_job(2)).ok());
    EXPECT_TRUE(worker.Submit(blocking_job(3)).ok());
    absl::Status refused = worker.Submit(blocking_job(4));
    EXPECT_EQ(refused.code(), absl::StatusCode::kResourceExhausted);
    EXPECT_NE(refused.message().find("concurrent_generations = 2"), std::string::npos)
        << refused.message();
    {
      std::lock_guard<std::mutex> lock(mutex);
      release = true;
    }
    cv.notify_all();
  }
  EXPECT_EQ(started, (std::vector<int>{0, 1, 2, 3}));
}

// Client-side reassembly checks on hand-made streams.
class ReceiverTest : public ::testing::Test {
 protected:
  void SetUp() override {
    v1::GenerateResponse header;
    header.mutable_header()->add_prompt_ids(5);
    header.mutable_header()->add_prompt_ids(6);
    header.mutable_header()->mutable_capture()->add_layers(0);
    header.mutable_header()->mutable_capture()->add_heads(0);
    header.mutable_header()->mutable_capture()->set_dtype(v1::DTYPE_FLOAT32);
    ASSERT_TRUE(receiver_.OnMessage(header).ok());
  }
  v1::GenerateResponse Chunk(uint64_t sequence, int first_row, int num_rows, int key_length) {
    v1::GenerateResponse message;
    v1::AttentionChunk* c = message.mutable_chunk();
    c->set_layer(0);
    c->add_heads(0);
    c->set_first_row(first_row);
    c->set_num_rows(num_rows);
    c->set_key_length(key_length);
    c->set_dtype(v1::DTYPE_FLOAT32);
    c->add_shape(1);
    c->add_shape(num_rows);
    c->add_shape(key_length);
    std::vector<float> values(num_rows * key_length, 0.5f);
    c->set_data(std::string(reinterpret_cast<const char*>(values.data()), values.size() * 4));
    c->set_sequence_number(sequence);
    crc_ = crc32_z(crc_, reinterpret_cast<const Bytef*>(c->data().data()), c->data().size());
    bytes_ += c->data().size();
    return message;
  }
  v1::GenerateResponse Final(uint64_t chunks) {
    v1::GenerateResponse message;
    message.mutable_final()->set_total_chunks(chunks);
    message.mutable_final()->set_total_attention_bytes(bytes_);
    message.mutable_final()->set_data_crc32(crc_);
    message.mutable_final()->add_generated_ids(7);
    return message;
  }
  v1::GenerateResponse Token() {
    v1::GenerateResponse message;
    message.mutable_token()->set_id(7);
    message.mutable_token()->set_position(2);
    return message;
  }
  remote::CaptureStreamReceiver receiver_;
  uint32_t crc_ = 0;
  uint64_t bytes_ = 0;
};

TEST_F(ReceiverTest, CompleteStreamPasses) {
  ASSERT_TRUE(receiver_.OnMessage(Chunk(0, 0, 2, 2)).ok());
  ASSERT_TRUE(receiver_.OnMessage(Token()).ok());
  ASSERT_TRUE(receiver_.OnMessage(Chunk(1, 2, 1, 3)).ok());
  ASSERT_TRUE(receiver_.OnMessage(Final(2)).ok());
  EXPECT_TRUE(receiver_.Finish().ok()) << receiver_.Finish();
}

TEST_F(ReceiverTest, LostChunkIsDataLoss) {
  ASSERT_TRUE(receiver_.OnMessage(Chunk(0, 0, 2, 2)).ok());
  absl::Status gap = receiver_.OnMessage(Chunk(2, 2, 1, 3));
  EXPECT_EQ(gap.code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(gap.message().find("expected 1"), std::string::npos);
}

TEST_F(ReceiverTest, MissingRowIsDetected) {
  ASSERT_TRUE(receiver_.OnMessage(Chunk(0, 0, 2, 2)).ok());
  ASSERT_TRUE(receiver_.OnMessage(Token()).ok());
  ASSERT_TRUE(receiver_.OnMessage(Final(1)).ok());
  absl::Status finish = receiver_.Finish();
  EXPECT_EQ(finish.code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(finish.message().find("layer 0 has 2 query rows, expected 3"), std::string::npos)
      << finish;
}

TEST_F(ReceiverTest, WrongChecksumIsDetected) {
  ASSERT_TRUE(receiver_.OnMessage(Chunk(0, 0, 2, 2)).ok());
  ASSERT_TRUE(receiver_.OnMessage(Token()).ok());
  ASSERT_TRUE(receiver_.OnMessage(Chunk(1, 2, 1, 3)).ok());
  v1::GenerateResponse final = Final(2);
  final.mutable_final()->set_data_crc32(crc_ ^ 1);
  ASSERT_TRUE(receiver_.OnMessage(final).ok());
  EXPECT_NE(receiver_.Finish().message().find("CRC-32"), std::string::npos);
}

TEST_F(ReceiverTest, MissingFinalIsDetected) {
  ASSERT_TRUE(receiver_.OnMessage(Chunk(0, 0, 2, 2)).ok());
  EXPECT_NE(receiver_.Finish().message().find("no Final"), std::string::npos);
}

TEST_F(ReceiverTest, KeyLengthOtherThanFirstRowPlusNumRowsIsCorrupt) {
  // The contract: key_length == first_row + num_rows (the proto's AttentionChunk).
  ASSERT_TRUE(receiver_.OnMessage(Chunk(0, 0, 2, 2)).ok());
  ASSERT_TRUE(receiver_.OnMessage(Token()).ok());
  absl::Status short_keys = receiver_.OnMessage(Chunk(1, 2, 1, 2));
  EXPECT_EQ(short_keys.code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(short_keys.message().find("key_length 2"), std::string::npos) << short_keys;
}

TEST_F(ReceiverTest, SizeMismatchIsDetected) {
  v1::GenerateResponse chunk = Chunk(0, 0, 2, 2);
  chunk.mutable_chunk()->mutable_data()->pop_back();
  EXPECT_EQ(receiver_.OnMessage(chunk).code(), absl::StatusCode::kDataLoss);
}

}  // namespace
}  // namespace attnscope::service
