// Engine benchmark (not a test). On a checkpoint (by default a generated one shaped like
// Qwen2-0.5B with random weights), on the CPU or a CUDA device, in float32 or bfloat16:
// - prefill tokens/s at each prompt length, and achieved GFLOP/s against a plain matmul of
//   the same shapes, device and dtype measured in the same run;
// - decode tokens/s with capture off and with every layer captured;
// - the decode roofline: bytes read per token (weights + KV cache) per second against a
//   memory read bandwidth measured in the same run;
// - AnalyzeHeads-style generation (tensor reductions of every layer) against plain
//   generation;
// - peak memory (host RSS on the CPU, allocated device memory on CUDA) against weights + KV.
// Prints a table, BENCH lines for scripts/bench.sh and, with --json, one JSON document.
//
//   engine_bench [--dir DIR] [--device cpu|cuda] [--dtype float32|bfloat16]
//                [--prompts 512,2048] [--prompt-file IDS] [--decode 16] [--repeats 2]
//                [--json FILE] [--label L]
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <random>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "nlohmann/json.hpp"
#include "server/engine/engine.h"
#include "server/engine/tensor_analysis_observer.h"
#include "server/model/device_copy.h"
#include "server/model/tiny_model.h"
#include "server/model/transformer.h"

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

struct Figure {
  std::string name;
  double value = 0, baseline = 0;
  bool has_baseline = false;
};

std::string Flag(int argc, char** argv, const std::string& name, const std::string& fallback) {
  for (int i = 1; i + 1 < argc; ++i) {
    if (argv[i] == "--" + name) return argv[i + 1];
  }
  return fallback;
}

int IntFlag(int argc, char** argv, const std::string& name, int fallback) {
  int value = fallback;
  const std::string text = Flag(argc, argv, name, "");
  if (!text.empty() && !absl::SimpleAtoi(text, &value)) {
    std::fprintf(stderr, "--%s: '%s' is not an integer\n", name.c_str(), text.c_str());
    std::exit(2);
  }
  return value;
}

// Best of `repeats` timings of `run` (seconds), the device drained before the clock stops.
template <typename Fn>
double BestSeconds(int repeats, at::Device device, Fn run) {
  double best = 1e30;
  for (int r = 0; r < repeats; ++r) {
    auto start = Clock::now();
    run();
    SynchronizeDevice(device);
    best = std::min(best, Seconds(start));
  }
  return best;
}

int Main(int argc, char** argv) {
  const std::string dir = Flag(argc, argv, "dir", "/tmp/attnscope-qwen2-0.5b-shaped");
  const std::string device_name = Flag(argc, argv, "device", "cpu");
  const std::string dtype_name = Flag(argc, argv, "dtype", "float32");
  const int decode_tokens = IntFlag(argc, argv, "decode", 16);
  const int repeats = std::max(1, IntFlag(argc, argv, "repeats", 2));
  const std::string label = Flag(argc, argv, "label", "");
  std::vector<int> prompt_lengths;
  for (absl::string_view part : absl::StrSplit(Flag(argc, argv, "prompts", "512"), ',')) {
    int length = 0;
    if (!absl::SimpleAtoi(part, &length) || length <= 0) {
      std::fprintf(stderr, "--prompts: '%s' is not a positive integer\n",
                   std::string(part).c_str());
      return 2;
    }
    prompt_lengths.push_back(length);
  }
  struct stat info;
  if (stat((dir + "/config.json").c_str(), &info) != 0) {
    const TinyModelShape shape = Qwen2HalfBillionShape();
    std::printf("writing Qwen2-0.5B-shaped checkpoint to %s ...\n", dir.c_str());
    if (auto status = WriteTinyModel(dir, 1, shape); !status.ok()) {
      std::fprintf(stderr, "%s\n", std::string(status.message()).c_str());
      return 1;
    }
  }
  const at::Device device(device_name);
  const double rss_before = PeakRssMiB();
  EngineOptions options;
  options.model_dir = dir;
  options.device = device_name;
  absl::StatusOr<DType> run_dtype = ParseDType(dtype_name, "--dtype");
  if (!run_dtype.ok()) {
    std::fprintf(stderr, "%s\n", std::string(run_dtype.status().message()).c_str());
    return 1;
  }
  options.dtype = *run_dtype;
  auto engine = Engine::Load(options);
  if (!engine.ok()) {
    std::fprintf(stderr, "%s\n", std::string(engine.status().message()).c_str());
    return 1;
  }
  const ModelConfig& config = (*engine)->config();
  const at::ScalarType dtype = ToScalarType(*run_dtype);
  const double element = static_cast<double>(DTypeSize(*run_dtype));
  // Prompts: prefixes of --prompt-file's ids (comma separated; the ones transformers runs
  // too), else seeded random ids.
  std::vector<int64_t> file_ids;
  const std::string prompt_file = Flag(argc, argv, "prompt-file", "");
  if (!prompt_file.empty()) {
    std::ifstream in(prompt_file);
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    for (absl::string_view part :
         absl::StrSplit(text, absl::ByAnyChar(",\n "), absl::SkipEmpty())) {
      int64_t id = 0;
      if (!absl::SimpleAtoi(part, &id) || id < 0 || id >= config.vocab_size) {
        std::fprintf(stderr, "--prompt-file %s: '%s' is not a token id below %d\n",
                     prompt_file.c_str(), std::string(part).c_str(), config.vocab_size);
        return 2;
      }
      file_ids.push_back(id);
    }
  }
  std::mt19937 random(3);
  auto random_prompt = [&](int length) {
    if (static_cast<int>(file_ids.size()) >= length) {
      return std::vector<int64_t>(file_ids.begin(), file_ids.begin() + length);
    }
    std::vector<int64_t> prompt(length);
    for (auto& id : prompt) {
      id = std::uniform_int_distribution<int64_t>(0, config.vocab_size - 1)(random);
    }
    return prompt;
  };
  CaptureSpec none, all;
  for (int l = 0; l < config.num_hidden_layers; ++l) all.layers.push_back(l);
  for (int h = 0; h < config.num_attention_heads; ++h) all.heads.push_back(h);
  GenerationParams params;
  params.max_new_tokens = decode_tokens;
  params.ignore_eos = true;
  // Warm-up (allocator, thread pool, kernels), with and without capture.
  {
    CountingObserver observer;
    (void)(*engine)->Generate(random_prompt(32), params, all, &observer);
    (void)(*engine)->Generate(random_prompt(32), params, none, nullptr);
  }
  ResetDevicePeakBytes(device);

  std::vector<Figure> figures;
  auto best_of = [&](const std::vector<int64_t>& prompt, const CaptureSpec& spec,
                     auto make_observer) {
    GenerationResult best;
    for (int r = 0; r < repeats; ++r) {
      auto observer = make_observer();
      auto result = (*engine)->Generate(prompt, params, spec, observer.get());
      if (!result.ok()) {
        std::fprintf(stderr, "%s\n", std::string(result.status().message()).c_str());
        std::exit(1);
      }
      if (r == 0 || result->prefill_seconds + result->decode_seconds <
                        best.prefill_seconds + best.decode_seconds) {
        best = *result;
      }
    }
    return best;
  };
  auto no_observer = [] { return std::unique_ptr<GenerationObserver>(); };
  auto counting = [] { return std::make_unique<CountingObserver>(); };
  std::vector<int64_t> first_prompt;
  GenerationResult plain, captured;
  for (int length : prompt_lengths) {
    const std::vector<int64_t> prompt = random_prompt(length);
    const GenerationResult run = best_of(prompt, none, no_observer);
    figures.push_back({"prefill tok/s, " + std::to_string(length) + " tokens, no capture",
                       length / run.prefill_seconds});
    if (first_prompt.empty()) {
      first_prompt = prompt;
      plain = run;
    }
  }
  captured = best_of(first_prompt, all, counting);
  const int p = static_cast<int>(first_prompt.size());
  const std::string at_p = " (prompt " + std::to_string(p) + ")";
  figures.push_back({"decode tok/s, no capture" + at_p, decode_tokens / plain.decode_seconds});
  figures.push_back({"decode tok/s, all layers captured vs none" + at_p,
                     decode_tokens / captured.decode_seconds, decode_tokens / plain.decode_seconds,
                     true});
  figures.push_back({"prefill tok/s, all layers captured vs none" + at_p,
                     p / captured.prefill_seconds, p / plain.prefill_seconds, true});
  const double plain_total = plain.prefill_seconds + plain.decode_seconds;
  figures.push_back({"generation s, all layers captured vs none (goal <= 1.5)",
                     captured.prefill_seconds + captured.decode_seconds, plain_total, true});
  // AnalyzeHeads: every layer and head reduced where the probabilities are.
  const GenerationResult analysed = best_of(first_prompt, all, [&] {
    analysis::AnalysisInput input;
    input.token_ids = first_prompt;
    return std::make_unique<TensorAnalysisObserver>(input, analysis::AnalysisOptions(), nullptr);
  });
  figures.push_back({"AnalyzeHeads generation s vs none (goal <= 1.3)",
                     analysed.prefill_seconds + analysed.decode_seconds, plain_total, true});

  // The prefill's matmuls as plain at::matmul calls of the same shapes, device and dtype.
  const int64_t hidden = config.hidden_size, inter = config.intermediate_size;
  const int64_t q_out = int64_t{config.num_attention_heads} * config.head_dim;
  const int64_t kv = int64_t{config.num_key_value_heads} * config.head_dim;
  const std::vector<std::pair<int64_t, int64_t>> weights = {
      {q_out, hidden}, {kv, hidden},    {kv, hidden},   {hidden, q_out},
      {inter, hidden}, {inter, hidden}, {hidden, inter}};
  double layer_flops = 0, layer_params = 0;
  for (auto [out, in] : weights) {
    layer_flops += 2.0 * p * out * in;
    layer_params += static_cast<double>(out) * in;
  }
  const double matmul_flops = layer_flops;
  // Attention scores and weighted sum, causal half counted in full as the kernels compute it.
  layer_flops += 2.0 * 2.0 * p * p * config.num_attention_heads * config.head_dim;
  const double prefill_flops =
      layer_flops * config.num_hidden_layers + 2.0 * hidden * config.vocab_size;
  auto tensor_options = at::TensorOptions().dtype(dtype).device(device);
  std::vector<at::Tensor> inputs, mats;
  for (auto [out, in] : weights) {
    inputs.push_back(at::randn({p, in}, tensor_options));
    mats.push_back(at::randn({in, out}, tensor_options));
  }
  const double matmul_seconds = BestSeconds(3, device, [&] {
    for (int layer = 0; layer < 4; ++layer)
      for (size_t i = 0; i < weights.size(); ++i) (void)at::matmul(inputs[i], mats[i]);
  });
  inputs.clear();
  mats.clear();
  figures.push_back({"prefill GFLOP/s vs plain matmul (goal >= 0.5)",
                     prefill_flops / plain.prefill_seconds / 1e9,
                     4 * matmul_flops / matmul_seconds / 1e9, true});

  // Decode roofline: every weight but the embedding table is read once per token, plus the
  // KV cache up to the current position.
  layer_params += 2.0 * hidden + (config.attention_bias ? q_out + 2.0 * kv : 0.0);
  const double weight_bytes = (layer_params * config.num_hidden_layers + hidden +
                               static_cast<double>(config.vocab_size) * hidden) *
                              element;
  const double kv_bytes_per_position = 2.0 * config.num_hidden_layers * kv * element;
  const double mean_context = p + (decode_tokens - 1) / 2.0;
  const double decode_bytes = weight_bytes + kv_bytes_per_position * mean_context;
  // Read bandwidth of the same memory: a sum over a buffer far larger than the caches.
  const int64_t buffer_elements = (device.is_cuda() ? int64_t{1} << 30 : int64_t{64} << 20);
  at::Tensor buffer =
      at::ones({buffer_elements}, at::TensorOptions().dtype(at::kFloat).device(device));
  (void)buffer.sum();
  const double read_seconds = BestSeconds(5, device, [&] { (void)buffer.sum(); });
  const double bandwidth = buffer_elements * 4.0 / read_seconds;
  buffer = at::Tensor();
  figures.push_back({std::string("decode GB/s (weights + KV per token) vs memory read GB/s ") +
                         (device.is_cuda() ? "(goal >= 0.6)" : "(goal >= 0.8)"),
                     decode_bytes * decode_tokens / plain.decode_seconds / 1e9, bandwidth / 1e9,
                     true});

  // Memory: the embedding table counts here (it is resident), with the KV cache of the run.
  const double resident_weights = weight_bytes + static_cast<double>(config.vocab_size) * hidden *
                                                     element * (config.tie_word_embeddings ? 0 : 1);
  const double kv_cache = kv_bytes_per_position * (p + decode_tokens + 1);
  const double peak =
      device.is_cuda() ? DevicePeakBytes(device) : (PeakRssMiB() - rss_before) * 1024.0 * 1024.0;
  figures.push_back({std::string(device.is_cuda() ? "peak device MiB" : "peak RSS MiB") +
                         " vs weights + KV cache",
                     peak / (1 << 20), (resident_weights + kv_cache) / (1 << 20), true});

  std::printf(
      "engine benchmark%s: %s, %d layers, %d heads, %d KV heads, hidden %d, %s on %s, %d intra-op "
      "threads\n",
      label.empty() ? "" : (" [" + label + "]").c_str(), dir.c_str(), config.num_hidden_layers,
      config.num_attention_heads, config.num_key_value_heads, config.hidden_size,
      dtype_name.c_str(), device_name.c_str(), at::get_num_threads());
  std::printf("%-62s %12s %12s %8s\n", "figure", "value", "baseline", "ratio");
  nlohmann::json document = {{"label", label},
                             {"model_dir", dir},
                             {"device", device_name},
                             {"dtype", dtype_name},
                             {"layers", config.num_hidden_layers},
                             {"heads", config.num_attention_heads},
                             {"kv_heads", config.num_key_value_heads},
                             {"hidden", config.hidden_size},
                             {"decode_tokens", decode_tokens},
                             {"threads", at::get_num_threads()},
                             {"figures", nlohmann::json::array()}};
  for (const Figure& figure : figures) {
    const double ratio = figure.has_baseline ? figure.value / figure.baseline : 0;
    if (figure.has_baseline) {
      std::printf("%-62s %12.2f %12.2f %8.2f\n", figure.name.c_str(), figure.value, figure.baseline,
                  ratio);
      std::printf("BENCH\t%s\t%.2f\t%.2f\t%.2f\n", figure.name.c_str(), figure.value,
                  figure.baseline, ratio);
    } else {
      std::printf("%-62s %12.2f\n", figure.name.c_str(), figure.value);
      std::printf("BENCH\t%s\t%.2f\t\t\n", figure.name.c_str(), figure.value);
    }
    nlohmann::json entry = {{"figure", figure.name}, {"value", figure.value}};
    if (figure.has_baseline) {
      entry["baseline"] = figure.baseline;
      entry["ratio"] = ratio;
    }
    document["figures"].push_back(entry);
  }
  const std::string json_path = Flag(argc, argv, "json", "");
  if (!json_path.empty()) {
    std::ofstream(json_path) << document.dump(1) << "\n";
  }
  return 0;
}

}  // namespace
}  // namespace attnscope

int main(int argc, char** argv) { return attnscope::Main(argc, argv); }
