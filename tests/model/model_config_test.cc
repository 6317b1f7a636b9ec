#include "server/model/model_config.h"

#include <gtest/gtest.h>

#include <tuple>

#include "absl/strings/str_cat.h"
#include "server/json/bounded_json.h"

namespace attnscope {
namespace {

const char* kQwen2 =
    R"({"architectures":["Qwen2ForCausalLM"],"hidden_size":64,"intermediate_size":160,
  "num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,"vocab_size":512,
  "rms_norm_eps":1e-6,"rope_theta":1000000.0,"eos_token_id":511,"use_sliding_window":false})";

TEST(ModelConfigTest, ParsesQwen2WithDerivedFields) {
  auto config = ParseModelConfig(kQwen2, "", "config.json");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->head_dim, 16);
  EXPECT_EQ(config->num_key_value_heads, 2);
  EXPECT_TRUE(config->attention_bias);  // Qwen2 always has q/k/v bias
  EXPECT_EQ(config->eos_token_ids, (std::vector<int64_t>{511}));
  EXPECT_DOUBLE_EQ(config->rope_theta, 1e6);
}

TEST(ModelConfigTest, GenerationConfigEosListWins) {
  auto config = ParseModelConfig(kQwen2, R"({"eos_token_id":[151645,151643]})", "config.json");
  ASSERT_TRUE(config.ok());
  EXPECT_EQ(config->eos_token_ids, (std::vector<int64_t>{151645, 151643}));
}

TEST(ModelConfigTest, LlamaAttentionBiasFollowsConfig) {
  std::string llama =
      R"({"architectures":["LlamaForCausalLM"],"hidden_size":64,"intermediate_size":160,
    "num_hidden_layers":2,"num_attention_heads":4,"vocab_size":512})";
  auto config = ParseModelConfig(llama, "", "config.json");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_FALSE(config->attention_bias);
  EXPECT_EQ(config->num_key_value_heads, 4);
}

TEST(ModelConfigTest, UnsupportedArchitectureIsAnError) {
  auto config =
      ParseModelConfig(R"({"architectures":["GPT2LMHeadModel"],"hidden_size":64})", "", "c.json");
  ASSERT_FALSE(config.ok());
  EXPECT_EQ(config.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_NE(std::string(config.status().message()).find("GPT2LMHeadModel"), std::string::npos);
}

TEST(ModelConfigTest, FeaturesNotImplementedAreErrorsNotIgnored) {
  std::string scaled = std::string(kQwen2);
  scaled.insert(scaled.size() - 1, R"(,"rope_scaling":{"type":"yarn","factor":4.0})");
  auto config = ParseModelConfig(scaled, "", "c.json");
  ASSERT_FALSE(config.ok());
  EXPECT_NE(std::string(config.status().message()).find("rope_scaling"), std::string::npos);

  std::string window = std::string(kQwen2);
  window.replace(window.find("\"use_sliding_window\":false"), 26, "\"use_sliding_window\":true");
  config = ParseModelConfig(window, "", "c.json");
  ASSERT_FALSE(config.ok());
  EXPECT_NE(std::string(config.status().message()).find("sliding"), std::string::npos);
}

TEST(ModelConfigTest, MissingRequiredFieldIsNamed) {
  auto config =
      ParseModelConfig(R"({"architectures":["Qwen2ForCausalLM"],"hidden_size":64})", "", "c.json");
  ASSERT_FALSE(config.ok());
  EXPECT_NE(std::string(config.status().message()).find("intermediate_size"), std::string::npos);
}

TEST(BoundedJsonTest, DepthCountsOnlyStructureOutsideStrings) {
  // Brackets and escaped quotes inside strings (regexes in tokenizer.json) are not nesting.
  EXPECT_TRUE(CheckJsonDepth(R"({"a":"[[[{{\"[[[","b":"\\"})", "t.json", 1).ok());
  const std::string at_limit = std::string(64, '[') + std::string(64, ']');
  EXPECT_TRUE(ParseBoundedJson(at_limit, "t.json").ok());
  const std::string over = R"({"x":1,"rope_scaling":)" + std::string(65, '[') + "]";
  absl::Status status = CheckJsonDepth(over, "dir/config.json");
  ASSERT_FALSE(status.ok());
  EXPECT_EQ(std::string(status.message()),
            "dir/config.json: field 'rope_scaling' is nested deeper than 64 levels (at byte 85)");
}

TEST(BoundedJsonTest, SyntaxErrorsAndDescriptionsAreBounded) {
  absl::StatusOr<nlohmann::json> bad = ParseBoundedJson("{\"a\":", "t.json");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(std::string(bad.status().message()).find("t.json: not valid JSON"), std::string::npos);
  EXPECT_EQ(DescribeJson(nlohmann::json::array({1, 2, 3})), "an array of 3 items");
  EXPECT_EQ(DescribeJson(nlohmann::json::parse(R"({"a":[[1]]})")), "an object of 1 keys");
  const std::string described = DescribeJson(nlohmann::json(std::string(100000, 'x')));
  EXPECT_LT(described.size(), 100u);
  EXPECT_NE(described.find("(100000 bytes)"), std::string::npos);
}

TEST(ModelConfigTest, WrongTypesAndRangesNameTheField) {
  for (const auto& [field, value, problem] :
       std::vector<std::tuple<std::string, std::string, std::string>>{
           {"model_type", "5", "'model_type' must be a string, got 5"},
           {"rope_theta", "0", "'rope_theta' must be a finite number > 0, got 0"},
           {"rms_norm_eps", "-1e-06", "'rms_norm_eps' must be a finite number > 0, got -1e-06"},
           {"tie_word_embeddings", "[[1]]",
            "'tie_word_embeddings' must be true or false, got "
            "an array of 1 items"}}) {
    std::string text = std::string(kQwen2);
    text.insert(text.size() - 1, absl::StrCat(",\"", field, "\":", value));
    auto config = ParseModelConfig(text, "", "m/config.json");
    ASSERT_FALSE(config.ok()) << field;
    EXPECT_EQ(std::string(config.status().message()), "m/config.json: " + problem);
  }
}

}  // namespace
}  // namespace attnscope
