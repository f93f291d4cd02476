// Shared by the benchmarks: a clock, and the machine's memory bandwidth (the decode roofline).
#pragma once

#include <algorithm>
#include <chrono>
#include <vector>

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

}  // namespace gemmapod::bench
