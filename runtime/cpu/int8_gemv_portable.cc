// Portable int8-weight kernels: plain C++ the compiler vectorises for baseline x86-64. Used on
// CPUs without AVX-512 and as the second path the tests cover.
#include <algorithm>
#include <cstdint>

#include "runtime/cpu/gemv_kernels.h"
#include "runtime/cpu/int8_kernels.h"

namespace gemmapod::cpu::internal {
namespace {

// Independent partial sums per dot product, so the compiler vectorises without reassociating
// one running sum (as in gemv_portable.cc).
constexpr int kLanes = 16;
// Weights widened at a time (4 KiB of f32, in L1 for all activation rows); a multiple of kLanes.
constexpr int64_t kChunk = 1024;

}  // namespace

void GemvInt8Portable(const float* x, int64_t ldx, int rows, int64_t k, const int8_t* w,
                      const float* scale, int64_t n_begin, int64_t n_end, float* y, int64_t ldy) {
  // Each chunk of a weight row is widened to f32 once and then used for every activation row:
  // widening int8 without SSE4.1 takes several instructions per 4 weights, which at M = 8 cost
  // more than the products when repeated per activation row.
  // One activation row gains nothing from the buffer and runs a third faster without it.
  if (rows == 1) {
    const int64_t k_main = k / kLanes * kLanes;
    for (int64_t n = n_begin; n < n_end; ++n) {
      const int8_t* wn = w + n * k;
      float acc[kLanes] = {};
      for (int64_t kk = 0; kk < k_main; kk += kLanes)
        for (int j = 0; j < kLanes; ++j) acc[j] += x[kk + j] * static_cast<float>(wn[kk + j]);
      for (int64_t kk = k_main; kk < k; ++kk) acc[0] += x[kk] * static_cast<float>(wn[kk]);
      float sum = 0.0f;
      for (int j = 0; j < kLanes; ++j) sum += acc[j];
      y[n] = scale[n] * sum;
    }
    return;
  }
  float widened[kChunk];
  for (int64_t n = n_begin; n < n_end; ++n) {
    const int8_t* wn = w + n * k;
    float acc[kGemvBlockRows][kLanes] = {};
    for (int64_t c0 = 0; c0 < k; c0 += kChunk) {
      const int64_t len = std::min(kChunk, k - c0);
      const int64_t len_main = len / kLanes * kLanes;
      for (int64_t i = 0; i < len; ++i) widened[i] = static_cast<float>(wn[c0 + i]);
      for (int m = 0; m < rows; ++m) {
        const float* xm = x + m * ldx + c0;
        for (int64_t i = 0; i < len_main; i += kLanes)
          for (int j = 0; j < kLanes; ++j) acc[m][j] += xm[i + j] * widened[i + j];
        for (int64_t i = len_main; i < len; ++i) acc[m][0] += xm[i] * widened[i];
      }
    }
    for (int m = 0; m < rows; ++m) {
      float sum = 0.0f;
      for (int j = 0; j < kLanes; ++j) sum += acc[m][j];
      y[m * ldy + n] = scale[n] * sum;
    }
  }
}

void WidenInt8Portable(const int8_t* q, int64_t count, float* out) {
  for (int64_t i = 0; i < count; ++i) out[i] = static_cast<float>(q[i]);
}

}  // namespace gemmapod::cpu::internal
