// Causal interventions against an independent reference: tests/engine/intervention_reference.py
// (a from-scratch PyTorch Qwen2 over the golden checkpoints, itself checked against
// transformers' logits) wrote testdata/interventions_<model>.json: the log-probabilities of
// candidates under zero / mean ablation, knockout, patching and their combination, the greedy
// continuation under each, the attention under knockout, and single-head sweeps.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "nlohmann/json.hpp"
#include "server/engine/capture_file_observer.h"
#include "server/engine/engine.h"
#include "server/engine/interventions.h"
#include "tests/common/intervention_cases.h"
#include "tests/common/npy.h"

namespace attnscope {
namespace {

constexpr double kTolerance = 1e-4;

class InterventionTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    EngineOptions options;
    options.model_dir = testing::DataDir() + "/golden/" + GetParam() + "/model";
    auto engine = Engine::Load(options);
    ASSERT_TRUE(engine.ok()) << engine.status();
    engine_ = std::move(*engine);
    doc_ = testing::LoadInterventionReference(GetParam());
    prompt_ = doc_.at("prompt").get<std::vector<int64_t>>();
  }
  std::unique_ptr<Engine> engine_;
  nlohmann::json doc_;
  std::vector<int64_t> prompt_;
};

TEST_P(InterventionTest, ScoresEqualTheReferenceUnderEveryIntervention) {
  const std::vector<Candidate> candidates = testing::CandidatesFromJson(doc_);
  for (const auto& c : doc_.at("cases")) {
    SCOPED_TRACE(c.at("name").get<std::string>());
    InterventionSet set =
        testing::InterventionsFromJson(c.at("interventions"), c.value("source", nlohmann::json()));
    auto result = engine_->Score(prompt_, candidates, &set);
    ASSERT_TRUE(result.ok()) << result.status();
    ASSERT_EQ(result->candidates.size(), candidates.size());
    for (size_t k = 0; k < candidates.size(); ++k) {
      const auto& expected = c.at("scores")[k];
      const auto token_lp = expected.at("token_logprobs").get<std::vector<double>>();
      ASSERT_EQ(result->candidates[k].token_logprobs.size(), token_lp.size());
      for (size_t j = 0; j < token_lp.size(); ++j) {
        EXPECT_NEAR(result->candidates[k].token_logprobs[j], token_lp[j], kTolerance)
            << "candidate " << k << " token " << j;
      }
      EXPECT_NEAR(result->candidates[k].logprob, expected.at("logprob").get<double>(), kTolerance);
      EXPECT_EQ(result->candidates[k].first_token_rank, expected.at("first_token_rank").get<int>());
    }
    EXPECT_NEAR(result->logit_diff,
                c.at("scores")[0].at("logprob").get<double>() -
                    c.at("scores")[1].at("logprob").get<double>(),
                kTolerance);
  }
}

TEST_P(InterventionTest, CleanScoresAreTheEnginesOwnLogits) {
  const std::vector<Candidate> candidates = testing::CandidatesFromJson(doc_);
  auto result = engine_->Score(prompt_, candidates, nullptr);
  ASSERT_TRUE(result.ok()) << result.status();
  const int vocab = engine_->config().vocab_size;
  for (size_t k = 0; k < candidates.size(); ++k) {
    std::vector<int64_t> ids = prompt_;
    ids.insert(ids.end(), candidates[k].ids.begin(), candidates[k].ids.end());
    auto logits = engine_->Forward(ids, CaptureSpec(), nullptr);
    ASSERT_TRUE(logits.ok());
    for (size_t j = 0; j < candidates[k].ids.size(); ++j) {
      const float* row = logits->data() + (prompt_.size() - 1 + j) * vocab;
      double max = row[0], sum = 0;
      for (int v = 0; v < vocab; ++v) max = std::max(max, static_cast<double>(row[v]));
      for (int v = 0; v < vocab; ++v) sum += std::exp(row[v] - max);
      const double expected = row[candidates[k].ids[j]] - max - std::log(sum);
      EXPECT_NEAR(result->candidates[k].token_logprobs[j], expected, 1e-5);
    }
  }
}

TEST_P(InterventionTest, GreedyGenerationUnderInterventionsEqualsTheReference) {
  for (const auto& c : doc_.at("cases")) {
    SCOPED_TRACE(c.at("name").get<std::string>());
    InterventionSet set =
        testing::InterventionsFromJson(c.at("interventions"), c.value("source", nlohmann::json()));
    GenerationParams params;
    params.max_new_tokens = 4;
    params.ignore_eos = true;
    auto result = engine_->Generate(prompt_, params, CaptureSpec(), nullptr, &set);
    ASSERT_TRUE(result.ok()) << result.status();
    EXPECT_EQ(
        std::vector<int64_t>(result->token_ids.begin() + prompt_.size(), result->token_ids.end()),
        c.at("greedy_4").get<std::vector<int64_t>>());
  }
}

TEST_P(InterventionTest, CapturedAttentionShowsTheKnockout) {
  const int heads = engine_->config().num_attention_heads;
  for (const auto& c : doc_.at("cases")) {
    if (c.at("prompt_attention").empty()) continue;
    SCOPED_TRACE(c.at("name").get<std::string>());
    InterventionSet set =
        testing::InterventionsFromJson(c.at("interventions"), c.value("source", nlohmann::json()));
    CaptureSpec spec;
    for (int l = 0; l < engine_->config().num_hidden_layers; ++l) spec.layers.push_back(l);
    for (int h = 0; h < heads; ++h) spec.heads.push_back(h);
    // The prompt's rows of a one-token generation (its positions up to P are valid).
    spec.rows = CaptureRows::kPromptOnly;
    CaptureFileObserver observer(spec);
    GenerationParams params;
    params.max_new_tokens = 1;
    params.ignore_eos = true;
    auto result = engine_->Generate(prompt_, params, spec, &observer, &set);
    ASSERT_TRUE(result.ok()) << result.status();
    const int total = static_cast<int>(prompt_.size());
    for (const auto& [layer, expected] : c.at("prompt_attention").items()) {
      const std::string bytes = observer.assembler().LayerBytes(std::stoi(layer), total);
      std::vector<float> values(bytes.size() / 4);
      std::memcpy(values.data(), bytes.data(), bytes.size());
      const auto reference = expected.get<std::vector<double>>();
      ASSERT_EQ(values.size(), reference.size());
      double worst = 0;
      int zeros = 0;
      for (size_t i = 0; i < values.size(); ++i) {
        worst = std::max(worst, std::abs(values[i] - reference[i]));
        zeros += values[i] == 0.0f;
      }
      EXPECT_LT(worst, kTolerance) << "layer " << layer;
      // More zeros than the causal mask alone leaves: the knocked-out keys.
      EXPECT_GT(zeros, heads * total * (total - 1) / 2) << "layer " << layer;
    }
  }
}

TEST_P(InterventionTest, SweepEqualsTheReferenceAndSingleAblations) {
  const std::vector<Candidate> candidates = testing::CandidatesFromJson(doc_);
  const auto clean = doc_.at("cases")[0].at("scores");
  const double clean_diff =
      clean[0].at("logprob").get<double>() - clean[1].at("logprob").get<double>();
  for (AblationMode mode : {AblationMode::kZero, AblationMode::kMean}) {
    SCOPED_TRACE(AblationModeName(mode));
    SweepSpec sweep;
    sweep.mode = mode;
    std::vector<std::pair<int, int>> progress;
    auto result = engine_->Sweep(
        prompt_, candidates, sweep,
        [&](int done, int total) {
          progress.push_back({done, total});
          return absl::OkStatus();
        },
        InterventionLimits(), /*batch=*/3);
    ASSERT_TRUE(result.ok()) << result.status();
    EXPECT_NEAR(result->clean.logit_diff, clean_diff, kTolerance);
    const auto table = doc_.at("sweep").at(AblationModeName(mode));
    ASSERT_EQ(result->cells.size(), table.size());
    for (size_t i = 0; i < table.size(); ++i) {
      EXPECT_EQ(result->cells[i].layer, table[i].at("layer").get<int>());
      EXPECT_EQ(result->cells[i].head, table[i].at("head").get<int>());
      const double expected = table[i].at("logit_diff").get<double>();
      EXPECT_NEAR(result->cells[i].logit_diff, expected, kTolerance) << "cell " << i;
      EXPECT_NEAR(result->cells[i].delta, expected - clean_diff, kTolerance) << "cell " << i;
    }
    // Batches of 3 over 4 heads per layer: 3, 4, 7, 8 after the initial 0.
    ASSERT_FALSE(progress.empty());
    EXPECT_EQ(progress.front().first, 0);
    EXPECT_EQ(progress.back().first, static_cast<int>(table.size()));
    EXPECT_EQ(progress.size(), 5u);
  }
}

TEST_P(InterventionTest, SweepStopsWhenProgressSaysSo) {
  int calls = 0;
  auto result = engine_->Sweep(
      prompt_, testing::CandidatesFromJson(doc_), SweepSpec(),
      [&](int done, int) {
        ++calls;
        return done >= 2 ? absl::CancelledError("cancelled by the client") : absl::OkStatus();
      },
      InterventionLimits(), /*batch=*/2);
  EXPECT_EQ(result.status().code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(calls, 2);
}

INSTANTIATE_TEST_SUITE_P(Models, InterventionTest,
                         ::testing::Values("qwen2-tiny", "qwen2-tiny-tied"));

// Validation, before any model work: each error names the field, the value and the limit.
class InterventionValidationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    config_.num_hidden_layers = 2;
    config_.num_attention_heads = 4;
    config_.vocab_size = 512;
  }
  std::string Refusal(InterventionSet set, int prompt = 10, int max_length = 12) {
    absl::Status status = ValidateInterventions(&set, config_, prompt, max_length, limits_);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
    return std::string(status.message());
  }
  static Intervention Ablate(int layer, std::vector<int> heads) {
    Intervention item;
    item.layer = layer;
    item.heads = std::move(heads);
    return item;
  }
  ModelConfig config_;
  InterventionLimits limits_;
};

TEST_F(InterventionValidationTest, OutOfRangeLayerAndHead) {
  EXPECT_EQ(Refusal({{Ablate(2, {0})}}),
            "interventions[0].layer = 2: out of range; the model has 2 layers (valid: -2..1)");
  EXPECT_NE(Refusal({{Ablate(0, {0}), Ablate(1, {4})}}).find("interventions[1].heads: index 4"),
            std::string::npos);
}

TEST_F(InterventionValidationTest, NegativeIndicesResolveFromTheEnd) {
  InterventionSet set{{Ablate(-1, {-1, 0})}};
  ASSERT_TRUE(ValidateInterventions(&set, config_, 10, 12, limits_).ok());
  EXPECT_EQ(set.items[0].layer, 1);
  EXPECT_EQ(set.items[0].heads, (std::vector<int>{0, 3}));
}

TEST_F(InterventionValidationTest, OverlappingInterventionsAreRefused) {
  Intervention knockout = Ablate(1, {2, 3});
  knockout.kind = Intervention::Kind::kKnockout;
  knockout.key_positions = {1};
  EXPECT_EQ(Refusal({{Ablate(1, {0, 2}), knockout}}),
            "interventions[1] = layer 1 head 2: already edited by interventions[0]; each head "
            "may be named by one intervention (two edits of one head would overlap or "
            "contradict)");
}

TEST_F(InterventionValidationTest, PatchSourceOfTheWrongLengthNamesBothLengths) {
  Intervention patch = Ablate(0, {1});
  patch.kind = Intervention::Kind::kPatch;
  InterventionSet set{{patch}, {1, 2, 3}};
  EXPECT_EQ(Refusal(set),
            "patch_source = 3 tokens: the target prompt has 10 tokens; activation patching "
            "needs source and target of the same length");
  EXPECT_EQ(Refusal({{patch}}), "patch_source = (absent): required by the patch interventions");
}

TEST_F(InterventionValidationTest, KnockoutLimits) {
  Intervention knockout = Ablate(0, {0});
  knockout.kind = Intervention::Kind::kKnockout;
  EXPECT_EQ(Refusal({{knockout}}),
            "interventions[0].keys = []: name at least one key position or term");
  knockout.key_positions = {0, 1};
  EXPECT_EQ(Refusal({{knockout}}),
            "interventions[0].keys = 0..1: knocks out every key query row 0 can see; leave it at "
            "least one key");
  knockout.key_positions = {12};
  EXPECT_EQ(Refusal({{knockout}}),
            "interventions[0].keys[0] = 12: must be in [0, 12) (the sequence's positions)");
  knockout.key_positions = {3};
  knockout.rows = KnockoutRows::kRange;
  knockout.row_begin = 5;
  knockout.row_end = 5;
  EXPECT_EQ(Refusal({{knockout}}),
            "interventions[0].rows = [5, 5): must be a non-empty range inside [0, 12) (the "
            "sequence's positions)");
}

TEST_F(InterventionValidationTest, CountAndSweepAndCandidateLimits) {
  limits_.max_interventions = 1;
  EXPECT_EQ(Refusal({{Ablate(0, {0}), Ablate(1, {0})}}),
            "interventions = 2 interventions: exceeds the server limit "
            "limits.max_interventions = 1");
  limits_.max_sweep_heads = 6;
  SweepSpec sweep;
  EXPECT_EQ(ValidateSweep(&sweep, config_, limits_).message(),
            "sweep = 2 layers x 4 heads = 8 ablated forwards: exceeds the server limit "
            "limits.max_sweep_heads = 6");
  EXPECT_EQ(ValidateCandidates({}, 10, 12, config_, limits_, false).message(),
            "candidates = 0 candidates: give at least one candidate continuation");
  EXPECT_EQ(ValidateCandidates({{"a", {1}}}, 10, 12, config_, limits_, true).message(),
            "candidates = 1 candidates: a sweep needs two candidates (its logit difference)");
  EXPECT_EQ(ValidateCandidates({{"a", {1}}, {"", {}}}, 10, 12, config_, limits_, false).message(),
            "candidates[1] = \"\": has no tokens; a candidate must not be empty");
  EXPECT_EQ(ValidateCandidates({{"a", {1, 2, 3}}}, 10, 12, config_, limits_, false).message(),
            "candidates[0] = 10 prompt + 3 candidate tokens = 13: exceeds the limit of 12 tokens");
}

TEST(KnockoutTermsTest, TermsBecomeTheTokenPositionsOfTheirWords) {
  // "Revenue rose; net income fell" tokenised as [Rev][enue][ rose][;][ net][ inc][ome][ fell].
  const std::string text = "Revenue rose; net income fell";
  const std::vector<std::pair<int64_t, int64_t>> spans = {{0, 3},   {3, 7},   {7, 12},  {12, 13},
                                                          {13, 17}, {17, 21}, {21, 24}, {24, 29}};
  Intervention knockout;
  knockout.kind = Intervention::Kind::kKnockout;
  knockout.key_terms = {"revenue", "income"};
  InterventionSet set{{knockout}};
  ASSERT_TRUE(ResolveKnockoutTerms(&set, text, spans, {}).ok());
  std::vector<int> keys = set.items[0].key_positions;
  std::sort(keys.begin(), keys.end());
  EXPECT_EQ(keys, (std::vector<int>{0, 1, 5, 6}));
  set.items[0].key_terms = {"profit"};
  EXPECT_EQ(ResolveKnockoutTerms(&set, text, spans, {}).message(),
            "interventions[0].key_terms[0] = \"profit\": matches no word of the input");
}

}  // namespace
}  // namespace attnscope
