// Elementwise and reduction kernels: plain loops, vectorised by the compiler where it can.
#include "runtime/cpu/ops.h"

#include <cmath>
#include <limits>
#include <vector>

#include "runtime/error.h"

namespace gemmapod::cpu {
namespace {

// Independent partial sums: a fixed-width inner loop vectorises without -ffast-math, and the
// pairwise-ish summation is also more accurate than one running sum.
constexpr int kLanes = 16;

float SumOfSquares(const float* x, int64_t n) {
  float acc[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int j = 0; j < kLanes; ++j) acc[j] += x[i + j] * x[i + j];
  for (; i < n; ++i) acc[0] += x[i] * x[i];
  float s = 0.0f;
  for (int j = 0; j < kLanes; ++j) s += acc[j];
  return s;
}

float Sum(const float* x, int64_t n) {
  float acc[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int j = 0; j < kLanes; ++j) acc[j] += x[i + j];
  for (; i < n; ++i) acc[0] += x[i];
  float s = 0.0f;
  for (int j = 0; j < kLanes; ++j) s += acc[j];
  return s;
}

float Max(const float* x, int64_t n) {
  float m = -std::numeric_limits<float>::infinity();
  for (int64_t i = 0; i < n; ++i) m = x[i] > m ? x[i] : m;
  return m;
}

template <typename T>
float ToFloat(T v);
template <>
float ToFloat(float v) {
  return v;
}
template <>
float ToFloat(BF16 v) {
  return BF16ToFloat(v);
}

template <typename T>
void Gather(const T* table, int64_t vocab, int64_t dim, const int32_t* ids, int64_t count,
            float scale, float* out) {
  for (int64_t r = 0; r < count; ++r) {
    const int64_t id = ids[r];
    GEMMAPOD_CHECK(id >= 0 && id < vocab, "EmbeddingGather: token id ", id, " at position ", r,
                   " is outside the vocabulary [0, ", vocab, ")");
    const T* row = table + id * dim;
    float* o = out + r * dim;
    for (int64_t j = 0; j < dim; ++j) o[j] = ToFloat(row[j]) * scale;
  }
}

}  // namespace

void Add(const float* a, const float* b, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = a[i] + b[i];
}

void Mul(const float* a, const float* b, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = a[i] * b[i];
}

void Scale(const float* a, float s, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = a[i] * s;
}

void AddScaled(const float* a, float s, float* acc, int64_t n) {
  for (int64_t i = 0; i < n; ++i) acc[i] += a[i] * s;
}

void RmsNorm(const float* x, const float* weight, int64_t rows, int64_t dim, float eps,
             float* out) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * dim;
    float* o = out + r * dim;
    const float mean = SumOfSquares(xr, dim) / static_cast<float>(dim);
    const float inv = 1.0f / std::sqrt(mean + eps);
    for (int64_t j = 0; j < dim; ++j) o[j] = xr[j] * inv * (1.0f + weight[j]);
  }
}

void Softmax(const float* x, int64_t rows, int64_t cols, float* out) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * cols;
    float* o = out + r * cols;
    const float m = Max(xr, cols);
    // A row of -inf (fully masked) has no defined softmax; give zeros rather than NaN.
    if (m == -std::numeric_limits<float>::infinity()) {
      for (int64_t j = 0; j < cols; ++j) o[j] = 0.0f;
      continue;
    }
    for (int64_t j = 0; j < cols; ++j) o[j] = std::exp(xr[j] - m);
    const float inv = 1.0f / Sum(o, cols);
    for (int64_t j = 0; j < cols; ++j) o[j] *= inv;
  }
}

void RopeHalfSplit(float* x, int64_t rows, int64_t heads, int64_t head_dim,
                   const int32_t* positions, float theta, float rotary_fraction,
                   float position_scale) {
  const int64_t rotary_dim = static_cast<int64_t>(std::lround(head_dim * rotary_fraction));
  GEMMAPOD_CHECK(rotary_dim % 2 == 0 && rotary_dim >= 0 && rotary_dim <= head_dim,
                 "RopeHalfSplit: rotary dimension ", rotary_dim, " (head_dim ", head_dim,
                 " * fraction ", rotary_fraction, ") must be even and within the head");
  const int64_t half = rotary_dim / 2;
  if (half == 0) return;
  // Angles in double: position * inv_freq reaches thousands of radians, where f32 would lose
  // the low bits that sin/cos depend on. One table per row, shared by all heads.
  std::vector<float> cos_t(half), sin_t(half);
  std::vector<double> inv_freq(half);  // the same for every row: computed once
  for (int64_t i = 0; i < half; ++i) {
    inv_freq[i] = std::pow(static_cast<double>(theta), -2.0 * i / rotary_dim) / position_scale;
  }
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t i = 0; i < half; ++i) {
      const double angle = positions[r] * inv_freq[i];
      cos_t[i] = static_cast<float>(std::cos(angle));
      sin_t[i] = static_cast<float>(std::sin(angle));
    }
    for (int64_t h = 0; h < heads; ++h) {
      float* v = x + (r * heads + h) * head_dim;
      for (int64_t i = 0; i < half; ++i) {
        const float a = v[i];
        const float b = v[i + half];
        v[i] = a * cos_t[i] - b * sin_t[i];
        v[i + half] = b * cos_t[i] + a * sin_t[i];
      }
    }
  }
}

void EmbeddingGather(const float* table, int64_t vocab, int64_t dim, const int32_t* ids,
                     int64_t count, float scale, float* out) {
  Gather(table, vocab, dim, ids, count, scale, out);
}

void EmbeddingGather(const BF16* table, int64_t vocab, int64_t dim, const int32_t* ids,
                     int64_t count, float scale, float* out) {
  Gather(table, vocab, dim, ids, count, scale, out);
}

int64_t ArgMax(const float* x, int64_t n) {
  GEMMAPOD_CHECK(n > 0, "ArgMax of an empty array");
  int64_t best = 0;
  float best_value = x[0];
  for (int64_t i = 1; i < n; ++i) {
    // NaN never compares greater, so it never wins (unless x[0] is NaN and nothing else is).
    if (x[i] > best_value || (best_value != best_value && x[i] == x[i])) {
      best = i;
      best_value = x[i];
    }
  }
  return best;
}

void RowSum(const float* x, int64_t rows, int64_t cols, float* out) {
  for (int64_t r = 0; r < rows; ++r) out[r] = Sum(x + r * cols, cols);
}

void RowMax(const float* x, int64_t rows, int64_t cols, float* out) {
  // Rows of a vocabulary's logits are long: split them over the threads.
#pragma omp parallel for schedule(static) if (rows * cols >= (int64_t{1} << 16))
  for (int64_t r = 0; r < rows; ++r) out[r] = Max(x + r * cols, cols);
}

}  // namespace gemmapod::cpu
