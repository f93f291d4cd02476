// Portable int8-weight kernels: plain C++ the compiler vectorises for baseline x86-64. Used on
// CPUs without AVX-512 and as the second path the tests cover.
#include <cstdint>

#include "runtime/cpu/int8_kernels.h"

namespace gemmapod::cpu::internal {
namespace {

// Independent partial sums per dot product, so the compiler vectorises without reassociating
// one running sum (as in gemv_portable.cc).
constexpr int kLanes = 16;

}  // namespace

void GemvInt8Portable(const float* x, int64_t ldx, int rows, int64_t k, const int8_t* w,
                      const float* scale, int64_t n_begin, int64_t n_end, float* y, int64_t ldy) {
  const int64_t k_main = k / kLanes * kLanes;
  for (int64_t n = n_begin; n < n_end; ++n) {
    const int8_t* wn = w + n * k;
    // The row is read from memory for the first activation row and from L1/L2 for the others.
    for (int m = 0; m < rows; ++m) {
      const float* xm = x + m * ldx;
      float acc[kLanes] = {};
      for (int64_t kk = 0; kk < k_main; kk += kLanes)
        for (int j = 0; j < kLanes; ++j) acc[j] += xm[kk + j] * static_cast<float>(wn[kk + j]);
      for (int64_t kk = k_main; kk < k; ++kk) acc[0] += xm[kk] * static_cast<float>(wn[kk]);
      float sum = 0.0f;
      for (int j = 0; j < kLanes; ++j) sum += acc[j];
      y[m * ldy + n] = scale[n] * sum;
    }
  }
}

void WidenInt8Portable(const int8_t* q, int64_t count, float* out) {
  for (int64_t i = 0; i < count; ++i) out[i] = static_cast<float>(q[i]);
}

}  // namespace gemmapod::cpu::internal
