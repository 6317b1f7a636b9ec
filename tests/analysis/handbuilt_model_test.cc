// A Qwen2 model whose weights are written by hand so that head 0 attends to the previous
// token and head 1 to the first token; the engine runs it with the AnalysisObserver and the
// report must find both heads by score and by type. Needs the engine (libtorch).
//
// How the weights do it (hidden 16, 2 heads of dim 8, rope_theta 1e4, so the four RoPE
// pairs (d, d + 4) turn by w = 1, 0.1, 0.01, 0.001 radians per position):
// - embeddings: every token has dim 0 = 1 (a constant); token 0 (the first token) has
//   dim 1 = 1 ("I am first"), every other token dim 2 = 1, so all have the same RMS norm;
// - head 0: q pair d = (s_d, 0) and k pair d = s_d (cos w_d, sin w_d), both from the constant.
//   After RoPE, q_i . k_j = sum_d s_d^2 cos((i - j - 1) w_d): largest at j = i - 1;
// - head 1: q pair 3 = (r, 0) from the constant, k pair 3 = (r, 0) from "I am first": only
//   key 0 scores (r^2 cos(i w_3) with w_3 = 0.001), every other key scores 0;
// - v, o and the MLP are zero, so the residual stream never changes; lm_head makes token 5
//   the greedy choice (never token 0, which would be a second "first" token).
// Checked in numpy before writing: with s = (10, 10, 4, 0) and r = 6 the previous-token
// weight is >= 0.999 on every row up to T = 40 and the first-token weight >= 0.9998.
#include <sys/stat.h>

#include <cmath>
#include <cstring>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "server/engine/analysis_observer.h"
#include "server/engine/capture_file_observer.h"
#include "server/engine/engine.h"
#include "server/model/safetensors.h"
#include "server/model/tiny_model.h"

namespace attnscope {
namespace {

constexpr int kHidden = 16;
constexpr int kHeads = 2;
constexpr int kHeadDim = 8;
constexpr int kVocab = 16;
constexpr int kGreedyToken = 5;
constexpr double kRopeTheta = 10000.0;

std::string MakeDir(const std::string& name) {
  const std::string dir = ::testing::TempDir() + name;
  ::mkdir(dir.c_str(), 0755);
  return dir;
}

void WriteText(const std::string& path, const std::string& text) {
  std::ofstream out(path);
  out << text;
}

// Writes config.json, generation_config.json and model.safetensors of the hand-built model.
absl::Status WriteHandBuiltModel(const std::string& dir) {
  const nlohmann::json config = {{"architectures", {"Qwen2ForCausalLM"}},
                                 {"model_type", "qwen2"},
                                 {"hidden_size", kHidden},
                                 {"intermediate_size", 8},
                                 {"num_hidden_layers", 1},
                                 {"num_attention_heads", kHeads},
                                 {"num_key_value_heads", kHeads},
                                 {"hidden_act", "silu"},
                                 {"max_position_embeddings", 256},
                                 {"rms_norm_eps", 1e-6},
                                 {"rope_theta", kRopeTheta},
                                 {"tie_word_embeddings", false},
                                 {"use_sliding_window", false},
                                 {"sliding_window", 4096},
                                 {"vocab_size", kVocab},
                                 {"bos_token_id", 15},
                                 {"eos_token_id", 15},
                                 {"torch_dtype", "float32"}};
  WriteText(dir + "/config.json", config.dump(2));
  WriteText(dir + "/generation_config.json", R"({"eos_token_id": 15})");

  std::vector<std::vector<float>> storage;
  storage.reserve(32);
  std::vector<TensorToWrite> tensors;
  auto add = [&](const std::string& name, std::vector<int64_t> shape, std::vector<float> values) {
    storage.push_back(std::move(values));
    tensors.push_back({name, TensorDType::kF32, shape, storage.back().data(),
                       storage.back().size() * sizeof(float)});
  };
  auto zeros = [](int64_t n) { return std::vector<float>(n, 0.0f); };
  auto ones = [](int64_t n) { return std::vector<float>(n, 1.0f); };

  std::vector<float> embed = zeros(kVocab * kHidden);
  for (int token = 0; token < kVocab; ++token) {
    embed[token * kHidden + 0] = 1;
    embed[token * kHidden + (token == 0 ? 1 : 2)] = 1;
  }
  add("model.embed_tokens.weight", {kVocab, kHidden}, embed);

  // After the input RMSNorm every embedding is scaled by 1 / rms = sqrt(16 / 2).
  const float unit = 1.0f / std::sqrt(static_cast<float>(kHidden) / 2.0f);
  const double previous_scale[4] = {10, 10, 4, 0};
  const double first_scale = 6;
  std::vector<float> q = zeros(kHeads * kHeadDim * kHidden);
  std::vector<float> k = zeros(kHeads * kHeadDim * kHidden);
  auto at = [](int head, int dim, int input) { return (head * kHeadDim + dim) * kHidden + input; };
  for (int pair = 0; pair < kHeadDim / 2; ++pair) {
    const double w = std::pow(kRopeTheta, -2.0 * pair / kHeadDim);
    const double s = previous_scale[pair];
    q[at(0, pair, 0)] = static_cast<float>(s * unit);
    k[at(0, pair, 0)] = static_cast<float>(s * std::cos(w) * unit);
    k[at(0, pair + kHeadDim / 2, 0)] = static_cast<float>(s * std::sin(w) * unit);
  }
  q[at(1, 3, 0)] = static_cast<float>(first_scale * unit);
  k[at(1, 3, 1)] = static_cast<float>(first_scale * unit);

  const std::string prefix = "model.layers.0.";
  add(prefix + "input_layernorm.weight", {kHidden}, ones(kHidden));
  add(prefix + "self_attn.q_proj.weight", {kHeads * kHeadDim, kHidden}, q);
  add(prefix + "self_attn.q_proj.bias", {kHeads * kHeadDim}, zeros(kHeads * kHeadDim));
  add(prefix + "self_attn.k_proj.weight", {kHeads * kHeadDim, kHidden}, k);
  add(prefix + "self_attn.k_proj.bias", {kHeads * kHeadDim}, zeros(kHeads * kHeadDim));
  add(prefix + "self_attn.v_proj.weight", {kHeads * kHeadDim, kHidden},
      zeros(kHeads * kHeadDim * kHidden));
  add(prefix + "self_attn.v_proj.bias", {kHeads * kHeadDim}, zeros(kHeads * kHeadDim));
  add(prefix + "self_attn.o_proj.weight", {kHidden, kHeads * kHeadDim},
      zeros(kHidden * kHeads * kHeadDim));
  add(prefix + "post_attention_layernorm.weight", {kHidden}, ones(kHidden));
  add(prefix + "mlp.gate_proj.weight", {8, kHidden}, zeros(8 * kHidden));
  add(prefix + "mlp.up_proj.weight", {8, kHidden}, zeros(8 * kHidden));
  add(prefix + "mlp.down_proj.weight", {kHidden, 8}, zeros(8 * kHidden));
  add("model.norm.weight", {kHidden}, ones(kHidden));
  std::vector<float> lm_head = zeros(kVocab * kHidden);
  lm_head[kGreedyToken * kHidden + 0] = 1;  // the constant dim: token 5 always wins
  add("lm_head.weight", {kVocab, kHidden}, lm_head);
  return WriteSafetensors(dir + "/model.safetensors", tensors, {{"format", "pt"}});
}

CaptureSpec AllOf(int layers, int heads) {
  CaptureSpec spec;
  for (int l = 0; l < layers; ++l) spec.layers.push_back(l);
  for (int h = 0; h < heads; ++h) spec.heads.push_back(h);
  return spec;
}

TEST(HandBuiltModelTest, ReportFindsThePreviousTokenAndFirstTokenHeads) {
  const std::string dir = MakeDir("attnscope_handbuilt_model");
  ASSERT_TRUE(WriteHandBuiltModel(dir).ok());
  EngineOptions options;
  options.model_dir = dir;
  auto engine = Engine::Load(options);
  ASSERT_TRUE(engine.ok()) << engine.status();

  // 24 prompt tokens (the first is token 0) + 6 generated: T = 30 > 20, long enough for the
  // notebook rule to call an all-on-key-0 head beginning-focused (0.1 > 2 / T).
  std::vector<int64_t> prompt = {0};
  for (int i = 1; i < 24; ++i) prompt.push_back(1 + (i * 7) % 14);
  GenerationParams params;
  params.max_new_tokens = 6;
  analysis::AnalysisInput input;
  input.token_ids = prompt;
  AnalysisObserver observer(input, analysis::AnalysisOptions(), nullptr);
  auto result = (*engine)->Generate(prompt, params, AllOf(1, kHeads), &observer);
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_EQ(result->token_ids.size(), 30u);
  EXPECT_EQ(result->token_ids.back(), kGreedyToken);
  auto report = observer.Finish("");
  ASSERT_TRUE(report.ok()) << report.status();

  ASSERT_EQ(report->layers.size(), 1u);
  ASSERT_EQ(report->layers[0].heads.size(), 2u);
  const analysis::HeadEntry& previous = report->layers[0].heads[0];
  const analysis::HeadEntry& first = report->layers[0].heads[1];
  EXPECT_GT(previous.metrics.previous_token, 0.99);
  EXPECT_EQ(previous.metrics.type, "focused");
  ASSERT_TRUE(previous.generated_rows.has_value());
  EXPECT_GT(previous.generated_rows->previous_token, 0.99);
  EXPECT_GT(first.metrics.sink, 0.99);
  EXPECT_EQ(first.metrics.type, "beginning-focused");
  EXPECT_LT(first.metrics.previous_token, 0.1);  // only row 1's previous key is key 0

  const auto& ranking = report->detectors.previous_token;
  ASSERT_EQ(ranking.size(), 2u);
  EXPECT_EQ(ranking[0].head, 0);
  EXPECT_GT(ranking[0].score, 0.99);
  EXPECT_EQ(ranking[1].head, 1);
}

// Feeds two observers from one generation.
class TeeObserver : public GenerationObserver {
 public:
  TeeObserver(GenerationObserver* a, GenerationObserver* b) : a_(a), b_(b) {}
  absl::Status OnStart(const std::vector<int64_t>& ids) override {
    auto status = a_->OnStart(ids);
    return status.ok() ? b_->OnStart(ids) : status;
  }
  absl::Status OnAttention(const AttentionBlock& block) override {
    auto status = a_->OnAttention(block);
    return status.ok() ? b_->OnAttention(block) : status;
  }
  absl::Status OnToken(int64_t id, int position) override {
    auto status = a_->OnToken(id, position);
    return status.ok() ? b_->OnToken(id, position) : status;
  }

 private:
  GenerationObserver* a_;
  GenerationObserver* b_;
};

TEST(HandBuiltModelTest, EngineStreamEqualsTheCaptureFileAnalysis) {
  // A random tiny model: the report streamed from the engine equals the whole-matrix report
  // of the same generation's captured matrices.
  const std::string dir = MakeDir("attnscope_analysis_tiny_model");
  TinyModelShape shape;
  shape.num_layers = 2;
  shape.with_tokenizer = false;
  ASSERT_TRUE(WriteTinyModel(dir, 3, shape).ok());
  EngineOptions options;
  options.model_dir = dir;
  auto engine = Engine::Load(options);
  ASSERT_TRUE(engine.ok()) << engine.status();
  const std::vector<int64_t> prompt = {10, 20, 30, 40, 20, 30, 50, 60, 70, 10, 20};
  analysis::AnalysisOptions analysis_options;
  analysis_options.terms = {};
  analysis::AnalysisInput input;
  input.token_ids = prompt;
  AnalysisObserver analysis_observer(input, analysis_options, nullptr);
  const CaptureSpec spec = AllOf(2, shape.num_heads);
  CaptureFileObserver capture(spec);
  TeeObserver tee(&analysis_observer, &capture);
  GenerationParams params;
  params.max_new_tokens = 5;
  auto result = (*engine)->Generate(prompt, params, spec, &tee);
  ASSERT_TRUE(result.ok()) << result.status();
  auto streamed = analysis_observer.Finish("");
  ASSERT_TRUE(streamed.ok()) << streamed.status();

  const int t = static_cast<int>(result->token_ids.size());
  std::vector<std::vector<float>> matrices;
  std::vector<analysis::LayerMatrices> layers;
  for (int layer = 0; layer < 2; ++layer) {
    const std::string bytes = capture.assembler().LayerBytes(layer, t);
    ASSERT_EQ(bytes.size(), sizeof(float) * shape.num_heads * t * t);
    matrices.emplace_back(bytes.size() / sizeof(float));
    std::memcpy(matrices.back().data(), bytes.data(), bytes.size());
  }
  for (int layer = 0; layer < 2; ++layer) {
    layers.push_back({layer, spec.heads, t, matrices[layer].data()});
  }
  analysis::AnalysisInput whole_input;
  whole_input.token_ids = result->token_ids;
  whole_input.prompt_length = result->prompt_length;
  auto whole = analysis::AnalyzeMatrices(whole_input, layers, analysis_options, "");
  ASSERT_TRUE(whole.ok()) << whole.status();
  const nlohmann::json a = analysis::ReportToJson(*streamed);
  const nlohmann::json b = analysis::ReportToJson(*whole);
  for (const auto& op : nlohmann::json::diff(a, b)) {
    const nlohmann::json::json_pointer path(op["path"].get<std::string>());
    ASSERT_TRUE(a[path].is_number() && b[path].is_number()) << op.dump();
    EXPECT_NEAR(a[path].get<double>(), b[path].get<double>(), 1e-6) << op["path"];
  }
  EXPECT_EQ(a["layers"].size(), 2u);
  EXPECT_FALSE(a["detectors"]["duplicate_token"].empty());  // ids 10, 20, 30 repeat
}

}  // namespace
}  // namespace attnscope
