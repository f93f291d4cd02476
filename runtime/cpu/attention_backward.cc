#include "runtime/cpu/attention_backward.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "runtime/cpu/backward_kernels.h"
#include "runtime/cpu/gemv.h"

namespace gemmapod::cpu {

namespace {

// The dot product of two head vectors, in float lanes (vectorised), summed in double at the end.
double DotPortable(const float* a, const float* b, int64_t n) {
  float s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t e = 0; e < n; ++e) s += a[e] * b[e];
  return s;
}

// y += alpha * x over a head vector.
void AxpyPortable(float alpha, const float* x, float* y, int64_t n) {
#pragma omp simd
  for (int64_t e = 0; e < n; ++e) y[e] += alpha * x[e];
}

}  // namespace

void AttentionBackward(const AttentionProblem& p, const float* q, int64_t n, const float* k,
                       const float* v, int64_t m, const float* dout, const int64_t* lo,
                       const int64_t* hi, float* dq, float* dk, float* dv) {
  const int64_t H = p.num_heads, KV = p.num_kv_heads, hd = p.head_dim, group = H / KV;
  const int64_t q_row = H * hd, kv_out_row = KV * hd, stride = p.kv_row_stride;
  std::fill(dq, dq + n * q_row, 0.0f);
  // The head-vector products in AVX-512 where the CPU has them and the heads are whole vectors.
  const bool avx512 = ActiveCpuIsa() >= CpuIsa::kAvx512 && hd % 16 == 0;
  double (*const Dot)(const float*, const float*, int64_t) =
      avx512 ? internal::HeadDotAvx512 : DotPortable;
  void (*const Axpy)(float, const float*, float*, int64_t) =
      avx512 ? internal::HeadAxpyAvx512 : AxpyPortable;
  // Per query head: its share of its key/value head's dk and dv, [m, hd] each.
  std::vector<float> dk_part(static_cast<size_t>(H * m * hd), 0.0f);
  std::vector<float> dv_part(static_cast<size_t>(H * m * hd), 0.0f);
#pragma omp parallel for schedule(dynamic) if (n * m * H * hd >= (1 << 16))
  for (int64_t h = 0; h < H; ++h) {
    const int64_t g = h / group;
    const int64_t kv_at = (p.first_kv_head + g) * hd;
    float* dk_h = dk_part.data() + h * m * hd;
    float* dv_h = dv_part.data() + h * m * hd;
    std::vector<double> z, prob, dp;
    for (int64_t i = 0; i < n; ++i) {
      const int64_t first = std::max<int64_t>(0, lo[i]), last = std::min<int64_t>(m, hi[i]);
      if (first >= last) continue;
      const float* qi = q + i * q_row + h * hd;
      const float* gi = dout + i * q_row + h * hd;
      const int64_t count = last - first;
      z.assign(static_cast<size_t>(count), 0.0);
      prob.assign(static_cast<size_t>(count), 0.0);
      dp.assign(static_cast<size_t>(count), 0.0);
      double max = -INFINITY;
      for (int64_t j = first; j < last; ++j) {
        double s = Dot(qi, k + j * stride + kv_at, hd) * p.scale;
        if (p.softcap > 0) s = p.softcap * std::tanh(s / p.softcap);
        z[static_cast<size_t>(j - first)] = s;
        max = std::max(max, s);
      }
      double sum = 0;
      for (int64_t j = 0; j < count; ++j) {
        prob[static_cast<size_t>(j)] = std::exp(z[static_cast<size_t>(j)] - max);
        sum += prob[static_cast<size_t>(j)];
      }
      double weighted = 0;  // sum_j p_j dp_j
      for (int64_t j = 0; j < count; ++j) {
        double& pj = prob[static_cast<size_t>(j)];
        pj /= sum;
        const double d = Dot(gi, v + (first + j) * stride + kv_at, hd);
        dp[static_cast<size_t>(j)] = d;
        weighted += pj * d;
        Axpy(static_cast<float>(pj), gi, dv_h + (first + j) * hd, hd);
      }
      float* dqi = dq + i * q_row + h * hd;
      for (int64_t j = 0; j < count; ++j) {
        const size_t J = static_cast<size_t>(j);
        double ds = prob[J] * (dp[J] - weighted);
        if (p.softcap > 0) {
          const double t = z[J] / p.softcap;
          ds *= 1 - t * t;
        }
        ds *= p.scale;
        Axpy(static_cast<float>(ds), k + (first + j) * stride + kv_at, dqi, hd);
        Axpy(static_cast<float>(ds), qi, dk_h + (first + j) * hd, hd);
      }
    }
  }
  // Each key/value head's gradient: its group's partials in head order.
#pragma omp parallel for schedule(static) if (m * kv_out_row >= (1 << 16))
  for (int64_t j = 0; j < m; ++j) {
    for (int64_t g = 0; g < KV; ++g) {
      float* dkj = dk + j * kv_out_row + g * hd;
      float* dvj = dv + j * kv_out_row + g * hd;
      std::fill(dkj, dkj + hd, 0.0f);
      std::fill(dvj, dvj + hd, 0.0f);
      for (int64_t h = g * group; h < (g + 1) * group; ++h) {
        Axpy(1.0f, dk_part.data() + (h * m + j) * hd, dkj, hd);
        Axpy(1.0f, dv_part.data() + (h * m + j) * hd, dvj, hd);
      }
    }
  }
}

}  // namespace gemmapod::cpu
