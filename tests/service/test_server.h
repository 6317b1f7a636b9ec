// A real attnscope server on a loopback ephemeral port, in this process, plus client helpers
// the service's test files share (golden requests, a stream reader, polling waits).
#pragma once

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_split.h"
#include "attnscope/v1/attnscope.grpc.pb.h"
#include "google/rpc/error_details.pb.h"
#include "google/rpc/status.pb.h"
#include "gtest/gtest.h"
#include "server/service/server.h"
#include "tests/common/npy.h"

namespace attnscope::testing {

inline std::string GoldenDir() { return DataDir() + "/golden/qwen2-tiny"; }

inline std::vector<int64_t> GoldenIds(const std::string& name) {
  absl::StatusOr<NpyArray> array = ReadNpy(GoldenDir() + "/" + name);
  EXPECT_TRUE(array.ok()) << array.status();
  return array.ok() ? array->AsInt64() : std::vector<int64_t>();
}

// The golden prompt's ids, greedy, `max_new_tokens` long.
inline v1::GenerateRequest GoldenRequest(int max_new_tokens = 12) {
  v1::GenerateRequest request;
  for (int64_t id : GoldenIds("prompt_ids.npy")) request.mutable_ids()->add_ids(id);
  request.mutable_generation()->set_max_new_tokens(max_new_tokens);
  // Long requests exist to keep a stream busy: make their length certain.
  if (max_new_tokens > 100) request.mutable_generation()->set_ignore_eos(true);
  return request;
}

inline service::ServerConfig TestConfig(const std::string& model_dir) {
  service::ServerConfig config;
  config.listen = "127.0.0.1:0";
  config.model_dir = model_dir;
  config.log_level = "warn";
  return config;
}

class TestServer {
 public:
  // Starts the server; with `load`, loads config.model_dir and waits until SERVING.
  static std::unique_ptr<TestServer> Start(const service::ServerConfig& config, bool load = true) {
    auto server = service::AttnScopeServer::Start(config);
    if (!server.ok()) {
      ADD_FAILURE() << server.status();
      return nullptr;
    }
    std::unique_ptr<TestServer> test(new TestServer());
    test->server_ = *std::move(server);
    if (load) {
      absl::Status loaded = test->server_->LoadModel();
      if (!loaded.ok()) {
        ADD_FAILURE() << loaded;
        return nullptr;
      }
    }
    return test;
  }

  std::string address() const { return "127.0.0.1:" + std::to_string(server_->port()); }
  service::AttnScopeServer& server() { return *server_; }
  std::shared_ptr<grpc::Channel> channel() {
    if (!channel_) {
      grpc::ChannelArguments args;
      args.SetMaxReceiveMessageSize(-1);
      channel_ = grpc::CreateCustomChannel(address(), grpc::InsecureChannelCredentials(), args);
    }
    return channel_;
  }
  std::unique_ptr<v1::AttnScope::Stub> Stub() { return v1::AttnScope::NewStub(channel()); }

 private:
  TestServer() = default;
  std::unique_ptr<service::AttnScopeServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
};

// What one GenerateWithAttention stream brought: counts of each event, the last of each.
struct StreamResult {
  grpc::Status status;
  int headers = 0, tokens = 0, chunks = 0, finals = 0;
  std::string text_pieces;
  v1::Header header;
  v1::Final final_message;
};

// Reads a whole stream; `prepare` sets up the context (metadata, deadline) first.
inline StreamResult RunStream(v1::AttnScope::Stub* stub, const v1::GenerateRequest& request,
                              const std::function<void(grpc::ClientContext*)>& prepare = nullptr) {
  grpc::ClientContext context;
  if (prepare) prepare(&context);
  StreamResult result;
  auto reader = stub->GenerateWithAttention(&context, request);
  v1::GenerateResponse message;
  while (reader->Read(&message)) {
    switch (message.event_case()) {
      case v1::GenerateResponse::kHeader:
        ++result.headers;
        result.header = message.header();
        break;
      case v1::GenerateResponse::kToken:
        ++result.tokens;
        result.text_pieces += message.token().text();
        break;
      case v1::GenerateResponse::kChunk:
        ++result.chunks;
        break;
      case v1::GenerateResponse::kFinal:
        ++result.finals;
        result.final_message = message.final();
        break;
      default:
        break;
    }
  }
  result.status = reader->Finish();
  return result;
}

// Polls until `condition` holds or `seconds` pass; returns whether it held.
inline bool WaitFor(const std::function<bool()>& condition, double seconds) {
  using Clock = std::chrono::steady_clock;
  const auto deadline = Clock::now() + std::chrono::duration<double>(seconds);
  while (Clock::now() < deadline) {
    if (condition()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return condition();
}

// grpc.health.v1.Health/Check through the generic stub (no generated health code needed):
// 1 SERVING, 2 NOT_SERVING, 0 UNKNOWN, -1 when the call fails.
inline int HealthStatus(const std::string& address) {
  auto channel = grpc::CreateChannel(address, grpc::InsecureChannelCredentials());
  grpc::GenericStub stub(channel);
  grpc::Slice empty_request("", 0);
  grpc::ByteBuffer request(&empty_request, 1);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(3));
  grpc::CompletionQueue queue;
  auto call = stub.PrepareUnaryCall(&context, "/grpc.health.v1.Health/Check", request, &queue);
  call->StartCall();
  grpc::ByteBuffer response;
  grpc::Status status;
  call->Finish(&response, &status, reinterpret_cast<void*>(1));
  void* tag = nullptr;
  bool ok = false;
  queue.Next(&tag, &ok);
  queue.Shutdown();
  while (queue.Next(&tag, &ok)) {
  }
  if (!status.ok()) return -1;
  std::vector<grpc::Slice> slices;
  if (!response.Dump(&slices).ok()) return -1;
  std::string bytes;
  for (const auto& slice : slices)
    bytes.append(reinterpret_cast<const char*>(slice.begin()), slice.size());
  // HealthCheckResponse { ServingStatus status = 1; } -> 0x08 <varint>.
  if (bytes.empty()) return 0;
  return bytes.size() >= 2 && bytes[0] == 0x08 ? bytes[1] : -1;
}

// True when every dotted part of `path` (indices "[i]" dropped) names a field or a oneof of
// the message it is in, starting at `message`: the paths the server reports are the .proto's.
inline bool PathResolvesIn(const google::protobuf::Descriptor* message, const std::string& path) {
  for (absl::string_view part : absl::StrSplit(path, '.')) {
    const std::string name(part.substr(0, part.find('[')));
    if (message == nullptr) return false;
    if (const google::protobuf::FieldDescriptor* field = message->FindFieldByName(name)) {
      message = field->message_type();
    } else if (message->FindOneofByName(name) != nullptr) {
      message = nullptr;  // a oneof ends the path
    } else {
      return false;
    }
  }
  return true;
}

// The field path of the google.rpc.BadRequest in `status`'s details (the
// grpc-status-details-bin trailer); "" when there are no details. Checks that the details
// are one google.rpc.Status with the same code and message holding one BadRequest with one
// violation whose description is the human message.
inline std::string RefusedFieldOf(const grpc::Status& status) {
  if (status.error_details().empty()) return "";
  google::rpc::Status details;
  if (!details.ParseFromString(status.error_details())) {
    ADD_FAILURE() << "details are not a google.rpc.Status";
    return "(unparsable)";
  }
  EXPECT_EQ(details.code(), static_cast<int>(status.error_code()));
  EXPECT_EQ(details.message(), status.error_message());
  google::rpc::BadRequest bad_request;
  if (details.details_size() != 1 || !details.details(0).UnpackTo(&bad_request) ||
      bad_request.field_violations_size() != 1) {
    ADD_FAILURE() << "details hold no single BadRequest violation: " << details.DebugString();
    return "(malformed)";
  }
  EXPECT_EQ(bad_request.field_violations(0).description(), status.error_message());
  return bad_request.field_violations(0).field();
}

inline std::string TempPath(const std::string& name) {
  const auto dir = std::filesystem::temp_directory_path() /
                   ("attnscope_service_test_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  return (dir / name).string();
}

inline int OpenFileDescriptors() {
  int count = 0;
  for (const auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) {
    (void)entry;
    ++count;
  }
  return count;
}

inline long ResidentKilobytes() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  }
  return -1;
}

}  // namespace attnscope::testing
