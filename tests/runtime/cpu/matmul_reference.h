// Test helpers: random operands and a double-precision reference for y = x * w^T.
#pragma once

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "runtime/dtype.h"

namespace gemmapod::cpu::testing {

inline std::vector<float> RandomFloats(int64_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-scale, scale);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& f : v) f = dist(rng);
  return v;
}

inline std::vector<BF16> ToBF16(const std::vector<float>& v) {
  std::vector<BF16> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = FloatToBF16(v[i]);
  return out;
}

inline float AsFloat(float v) { return v; }
inline float AsFloat(BF16 v) { return BF16ToFloat(v); }

// ref[m, n] = sum_k x[m, k] * w[n, k] in double, and mag[m, n] = sum_k |x[m, k] * w[n, k]|, the
// scale that f32 rounding errors are relative to.
template <typename W>
void ReferenceMatMul(const std::vector<float>& x, const std::vector<W>& w, int64_t m, int64_t k,
                     int64_t n, std::vector<double>& ref, std::vector<double>& mag) {
  ref.assign(static_cast<size_t>(m * n), 0.0);
  mag.assign(static_cast<size_t>(m * n), 0.0);
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      double s = 0.0, a = 0.0;
      for (int64_t p = 0; p < k; ++p) {
        const double prod = static_cast<double>(x[i * k + p]) * AsFloat(w[j * k + p]);
        s += prod;
        a += std::fabs(prod);
      }
      ref[i * n + j] = s;
      mag[i * n + j] = a;
    }
  }
}

// Largest |y - ref| / mag over all entries (mag floored to avoid dividing by zero).
inline double MaxRelativeError(const float* y, const std::vector<double>& ref,
                               const std::vector<double>& mag) {
  double worst = 0.0;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double err = std::fabs(y[i] - ref[i]) / std::max(mag[i], 1e-30);
    if (!(err <= worst)) worst = err;  // NaN propagates as a failure
  }
  return worst;
}

// Tolerances relative to sum |x w|. kExact: f32 accumulation (and the 2^-17 hi/lo split error)
// over K <= a few thousand stays below 1e-6 in practice; 2e-5 still catches a dropped low half,
// whose error is 2^-9 per product. kFastBF16: one bf16 rounding of x, 2^-9 per product.
inline constexpr double kExactTolerance = 2e-5;
inline constexpr double kFastTolerance = 4e-3;

}  // namespace gemmapod::cpu::testing
