// The device data path against the CPU reference:
// - AnalyzeHeads' tensor reductions (TensorAnalysisObserver, LayerReductions) give the report
//   of the reference analyzer (host loops over float rows) within 1e-5, on hand-built blocks
//   and on real captures of the tiny and golden models, including the whole-matrix report;
// - rows converted to the wire dtype where they were computed are the bytes the host
//   conversion (ConvertFloats) gives;
// - the host copy queue delivers in order and stops at the first failed delivery.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <random>

#include "analysis/analyzer.h"
#include "analysis/report.h"
#include "server/engine/capture_file_observer.h"
#include "server/engine/device_attention.h"
#include "server/engine/engine.h"
#include "server/engine/interventions.h"
#include "server/engine/tensor_analysis_observer.h"
#include "server/engine/tensor_reductions.h"
#include "server/model/device_copy.h"
#include "server/model/tiny_model.h"
#include "tests/analysis/golden_util.h"

namespace attnscope {
namespace {

using analysis::testing::EverythingOptions;
using analysis::testing::IdTokens;

constexpr double kTolerance = 1e-5;

// Where the tensors live: the CPU, or the device scripts/gpu-check.sh names.
at::Device Device() { return at::Device(testing::TestDevice()); }

// Every number within kTolerance, everything else equal.
void ExpectJsonNear(const nlohmann::json& actual, const nlohmann::json& expected,
                    const std::string& path, int* failures) {
  if (*failures > 20) return;
  if (expected.is_number() && actual.is_number()) {
    const double a = actual.get<double>(), b = expected.get<double>();
    if (!(std::abs(a - b) <= kTolerance)) {
      ADD_FAILURE() << path << ": " << a << " vs reference " << b;
      ++*failures;
    }
    return;
  }
  if (actual.type() != expected.type() || actual.size() != expected.size()) {
    ADD_FAILURE() << path << ": " << actual.dump().substr(0, 200) << " vs reference "
                  << expected.dump().substr(0, 200);
    ++*failures;
    return;
  }
  if (expected.is_array()) {
    for (size_t i = 0; i < expected.size(); ++i) {
      ExpectJsonNear(actual[i], expected[i], path + "[" + std::to_string(i) + "]", failures);
    }
  } else if (expected.is_object()) {
    for (auto it = expected.begin(); it != expected.end(); ++it) {
      if (!actual.contains(it.key())) {
        ADD_FAILURE() << path << "." << it.key() << " is missing";
        ++*failures;
        continue;
      }
      ExpectJsonNear(actual[it.key()], it.value(), path + "." + it.key(), failures);
    }
  } else if (actual != expected) {
    ADD_FAILURE() << path << ": " << actual.dump() << " vs reference " << expected.dump();
    ++*failures;
  }
}

void ExpectReportsNear(const analysis::HeadReport& actual, const analysis::HeadReport& expected) {
  int failures = 0;
  ExpectJsonNear(analysis::ReportToJson(actual), analysis::ReportToJson(expected), "report",
                 &failures);
}

// Random causal attention [heads, T, T]: rows sum to 1, zeros above the diagonal, some exact
// zeros below it, and one row with a tie at its top, like a softmax can give.
std::vector<float> RandomCausal(int heads, int t, uint64_t seed) {
  std::mt19937_64 random(seed);
  std::uniform_real_distribution<float> uniform(0.0f, 1.0f);
  std::vector<float> data(static_cast<size_t>(heads) * t * t, 0.0f);
  for (int h = 0; h < heads; ++h) {
    for (int i = 0; i < t; ++i) {
      float* row = data.data() + (static_cast<size_t>(h) * t + i) * t;
      double sum = 0;
      for (int j = 0; j <= i; ++j) {
        const float u = uniform(random);
        row[j] = u < 0.15f ? 0.0f : std::pow(u, 4.0f);  // peaked, with exact zeros
        sum += row[j];
      }
      if (sum == 0) row[i] = 1.0f, sum = 1.0;
      for (int j = 0; j <= i; ++j) row[j] = static_cast<float>(row[j] / sum);
      if (i == 7 && h == 0) row[1] = row[2] = row[3] = 0.25f, row[0] = 0.25f;  // a tie
      if (i == 7 && h == 0)
        for (int j = 4; j <= i; ++j) row[j] = 0.0f;
    }
  }
  return data;
}

// The rows [first, first + count) x keys [0, keys) of one layer's [heads, T, T] matrices.
std::vector<float> Slice(const std::vector<float>& matrices, int heads, int t, int first, int count,
                         int keys) {
  std::vector<float> out;
  for (int h = 0; h < heads; ++h) {
    for (int i = first; i < first + count; ++i) {
      const float* row = matrices.data() + (static_cast<size_t>(h) * t + i) * t;
      out.insert(out.end(), row, row + keys);
    }
  }
  return out;
}

struct HandBuilt {
  int heads = 3, t = 26, prompt = 17, layers = 2;
  std::vector<int> head_ids = {0, 2, 5};
  std::vector<int64_t> ids;
  std::vector<std::vector<float>> matrices;
  HandBuilt() {
    // Repeated ids (duplicate-token rows), and the induction probe's shape from position 1.
    ids = {9, 3, 50, 2, 1, 7, 3, 50, 2, 1, 7, 4, 2, 50, 50, 3, 8, 1, 3, 2, 9, 50, 6, 6, 1, 3};
    for (int l = 0; l < layers; ++l) matrices.push_back(RandomCausal(heads, t, 11 + l));
  }
};

// Feeds both observers in the engine's order: prefill block per layer, then per generated
// token OnToken and one row per layer. `reference` gets host floats, `tensor` tensors.
void FeedEngineOrder(const HandBuilt& data, AnalysisObserver* reference,
                     TensorAnalysisObserver* tensor) {
  const std::vector<int64_t> prompt(data.ids.begin(), data.ids.begin() + data.prompt);
  ASSERT_TRUE(reference->OnStart(prompt).ok());
  ASSERT_TRUE(tensor->OnStart(prompt).ok());
  DeviceAttentionConsumer* consumer = tensor->device_attention();
  ASSERT_NE(consumer, nullptr);
  auto deliver = [&](int layer, int first, int count, int keys) {
    std::vector<float> rows = Slice(data.matrices[layer], data.heads, data.t, first, count, keys);
    AttentionBlock block;
    block.layer = layer;
    block.heads = &data.head_ids;
    block.first_row = first;
    block.num_rows = count;
    block.key_length = keys;
    block.data = rows.data();
    ASSERT_TRUE(reference->OnAttention(block).ok());
    at::Tensor probs = at::from_blob(rows.data(), {data.heads, count, keys}, at::kFloat)
                           .to(Device(), at::kFloat, false, /*copy=*/true);
    absl::Status status = consumer->OnDeviceAttention(layer, data.head_ids, first, probs);
    ASSERT_TRUE(status.ok()) << status;
  };
  for (int layer = 0; layer < data.layers; ++layer) deliver(layer, 0, data.prompt, data.prompt);
  for (int i = data.prompt; i < data.t; ++i) {
    ASSERT_TRUE(reference->OnToken(data.ids[i], i).ok());
    ASSERT_TRUE(tensor->OnToken(data.ids[i], i).ok());
    for (int layer = 0; layer < data.layers; ++layer) deliver(layer, i, 1, i + 1);
  }
}

analysis::AnalysisOptions HandBuiltOptions() {
  analysis::AnalysisOptions options = EverythingOptions();
  options.induction = analysis::InductionProbe{5, 1};
  options.metrics.beginning_columns = 4;
  return options;
}

TEST(TensorReductionsTest, HandBuiltBlocksGiveTheReferenceReport) {
  HandBuilt data;
  analysis::AnalysisInput input;
  input.token_ids = std::vector<int64_t>(data.ids.begin(), data.ids.begin() + data.prompt);
  input.tokens = IdTokens(input.token_ids);
  auto token_string = [](int64_t id) { return absl::StrCat("w", id); };
  AnalysisObserver reference(input, HandBuiltOptions(), token_string);
  TensorAnalysisObserver tensor(input, HandBuiltOptions(), token_string);
  FeedEngineOrder(data, &reference, &tensor);
  auto expected = reference.Finish("gen");
  auto actual = tensor.Finish("gen");
  ASSERT_TRUE(expected.ok()) << expected.status();
  ASSERT_TRUE(actual.ok()) << actual.status();
  // The report has every part, so the comparison covers them all.
  ASSERT_EQ(expected->layers.size(), 2u);
  ASSERT_FALSE(expected->term_attention.empty());
  ASSERT_FALSE(expected->top_k.empty());
  ASSERT_FALSE(expected->detectors.duplicate_token.empty());
  ASSERT_FALSE(expected->detectors.induction.empty());
  ExpectReportsNear(*actual, *expected);

  // And the whole-matrix analysis of the same matrices (an independent computation).
  analysis::AnalysisInput whole;
  whole.token_ids = data.ids;
  whole.tokens = IdTokens(data.ids);
  whole.prompt_length = data.prompt;
  std::vector<analysis::LayerMatrices> layers;
  for (int l = 0; l < data.layers; ++l) {
    layers.push_back({l, data.head_ids, data.t, data.matrices[l].data()});
  }
  auto matrices = analysis::AnalyzeMatrices(whole, layers, HandBuiltOptions(), "gen");
  ASSERT_TRUE(matrices.ok()) << matrices.status();
  ExpectReportsNear(*actual, *matrices);
}

TEST(TensorReductionsTest, HandComputedValuesOfOneBlock) {
  // Two heads, 3 rows: head 0 attends to itself, head 1 to the first key.
  const std::vector<float> rows = {1, 0, 0, 0, 1, 0, 0, 0, 1,   // head 0
                                   1, 0, 0, 1, 0, 0, 1, 0, 0};  // head 1
  analysis::AnalysisOptions options;
  options.metrics.beginning_columns = 1;
  LayerReductions reductions(0, {0, 1}, /*prompt_length=*/2, options);
  at::Tensor probs =
      at::from_blob(const_cast<float*>(rows.data()), {2, 3, 3}, at::kFloat).to(Device());
  ASSERT_TRUE(reductions.Add(probs, 0, {5, 6, 5}, {}, {}).ok());
  analysis::ReducedRows reduced = reductions.Finish();
  ASSERT_EQ(reduced.per_head.size(), 2u);
  const analysis::ReducedHead& self = reduced.per_head[0];
  const analysis::ReducedHead& first = reduced.per_head[1];
  EXPECT_EQ(self.all.rows, 3);
  EXPECT_EQ(self.all.rows_with_previous, 2);
  EXPECT_EQ(self.all.below_diagonal_cells, 3);
  EXPECT_DOUBLE_EQ(self.all.diagonal, 3);
  EXPECT_DOUBLE_EQ(self.all.previous, 0);
  EXPECT_DOUBLE_EQ(self.all.causal, 0);
  EXPECT_DOUBLE_EQ(self.all.sink, 1);
  EXPECT_DOUBLE_EQ(self.all.entropy, 0);
  EXPECT_DOUBLE_EQ(self.all.max, 1);
  EXPECT_EQ(self.generated.rows, 1);  // row 2 only
  EXPECT_DOUBLE_EQ(self.generated.diagonal, 1);
  EXPECT_DOUBLE_EQ(first.all.diagonal, 1);
  EXPECT_DOUBLE_EQ(first.all.previous, 1);  // row 1 attends to key 0
  EXPECT_DOUBLE_EQ(first.all.causal, 2);
  EXPECT_DOUBLE_EQ(first.all.beginning, 3);
  EXPECT_DOUBLE_EQ(first.all.sink, 3);
  // Row 2 repeats id 5 of position 0: head 1 puts all its mass there, head 0 none.
  EXPECT_EQ(first.duplicate_rows, 1);
  EXPECT_DOUBLE_EQ(first.duplicate_sum, 1);
  EXPECT_DOUBLE_EQ(self.duplicate_sum, 0);
}

TEST(TensorReductionsTest, SmallChunksGiveTheSameSums) {
  // The same blocks reduced in chunks of a few rows (as long prompts are) and in one piece.
  HandBuilt data;
  const analysis::AnalysisOptions options = HandBuiltOptions();
  const std::vector<int> terms = {2, 3};
  const std::vector<analysis::QueryPosition> queries = {{0, 4}, {1, 20}};
  LayerReductions whole(0, data.head_ids, data.prompt, options);
  LayerReductions chunked(0, data.head_ids, data.prompt, options, /*chunk_elements=*/40);
  for (LayerReductions* reductions : {&whole, &chunked}) {
    std::vector<float> block = Slice(data.matrices[0], data.heads, data.t, 0, data.t, data.t);
    at::Tensor probs =
        at::from_blob(block.data(), {data.heads, data.t, data.t}, at::kFloat).to(Device());
    ASSERT_TRUE(reductions->Add(probs, 0, data.ids, terms, queries).ok());
  }
  const analysis::ReducedRows a = whole.Finish(), b = chunked.Finish();
  for (size_t h = 0; h < a.per_head.size(); ++h) {
    EXPECT_NEAR(a.per_head[h].all.entropy, b.per_head[h].all.entropy, kTolerance);
    EXPECT_NEAR(a.per_head[h].generated.causal, b.per_head[h].generated.causal, kTolerance);
    EXPECT_NEAR(a.per_head[h].duplicate_sum, b.per_head[h].duplicate_sum, kTolerance);
    EXPECT_NEAR(a.per_head[h].induction_sum, b.per_head[h].induction_sum, kTolerance);
    EXPECT_EQ(a.per_head[h].term_values, b.per_head[h].term_values);
    EXPECT_EQ(a.per_head[h].query_rows, b.per_head[h].query_rows);
    EXPECT_EQ(a.per_head[h].all.max, b.per_head[h].all.max);
  }
  EXPECT_EQ(a.per_head[0].term_values.size(), static_cast<size_t>((data.t - data.prompt) * 2));
}

TEST(TensorReductionsTest, OutOfOrderRowsAreRefused) {
  analysis::AnalysisInput input;
  input.token_ids = {1, 2, 3};
  TensorAnalysisObserver observer(input, analysis::AnalysisOptions(), nullptr);
  ASSERT_TRUE(observer.OnStart(input.token_ids).ok());
  at::Tensor probs = at::ones({1, 1, 3}, at::kFloat) / 3;
  // Row 2 before rows 0 and 1.
  absl::Status status = observer.device_attention()->OnDeviceAttention(0, {0}, 2, probs);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_NE(status.message().find("do not follow row 0"), std::string::npos) << status;
  // Row 3 has no token yet.
  status = observer.device_attention()->OnDeviceAttention(0, {0}, 0, at::ones({1, 4, 4}) / 4);
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition) << status;
}

// Real captures: the engine drives a plain AnalysisObserver (rows copied to the host, the
// reference loops) and a TensorAnalysisObserver (tensors reduced where they are).
class EngineAnalysisTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    std::string dir;
    if (GetParam() == "tiny") {
      dir = ::testing::TempDir() + "/tensor_analysis_tiny_" + std::to_string(::getpid());
      ASSERT_TRUE(WriteTinyModel(dir, 3).ok());
    } else {
      dir = testing::DataDir() + "/golden/" + GetParam() + "/model";
    }
    EngineOptions options;
    options.model_dir = dir;
    options.device = testing::TestDevice();
    auto engine = Engine::Load(options);
    ASSERT_TRUE(engine.ok()) << engine.status();
    engine_ = std::move(*engine);
    for (int l = 0; l < engine_->config().num_hidden_layers; ++l) spec_.layers.push_back(l);
    for (int h = 0; h < engine_->config().num_attention_heads; ++h) spec_.heads.push_back(h);
  }
  std::unique_ptr<Engine> engine_;
  CaptureSpec spec_;
};

TEST_P(EngineAnalysisTest, GenerationReportEqualsTheReference) {
  const std::vector<int64_t> prompt = {1, 3, 50, 2, 3, 50, 2, 7, 9, 3, 50, 4};
  GenerationParams params;
  params.max_new_tokens = 12;
  params.ignore_eos = true;
  analysis::AnalysisInput input;
  input.token_ids = prompt;
  auto token_string = [](int64_t id) { return absl::StrCat("w", id); };
  analysis::AnalysisOptions options = EverythingOptions();
  options.induction.reset();
  AnalysisObserver reference(input, options, token_string);
  TensorAnalysisObserver tensor(input, options, token_string);
  auto a = engine_->Generate(prompt, params, spec_, &reference);
  auto b = engine_->Generate(prompt, params, spec_, &tensor);
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok()) << b.status();
  ASSERT_EQ(a->token_ids, b->token_ids);
  auto expected = reference.Finish("");
  auto actual = tensor.Finish("");
  ASSERT_TRUE(expected.ok()) << expected.status();
  ASSERT_TRUE(actual.ok()) << actual.status();
  ASSERT_EQ(expected->layers.size(), spec_.layers.size());
  ASSERT_FALSE(expected->term_attention.empty());
  ASSERT_FALSE(expected->detectors.duplicate_token.empty());
  ExpectReportsNear(*actual, *expected);
}

// Interventions change the probabilities both observers see; the tensor reductions still give
// the reference report, and the knockout shows in it: with key 0 knocked out of every row but
// the first, L0H0's sink (mean of A[i, 0]) is row 0's 1 over T rows.
TEST_P(EngineAnalysisTest, GenerationUnderInterventionsEqualsTheReference) {
  const std::vector<int64_t> prompt = {1, 3, 50, 2, 3, 50, 2, 7, 9, 3};
  GenerationParams params;
  params.max_new_tokens = 6;
  params.ignore_eos = true;
  const int total = static_cast<int>(prompt.size()) + params.max_new_tokens;
  InterventionSet set;
  Intervention knockout;
  knockout.kind = Intervention::Kind::kKnockout;
  knockout.layer = 0;
  knockout.heads = {0};
  knockout.rows = KnockoutRows::kRange;
  knockout.row_begin = 1;
  knockout.row_end = total;
  knockout.key_positions = {0};
  Intervention mean_ablation;
  mean_ablation.layer = 0;
  mean_ablation.heads = {1};
  mean_ablation.mode = AblationMode::kMean;
  Intervention zero_ablation;
  zero_ablation.layer = -1;
  zero_ablation.heads = {2};
  set.items = {knockout, mean_ablation, zero_ablation};
  analysis::AnalysisInput input;
  input.token_ids = prompt;
  auto token_string = [](int64_t id) { return absl::StrCat("w", id); };
  analysis::AnalysisOptions options = EverythingOptions();
  options.induction.reset();
  AnalysisObserver reference(input, options, token_string);
  TensorAnalysisObserver tensor(input, options, token_string);
  auto a = engine_->Generate(prompt, params, spec_, &reference, &set);
  auto b = engine_->Generate(prompt, params, spec_, &tensor, &set);
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok()) << b.status();
  ASSERT_EQ(a->token_ids, b->token_ids);
  auto expected = reference.Finish("");
  auto actual = tensor.Finish("");
  ASSERT_TRUE(expected.ok()) << expected.status();
  ASSERT_TRUE(actual.ok()) << actual.status();
  ExpectReportsNear(*actual, *expected);
  ASSERT_EQ(actual->layers[0].layer, 0);
  ASSERT_EQ(actual->layers[0].heads[0].head, 0);
  EXPECT_NEAR(actual->layers[0].heads[0].metrics.sink, 1.0 / total, kTolerance);
}

TEST_P(EngineAnalysisTest, InductionProbeForwardEqualsTheReference) {
  const int n = 9;
  analysis::AnalysisOptions options;
  options.induction = analysis::InductionProbe{n, 1};
  options.queries = {"w"};
  const std::vector<int64_t> probe = analysis::MakeInductionProbe(n, 5, 3, 200, 1);
  analysis::AnalysisInput input;
  input.token_ids = probe;
  auto token_string = [](int64_t id) { return absl::StrCat("w", id); };
  AnalysisObserver reference(input, options, token_string);
  TensorAnalysisObserver tensor(input, options, token_string);
  ASSERT_TRUE(engine_->Forward(probe, spec_, &reference).ok());
  ASSERT_TRUE(engine_->Forward(probe, spec_, &tensor).ok());
  auto expected = reference.Finish("");
  auto actual = tensor.Finish("");
  ASSERT_TRUE(expected.ok()) << expected.status();
  ASSERT_TRUE(actual.ok()) << actual.status();
  ASSERT_FALSE(expected->detectors.induction.empty());
  ExpectReportsNear(*actual, *expected);
}

// Rows converted to float16 / bfloat16 by the engine (where they were computed) are the
// bytes the host conversion of the float32 capture gives.
TEST_P(EngineAnalysisTest, WireRowsEqualTheHostConversion) {
  const std::vector<int64_t> prompt = {1, 3, 50, 2, 3, 50, 2, 7};
  GenerationParams params;
  params.max_new_tokens = 5;
  params.ignore_eos = true;
  CaptureFileObserver float_capture(spec_);
  auto reference = engine_->Generate(prompt, params, spec_, &float_capture);
  ASSERT_TRUE(reference.ok()) << reference.status();
  const int total = static_cast<int>(reference->token_ids.size());
  for (DType dtype : {DType::kFloat16, DType::kBFloat16}) {
    CaptureSpec spec = spec_;
    spec.dtype = dtype;
    CaptureFileObserver wire(spec);
    ASSERT_TRUE(wire.accepts_wire_rows());
    auto result = engine_->Generate(prompt, params, spec, &wire);
    ASSERT_TRUE(result.ok()) << result.status();
    ASSERT_EQ(result->token_ids, reference->token_ids);
    for (int layer : spec.layers) {
      const std::string floats = float_capture.assembler().LayerBytes(layer, total);
      std::string expected;
      ConvertFloats(reinterpret_cast<const float*>(floats.data()), floats.size() / 4, dtype,
                    &expected);
      EXPECT_TRUE(wire.assembler().LayerBytes(layer, total) == expected)
          << DTypeName(dtype) << " layer " << layer;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Models, EngineAnalysisTest,
                         ::testing::Values("tiny", "qwen2-tiny", "qwen2-tiny-tied"));

TEST(HostCopyQueueTest, CpuDeliversInOrderAndStopsAtAFailure) {
  HostCopyQueue queue;
  std::vector<float> seen;
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(queue.Enqueue(at::full({2}, static_cast<float>(i)), [&](const at::Tensor& host) {
      seen.push_back(host[1].item<float>());
      return true;
    }));
  }
  EXPECT_EQ(seen, (std::vector<float>{0, 1, 2}));
  EXPECT_FALSE(queue.Enqueue(at::zeros({1}), [](const at::Tensor&) { return false; }));
  EXPECT_TRUE(queue.Drain());
  EXPECT_EQ(queue.pending(), 0u);
}

}  // namespace
}  // namespace attnscope
