// The capture format library on its own (no engine, no libtorch): the assembler places chunks
// of the documented layout into [H_sel, T, T] per layer, whatever their order, and the capture
// file written from it holds those bytes. Every expectation is built here, element by element,
// from the value function below, not from the assembler.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "server/capture/capture_file.h"
#include "server/model/safetensors.h"

namespace attnscope {
namespace {

// The probability of (layer, head, query, key): distinct per element, exactly representable in
// float32 and bfloat16 (at most 8 significant bits), zero above the diagonal.
float Value(int layer, int head, int query, int key) {
  if (key > query) return 0.0f;
  return static_cast<float>(1 + (layer * 37 + head * 11 + query * 5 + key) % 200) / 256.0f;
}

// One element in the capture dtype, built independently of ConvertFloats: float32's bytes, or
// its upper half for bfloat16 (exact for these values).
std::string Element(float value, DType dtype) {
  uint32_t bits;
  std::memcpy(&bits, &value, 4);
  if (dtype == DType::kFloat32) return std::string(reinterpret_cast<const char*>(&bits), 4);
  const uint16_t upper = static_cast<uint16_t>(bits >> 16);
  return std::string(reinterpret_cast<const char*>(&upper), 2);
}

// The expected [H_sel, T, T] tensor of one layer.
std::string Expected(int layer, const std::vector<int>& heads, int total, DType dtype) {
  std::string out;
  for (int head : heads) {
    for (int q = 0; q < total; ++q) {
      for (int k = 0; k < total; ++k) out += Element(Value(layer, head, q, k), dtype);
    }
  }
  return out;
}

struct Chunk {
  int layer = 0;
  std::vector<int> heads;  // empty: every captured head
  int first_row = 0;
  int num_rows = 0;
  int key_length = 0;
};

// The chunk's data in the documented layout [heads, num_rows, key_length].
std::string ChunkData(const Chunk& chunk, const std::vector<int>& heads, DType dtype) {
  std::string out;
  for (int head : heads) {
    for (int r = 0; r < chunk.num_rows; ++r) {
      for (int k = 0; k < chunk.key_length; ++k) {
        out += Element(Value(chunk.layer, head, chunk.first_row + r, k), dtype);
      }
    }
  }
  return out;
}

absl::Status Add(CaptureAssembler& assembler, const Chunk& chunk) {
  const CaptureSpec& spec = assembler.spec();
  const std::string data =
      ChunkData(chunk, chunk.heads.empty() ? spec.heads : chunk.heads, spec.dtype);
  if (chunk.heads.empty()) {
    return assembler.AddBytes(chunk.layer, chunk.first_row, chunk.num_rows, chunk.key_length,
                              data.data(), data.size());
  }
  return assembler.AddHeadBytes(chunk.layer, chunk.heads, chunk.first_row, chunk.num_rows,
                                chunk.key_length, data.data(), data.size());
}

constexpr int kPrompt = 5;
constexpr int kTotal = 9;  // 5 prompt + 4 generated

CaptureSpec Spec(DType dtype) {
  CaptureSpec spec;
  spec.layers = {1, 3};
  spec.heads = {0, 2, 5};
  spec.dtype = dtype;
  return spec;
}

// What the engine sends, in its order: each layer's prefill block, then one row per layer
// per decode step.
std::vector<Chunk> InOrderStream() {
  std::vector<Chunk> chunks;
  for (int layer : {1, 3}) chunks.push_back({layer, {}, 0, kPrompt, kPrompt});
  for (int row = kPrompt; row < kTotal; ++row) {
    for (int layer : {1, 3}) chunks.push_back({layer, {}, row, 1, row + 1});
  }
  return chunks;
}

// The same rows cut differently: chunks mixing prompt and generated rows (key_length is the
// last row's, earlier rows zero-padded), rows split by heads, layers interleaved, late rows.
std::vector<Chunk> MixedStream() {
  return {
      {3, {}, 8, 1, 9},     {1, {}, 3, 4, 7},     {1, {}, 0, 3, 3}, {3, {5}, 5, 1, 6},
      {1, {}, 7, 2, 9},     {3, {0, 2}, 5, 1, 6}, {3, {}, 6, 2, 8}, {3, {2}, 0, 3, 3},
      {3, {0, 5}, 0, 3, 3}, {3, {}, 3, 2, 5},
  };
}

void ExpectAssembled(const CaptureAssembler& assembler, int total) {
  for (int layer : assembler.spec().layers) {
    EXPECT_EQ(assembler.RowsReceived(layer), total) << "layer " << layer;
    EXPECT_EQ(assembler.PartialRows(layer), 0) << "layer " << layer;
    EXPECT_TRUE(assembler.LayerBytes(layer, total) ==
                Expected(layer, assembler.spec().heads, total, assembler.spec().dtype))
        << "layer " << layer;
  }
}

TEST(CaptureAssembler, OutOfOrderMixedStreamEqualsInOrderStream) {
  for (DType dtype : {DType::kFloat32, DType::kBFloat16}) {
    // Preallocated for exactly T, for more than T (generation stopped early), and unbounded.
    for (int max_tokens : {kTotal, kTotal + 7, 0}) {
      SCOPED_TRACE(testing::Message() << DTypeName(dtype) << " max_tokens " << max_tokens);
      CaptureAssembler in_order(Spec(dtype), max_tokens);
      for (const Chunk& chunk : InOrderStream()) ASSERT_TRUE(Add(in_order, chunk).ok());
      ExpectAssembled(in_order, kTotal);

      std::vector<Chunk> mixed = MixedStream();
      for (unsigned seed : {0u, 1u, 2u, 3u}) {
        if (seed > 0) std::shuffle(mixed.begin(), mixed.end(), std::mt19937(seed));
        CaptureAssembler assembler(Spec(dtype), max_tokens);
        for (const Chunk& chunk : mixed) {
          absl::Status added = Add(assembler, chunk);
          ASSERT_TRUE(added.ok()) << added;
        }
        ExpectAssembled(assembler, kTotal);
        for (int layer : {1, 3}) {
          EXPECT_TRUE(assembler.LayerBytes(layer, kTotal) == in_order.LayerBytes(layer, kTotal));
        }
      }
    }
  }
}

TEST(CaptureAssembler, RowsNeverSentStayZeroAndSplitRowsCountWhenComplete) {
  CaptureAssembler assembler(Spec(DType::kFloat32), kTotal);
  ASSERT_TRUE(Add(assembler, {1, {}, 0, kPrompt, kPrompt}).ok());
  ASSERT_TRUE(Add(assembler, {1, {2}, 5, 1, 6}).ok());
  EXPECT_EQ(assembler.RowsReceived(1), kPrompt);
  EXPECT_EQ(assembler.PartialRows(1), 1);
  ASSERT_TRUE(Add(assembler, {1, {0, 5}, 5, 1, 6}).ok());
  EXPECT_EQ(assembler.RowsReceived(1), kPrompt + 1);
  EXPECT_EQ(assembler.PartialRows(1), 0);
  EXPECT_EQ(assembler.RowsReceived(3), 0);
  // Rows 6.. of layer 1 and all of layer 3 were never sent: zero.
  const std::string layer1 = assembler.LayerBytes(1, kTotal);
  const std::string full = Expected(1, {0, 2, 5}, kTotal, DType::kFloat32);
  for (int h = 0; h < 3; ++h) {
    for (int q = 0; q < kTotal; ++q) {
      const size_t offset = (static_cast<size_t>(h) * kTotal + q) * kTotal * 4;
      const std::string want =
          q <= kPrompt ? full.substr(offset, kTotal * 4) : std::string(kTotal * 4, '\0');
      EXPECT_TRUE(layer1.substr(offset, kTotal * 4) == want) << "head " << h << " row " << q;
    }
  }
  EXPECT_TRUE(assembler.LayerBytes(3, kTotal) == std::string(3 * kTotal * kTotal * 4, '\0'));
}

TEST(CaptureAssembler, RefusesChunksOutsideTheCapture) {
  CaptureAssembler assembler(Spec(DType::kFloat32), kTotal);
  absl::Status past = Add(assembler, {1, {}, 8, 2, 10});
  EXPECT_EQ(past.code(), absl::StatusCode::kOutOfRange);
  EXPECT_NE(past.message().find("sequence bound of 9 tokens"), std::string::npos) << past;
  absl::Status layer = Add(assembler, {2, {}, 0, 1, 1});
  EXPECT_NE(layer.message().find("chunk layer 2 was not captured"), std::string::npos) << layer;
  absl::Status head = Add(assembler, {1, {3}, 0, 1, 1});
  EXPECT_NE(head.message().find("head 3, not captured"), std::string::npos) << head;
  absl::Status causal = Add(assembler, {1, {}, 0, 2, 3});
  EXPECT_NE(causal.message().find("not a causal slice"), std::string::npos) << causal;
  const std::string short_data(10, '\0');
  absl::Status size = assembler.AddBytes(1, 0, 1, 1, short_data.data(), short_data.size());
  EXPECT_NE(size.message().find("has 10 bytes, expected 12"), std::string::npos) << size;
  EXPECT_EQ(assembler.RowsReceived(1), 0);
}

TEST(CaptureAssembler, WrittenFileHoldsTheAssembledBytes) {
  for (int max_tokens : {kTotal, kTotal + 3}) {
    CaptureAssembler assembler(Spec(DType::kBFloat16), max_tokens);
    for (const Chunk& chunk : MixedStream()) ASSERT_TRUE(Add(assembler, chunk).ok());
    std::vector<int64_t> ids(kTotal);
    for (int i = 0; i < kTotal; ++i) ids[i] = 100 + i;
    CaptureMetadata metadata;
    metadata.prompt_length = kPrompt;
    metadata.model = "hand-made fnv1a64:0";
    metadata.stop_reason = "eos";
    const std::string path =
        testing::TempDir() + "/capture_format_" + std::to_string(max_tokens) + ".safetensors";
    ASSERT_TRUE(assembler.Write(path, ids, metadata, nullptr, 0).ok());

    auto file = SafetensorsFile::Open(path);
    ASSERT_TRUE(file.ok()) << file.status();
    EXPECT_EQ((*file)->metadata().at("format"), "attnscope.capture.v1");
    EXPECT_EQ((*file)->metadata().at("dtype"), "bfloat16");
    EXPECT_EQ((*file)->metadata().at("layers"), "[1,3]");
    EXPECT_EQ((*file)->metadata().at("heads"), "[0,2,5]");
    for (int layer : {1, 3}) {
      const TensorInfo* info = (*file)->Find("attention." + std::to_string(layer));
      ASSERT_NE(info, nullptr);
      EXPECT_EQ(info->dtype, TensorDType::kBF16);
      EXPECT_EQ(info->shape, (std::vector<int64_t>{3, kTotal, kTotal}));
      const std::string bytes(reinterpret_cast<const char*>((*file)->Data(*info)),
                              info->end - info->begin);
      EXPECT_TRUE(bytes == Expected(layer, {0, 2, 5}, kTotal, DType::kBFloat16));
    }
    auto contents = ReadCaptureFile(path);
    ASSERT_TRUE(contents.ok()) << contents.status();
    EXPECT_EQ(contents->token_ids, ids);
    EXPECT_EQ(contents->prompt_length, kPrompt);
    // Read back as float32: the value function itself.
    const std::vector<float>& layer3 = contents->attention.at(3);
    ASSERT_EQ(layer3.size(), static_cast<size_t>(3 * kTotal * kTotal));
    EXPECT_EQ(layer3[(2 * kTotal + 7) * kTotal + 4], Value(3, 5, 7, 4));
    std::remove(path.c_str());
  }
}

TEST(DType, EverySpellingParsesToOneType) {
  const struct {
    const char* name;
    DType dtype;
  } cases[] = {
      {"float32", DType::kFloat32},   {"fp32", DType::kFloat32},  {"F32", DType::kFloat32},
      {"float16", DType::kFloat16},   {"fp16", DType::kFloat16},  {"F16", DType::kFloat16},
      {"bfloat16", DType::kBFloat16}, {"bf16", DType::kBFloat16}, {"BF16", DType::kBFloat16}};
  for (const auto& c : cases) {
    absl::StatusOr<DType> parsed = ParseDType(c.name);
    ASSERT_TRUE(parsed.ok()) << c.name << ": " << parsed.status();
    EXPECT_EQ(*parsed, c.dtype) << c.name;
  }
  absl::StatusOr<DType> bad = ParseDType("float64", "--run-dtype");
  EXPECT_EQ(bad.status().message(),
            "--run-dtype: 'float64' is not one of float32, float16, bfloat16");
  EXPECT_STREQ(DTypeName(DType::kFloat32), "float32");
  EXPECT_STREQ(DTypeName(DType::kFloat16), "float16");
  EXPECT_STREQ(DTypeName(DType::kBFloat16), "bfloat16");
  EXPECT_EQ(DTypeSize(DType::kFloat32), 4u);
  EXPECT_EQ(DTypeSize(DType::kFloat16), 2u);
  EXPECT_EQ(DTypeSize(DType::kBFloat16), 2u);
}

TEST(DType, SafetensorsElementTypesRoundTrip) {
  for (DType dtype : {DType::kFloat32, DType::kFloat16, DType::kBFloat16}) {
    // The safetensors name of the element type is one of ParseDType's spellings.
    absl::StatusOr<DType> by_name = ParseDType(TensorDTypeName(ToTensorDType(dtype)));
    ASSERT_TRUE(by_name.ok());
    EXPECT_EQ(*by_name, dtype);
    absl::StatusOr<DType> back = FromTensorDType(ToTensorDType(dtype), "t");
    ASSERT_TRUE(back.ok());
    EXPECT_EQ(*back, dtype);
  }
  EXPECT_EQ(ToTensorDType(DType::kBFloat16), TensorDType::kBF16);
  absl::StatusOr<DType> ints = FromTensorDType(TensorDType::kI64, "tensor 'token_ids'");
  EXPECT_EQ(ints.status().message(),
            "tensor 'token_ids': element type I64 is not one of F32, F16, BF16");
}

// Hand-computed bit patterns: 1.0 (0x3C00 half, 0x3F80 bfloat16), -2.5 (0xC100, 0xC020), the
// half subnormal 2^-24 (0x0001), and 1 + 2^-8, a tie that rounds to even in bfloat16 (0x3F80).
TEST(DType, ConversionsMatchHandComputedBits) {
  const float values[] = {1.0f, -2.5f, 5.9604645e-8f, 1.00390625f};
  const uint16_t half[] = {0x3C00, 0xC100, 0x0001, 0x3C04};
  const uint16_t bf16[] = {0x3F80, 0xC020, 0x3380, 0x3F80};
  for (DType dtype : {DType::kFloat16, DType::kBFloat16}) {
    std::string bytes;
    ConvertFloats(values, 4, dtype, &bytes);
    ASSERT_EQ(bytes.size(), 8u);
    for (int i = 0; i < 4; ++i) {
      uint16_t got;
      std::memcpy(&got, bytes.data() + 2 * i, 2);
      EXPECT_EQ(got, dtype == DType::kFloat16 ? half[i] : bf16[i]) << DTypeName(dtype) << " " << i;
    }
    float back[4];
    DTypeValuesToFloats(reinterpret_cast<const uint8_t*>(bytes.data()), 4, dtype, back);
    EXPECT_EQ(back[0], 1.0f);
    EXPECT_EQ(back[1], -2.5f);
  }
}

}  // namespace
}  // namespace attnscope
