// Strict checkpoint loading: every parameter exactly once with its shape checked, sharded
// checkpoints, and a specific error for each kind of broken model folder.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <fstream>
#include <functional>

#include "server/engine/engine.h"
#include "server/engine/prompt.h"
#include "server/model/safetensors.h"
#include "server/session/loaded_model.h"
#include "tests/common/npy.h"

namespace attnscope {
namespace {

std::string GoldenModel() { return testing::DataDir() + "/golden/qwen2-tiny/model"; }

void CopyFile(const std::string& from, const std::string& to) {
  std::ifstream in(from, std::ios::binary);
  std::ofstream out(to, std::ios::binary);
  out << in.rdbuf();
}

// Copies the golden model folder, letting `edit` change the list of tensors written.
std::string MakeVariant(const std::string& name,
                        const std::function<void(std::vector<TensorToWrite>&)>& edit) {
  const std::string dir = ::testing::TempDir() + "/" + name + "_" + std::to_string(::getpid());
  ::mkdir(dir.c_str(), 0755);
  CopyFile(GoldenModel() + "/config.json", dir + "/config.json");
  CopyFile(GoldenModel() + "/generation_config.json", dir + "/generation_config.json");
  auto file = SafetensorsFile::Open(GoldenModel() + "/model.safetensors");
  EXPECT_TRUE(file.ok());
  std::vector<TensorToWrite> tensors;
  for (const auto& info : (*file)->tensors()) {
    tensors.push_back(
        {info.name, info.dtype, info.shape, (*file)->Data(info), info.end - info.begin});
  }
  edit(tensors);
  EXPECT_TRUE(WriteSafetensors(dir + "/model.safetensors", tensors, {{"format", "pt"}}).ok());
  return dir;
}

std::string LoadError(const std::string& dir) {
  EngineOptions options;
  options.model_dir = dir;
  auto engine = Engine::Load(options);
  EXPECT_FALSE(engine.ok()) << dir << " loaded but should not";
  return engine.ok() ? "" : std::string(engine.status().message());
}

class LoaderTest : public ::testing::Test {};

TEST_F(LoaderTest, MissingTensorIsNamed) {
  auto dir = MakeVariant("missing", [](auto& tensors) {
    tensors.erase(
        std::remove_if(tensors.begin(), tensors.end(),
                       [](auto& t) { return t.name == "model.layers.1.mlp.up_proj.weight"; }),
        tensors.end());
  });
  EXPECT_NE(LoadError(dir).find("missing tensor 'model.layers.1.mlp.up_proj.weight'"),
            std::string::npos);
}

TEST_F(LoaderTest, UnexpectedTensorIsNamed) {
  static float extra[4] = {0, 0, 0, 0};
  auto dir = MakeVariant("extra", [](auto& tensors) {
    tensors.push_back({"model.layers.0.self_attn.o_proj.bias", TensorDType::kF32, {4}, extra, 16});
  });
  const std::string error = LoadError(dir);
  EXPECT_NE(error.find("unexpected tensor"), std::string::npos) << error;
  EXPECT_NE(error.find("model.layers.0.self_attn.o_proj.bias"), std::string::npos) << error;
}

TEST_F(LoaderTest, ShapeMismatchNamesTensorAndShapes) {
  auto dir = MakeVariant("shape", [](auto& tensors) {
    for (auto& t : tensors) {
      if (t.name == "model.norm.weight") {
        t.shape = {32};
        t.size_bytes = 32 * 4;
      }
    }
  });
  const std::string error = LoadError(dir);
  EXPECT_NE(error.find("'model.norm.weight' has shape [32], expected [64]"), std::string::npos)
      << error;
}

TEST_F(LoaderTest, UnsupportedArchitectureIsRejected) {
  auto dir = MakeVariant("arch", [](auto&) {});
  std::ifstream in(dir + "/config.json");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  text.replace(text.find("Qwen2ForCausalLM"), 16, "MixtralForCausalLM");
  std::ofstream(dir + "/config.json") << text;
  EXPECT_NE(LoadError(dir).find("unsupported architecture 'MixtralForCausalLM'"),
            std::string::npos);
}

TEST_F(LoaderTest, CorruptShardFailsWithFileName) {
  auto dir = MakeVariant("corrupt", [](auto&) {});
  ::truncate((dir + "/model.safetensors").c_str(), 4000);
  const std::string error = LoadError(dir);
  EXPECT_NE(error.find("model.safetensors"), std::string::npos) << error;
  EXPECT_NE(error.find("past the data section"), std::string::npos) << error;
}

TEST_F(LoaderTest, ShardedCheckpointLoadsAndMatchesGoldenLogits) {
  const std::string dir = ::testing::TempDir() + "/sharded_" + std::to_string(::getpid());
  ::mkdir(dir.c_str(), 0755);
  CopyFile(GoldenModel() + "/config.json", dir + "/config.json");
  auto file = SafetensorsFile::Open(GoldenModel() + "/model.safetensors");
  ASSERT_TRUE(file.ok());
  std::vector<TensorToWrite> first, second;
  std::string weight_map;
  for (const auto& info : (*file)->tensors()) {
    const bool in_first =
        info.name.find("layers.1.") == std::string::npos && info.name != "lm_head.weight";
    (in_first ? first : second)
        .push_back({info.name, info.dtype, info.shape, (*file)->Data(info), info.end - info.begin});
    weight_map +=
        (weight_map.empty() ? "" : ",") + std::string("\"") + info.name + "\":\"" +
        (in_first ? "model-00001-of-00002.safetensors" : "model-00002-of-00002.safetensors") + "\"";
  }
  ASSERT_TRUE(WriteSafetensors(dir + "/model-00001-of-00002.safetensors", first, {}).ok());
  ASSERT_TRUE(WriteSafetensors(dir + "/model-00002-of-00002.safetensors", second, {}).ok());
  std::ofstream(dir + "/model.safetensors.index.json")
      << "{\"metadata\":{},\"weight_map\":{" << weight_map << "}}";

  EngineOptions options;
  options.model_dir = dir;
  auto engine = Engine::Load(options);
  ASSERT_TRUE(engine.ok()) << engine.status();
  auto prompt = testing::ReadNpy(testing::DataDir() + "/golden/qwen2-tiny/prompt_ids.npy");
  auto expected = testing::ReadNpy(testing::DataDir() + "/golden/qwen2-tiny/prompt_logits.npy");
  ASSERT_TRUE(prompt.ok() && expected.ok());
  auto logits = (*engine)->Forward(prompt->AsInt64(), CaptureSpec(), nullptr);
  ASSERT_TRUE(logits.ok()) << logits.status();
  ASSERT_EQ(logits->size(), expected->values.size());
  double worst = 0;
  for (size_t i = 0; i < logits->size(); ++i)
    worst = std::max(worst, std::abs((*logits)[i] - expected->values[i]));
  EXPECT_LT(worst, 1e-4);
}

TEST_F(LoaderTest, FolderWithoutTokenizerServesIdsButNotText) {
  session::LoadedModel model;
  const absl::Status loaded = session::LoadTokenizerFiles(GoldenModel(), &model);
  ASSERT_TRUE(loaded.ok()) << loaded;
  PromptInput ids_input;
  ids_input.ids = {1, 2, 3};
  EXPECT_TRUE(PreparePrompt(ids_input, model.tokenizer.get(), model.chat_config()).ok());
  PromptInput text_input;
  text_input.kind = PromptInput::Kind::kText;
  text_input.text = "hello";
  auto prepared = PreparePrompt(text_input, model.tokenizer.get(), model.chat_config());
  ASSERT_FALSE(prepared.ok());
  EXPECT_EQ(prepared.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(std::string(prepared.status().message()).find("tokenizer"), std::string::npos);
}

}  // namespace
}  // namespace attnscope
