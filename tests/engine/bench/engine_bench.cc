// Engine benchmark (not a test): on a generated checkpoint shaped like Qwen2-0.5B (random
// weights), prefill and decode throughput with capture off and on, achieved GFLOP/s against a
// plain libtorch matmul of the same shapes measured in the same run, and peak RSS against
// weights + KV cache.
//
//   engine_bench [--prompt 512] [--decode 16] [--dir /tmp/attnscope-qwen2-0.5b-shaped]
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>

#include "server/engine/engine.h"
#include "server/model/tiny_model.h"

namespace attnscope {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

double PeakRssMiB() {
  struct rusage usage;
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_maxrss / 1024.0;
}

// Counts rows without keeping them: capture cost is the engine's, not a sink's.
class CountingObserver : public GenerationObserver {
 public:
  absl::Status OnAttention(const AttentionBlock& block) override {
    bytes += static_cast<double>(block.heads->size()) * block.num_rows * block.key_length * 4;
    return absl::OkStatus();
  }
  double bytes = 0;
};

int Main(int argc, char** argv) {
  int prompt_tokens = 512, decode_tokens = 16;
  std::string dir = "/tmp/attnscope-qwen2-0.5b-shaped";
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--prompt")) prompt_tokens = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--decode")) decode_tokens = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--dir")) dir = argv[i + 1];
  }
  TinyModelShape shape;
  shape.num_layers = 24;
  shape.num_heads = 14;
  shape.num_kv_heads = 2;
  shape.hidden_size = 896;
  shape.intermediate_size = 4864;
  shape.vocab_size = 151936;
  shape.max_position_embeddings = 32768;
  shape.with_tokenizer = false;
  struct stat info;
  if (stat((dir + "/model.safetensors").c_str(), &info) != 0) {
    std::printf("writing Qwen2-0.5B-shaped checkpoint to %s ...\n", dir.c_str());
    if (auto status = WriteTinyModel(dir, 1, shape); !status.ok()) {
      std::fprintf(stderr, "%s\n", std::string(status.message()).c_str());
      return 1;
    }
  }
  const double rss_before = PeakRssMiB();
  EngineOptions options;
  options.model_dir = dir;
  auto engine = Engine::Load(options);
  if (!engine.ok()) {
    std::fprintf(stderr, "%s\n", std::string(engine.status().message()).c_str());
    return 1;
  }
  const ModelConfig& config = (*engine)->config();
  std::mt19937 random(3);
  std::vector<int64_t> prompt(prompt_tokens);
  for (auto& id : prompt) id = std::uniform_int_distribution<int64_t>(0, 150000)(random);

  GenerationParams params;
  params.max_new_tokens = decode_tokens;
  params.ignore_eos = true;
  CaptureSpec none, all;
  for (int l = 0; l < config.num_hidden_layers; ++l) all.layers.push_back(l);
  for (int h = 0; h < config.num_attention_heads; ++h) all.heads.push_back(h);

  // Warm-up (allocator, thread pool), then measure each mode twice and keep the faster run.
  (void)(*engine)->Generate(std::vector<int64_t>(prompt.begin(), prompt.begin() + 32), params, none,
                            nullptr);
  GenerationResult plain, captured;
  double capture_bytes = 0;
  for (int run = 0; run < 2; ++run) {
    auto a = (*engine)->Generate(prompt, params, none, nullptr);
    CountingObserver observer;
    auto b = (*engine)->Generate(prompt, params, all, &observer);
    if (!a.ok() || !b.ok()) return 1;
    if (run == 0 ||
        a->prefill_seconds + a->decode_seconds < plain.prefill_seconds + plain.decode_seconds)
      plain = *a;
    if (run == 0 || b->prefill_seconds + b->decode_seconds <
                        captured.prefill_seconds + captured.decode_seconds) {
      captured = *b;
      capture_bytes = observer.bytes;
    }
  }

  // The prefill's matmuls, as plain at::matmul calls of the same shapes (the baseline).
  const int64_t p = prompt_tokens, hidden = config.hidden_size, inter = config.intermediate_size;
  const int64_t kv = config.num_key_value_heads * config.head_dim;
  const std::vector<std::pair<int64_t, int64_t>> weights = {
      {hidden, hidden}, {kv, hidden},    {kv, hidden},   {hidden, hidden},
      {inter, hidden},  {inter, hidden}, {hidden, inter}};
  double layer_flops = 0;
  for (auto [out, in] : weights) layer_flops += 2.0 * p * out * in;
  // Attention scores and weighted sum, causal half counted in full as the kernels compute it.
  layer_flops += 2.0 * 2.0 * p * p * config.num_attention_heads * config.head_dim;
  const double prefill_flops =
      layer_flops * config.num_hidden_layers + 2.0 * hidden * config.vocab_size;
  std::vector<at::Tensor> inputs, mats;
  for (auto [out, in] : weights) {
    inputs.push_back(at::randn({p, in}));
    mats.push_back(at::randn({in, out}));
  }
  double matmul_seconds = 1e9;
  double matmul_flops = 0;
  for (auto [out, in] : weights) matmul_flops += 2.0 * p * out * in;
  for (int run = 0; run < 3; ++run) {
    auto start = Clock::now();
    for (int layer = 0; layer < 4; ++layer)
      for (size_t i = 0; i < weights.size(); ++i) (void)at::matmul(inputs[i], mats[i]);
    matmul_seconds = std::min(matmul_seconds, Seconds(start));
  }
  const double matmul_gflops = 4 * matmul_flops / matmul_seconds / 1e9;
  const double prefill_gflops = prefill_flops / plain.prefill_seconds / 1e9;

  const double weight_mib = (static_cast<double>(config.vocab_size) * hidden * 2 +
                             config.num_hidden_layers * (2.0 * hidden * hidden + 2.0 * kv * hidden +
                                                         3.0 * hidden * inter + 3 * hidden) +
                             hidden) *
                            4 / (1024.0 * 1024.0);
  const double kv_mib =
      2.0 * config.num_hidden_layers * kv * (p + decode_tokens + 1) * 4 / (1024.0 * 1024.0);

  std::printf(
      "engine benchmark: Qwen2-0.5B shape (24 layers, 14 heads, 2 KV heads, hidden 896), float32 "
      "CPU, "
      "%d intra-op threads\n",
      at::get_num_threads());
  std::printf("%-44s %12s %12s %8s\n", "figure", "value", "baseline", "ratio");
  std::printf("%-44s %12.1f %12s %8s\n", "prefill tok/s, 512 tokens, no capture",
              p / plain.prefill_seconds, "", "");
  std::printf("%-44s %12.1f %12.1f %8.2f\n", "prefill tok/s, all layers captured (vs none)",
              p / captured.prefill_seconds, p / plain.prefill_seconds,
              plain.prefill_seconds / captured.prefill_seconds);
  std::printf("%-44s %12.2f %12s %8s\n", "decode tok/s, no capture",
              decode_tokens / plain.decode_seconds, "", "");
  std::printf("%-44s %12.2f %12.2f %8.2f\n", "decode tok/s, all layers captured (vs none)",
              decode_tokens / captured.decode_seconds, decode_tokens / plain.decode_seconds,
              plain.decode_seconds / captured.decode_seconds);
  const double plain_total = plain.prefill_seconds + plain.decode_seconds;
  const double captured_total = captured.prefill_seconds + captured.decode_seconds;
  std::printf("%-44s %12.3f %12.3f %8.2f\n", "capture/no-capture time, s (goal <= 1.5)",
              captured_total, plain_total, captured_total / plain_total);
  std::printf("%-44s %12.1f %12.1f %8.2f\n", "prefill GFLOP/s vs plain matmul (goal >= 0.5)",
              prefill_gflops, matmul_gflops, prefill_gflops / matmul_gflops);
  std::printf("%-44s %12.0f %12.0f %8.2f\n", "peak RSS MiB vs weights + KV cache",
              PeakRssMiB() - rss_before, weight_mib + kv_mib,
              (PeakRssMiB() - rss_before) / (weight_mib + kv_mib));
  std::printf("captured %.1f MiB of attention per run\n", capture_bytes / (1024.0 * 1024.0));
  // Machine-readable lines for scripts/bench.sh: figure, value, baseline, ratio.
  std::printf("BENCH\tprefill tok/s (512 tokens), capture on vs off\t%.1f\t%.1f\t%.2f\n",
              p / captured.prefill_seconds, p / plain.prefill_seconds,
              plain.prefill_seconds / captured.prefill_seconds);
  std::printf("BENCH\tdecode tok/s, capture on vs off\t%.2f\t%.2f\t%.2f\n",
              decode_tokens / captured.decode_seconds, decode_tokens / plain.decode_seconds,
              plain.decode_seconds / captured.decode_seconds);
  std::printf("BENCH\tgeneration time s, capture on vs off (goal <= 1.5)\t%.3f\t%.3f\t%.2f\n",
              captured_total, plain_total, captured_total / plain_total);
  std::printf("BENCH\tprefill GFLOP/s vs plain matmul (goal >= 0.5)\t%.1f\t%.1f\t%.2f\n",
              prefill_gflops, matmul_gflops, prefill_gflops / matmul_gflops);
  std::printf("BENCH\tpeak RSS MiB vs weights + KV cache\t%.0f\t%.0f\t%.2f\n",
              PeakRssMiB() - rss_before, weight_mib + kv_mib,
              (PeakRssMiB() - rss_before) / (weight_mib + kv_mib));
  return 0;
}

}  // namespace
}  // namespace attnscope

int main(int argc, char** argv) { return attnscope::Main(argc, argv); }
