// GELU and soft-capping: the tanh-heavy activations, in a file of their own because it is built
// with -ffast-math (CMakeLists.txt): that is what lets GCC call glibc's SIMD tanhf (libmvec)
// under `omp simd`, 4 lanes at a time, instead of the scalar tanhf. Nothing here compares or
// tests for NaN, so the finite-math assumption changes no branch; the golden tests bound what the
// vector tanhf's rounding does to the logits. Large arrays (a prompt's MLP) are also split over
// the threads.
#include <cmath>
#include <cstdint>

#include "runtime/cpu/ops.h"

namespace gemmapod::cpu {
namespace {
constexpr int64_t kParallelElements = int64_t{1} << 16;
}  // namespace

void GeluTanh(const float* x, float* out, int64_t n) {
  const float k = 0.7978845608028654f;  // sqrt(2 / pi)
#pragma omp parallel for simd schedule(static) if (n > kParallelElements)
  for (int64_t i = 0; i < n; ++i) {
    const float v = x[i];
    out[i] = 0.5f * v * (1.0f + std::tanh(k * (v + 0.044715f * v * v * v)));
  }
}

void SoftCap(const float* x, float cap, float* out, int64_t n) {
  const float inv = 1.0f / cap;
#pragma omp parallel for simd schedule(static) if (n > kParallelElements)
  for (int64_t i = 0; i < n; ++i) out[i] = cap * std::tanh(x[i] * inv);
}

}  // namespace gemmapod::cpu
