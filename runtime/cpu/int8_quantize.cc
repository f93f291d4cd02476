// Per-row symmetric int8 quantization of weights, and dequantization of one row.
#include <omp.h>

#include <algorithm>
#include <cmath>

#include "runtime/cpu/int8_matmul.h"
#include "runtime/error.h"

namespace gemmapod::cpu {
namespace {

inline float ToF32(float v) { return v; }
inline float ToF32(BF16 v) { return BF16ToFloat(v); }

// Quantizes one row; false if it holds a non-finite value (q and scale are then unspecified).
template <typename T>
bool QuantizeRow(const T* w, int64_t k, int8_t* q, float* scale) {
  float absmax = 0.0f;
  bool finite = true;
  for (int64_t i = 0; i < k; ++i) {
    const float v = ToF32(w[i]);
    finite = finite && std::isfinite(v);
    absmax = std::max(absmax, std::fabs(v));
  }
  if (!finite) return false;
  float s = absmax / 127.0f;
  // All zeros, or an absmax so small that absmax / 127 underflows: q = round(w / 1) = 0 keeps
  // every element within absmax (< 2^-142) of its input and never divides by zero.
  if (s == 0.0f) s = 1.0f;
  // The quotient in double is exact enough that nearbyint (ties to even in the default rounding
  // mode) sees the true w / s; the clamp only trims quotients like 127.00001 that come from s
  // having been rounded down.
  const double s_wide = s;
  for (int64_t i = 0; i < k; ++i) {
    const double r = std::nearbyint(static_cast<double>(ToF32(w[i])) / s_wide);
    q[i] = static_cast<int8_t>(std::clamp(r, -127.0, 127.0));
  }
  *scale = s;
  return true;
}

template <typename T>
void QuantizeRows(const T* w, int64_t n, int64_t k, int8_t* q, float* scale) {
  GEMMAPOD_CHECK(n >= 0 && k >= 0, "QuantizeRowsInt8: negative size [", n, ", ", k, "]");
  int64_t first_bad_row = n;
  const bool parallel = n * k >= (int64_t{1} << 16) && !omp_in_parallel();
#pragma omp parallel for schedule(static) if (parallel)
  for (int64_t r = 0; r < n; ++r) {
    if (!QuantizeRow(w + r * k, k, q + r * k, scale + r)) {
#pragma omp critical(gemmapod_quantize_bad_row)
      first_bad_row = std::min(first_bad_row, r);
    }
  }
  GEMMAPOD_CHECK(first_bad_row == n, "QuantizeRowsInt8: row ", first_bad_row, " of [", n, ", ", k,
                 "] holds a non-finite weight (inf or NaN)");
}

}  // namespace

void QuantizeRowsInt8(const float* w, int64_t n, int64_t k, int8_t* q, float* scale) {
  QuantizeRows(w, n, k, q, scale);
}

void QuantizeRowsInt8(const BF16* w, int64_t n, int64_t k, int8_t* q, float* scale) {
  QuantizeRows(w, n, k, q, scale);
}

void DequantizeRowInt8(const int8_t* q, float scale, float* out, int64_t k) {
  for (int64_t i = 0; i < k; ++i) out[i] = scale * static_cast<float>(q[i]);
}

}  // namespace gemmapod::cpu
