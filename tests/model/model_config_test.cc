#include "server/model/model_config.h"

#include <gtest/gtest.h>

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

}  // namespace
}  // namespace attnscope
