// Shared by the benchmarks: a clock, and the machine's memory bandwidth (the decode roofline).
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "runtime/error.h"

namespace gemmapod::bench {

inline double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// STREAM triad over 3 x 256 MiB with this process's OpenMP threads, best of 5, counted as
// STREAM does (24 bytes per element), in GB/s.
inline double TriadGBs() {
  const size_t n = size_t{32} << 20;
  std::vector<double> a(n, 1.0), b(n, 2.0), c(n, 3.0);
  double best = 1e30;
  for (int rep = 0; rep < 5; ++rep) {
    const double t0 = Now();
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; ++i) a[i] = b[i] + 3.0 * c[i];
    best = std::min(best, Now() - t0);
  }
  return 24.0 * static_cast<double>(n) / best / 1e9;
}

// "--flag value" pairs over the given defaults; a flag not among them, or one without a value, is
// an error naming the flag.
class Flags {
 public:
  Flags(int argc, char** argv, std::map<std::string, std::string> defaults)
      : values_(std::move(defaults)) {
    for (int i = 1; i < argc; i += 2) {
      const std::string flag = argv[i];
      GEMMAPOD_CHECK(values_.count(flag) == 1, "unknown flag ", flag);
      GEMMAPOD_CHECK(i + 1 < argc, flag, " needs a value");
      values_[flag] = argv[i + 1];
    }
  }
  const std::string& Get(const std::string& flag) const { return values_.at(flag); }
  int64_t Int(const std::string& flag) const { return std::stoll(values_.at(flag)); }

 private:
  std::map<std::string, std::string> values_;
};

// The tokens of a benchmark prompt: deterministic, spread over the vocabulary, different per
// sequence.
inline std::vector<int32_t> PromptTokens(int64_t length, int64_t sequence, int64_t vocab) {
  std::vector<int32_t> tokens(static_cast<size_t>(length));
  for (int64_t i = 0; i < length; ++i) {
    tokens[static_cast<size_t>(i)] = static_cast<int32_t>((i * 7919 + sequence * 104729) % vocab);
  }
  return tokens;
}

}  // namespace gemmapod::bench
