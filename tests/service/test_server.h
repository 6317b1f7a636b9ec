// A real attnscope server on a loopback ephemeral port, in this process, plus client helpers.
#pragma once

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "attnscope/v1/attnscope.grpc.pb.h"
#include "server/service/server.h"
#include "tests/common/npy.h"

namespace attnscope::testing {

inline std::string GoldenDir() { return DataDir() + "/golden/qwen2-tiny"; }

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
