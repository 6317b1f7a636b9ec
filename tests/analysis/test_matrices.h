// Hand-built causal attention matrices with known metrics, shared by the analysis tests.
#pragma once

#include <vector>

namespace attnscope::analysis::testing {

// [T, T] row-major, all zeros.
inline std::vector<float> Zeros(int t) { return std::vector<float>(static_cast<size_t>(t) * t); }

inline std::vector<float> Identity(int t) {
  std::vector<float> a = Zeros(t);
  for (int i = 0; i < t; ++i) a[i * t + i] = 1;
  return a;
}

// Every row puts all its mass on key 0 (an attention sink).
inline std::vector<float> AllOnFirstKey(int t) {
  std::vector<float> a = Zeros(t);
  for (int i = 0; i < t; ++i) a[i * t] = 1;
  return a;
}

// Row i spreads uniformly over keys 0..i.
inline std::vector<float> UniformCausal(int t) {
  std::vector<float> a = Zeros(t);
  for (int i = 0; i < t; ++i) {
    for (int j = 0; j <= i; ++j) a[i * t + j] = 1.0f / (i + 1);
  }
  return a;
}

// Row 0 on itself, row i >= 1 on key i - 1.
inline std::vector<float> PreviousToken(int t) {
  std::vector<float> a = Zeros(t);
  a[0] = 1;
  for (int i = 1; i < t; ++i) a[i * t + i - 1] = 1;
  return a;
}

// Harmonic number H_n = sum_{m=1}^{n} 1/m.
inline double Harmonic(int n) {
  double h = 0;
  for (int m = 1; m <= n; ++m) h += 1.0 / m;
  return h;
}

}  // namespace attnscope::analysis::testing
