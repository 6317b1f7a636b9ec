// The safetensors reader rejects every malformed file with an error naming file, tensor and fault.
#include "server/model/safetensors.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <fstream>

namespace attnscope {
namespace {

std::string TempPath(const std::string& name) {
  return ::testing::TempDir() + "/" + name + "_" + std::to_string(::getpid());
}

// Writes 8-byte length + header + `data_size` bytes of data.
std::string WriteRaw(const std::string& name, const std::string& header, size_t data_size,
                     uint64_t claimed_length = 0) {
  const std::string path = TempPath(name);
  std::ofstream out(path, std::ios::binary);
  uint64_t length = claimed_length ? claimed_length : header.size();
  for (int i = 0; i < 8; ++i) out.put(static_cast<char>((length >> (8 * i)) & 0xFF));
  out << header << std::string(data_size, '\x01');
  return path;
}

std::string ErrorOf(const std::string& path) {
  auto file = SafetensorsFile::Open(path);
  EXPECT_FALSE(file.ok()) << path << " unexpectedly opened";
  return file.ok() ? "" : std::string(file.status().message());
}

TEST(SafetensorsTest, RoundTripsTensorsAndMetadata) {
  const std::string path = TempPath("roundtrip.safetensors");
  std::vector<float> a = {1.5f, -2.0f, 3.25f, 0.0f, 7.0f, 8.0f};
  std::vector<int64_t> b = {42, -7};
  ASSERT_TRUE(WriteSafetensors(path,
                               {{"a", TensorDType::kF32, {2, 3}, a.data(), a.size() * 4},
                                {"b", TensorDType::kI64, {2}, b.data(), b.size() * 8}},
                               {{"format", "pt"}})
                  .ok());
  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  const TensorInfo* info = (*file)->Find("a");
  ASSERT_NE(info, nullptr);
  EXPECT_EQ(info->shape, (std::vector<int64_t>{2, 3}));
  std::vector<float> read(6);
  std::memcpy(read.data(), (*file)->Data(*info), 24);
  EXPECT_EQ(read, a);
  EXPECT_EQ((*file)->metadata().at("format"), "pt");
  // The data section starts 8-byte aligned, as the reference writer lays it out.
  std::ifstream in(path, std::ios::binary);
  uint64_t header_length = 0;
  in.read(reinterpret_cast<char*>(&header_length), 8);
  EXPECT_EQ(header_length % 8, 0u);
  EXPECT_FALSE(std::ifstream(path + ".partial").good()) << "temporary file left behind";
}

TEST(SafetensorsTest, TruncatedFileIsRejected) {
  const std::string path =
      WriteRaw("truncated", R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", 8);
  const std::string error = ErrorOf(path);
  EXPECT_NE(error.find("'w'"), std::string::npos) << error;
  EXPECT_NE(error.find("past the data section"), std::string::npos) << error;
  EXPECT_NE(error.find(path), std::string::npos) << error;
}

TEST(SafetensorsTest, HeaderLengthPastEndIsRejected) {
  const std::string path = WriteRaw("pastend", "{}", 0, 4096);
  EXPECT_NE(ErrorOf(path).find("runs past the end of the file"), std::string::npos);
}

TEST(SafetensorsTest, HugeHeaderLengthIsRejectedBeforeAllocating) {
  const std::string path = WriteRaw("huge", "{}", 0, 1ULL << 40);
  EXPECT_NE(ErrorOf(path).find("exceeds the limit of 100000000"), std::string::npos);
}

TEST(SafetensorsTest, OverlappingSpansAreRejected) {
  const std::string path = WriteRaw(
      "overlap",
      R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
      12);
  EXPECT_NE(ErrorOf(path).find("overlaps"), std::string::npos);
}

TEST(SafetensorsTest, DtypeShapeMismatchIsRejected) {
  const std::string path =
      WriteRaw("mismatch", R"({"w":{"dtype":"F16","shape":[4],"data_offsets":[0,16]}})", 16);
  const std::string error = ErrorOf(path);
  EXPECT_NE(error.find("does not match dtype F16 x shape [4]"), std::string::npos) << error;
}

TEST(SafetensorsTest, UnknownDtypeIsRejected) {
  const std::string path =
      WriteRaw("dtype", R"({"w":{"dtype":"F8_E9","shape":[4],"data_offsets":[0,4]}})", 4);
  EXPECT_NE(ErrorOf(path).find("unknown dtype 'F8_E9'"), std::string::npos);
}

TEST(SafetensorsTest, OverflowingShapeIsRejected) {
  std::map<std::string, std::string> metadata;
  auto parsed = ParseSafetensorsHeader(
      R"({"w":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,0]}})", 0, "f",
      &metadata);
  ASSERT_FALSE(parsed.ok());
  EXPECT_NE(std::string(parsed.status().message()).find("overflows"), std::string::npos);
}

TEST(SafetensorsTest, NotJsonIsRejected) {
  const std::string path = WriteRaw("notjson", "{\"w\": [", 0);
  EXPECT_NE(ErrorOf(path).find("not valid JSON"), std::string::npos);
}

}  // namespace
}  // namespace attnscope
