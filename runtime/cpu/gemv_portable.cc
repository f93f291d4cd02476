// Portable GEMV kernels: plain C++ the compiler vectorises for the baseline ISA (SSE2 on
// x86-64). Used on CPUs without AVX-512 and as the reference path in tests.
#include <cstdint>
#include <cstring>

#include "runtime/cpu/gemv_kernels.h"

namespace gemmapod::cpu::internal {
namespace {

// Lanes of independent partial sums: a fixed-width inner loop the compiler turns into vector
// FMAs/adds without needing to reassociate a single running sum.
constexpr int kLanes = 16;

inline float WeightToF32(float v) { return v; }
inline float WeightToF32(uint16_t bits) {
  const uint32_t u = static_cast<uint32_t>(bits) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// One weight row at a time against every activation row: the row is read from memory once and
// from L1/L2 for the remaining rows (a row is at most tens of KB).
template <typename W>
void Rows(const float* x, int64_t ldx, int rows, int64_t k, const W* w, int64_t n_begin,
          int64_t n_end, float* y, int64_t ldy) {
  const int64_t k_main = k / kLanes * kLanes;
  for (int64_t n = n_begin; n < n_end; ++n) {
    const W* wn = w + n * k;
    for (int m = 0; m < rows; ++m) {
      const float* xm = x + m * ldx;
      float acc[kLanes] = {};
      for (int64_t kk = 0; kk < k_main; kk += kLanes)
        for (int j = 0; j < kLanes; ++j) acc[j] += xm[kk + j] * WeightToF32(wn[kk + j]);
      for (int64_t kk = k_main; kk < k; ++kk) acc[0] += xm[kk] * WeightToF32(wn[kk]);
      float sum = 0.0f;
      for (int j = 0; j < kLanes; ++j) sum += acc[j];
      y[m * ldy + n] = sum;
    }
  }
}

}  // namespace

void GemvF32Portable(const float* x, int64_t ldx, int rows, int64_t k, const float* w,
                     int64_t n_begin, int64_t n_end, float* y, int64_t ldy) {
  Rows(x, ldx, rows, k, w, n_begin, n_end, y, ldy);
}

void GemvBF16Portable(const float* x, int64_t ldx, int rows, int64_t k, const uint16_t* w,
                      int64_t n_begin, int64_t n_end, float* y, int64_t ldy) {
  Rows(x, ldx, rows, k, w, n_begin, n_end, y, ldy);
}

}  // namespace gemmapod::cpu::internal
