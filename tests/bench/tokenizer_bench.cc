// Tokenizer speed: our byte-level BPE vs the JavaScript peer @lenml/tokenizers, both on one
// core, on the same deterministic >= 10 MB corpus (financial-statement English, numbers,
// tables, some CJK), in the same run. Prints MB/s for both, the ratio, and checks that both
// produce identical ids on a sample of lines. Not a test: build with
//   cmake --build BUILD --target tokenizer_bench && BUILD/.../tokenizer_bench [--mb N]
// (needs `npm ci` in tests/bench/tokenizer_js_peer for the peer).
#include <time.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "nlohmann/json.hpp"
#include "server/tokenizer/tokenizer.h"

namespace {

// Deterministic generator (64-bit LCG), so every run and the peer see the same corpus.
class Rng {
 public:
  uint64_t Next() {
    state_ = state_ * 6364136223846793005ULL + 1442695040888963407ULL;
    return state_ >> 33;
  }
  int Below(int n) { return static_cast<int>(Next() % static_cast<uint64_t>(n)); }
  template <typename T, size_t N>
  const T& Pick(const T (&items)[N]) {
    return items[Below(N)];
  }

 private:
  uint64_t state_ = 20240601;
};

std::string Money(Rng& rng) {
  const int whole = rng.Below(99999);
  std::string digits = std::to_string(whole);
  std::string grouped;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) grouped.push_back(',');
    grouped.push_back(digits[i]);
  }
  return "$" + grouped + "." + std::to_string(rng.Below(10)) + std::to_string(rng.Below(10));
}

std::vector<std::string> MakeCorpus(size_t target_bytes) {
  static const char* kItems[] = {"Net sales",
                                 "Cost of sales",
                                 "Gross profit",
                                 "Research and development",
                                 "Selling, general and administrative",
                                 "Operating income",
                                 "Interest expense, net",
                                 "Income tax provision",
                                 "Net income",
                                 "Diluted earnings per share",
                                 "Cash and cash equivalents",
                                 "Accounts receivable, net",
                                 "Inventories",
                                 "Property, plant and equipment",
                                 "Goodwill",
                                 "Total assets",
                                 "Accounts payable",
                                 "Long-term debt",
                                 "Total liabilities",
                                 "Retained earnings",
                                 "Shareholders' equity"};
  static const char* kVerbs[] = {"increased", "decreased", "rose",     "fell", "remained flat at",
                                 "grew",      "declined",  "improved", "was"};
  static const char* kReasons[] = {"primarily due to higher volume in the Americas",
                                   "reflecting unfavorable foreign currency translation",
                                   "driven by pricing actions and a favorable product mix",
                                   "as a result of the acquisition completed in the second quarter",
                                   "partially offset by increased freight and logistics costs",
                                   "due to lower demand for legacy products",
                                   "which we don't expect to recur in fiscal 2025"};
  static const char* kCjk[] = {
      "营业收入同比增长", "净利润为",           "资产负债表", "经营活动产生的现金流量净额",
      "本公司",           "截至2023年12月31日", "每股收益",   "第四季度"};
  std::vector<std::string> lines;
  Rng rng;
  size_t bytes = 0;
  while (bytes < target_bytes) {
    std::string line;
    switch (rng.Below(6)) {
      case 0:
      case 1:
        line = absl::StrFormat("%s %s %d.%d%% to %s million in fiscal %d, %s.", rng.Pick(kItems),
                               rng.Pick(kVerbs), rng.Below(40), rng.Below(10), Money(rng),
                               2015 + rng.Below(10), rng.Pick(kReasons));
        break;
      case 2:
        line = absl::StrFormat("%s\t%s\t(%s)\t%d.%d%%", rng.Pick(kItems), Money(rng), Money(rng),
                               rng.Below(100), rng.Below(10));
        break;
      case 3:
        line = absl::StrFormat("%-40s %12s    %12s", rng.Pick(kItems), Money(rng), Money(rng));
        break;
      case 4:
        line = absl::StrFormat("%s%d.%d%%，%s%s万元。", rng.Pick(kCjk), rng.Below(50),
                               rng.Below(10), rng.Pick(kCjk), Money(rng).substr(1));
        break;
      default:
        line = absl::StrFormat("Note %d: %s (in millions, except per-share data) — %s.",
                               1 + rng.Below(20), rng.Pick(kItems), rng.Pick(kReasons));
    }
    bytes += line.size();
    lines.push_back(std::move(line));
  }
  return lines;
}

// CPU time of this process: the machine is shared, so wall time alone overstates the cost of
// whichever side ran while others were busy.
double CpuSeconds() {
  timespec now;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &now);
  return now.tv_sec + now.tv_nsec / 1e9;
}

}  // namespace

int main(int argc, char** argv) {
  double megabytes = 10.0;
  std::string tokenizer_dir = std::string(ATTNSCOPE_TEST_DATA_DIR) + "/tokenizer/qwen2";
  std::string peer_dir = std::string(ATTNSCOPE_SOURCE_DIR) + "/tests/bench/tokenizer_js_peer";
  std::string node = "node";
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--mb")
      megabytes = std::stod(argv[i + 1]);
    else if (flag == "--tokenizer")
      tokenizer_dir = argv[i + 1];
    else if (flag == "--peer")
      peer_dir = argv[i + 1];
    else if (flag == "--node")
      node = argv[i + 1];
    else {
      std::cerr << "usage: tokenizer_bench [--mb N] [--tokenizer DIR] [--peer DIR] [--node PATH]\n";
      return 2;
    }
  }
  const std::vector<std::string> lines = MakeCorpus(static_cast<size_t>(megabytes * 1e6));
  size_t bytes = 0;
  for (const auto& line : lines) bytes += line.size();
  const std::string corpus_path =
      (std::filesystem::temp_directory_path() / "attnscope_tokenizer_bench_corpus.txt").string();
  {
    std::ofstream out(corpus_path, std::ios::binary);
    for (const auto& line : lines) out << line << "\n";
  }
  std::printf("corpus: %zu lines, %.2f MB (%s)\n", lines.size(), bytes / 1e6, corpus_path.c_str());

  auto tokenizer = attnscope::LoadTokenizer(tokenizer_dir);
  if (!tokenizer.ok()) {
    std::cerr << "tokenizer_bench: " << tokenizer.status() << "\n";
    return 1;
  }
  constexpr int kSampleEvery = 997;
  std::vector<std::vector<int64_t>> ours(lines.size());
  size_t tokens = 0;
  const auto start = std::chrono::steady_clock::now();
  const double cpu_start = CpuSeconds();
  for (size_t i = 0; i < lines.size(); ++i) {
    auto encoding = (*tokenizer)->Encode(lines[i]);
    if (!encoding.ok()) {
      std::cerr << "tokenizer_bench: line " << i << ": " << encoding.status() << "\n";
      return 1;
    }
    tokens += encoding->ids.size();
    if (i % kSampleEvery == 0) ours[i] = std::move(encoding->ids);
  }
  const double our_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const double our_cpu_seconds = CpuSeconds() - cpu_start;
  const double our_mbps = bytes / 1e6 / our_seconds;
  const double our_cpu_mbps = bytes / 1e6 / our_cpu_seconds;
  std::printf(
      "attnscope (C++, 1 thread): %.2f s wall, %.2f s CPU, %zu tokens, %.2f MB/s wall, "
      "%.2f MB/s CPU\n",
      our_seconds, our_cpu_seconds, tokens, our_mbps, our_cpu_mbps);

  const std::string command = "cd '" + peer_dir + "' && '" + node + "' peer.mjs '" + tokenizer_dir +
                              "' '" + corpus_path + "' " + std::to_string(kSampleEvery);
  FILE* pipe = popen(command.c_str(), "r");
  std::string output;
  if (pipe != nullptr) {
    char buffer[1 << 16];
    size_t n;
    while ((n = fread(buffer, 1, sizeof(buffer), pipe)) > 0) output.append(buffer, n);
    if (pclose(pipe) != 0) output.clear();
  }
  if (output.empty()) {
    std::printf("JS peer: did not run (need node and `npm ci` in %s)\n", peer_dir.c_str());
    return 1;
  }
  const auto peer = nlohmann::json::parse(output);
  const double peer_seconds = peer.at("seconds").get<double>();
  const double peer_cpu_seconds = peer.at("cpu_seconds").get<double>();
  const double peer_mbps = peer.at("bytes").get<double>() / 1e6 / peer_seconds;
  const double peer_cpu_mbps = peer.at("bytes").get<double>() / 1e6 / peer_cpu_seconds;
  std::printf(
      "@lenml/tokenizers (node, 1 thread): %.2f s wall, %.2f s CPU, %lld tokens, "
      "%.2f MB/s wall, %.2f MB/s CPU\n",
      peer_seconds, peer_cpu_seconds, static_cast<long long>(peer.at("tokens").get<int64_t>()),
      peer_mbps, peer_cpu_mbps);
  int compared = 0, mismatched = 0;
  for (const auto& [index, ids] : peer.at("samples").items()) {
    const size_t line = std::stoul(index);
    ++compared;
    if (ours[line] != ids.get<std::vector<int64_t>>()) {
      ++mismatched;
      if (mismatched <= 3) std::printf("ids differ on line %zu: %s\n", line, lines[line].c_str());
    }
  }
  std::printf(
      "identical ids on %d of %d sampled lines; total tokens %s\n", compared - mismatched, compared,
      static_cast<int64_t>(tokens) == peer.at("tokens").get<int64_t>() ? "equal" : "DIFFER");
  std::printf("ratio attnscope / JS peer: %.2fx by CPU time, %.2fx by wall time (goal >= 3x)\n",
              our_cpu_mbps / peer_cpu_mbps, our_mbps / peer_mbps);
  // Machine-readable line for scripts/bench.sh: figure, value, baseline, ratio.
  std::printf(
      "BENCH\ttokenizer MB/s (CPU time) vs @lenml/tokenizers (goal >= 3)\t%.2f\t%.2f\t%.2f\n",
      our_cpu_mbps, peer_cpu_mbps, our_cpu_mbps / peer_cpu_mbps);
  std::filesystem::remove(corpus_path);
  return mismatched == 0 ? 0 : 1;
}
