// Head-sweep benchmark (not a test): on a generated checkpoint shaped like Qwen2-0.5B (random
// weights), the time of Engine::Sweep (single-head zero ablation of every selected head,
// sharing the clean prefix and batching variants) against as many independent full scoring
// forwards (Engine::Score with that one ablation each: the loop of full runs a client would
// otherwise send), measured in the same run. Also checks that both give the same numbers.
//
//   sweep_bench [--prompt 32] [--layers all|N] [--batch 8] [--dir /tmp/attnscope-qwen2-0.5b-shaped]
//
// --layers N sweeps the first N layers only (the ratio then covers those layers).
#include <ATen/Parallel.h>
#include <sys/stat.h>

#include <chrono>
#include <cmath>
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

int Main(int argc, char** argv) {
  int prompt_tokens = 32, batch = 8, layer_count = -1;
  std::string dir = "/tmp/attnscope-qwen2-0.5b-shaped";
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--prompt")) prompt_tokens = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--batch")) batch = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--layers") && std::strcmp(argv[i + 1], "all")) {
      layer_count = std::atoi(argv[i + 1]);
    }
    if (!std::strcmp(argv[i], "--dir")) dir = argv[i + 1];
  }
  TinyModelShape shape;  // as engine_bench: the same folder serves both
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
  const std::vector<Candidate> candidates = {{"a", {1234}}, {"b", {4321}}};
  SweepSpec sweep;
  if (layer_count > 0) {
    for (int l = 0; l < std::min(layer_count, config.num_hidden_layers); ++l) {
      sweep.layers.push_back(l);
    }
  }
  InterventionLimits limits;
  limits.max_sweep_heads = 1 << 20;

  (void)(*engine)->Score(prompt, candidates, nullptr, limits);  // warm-up
  auto start = Clock::now();
  auto swept = (*engine)->Sweep(prompt, candidates, sweep, nullptr, limits, batch);
  const double sweep_seconds = Seconds(start);
  if (!swept.ok()) {
    std::fprintf(stderr, "%s\n", std::string(swept.status().message()).c_str());
    return 1;
  }
  std::printf("sweep of %zu heads: %.2f s; now the same number of independent full forwards\n",
              swept->cells.size(), sweep_seconds);
  std::fflush(stdout);
  start = Clock::now();
  double worst = 0;
  for (const SweepCell& cell : swept->cells) {
    InterventionSet set;
    Intervention ablate;
    ablate.layer = cell.layer;
    ablate.heads = {cell.head};
    set.items.push_back(ablate);
    auto scored = (*engine)->Score(prompt, candidates, &set, limits);
    if (!scored.ok()) return 1;
    worst = std::max(worst, std::abs(scored->logit_diff - cell.logit_diff));
  }
  const double loop_seconds = Seconds(start);
  const size_t variants = swept->cells.size();
  std::printf(
      "sweep benchmark: Qwen2-0.5B shape (24 layers, 14 heads, 2 KV heads, hidden 896), float32 "
      "CPU, %d intra-op threads, %d-token prompt, %zu single-head ablations, batch %d\n",
      at::get_num_threads(), prompt_tokens, variants, batch);
  std::printf("%-52s %10s %10s %7s\n", "figure", "value", "baseline", "ratio");
  std::printf("%-52s %10.2f %10.2f %7.2f\n", "sweep s vs as many full forwards (goal <= 0.5)",
              sweep_seconds, loop_seconds, sweep_seconds / loop_seconds);
  std::printf("max |logit_diff(sweep) - logit_diff(full forward)| = %.2e\n", worst);
  std::printf(
      "BENCH\tsweep s vs %zu full forwards, %d-token prompt (goal <= 0.5)\t%.2f\t%.2f\t%.2f\n",
      variants, prompt_tokens, sweep_seconds, loop_seconds, sweep_seconds / loop_seconds);
  return worst < 1e-3 ? 0 : 1;
}

}  // namespace
}  // namespace attnscope

int main(int argc, char** argv) { return attnscope::Main(argc, argv); }
