// The transcendental-heavy kernels (GELU, soft-capping, the exponentials of softmax), in a file of
// their own because it is built with -ffast-math (CMakeLists.txt): that is what lets GCC call
// glibc's SIMD tanhf and expf (libmvec) under `omp simd`, 4 lanes at a time, instead of the scalar
// functions. Nothing here compares or tests for NaN, so the finite-math assumption changes no
// branch; the golden tests bound what the vector functions' rounding does to the logits. Large
// arrays (a prompt's MLP) are also split over the threads; small ones (one attention row) run
// without opening a parallel region.
#include <cmath>
#include <cstdint>

#include "runtime/cpu/ops.h"

namespace gemmapod::cpu {
namespace {

constexpr int64_t kParallelElements = int64_t{1} << 16;
constexpr int64_t kBlock = 4096;

void GeluSerial(const float* x, float* out, int64_t n) {
  const float k = 0.7978845608028654f;  // sqrt(2 / pi)
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const float v = x[i];
    out[i] = 0.5f * v * (1.0f + std::tanh(k * (v + 0.044715f * v * v * v)));
  }
}

void SoftCapSerial(const float* x, float cap, float* out, int64_t n) {
  const float inv = 1.0f / cap;
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) out[i] = cap * std::tanh(x[i] * inv);
}

// Runs fn(begin, end) over [0, n) in blocks, on all threads when n is large.
template <typename Fn>
void Blocks(int64_t n, Fn fn) {
  if (n <= kParallelElements) {
    fn(0, n);
    return;
  }
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < n; b += kBlock) fn(b, std::min(n, b + kBlock));
}

}  // namespace

void GeluTanh(const float* x, float* out, int64_t n) {
  Blocks(n, [&](int64_t b, int64_t e) { GeluSerial(x + b, out + b, e - b); });
}

void SoftCap(const float* x, float cap, float* out, int64_t n) {
  Blocks(n, [&](int64_t b, int64_t e) { SoftCapSerial(x + b, cap, out + b, e - b); });
}

float ExpShiftedSum(float* x, float shift, int64_t n) {
  float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
  for (int64_t i = 0; i < n; ++i) {
    x[i] = std::exp(x[i] - shift);
    sum += x[i];
  }
  return sum;
}

}  // namespace gemmapod::cpu
