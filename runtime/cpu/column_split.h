// How the GEMV kernels (bf16/f32 and int8) share output columns among OpenMP threads. Internal to
// runtime/cpu; plain C++ with no ISA flags, so the kernel files never include it.
#pragma once

#include <omp.h>

#include <algorithm>
#include <cstdint>

namespace gemmapod::cpu::internal {

// Below this many weight bytes per parallel region the region costs more than it saves.
inline constexpr int64_t kMinParallelBytes = 256 * 1024;
// Threads get contiguous column ranges in multiples of this, matching the kernels' passes
// (8, 6, 4 and 3 weight rows).
inline constexpr int64_t kColumnGrain = 24;

// Runs body(n_begin, n_end) over [0, n), in parallel when the `bytes` of weights the whole call
// streams are worth it; one thread (or a call inside a parallel region) runs it inline.
template <typename Body>
void ForColumns(int64_t n, int64_t bytes, const Body& body) {
  const int max_threads = omp_in_parallel() ? 1 : omp_get_max_threads();
  const int64_t useful = std::max<int64_t>(1, bytes / kMinParallelBytes);
  const int threads = static_cast<int>(std::min<int64_t>(max_threads, useful));
  if (threads <= 1) {
    body(int64_t{0}, n);
    return;
  }
#pragma omp parallel num_threads(threads)
  {
    const int t = omp_get_thread_num();
    const int nt = omp_get_num_threads();
    const int64_t grains = (n + kColumnGrain - 1) / kColumnGrain;
    const int64_t begin = std::min(n, grains * t / nt * kColumnGrain);
    const int64_t end = std::min(n, grains * (t + 1) / nt * kColumnGrain);
    if (begin < end) body(begin, end);
  }
}

}  // namespace gemmapod::cpu::internal
