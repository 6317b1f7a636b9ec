// service_bench: streaming attention over gRPC against its baselines, in one run.
//   1. raw TCP on loopback: one socket pair moving the same number of bytes (the ceiling);
//   2. `attnscope capture --server` (RemoteCapture, the command line's code path) against an
//      in-process server: attention bytes received per second, end to end;
//   3. the same capture in local mode (engine + capture file, no network).
// Prints each figure and the ratios (goals: streaming >= 50% of raw TCP; remote <= 1.2x local).
// Not a test. Usage: service_bench [--tokens T] [--layers L] [--heads H] [--hidden D]
//   [--repeat N] [--only remote|local]
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "client/cpp/remote/remote_client.h"
#include "server/engine/capture_file_observer.h"
#include "server/engine/engine.h"
#include "server/model/tiny_model.h"
#include "server/service/server.h"

namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// The whole process's CPU seconds (every thread: engine, gRPC, client) and minor page faults.
struct ProcessUsage {
  double cpu_seconds = 0;
  long minor_faults = 0;
};

ProcessUsage Usage() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  ProcessUsage out;
  out.cpu_seconds = usage.ru_utime.tv_sec + usage.ru_utime.tv_usec / 1e6 + usage.ru_stime.tv_sec +
                    usage.ru_stime.tv_usec / 1e6;
  out.minor_faults = usage.ru_minflt;
  return out;
}

ProcessUsage operator-(const ProcessUsage& a, const ProcessUsage& b) {
  return {a.cpu_seconds - b.cpu_seconds, a.minor_faults - b.minor_faults};
}

const char* StringFlag(int argc, char** argv, const char* name, const char* fallback) {
  for (int i = 1; i + 1 < argc; ++i) {
    if (std::strcmp(argv[i], name) == 0) return argv[i + 1];
  }
  return fallback;
}

// Moves `total` bytes through a TCP connection on 127.0.0.1 in 1 MiB writes; bytes/s.
double RawTcpBytesPerSecond(uint64_t total) {
  const int listener = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = 0;
  socklen_t length = sizeof(address);
  if (bind(listener, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0 ||
      listen(listener, 1) != 0 ||
      getsockname(listener, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    std::perror("raw tcp");
    std::exit(1);
  }
  std::thread sender([&] {
    const int out = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(out, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) {
      std::perror("connect");
      std::exit(1);
    }
    std::vector<char> block(1 << 20, 7);
    uint64_t sent = 0;
    while (sent < total) {
      const size_t n = std::min<uint64_t>(block.size(), total - sent);
      const ssize_t w = write(out, block.data(), n);
      if (w <= 0) break;
      sent += static_cast<uint64_t>(w);
    }
    close(out);
  });
  const int in = accept(listener, nullptr, nullptr);
  std::vector<char> buffer(1 << 20);
  const auto start = Clock::now();
  uint64_t received = 0;
  while (received < total) {
    const ssize_t r = read(in, buffer.data(), buffer.size());
    if (r <= 0) break;
    received += static_cast<uint64_t>(r);
  }
  const double seconds = Seconds(start);
  sender.join();
  close(in);
  close(listener);
  return received / seconds;
}

int Flag(int argc, char** argv, const char* name, int fallback) {
  for (int i = 1; i + 1 < argc; ++i) {
    if (std::strcmp(argv[i], name) == 0) return std::atoi(argv[i + 1]);
  }
  return fallback;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace attnscope;
  const int tokens = Flag(argc, argv, "--tokens", 1024);
  TinyModelShape shape;
  shape.num_layers = Flag(argc, argv, "--layers", 4);
  shape.num_heads = Flag(argc, argv, "--heads", 8);
  shape.hidden_size = Flag(argc, argv, "--hidden", 128);
  shape.intermediate_size = 2 * shape.hidden_size;
  const int prompt_length = 32;
  const int max_new = tokens - prompt_length;

  const std::string dir = (std::filesystem::temp_directory_path() /
                           ("attnscope_service_bench_" + std::to_string(getpid())))
                              .string();
  if (absl::Status written = WriteTinyModel(dir, 11, shape); !written.ok()) {
    std::fprintf(stderr, "%s\n", std::string(written.message()).c_str());
    return 1;
  }
  std::vector<int64_t> prompt;
  for (int i = 0; i < prompt_length; ++i) prompt.push_back(40 + i);

  // Remote: the command line's client against a server in this process.
  service::ServerConfig config;
  config.listen = "127.0.0.1:0";
  config.model_dir = dir;
  config.log_level = "warn";
  config.limits.max_new_tokens = max_new;
  config.limits.max_total_tokens = tokens;
  config.limits.max_prompt_tokens = prompt_length;
  config.limits.max_capture_bytes = 64ull << 30;
  absl::StatusOr<std::unique_ptr<service::AttnScopeServer>> server =
      service::AttnScopeServer::Start(config);
  if (!server.ok() || !(*server)->LoadModel().ok()) {
    std::fprintf(stderr, "server failed to start\n");
    return 1;
  }
  v1::GenerateRequest request;
  for (int64_t id : prompt) request.mutable_ids()->add_ids(id);
  request.mutable_generation()->set_max_new_tokens(max_new);
  request.mutable_generation()->set_ignore_eos(true);
  remote::RemoteTarget target;
  target.address = "127.0.0.1:" + std::to_string((*server)->port());
  const std::string remote_path = dir + "/remote.safetensors";
  EngineOptions options;
  options.model_dir = dir;
  absl::StatusOr<std::unique_ptr<Engine>> engine = Engine::Load(options);
  if (!engine.ok()) return 1;
  CaptureSpec spec;
  for (int l = 0; l < shape.num_layers; ++l) spec.layers.push_back(l);
  for (int h = 0; h < shape.num_heads; ++h) spec.heads.push_back(h);
  GenerationParams params;
  params.max_new_tokens = max_new;
  params.ignore_eos = true;

  // Remote and local alternate, one pair per run; the best of each and the median of the
  // pairs' ratios are reported, so that load from other processes hurts both alike.
  // --only remote|local runs one side (for a profiler).
  const int repeat = Flag(argc, argv, "--repeat", 2);
  const std::string only = StringFlag(argc, argv, "--only", "");
  std::vector<double> remote_times, local_times, ratios;
  ProcessUsage remote_usage{1e30, 0}, local_usage{1e30, 0};
  remote::RemoteCaptureSummary summary;
  for (int run = 0; run < repeat; ++run) {
    if (only != "local") {
      const ProcessUsage before = Usage();
      const auto remote_start = Clock::now();
      absl::StatusOr<remote::RemoteCaptureSummary> remote_run =
          remote::RemoteCapture(target, request, remote_path, false);
      const double seconds = Seconds(remote_start);
      const ProcessUsage used = Usage() - before;
      if (!remote_run.ok()) {
        std::fprintf(stderr, "remote capture: %s\n",
                     std::string(remote_run.status().message()).c_str());
        return 1;
      }
      if (remote_times.empty() ||
          seconds < *std::min_element(remote_times.begin(), remote_times.end())) {
        summary = *remote_run;
      }
      if (used.cpu_seconds < remote_usage.cpu_seconds) remote_usage = used;
      remote_times.push_back(seconds);
    }
    if (only != "remote") {
      // Local: the same engine work and the same file, no network.
      const ProcessUsage before = Usage();
      const auto local_start = Clock::now();
      CaptureFileObserver observer(spec);
      absl::StatusOr<GenerationResult> result =
          (*engine)->Generate(prompt, params, spec, &observer);
      if (!result.ok()) return 1;
      CaptureMetadata metadata;
      metadata.prompt_length = prompt_length;
      if (!observer.assembler()
               .Write(dir + "/local.safetensors", result->token_ids, metadata, nullptr, 0)
               .ok()) {
        return 1;
      }
      local_times.push_back(Seconds(local_start));
      const ProcessUsage used = Usage() - before;
      if (used.cpu_seconds < local_usage.cpu_seconds) local_usage = used;
    }
    if (only.empty()) ratios.push_back(remote_times.back() / local_times.back());
  }
  if (!only.empty()) {
    const std::vector<double>& times = only == "remote" ? remote_times : local_times;
    const ProcessUsage& usage = only == "remote" ? remote_usage : local_usage;
    std::printf("%s capture: best %.2f s of %d, CPU %.2f s, %ld minor faults\n", only.c_str(),
                *std::min_element(times.begin(), times.end()), repeat, usage.cpu_seconds,
                usage.minor_faults);
    server->reset();
    std::filesystem::remove_all(dir);
    return 0;
  }
  const double remote_seconds = *std::min_element(remote_times.begin(), remote_times.end());
  const double local_seconds = *std::min_element(local_times.begin(), local_times.end());
  std::vector<double> sorted_ratios = ratios;
  std::sort(sorted_ratios.begin(), sorted_ratios.end());
  const double median_ratio = sorted_ratios[sorted_ratios.size() / 2];
  const uint64_t bytes = summary.attention_bytes;

  const double raw = RawTcpBytesPerSecond(bytes);
  const double streamed = bytes / remote_seconds;
  std::printf("service_bench: %d layers x %d heads, hidden %d, %d tokens (%d prompt + %d new)\n",
              shape.num_layers, shape.num_heads, shape.hidden_size, tokens, prompt_length, max_new);
  std::printf("  attention bytes on the wire     %10.1f MB (%llu chunks)\n", bytes / 1e6,
              static_cast<unsigned long long>(summary.final_message.total_chunks()));
  std::printf("  raw TCP loopback (baseline)     %10.1f MB/s\n", raw / 1e6);
  std::printf("  capture --server received       %10.1f MB/s  (%.2f s end to end, best of runs)\n",
              streamed / 1e6, remote_seconds);
  std::printf("  ratio streamed / raw TCP        %10.3f  (goal >= 0.5)\n", streamed / raw);
  std::printf(
      "  during the stream only          %10.1f MB/s  (%.2f s, then %.2f s reassembly + file)\n",
      bytes / summary.stream_seconds / 1e6, summary.stream_seconds,
      remote_seconds - summary.stream_seconds);
  std::printf("  server generation time          %10.2f s (prefill %.2f + decode %.2f)\n",
              summary.final_message.timings().prefill_seconds() +
                  summary.final_message.timings().decode_seconds(),
              summary.final_message.timings().prefill_seconds(),
              summary.final_message.timings().decode_seconds());
  const double generation = summary.final_message.timings().prefill_seconds() +
                            summary.final_message.timings().decode_seconds();
  // On CPU the stream is generation-bound; what streaming itself costs is the rest.
  std::printf("  stream time beyond generation   %10.2f s (%.1f%% of the stream)\n",
              summary.stream_seconds - generation,
              100.0 * (summary.stream_seconds - generation) / summary.stream_seconds);
  std::printf("  local capture (baseline)        %10.2f s\n", local_seconds);
  std::printf("  remote capture                  %10.2f s\n", remote_seconds);
  std::printf("  ratio remote / local            %10.3f  (best of each; goal <= 1.2)\n",
              remote_seconds / local_seconds);
  std::printf("  ratio remote / local, pairs     %10.3f  (median of %zu; min %.3f, max %.3f)\n",
              median_ratio, sorted_ratios.size(), sorted_ratios.front(), sorted_ratios.back());
  std::printf("  CPU seconds, remote / local     %10.3f  (%.2f / %.2f s, all threads, best)\n",
              remote_usage.cpu_seconds / local_usage.cpu_seconds, remote_usage.cpu_seconds,
              local_usage.cpu_seconds);
  std::printf("  minor page faults, remote/local %10ld / %ld\n", remote_usage.minor_faults,
              local_usage.minor_faults);
  // Machine-readable lines for scripts/bench.sh: figure, value, baseline, ratio.
  std::printf("BENCH\tcapture --server MB/s vs raw TCP loopback (goal >= 0.5)\t%.1f\t%.1f\t%.3f\n",
              streamed / 1e6, raw / 1e6, streamed / raw);
  std::printf("BENCH\tstream time s vs server generation time\t%.2f\t%.2f\t%.3f\n",
              summary.stream_seconds, generation, summary.stream_seconds / generation);
  std::printf("BENCH\tcapture time s, remote vs local (goal <= 1.2)\t%.2f\t%.2f\t%.3f\n",
              remote_seconds, local_seconds, remote_seconds / local_seconds);
  std::printf("BENCH\tcapture time, remote vs local, median of paired runs\t%.3f\t1\t%.3f\n",
              median_ratio, median_ratio);
  std::printf("BENCH\tcapture CPU s (all threads), remote vs local\t%.2f\t%.2f\t%.3f\n",
              remote_usage.cpu_seconds, local_usage.cpu_seconds,
              remote_usage.cpu_seconds / local_usage.cpu_seconds);
  server->reset();
  std::filesystem::remove_all(dir);
  return 0;
}
