// Local mode equals remote mode by construction: one flag parser, one Request, one session
// library. Checked from the outside: the `attnscope` binary runs each flag set twice, once
// with --model (in-process) and once with --server against a real server on loopback that
// serves the same model folder, and the two capture files must be byte-identical; a flag set
// that one mode refuses, the other refuses with the same message.
#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "server/capture/capture_file.h"
#include "server/model/tiny_model.h"
#include "tests/service/test_server.h"

namespace attnscope::testing {
namespace {

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

void WriteFile(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
}

std::string Quote(const std::string& arg) {
  std::string quoted = "'";
  for (char c : arg) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return quoted + "'";
}

struct CliRun {
  int exit_code = -1;
  std::string out;  // stdout
  std::string err;  // stderr
};

CliRun RunCli(const std::vector<std::string>& args) {
  static int counter = 0;
  const std::string stdout_path = TempPath("cli_" + std::to_string(counter) + ".out");
  const std::string stderr_path = TempPath("cli_" + std::to_string(counter++) + ".err");
  std::string command = ATTNSCOPE_CLI_BINARY;
  for (const std::string& arg : args) command += " " + Quote(arg);
  command += " >" + Quote(stdout_path) + " 2>" + Quote(stderr_path);
  const int status = std::system(command.c_str());
  CliRun run;
  run.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  run.out = ReadAll(stdout_path);
  run.err = ReadAll(stderr_path);
  return run;
}

class CliParityTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    model_dir_ = new std::string(TempPath("parity_model"));
    absl::Status written = WriteTinyModel(*model_dir_, 11);
    ASSERT_TRUE(written.ok()) << written;
    service::ServerConfig config = TestConfig(*model_dir_);
    config.warmup = false;
    server_ = TestServer::Start(config).release();
    chat_list_ = new std::string(TempPath("chat_list.json"));
    chat_object_ = new std::string(TempPath("chat_object.json"));
    const std::string messages = R"([{"role": "system", "content": "You are terse."},)"
                                 R"( {"role": "user", "content": "Net sales rose?"}])";
    WriteFile(*chat_list_, messages);
    WriteFile(*chat_object_, R"({"messages": )" + messages + "}");
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }
  void SetUp() override { ASSERT_NE(server_, nullptr); }

  // Runs `command` with `flags` in local and in remote mode.
  static std::pair<CliRun, CliRun> BothModes(const std::string& command,
                                             const std::vector<std::string>& flags,
                                             const std::string& local_out = "",
                                             const std::string& remote_out = "") {
    std::vector<std::string> local = {command, "--model", *model_dir_};
    std::vector<std::string> remote = {command, "--server", server_->address()};
    local.insert(local.end(), flags.begin(), flags.end());
    remote.insert(remote.end(), flags.begin(), flags.end());
    if (!local_out.empty()) local.insert(local.end(), {"--out", local_out});
    if (!remote_out.empty()) remote.insert(remote.end(), {"--out", remote_out});
    return {RunCli(local), RunCli(remote)};
  }

  // The remote refusal of a request the server refused carries "server ADDR: " before the
  // same message; a refusal before sending carries none.
  static std::string WithoutServerPrefix(std::string message) {
    const std::string prefix = "server " + server_->address() + ": ";
    const size_t at = message.find(prefix);
    if (at != std::string::npos) message.erase(at, prefix.size());
    return message;
  }

  static TestServer* server_;
  static std::string* model_dir_;
  static std::string* chat_list_;
  static std::string* chat_object_;
};
TestServer* CliParityTest::server_ = nullptr;
std::string* CliParityTest::model_dir_ = nullptr;
std::string* CliParityTest::chat_list_ = nullptr;
std::string* CliParityTest::chat_object_ = nullptr;

TEST_F(CliParityTest, SameFlagsGiveByteIdenticalCaptureFiles) {
  const std::vector<std::vector<std::string>> cases = {
      {"--text", "Net sales rose 4%", "--max-new-tokens", "5", "--ignore-eos"},
      {"--text", "<|im_start|>x", "--no-special", "--max-new-tokens", "2"},
      {"--chat", *chat_list_, "--max-new-tokens", "3", "--ignore-eos"},
      {"--chat", *chat_object_, "--max-new-tokens", "3", "--ignore-eos"},
      {"--chat", *chat_object_, "--no-generation-prompt", "--max-new-tokens", "2"},
      {"--ids", "40,41,42,43,44", "--max-new-tokens", "4", "--ignore-eos"},
      {"--ids", "40,41,42", "--max-new-tokens", "0"},
      {"--ids", "40,41,42", "--dtype", "float32", "--max-new-tokens", "2"},
      {"--ids", "40,41,42", "--dtype", "fp32", "--max-new-tokens", "2"},
      {"--ids", "40,41,42", "--dtype", "F32", "--max-new-tokens", "2"},
      {"--ids", "40,41,42", "--dtype", "float16", "--max-new-tokens", "2"},
      {"--ids", "40,41,42", "--dtype", "fp16", "--max-new-tokens", "2"},
      {"--ids", "40,41,42", "--dtype", "F16", "--max-new-tokens", "2"},
      {"--ids", "40,41,42", "--dtype", "bfloat16", "--max-new-tokens", "2"},
      {"--ids", "40,41,42", "--dtype", "bf16", "--max-new-tokens", "2"},
      {"--ids", "40,41,42", "--dtype", "BF16", "--max-new-tokens", "2"},
      {"--ids", "40,41,42,43", "--layers", "0,-1", "--heads", "1,-2", "--max-new-tokens", "3"},
      {"--ids", "40,41,42,43", "--layers", "2", "--rows", "prompt", "--max-new-tokens", "3"},
      {"--ids", "40,41,42,43", "--rows", "generated", "--max-new-tokens", "3", "--ignore-eos"},
      {"--text", "abc", "--stop", "e,a, ", "--max-new-tokens", "12", "--ignore-eos"},
      {"--text", "abc", "--temperature", "0.7", "--top-k", "20", "--top-p", "0.9", "--seed", "5",
       "--repetition-penalty", "1.2", "--max-new-tokens", "6", "--ignore-eos"},
  };
  for (size_t c = 0; c < cases.size(); ++c) {
    SCOPED_TRACE("case " + std::to_string(c) + ": " + cases[c][0] + " " + cases[c][1]);
    std::vector<std::string> flags = cases[c];
    flags.push_back("--quiet");
    const std::string local_path = TempPath("parity_local_" + std::to_string(c) + ".safetensors");
    const std::string remote_path = TempPath("parity_remote_" + std::to_string(c) + ".safetensors");
    auto [local, remote] = BothModes("capture", flags, local_path, remote_path);
    ASSERT_EQ(local.exit_code, 0) << local.err;
    ASSERT_EQ(remote.exit_code, 0) << remote.err;
    const std::string local_bytes = ReadAll(local_path);
    const std::string remote_bytes = ReadAll(remote_path);
    ASSERT_FALSE(local_bytes.empty());
    EXPECT_TRUE(local_bytes == remote_bytes)
        << "local " << local_bytes.size() << " bytes, remote " << remote_bytes.size();
    // The file is what the flags asked for (not just equal to each other).
    absl::StatusOr<CaptureFileContents> file = ReadCaptureFile(local_path);
    ASSERT_TRUE(file.ok()) << file.status();
    for (size_t i = 0; i + 1 < cases[c].size(); ++i) {
      if (cases[c][i] == "--dtype") {
        const std::string& d = cases[c][i + 1];
        const std::string expected = d == "float32" || d == "fp32" || d == "F32"   ? "float32"
                                     : d == "float16" || d == "fp16" || d == "F16" ? "float16"
                                                                                   : "bfloat16";
        EXPECT_EQ(file->metadata.at("dtype"), expected);
      }
      if (cases[c][i] == "--layers" && cases[c][i + 1] == "0,-1") {
        EXPECT_EQ(file->layers, (std::vector<int>{0, 3}));
        EXPECT_EQ(file->heads, (std::vector<int>{1, 6}));
      }
      if (cases[c][i] == "--max-new-tokens" && cases[c][i + 1] == "0") {
        EXPECT_EQ(file->token_ids.size(), 3u);  // prompt only
      }
    }
  }
}

TEST_F(CliParityTest, AFlagOneModeRefusesTheOtherRefusesWithTheSameMessage) {
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"--ids", "40,41", "--max-new-tokens", "-1"}, "generation.max_new_tokens = -1"},
      {{"--ids", "40,41", "--dtype", "fp64"}, "--dtype: 'fp64'"},
      {{"--ids", "40,41", "--rows", "odd"}, "--rows: 'odd'"},
      {{"--ids", "40,41", "--layers", "9"}, "capture.layers: index 9 is out of range"},
      {{"--ids", "40,41", "--heads", "x"}, "--heads: 'x' is not an integer"},
      {{"--ids", "40,999"}, "ids.ids[1] = 999"},
      {{"--ids", "40,41", "--temperature", "nan"}, "generation.temperature = NaN"},
      {{"--ids", "40,41", "--top-p", "1.5"}, "generation.top_p = 1.5"},
      {{"--ids", "40,41", "--greedy", "--top-k", "3"}, "--greedy conflicts"},
      {{"--chat", "/nonexistent/chat.json"}, "--chat: cannot open"},
      {{"--ids", "40", "--text", "x"}, "give exactly one of --ids, --text, --chat"},
      {{"--ids", "40", "--bogus", "1"}, "unknown flag --bogus"},
  };
  for (const auto& [flags, expected] : cases) {
    SCOPED_TRACE(flags[flags.size() - 2] + " " + flags.back());
    auto [local, remote] = BothModes("capture", flags, TempPath("refused_local.safetensors"),
                                     TempPath("refused_remote.safetensors"));
    EXPECT_EQ(local.exit_code, 1) << local.err;
    EXPECT_EQ(remote.exit_code, 1) << remote.err;
    EXPECT_NE(local.err.find(expected), std::string::npos) << local.err;
    EXPECT_EQ(WithoutServerPrefix(remote.err), local.err);
  }
}

TEST_F(CliParityTest, ScoreAndSweepGiveTheSameNumbersInBothModes) {
  const std::vector<std::pair<std::string, std::vector<std::string>>> cases = {
      {"score", {"--ids", "40,41,42,43", "--candidate-ids", "44;45,46"}},
      {"score", {"--ids", "40,41,42,43", "--candidate-ids", "44;45", "--ablate", "0:1,2"}},
      {"sweep", {"--ids", "40,41,42,43", "--candidate-ids", "44;45", "--layers", "0,-1"}},
      {"sweep", {"--ids", "40,41,42,43", "--candidate-ids", "44;45", "--layers", "1,0,1"}},
      {"sweep",
       {"--ids", "40,41,42,43", "--candidate-ids", "44;45", "--heads", "1,1", "--layers", "0"}},
  };
  for (size_t c = 0; c < cases.size(); ++c) {
    SCOPED_TRACE("case " + std::to_string(c));
    std::vector<std::string> flags = cases[c].second;
    flags.push_back("--json");
    auto [local, remote] = BothModes(cases[c].first, flags);
    ASSERT_EQ(local.exit_code, 0) << local.err;
    ASSERT_EQ(remote.exit_code, 0) << remote.err;
    nlohmann::json local_result = nlohmann::json::parse(local.out);
    nlohmann::json remote_result = nlohmann::json::parse(remote.out);
    EXPECT_EQ(local_result, remote_result);
    EXPECT_FALSE(local_result.empty());
  }
}

// One preparation (session::PrepareScore) checks score and sweep requests in both modes.
TEST_F(CliParityTest, ScoreAndSweepRefuseWithTheSameMessageInBothModes) {
  const std::vector<std::tuple<std::string, std::vector<std::string>, std::string>> cases = {
      {"sweep", {"--ids", "40,41", "--candidate-ids", "44"}, "a sweep needs two candidates"},
      {"sweep", {"--ids", "40,41", "--candidate-ids", "44;45", "--layers", "9"}, "layers[0]"},
      {"score", {"--ids", "40,41", "--candidate-ids", "44,999"}, "candidates[0].ids[1] = 999"},
      {"score", {"--ids", "40,41", "--candidate-ids", "44;"}, "has no tokens"},
      {"sweep", {"--ids", "40,41", "--candidate-ids", "44;45", "--ablate", "0:1"}, "--ablate"},
      // Local mode skipped the service's intervention preparation for a sweep.
      {"sweep",
       {"--ids", "40,41", "--candidate-ids", "44;45", "--patch-from", "ids:40,41"},
       "patch_source = 2 tokens: given without any patch intervention"},
  };
  for (const auto& [command, flags, expected] : cases) {
    SCOPED_TRACE(command + " " + flags[flags.size() - 2] + " " + flags.back());
    auto [local, remote] = BothModes(command, flags);
    EXPECT_EQ(local.exit_code, 1) << local.err;
    EXPECT_EQ(remote.exit_code, 1) << remote.err;
    EXPECT_NE(local.err.find(expected), std::string::npos) << local.err;
    EXPECT_EQ(WithoutServerPrefix(remote.err), local.err);
  }
}

TEST_F(CliParityTest, AnalyzeGivesTheSameReportInBothModes) {
  const std::vector<std::vector<std::string>> cases = {
      {"--text", "Revenue and net sales rose", "--max-new-tokens", "3", "--ignore-eos", "--query",
       "sales", "--terms", "revenue,sales", "--top-terms", "0"},
      {"--probe", "induction:6:3", "--layers", "-1"},
      {"--chat", *chat_object_, "--max-new-tokens", "2", "--per-head", "--query", "s",
       "--beginning-k", "2"},
  };
  for (size_t c = 0; c < cases.size(); ++c) {
    SCOPED_TRACE("case " + std::to_string(c));
    std::vector<std::string> flags = cases[c];
    flags.push_back("--json");
    auto [local, remote] = BothModes("analyze", flags);
    ASSERT_EQ(local.exit_code, 0) << local.err;
    ASSERT_EQ(remote.exit_code, 0) << remote.err;
    nlohmann::json local_report = nlohmann::json::parse(local.out);
    nlohmann::json remote_report = nlohmann::json::parse(remote.out);
    EXPECT_EQ(local_report, remote_report);
    EXPECT_FALSE(local_report["layers"].empty());
  }
}

}  // namespace
}  // namespace attnscope::testing
