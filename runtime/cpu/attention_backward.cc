#include "runtime/cpu/attention_backward.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace gemmapod::cpu {

void AttentionBackward(const AttentionProblem& p, const float* q, int64_t n, const float* k,
                       const float* v, int64_t m, const float* dout, const int64_t* lo,
                       const int64_t* hi, float* dq, float* dk, float* dv) {
  const int64_t H = p.num_heads, KV = p.num_kv_heads, hd = p.head_dim, group = H / KV;
  const int64_t q_row = H * hd, kv_out_row = KV * hd, stride = p.kv_row_stride;
  std::fill(dq, dq + n * q_row, 0.0f);
  std::fill(dk, dk + m * kv_out_row, 0.0f);
  std::fill(dv, dv + m * kv_out_row, 0.0f);
#pragma omp parallel for schedule(dynamic) if (n * m * H * hd >= (1 << 16))
  for (int64_t g = 0; g < KV; ++g) {
    const int64_t kv_at = (p.first_kv_head + g) * hd;
    std::vector<double> z, prob, dp;
    for (int64_t h = g * group; h < (g + 1) * group; ++h) {
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
          const float* kj = k + j * stride + kv_at;
          double s = 0;
          for (int64_t e = 0; e < hd; ++e) s += static_cast<double>(qi[e]) * kj[e];
          s *= p.scale;
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
          const float* vj = v + (first + j) * stride + kv_at;
          double d = 0;
          for (int64_t e = 0; e < hd; ++e) d += static_cast<double>(gi[e]) * vj[e];
          dp[static_cast<size_t>(j)] = d;
          weighted += pj * d;
          float* dvj = dv + (first + j) * kv_out_row + g * hd;
          for (int64_t e = 0; e < hd; ++e) dvj[e] += static_cast<float>(pj * gi[e]);
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
          const float* kj = k + (first + j) * stride + kv_at;
          float* dkj = dk + (first + j) * kv_out_row + g * hd;
          for (int64_t e = 0; e < hd; ++e) {
            dqi[e] += static_cast<float>(ds * kj[e]);
            dkj[e] += static_cast<float>(ds * qi[e]);
          }
        }
      }
    }
  }
}

}  // namespace gemmapod::cpu
