#include "tests/common/npy.h"

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"

namespace attnscope::testing {

namespace {
std::string FindValue(const std::string& header, const std::string& key) {
  size_t pos = header.find("'" + key + "'");
  if (pos == std::string::npos) return "";
  pos = header.find(':', pos);
  size_t start = header.find_first_not_of(" ", pos + 1);
  if (header[start] == '(') return header.substr(start, header.find(')', start) - start + 1);
  size_t end = header.find_first_of(",}", start);
  return header.substr(start, end - start);
}
}  // namespace

absl::StatusOr<NpyArray> ReadNpy(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  std::stringstream buffer;
  buffer << in.rdbuf();
  const std::string bytes = buffer.str();
  if (bytes.size() < 10 || bytes.compare(0, 6, "\x93NUMPY") != 0) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a .npy file"));
  }
  const int major = static_cast<uint8_t>(bytes[6]);
  size_t header_len = 0, header_start = 0;
  if (major == 1) {
    header_len = static_cast<uint8_t>(bytes[8]) | (static_cast<uint8_t>(bytes[9]) << 8);
    header_start = 10;
  } else {
    uint32_t len32 = 0;
    std::memcpy(&len32, bytes.data() + 8, 4);
    header_len = len32;
    header_start = 12;
  }
  const std::string header = bytes.substr(header_start, header_len);
  const std::string descr = FindValue(header, "descr");
  if (FindValue(header, "fortran_order") != "False") {
    return absl::InvalidArgumentError(absl::StrCat(path, ": Fortran order unsupported"));
  }
  NpyArray array;
  const std::string shape_text = FindValue(header, "shape");
  std::string inner = shape_text.substr(1, shape_text.size() - 2);
  std::stringstream shape_stream(inner);
  std::string item;
  int64_t numel = 1;
  while (std::getline(shape_stream, item, ',')) {
    if (item.find_first_not_of(" ") == std::string::npos) continue;
    array.shape.push_back(std::stoll(item));
    numel *= array.shape.back();
  }
  const char* data = bytes.data() + header_start + header_len;
  array.values.resize(numel);
  auto read_all = [&](auto zero) {
    using T = decltype(zero);
    if (bytes.size() < header_start + header_len + numel * sizeof(T)) return false;
    for (int64_t i = 0; i < numel; ++i) {
      T value;
      std::memcpy(&value, data + i * sizeof(T), sizeof(T));
      array.values[i] = static_cast<double>(value);
    }
    return true;
  };
  bool ok = false;
  if (descr == "'<f4'")
    ok = read_all(float{});
  else if (descr == "'<f8'")
    ok = read_all(double{});
  else if (descr == "'<i8'")
    ok = read_all(int64_t{});
  else if (descr == "'<i4'")
    ok = read_all(int32_t{});
  else
    return absl::InvalidArgumentError(absl::StrCat(path, ": unsupported dtype ", descr));
  if (!ok) return absl::InvalidArgumentError(absl::StrCat(path, ": truncated data"));
  return array;
}

std::string DataDir() { return ATTNSCOPE_TEST_DATA_DIR; }

std::string TestDevice() {
  const char* device = std::getenv("ATTNSCOPE_TEST_DEVICE");
  return device != nullptr && *device != '\0' ? device : "cpu";
}

}  // namespace attnscope::testing
