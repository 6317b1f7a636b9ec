// Access to the service, each test on a server of its own: API keys (every method, per-key
// concurrency), TLS, health across start and drain, and the server process's SIGTERM drain.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <thread>

#include "client/cpp/remote/remote_client.h"
#include "gtest/gtest.h"
#include "tests/service/test_server.h"

namespace attnscope::testing {
namespace {

// A golden-model server whose api_keys_file (written to TempPath(file_name)) holds `keys`.
std::unique_ptr<TestServer> StartWithKeys(const std::string& file_name, const std::string& keys) {
  const std::string path = TempPath(file_name);
  {
    std::ofstream out(path);
    out << keys;
  }
  service::ServerConfig config = TestConfig(GoldenDir() + "/model");
  config.auth.api_keys_file = path;
  return TestServer::Start(config);
}

TEST(ServiceAuthTest, MissingOrWrongKeyIsUnauthenticatedOnEveryMethod) {
  std::unique_ptr<TestServer> server =
      StartWithKeys("keys.txt", "# test keys\nalice 0123456789abcdef0123456789\n");
  ASSERT_NE(server, nullptr);
  auto stub = server->Stub();
  for (const std::string& token : {std::string(), std::string("0123456789abcdef012345678X")}) {
    auto prepare = [&](grpc::ClientContext* context) {
      if (!token.empty()) context->AddMetadata("authorization", "Bearer " + token);
    };
    SCOPED_TRACE(token.empty() ? "no key" : "wrong key");
    StreamResult stream = RunStream(stub.get(), GoldenRequest(2), prepare);
    EXPECT_EQ(stream.status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
    EXPECT_EQ(stream.headers, 0);
    // Each unary method, called on a fresh context with the same credentials.
    auto unary_code = [&](const auto& call) {
      grpc::ClientContext context;
      prepare(&context);
      return call(&context).error_code();
    };
    v1::TokenizeRequest tokenize;
    tokenize.mutable_ids()->add_ids(1);
    v1::AnalyzeRequest analyze;
    analyze.mutable_ids()->add_ids(1);
    v1::GetModelInfoResponse info;
    v1::TokenizeResponse tokens;
    v1::AnalyzeResponse report;
    EXPECT_EQ(unary_code([&](grpc::ClientContext* c) { return stub->GetModelInfo(c, {}, &info); }),
              grpc::StatusCode::UNAUTHENTICATED);
    EXPECT_EQ(
        unary_code([&](grpc::ClientContext* c) { return stub->Tokenize(c, tokenize, &tokens); }),
        grpc::StatusCode::UNAUTHENTICATED);
    EXPECT_EQ(
        unary_code([&](grpc::ClientContext* c) { return stub->AnalyzeHeads(c, analyze, &report); }),
        grpc::StatusCode::UNAUTHENTICATED);
  }
  // The right key works, through the command line's client too.
  remote::RemoteTarget target;
  target.address = server->address();
  target.token = "0123456789abcdef0123456789";
  EXPECT_TRUE(remote::RemoteModelInfo(target).ok());
  absl::StatusOr<remote::RemoteCaptureSummary> capture =
      remote::RemoteCapture(target, GoldenRequest(2), TempPath("auth.safetensors"), false);
  EXPECT_TRUE(capture.ok()) << capture.status();
  target.token = "wrong-wrong-wrong-wrong";
  EXPECT_EQ(remote::RemoteModelInfo(target).status().code(), absl::StatusCode::kUnauthenticated);
}

TEST(ServiceTlsTest, ServesTlsWithTheConfiguredCertificate) {
  const std::string cert = TempPath("cert.pem"), key = TempPath("key.pem");
  const std::string command =
      "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost -addext "
      "subjectAltName=DNS:localhost,IP:127.0.0.1 -keyout " +
      key + " -out " + cert + " >/dev/null 2>&1";
  ASSERT_EQ(std::system(command.c_str()), 0)
      << "openssl cannot make a test certificate (scripts/install-deps.sh installs openssl)";
  service::ServerConfig config = TestConfig(GoldenDir() + "/model");
  config.tls.cert_file = cert;
  config.tls.key_file = key;
  std::unique_ptr<TestServer> server = TestServer::Start(config);
  ASSERT_NE(server, nullptr);
  remote::RemoteTarget target;
  target.address = server->address();
  target.tls_ca_file = cert;
  absl::StatusOr<v1::GetModelInfoResponse> info = remote::RemoteModelInfo(target);
  EXPECT_TRUE(info.ok()) << info.status();
  absl::StatusOr<remote::RemoteCaptureSummary> capture =
      remote::RemoteCapture(target, GoldenRequest(3), TempPath("tls.safetensors"), false);
  EXPECT_TRUE(capture.ok()) << capture.status();
  // A plaintext client cannot talk to it.
  target.tls_ca_file.clear();
  target.timeout_seconds = 2;
  EXPECT_FALSE(remote::RemoteModelInfo(target).ok());
}

TEST(ServiceAuthTest, PerKeyConcurrencyLimitIsEnforced) {
  std::unique_ptr<TestServer> server =
      StartWithKeys("keys_limit.txt", "bob fedcba9876543210fedcba98 1\n");
  ASSERT_NE(server, nullptr);
  auto stub = server->Stub();
  auto with_key = [](grpc::ClientContext* context) {
    context->AddMetadata("authorization", "Bearer fedcba9876543210fedcba98");
  };
  grpc::ClientContext first;
  with_key(&first);
  auto reader =
      stub->GenerateWithAttention(&first, GoldenRequest(400));  // MBs: outlasts flow control
  v1::GenerateResponse message;
  ASSERT_TRUE(reader->Read(&message));  // running: bob's one slot is taken
  StreamResult second = RunStream(stub.get(), GoldenRequest(2), with_key);
  EXPECT_EQ(second.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_NE(second.status.error_message().find("'bob'"), std::string::npos);
  while (reader->Read(&message)) {
  }
  EXPECT_TRUE(reader->Finish().ok());
  ASSERT_TRUE(WaitFor([&] { return server->server().service().in_flight() == 0; }, 5));
  EXPECT_TRUE(RunStream(stub.get(), GoldenRequest(2), with_key).status.ok());
}

TEST(ServiceHealthTest, NotServingThenServingThenNotServingAcrossStartAndDrain) {
  service::ServerConfig config = TestConfig(GoldenDir() + "/model");
  config.drain_grace_seconds = 10;
  std::unique_ptr<TestServer> server = TestServer::Start(config, /*load=*/false);
  ASSERT_NE(server, nullptr);
  EXPECT_EQ(HealthStatus(server->address()), 2);  // NOT_SERVING: no model yet
  auto stub = server->Stub();
  StreamResult early = RunStream(stub.get(), GoldenRequest(2));
  EXPECT_EQ(early.status.error_code(), grpc::StatusCode::UNAVAILABLE);
  ASSERT_TRUE(server->server().LoadModel().ok());
  EXPECT_EQ(HealthStatus(server->address()), 1);  // SERVING

  // An in-flight request, slowed by its reader, then a drain.
  grpc::ClientContext context;
  auto reader = stub->GenerateWithAttention(&context, GoldenRequest(400));
  v1::GenerateResponse message;
  ASSERT_TRUE(reader->Read(&message));
  std::thread drain([&] { server->server().Drain(); });
  EXPECT_TRUE(WaitFor([&] { return HealthStatus(server->address()) == 2; }, 5));
  StreamResult refused = RunStream(stub.get(), GoldenRequest(2));
  EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::UNAVAILABLE);
  // The in-flight request still completes inside the grace period.
  bool saw_final = false;
  while (reader->Read(&message)) saw_final |= message.has_final();
  EXPECT_TRUE(reader->Finish().ok());
  EXPECT_TRUE(saw_final);
  drain.join();
}

TEST(ServiceProcessTest, SigtermDrainsAndExitsZero) {
  int out_pipe[2];
  ASSERT_EQ(pipe(out_pipe), 0);
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    dup2(out_pipe[1], STDOUT_FILENO);
    close(out_pipe[0]);
    const std::string model = GoldenDir() + "/model";
    execl(ATTNSCOPE_SERVER_BINARY, ATTNSCOPE_SERVER_BINARY, "--model", model.c_str(), "--listen",
          "127.0.0.1:0", static_cast<char*>(nullptr));
    _exit(127);
  }
  close(out_pipe[1]);
  FILE* out = fdopen(out_pipe[0], "r");
  char line[256] = {0};
  int port = 0;
  while (port == 0 && std::fgets(line, sizeof(line), out) != nullptr) {
    std::sscanf(line, "attnscope-server listening on port %d", &port);
  }
  ASSERT_GT(port, 0) << "no port line from " << ATTNSCOPE_SERVER_BINARY;
  const std::string address = "127.0.0.1:" + std::to_string(port);
  EXPECT_TRUE(WaitFor([&] { return HealthStatus(address) == 1; }, 20));
  ASSERT_EQ(kill(pid, SIGTERM), 0);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  std::fclose(out);
}

}  // namespace
}  // namespace attnscope::testing
