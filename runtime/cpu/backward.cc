#include "runtime/cpu/backward.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "runtime/cpu/backward_kernels.h"
#include "runtime/cpu/gemv.h"

namespace gemmapod::cpu {
namespace {

constexpr float kSqrt2OverPi = 0.7978845608028654f;
constexpr float kGeluCubic = 0.044715f;
// Below this many elements one thread is faster than waking the others.
constexpr int64_t kParallelWork = 1 << 15;
// Elements per block of the optimizer's and the norm's threaded loops (a multiple of 16 lanes).
constexpr int64_t kBlock = 1 << 14;

// The AVX-512 kernels of backward_kernels.h, where the CPU has them and GEMMAPOD_CPU_ISA does
// not lower the family to portable.
bool UseAvx512() { return ActiveCpuIsa() >= CpuIsa::kAvx512; }

}  // namespace

void RmsNormBackward(const float* x, const float* weight, const float* dy, int64_t rows,
                     int64_t dim, float eps, float* dx, float* dweight) {
  // dx row by row (threaded); the weight gradient sums every row in order (in double), so it is
  // the same for any thread count.
  std::vector<double> inv(static_cast<size_t>(rows));
#pragma omp parallel for schedule(static) if (rows * dim >= kParallelWork)
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * dim;
    const float* g = dy + r * dim;
    double squares = 0;
    for (int64_t j = 0; j < dim; ++j) squares += static_cast<double>(xr[j]) * xr[j];
    const double rinv = 1.0 / std::sqrt(squares / static_cast<double>(dim) + eps);
    inv[static_cast<size_t>(r)] = rinv;
    double dot = 0;  // mean of (dy * (1 + w)) * n
    for (int64_t j = 0; j < dim; ++j) {
      dot += static_cast<double>(g[j]) * (1.0 + weight[j]) * xr[j] * rinv;
    }
    dot /= static_cast<double>(dim);
    float* out = dx + r * dim;
    for (int64_t j = 0; j < dim; ++j) {
      const double n = xr[j] * rinv;
      out[j] = static_cast<float>(rinv * (g[j] * (1.0 + weight[j]) - n * dot));
    }
  }
  if (dweight == nullptr) return;  // a frozen weight
  // Each column's sum runs over the rows in order (threads take blocks of columns), reading the
  // rows front to back.
  constexpr int64_t kColumns = 64;
  const int64_t blocks = (dim + kColumns - 1) / kColumns;
#pragma omp parallel for schedule(static) if (rows * dim >= kParallelWork)
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t begin = b * kColumns, end = std::min(dim, begin + kColumns);
    double sum[kColumns] = {};
    for (int64_t r = 0; r < rows; ++r) {
      const float* g = dy + r * dim;
      const float* xr = x + r * dim;
      const double rinv = inv[static_cast<size_t>(r)];
      for (int64_t j = begin; j < end; ++j) {
        sum[j - begin] += static_cast<double>(g[j]) * xr[j] * rinv;
      }
    }
    for (int64_t j = begin; j < end; ++j) dweight[j] += static_cast<float>(sum[j - begin]);
  }
}

void GeluTanhBackward(const float* x, const float* dy, float* dx, int64_t n) {
  if (UseAvx512()) {
    const int64_t blocks = (n + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static) if (n >= kParallelWork)
    for (int64_t b = 0; b < blocks; ++b) {
      const int64_t at = b * kBlock;
      internal::GeluTanhBackwardAvx512(x + at, dy + at, dx + at, std::min(kBlock, n - at));
    }
    return;
  }
#pragma omp parallel for schedule(static) if (n >= kParallelWork)
  for (int64_t i = 0; i < n; ++i) {
    const float v = x[i];
    const float t = std::tanh(kSqrt2OverPi * (v + kGeluCubic * v * v * v));
    const float slope = kSqrt2OverPi * (1.0f + 3.0f * kGeluCubic * v * v);
    dx[i] = dy[i] * (0.5f * (1.0f + t) + 0.5f * v * (1.0f - t * t) * slope);
  }
}

void SoftCapBackward(const float* y, const float* dy, float cap, float* dx, int64_t n) {
#pragma omp parallel for schedule(static) if (n >= kParallelWork)
  for (int64_t i = 0; i < n; ++i) {
    const float t = y[i] / cap;
    dx[i] = dy[i] * (1.0f - t * t);
  }
}

void ScatterAddRows(const float* src, const int64_t* rows, int64_t count, int64_t width,
                    float* dst) {
  for (int64_t i = 0; i < count; ++i) {
    if (rows[i] < 0) continue;
    float* d = dst + rows[i] * width;
    const float* s = src + i * width;
    for (int64_t j = 0; j < width; ++j) d[j] += s[j];
  }
}

void SumRows(const float* x, int64_t rows, int64_t n, float* out, bool accumulate) {
#pragma omp parallel for schedule(static) if (rows * n >= kParallelWork)
  for (int64_t j = 0; j < n; ++j) {
    double sum = 0;
    for (int64_t r = 0; r < rows; ++r) sum += x[r * n + j];
    out[j] = static_cast<float>(accumulate ? out[j] + sum : sum);
  }
}

void ShardLossTerms(const float* logits, int64_t rows, int64_t shard, const float* row_max,
                    const int32_t* targets, int64_t first_id, float* sum_exp, float* target_logit) {
  const bool avx512 = UseAvx512();
#pragma omp parallel for schedule(static) if (rows * shard >= kParallelWork)
  for (int64_t r = 0; r < rows; ++r) {
    const float* z = logits + r * shard;
    double sum = 0;
    if (avx512) {
      sum = internal::SumExpShiftedAvx512(z, shard, row_max[r]);
    } else {
      for (int64_t v = 0; v < shard; ++v) sum += std::exp(static_cast<double>(z[v]) - row_max[r]);
    }
    sum_exp[r] = static_cast<float>(sum);
    const int64_t local = targets[r] - first_id;
    target_logit[r] = targets[r] >= 0 && local >= 0 && local < shard ? z[local] : 0.0f;
  }
}

void ShardLossGrad(const float* logits, int64_t rows, int64_t shard, const float* log_sum_exp,
                   const int32_t* targets, int64_t first_id, float grad_scale,
                   const float* row_scale, float* dlogits) {
  const bool avx512 = UseAvx512();
#pragma omp parallel for schedule(static) if (rows * shard >= kParallelWork)
  for (int64_t r = 0; r < rows; ++r) {
    const float* z = logits + r * shard;
    float* g = dlogits + r * shard;
    if (targets[r] < 0) {
      std::fill(g, g + shard, 0.0f);
      continue;
    }
    const float scale = row_scale != nullptr ? grad_scale * row_scale[r] : grad_scale;
    if (avx512) {
      internal::ScaledExpShiftedAvx512(z, shard, log_sum_exp[r], scale, g);
    } else {
      for (int64_t v = 0; v < shard; ++v) {
        g[v] = static_cast<float>(std::exp(static_cast<double>(z[v]) - log_sum_exp[r]) * scale);
      }
    }
    const int64_t local = targets[r] - first_id;
    if (local >= 0 && local < shard) g[local] -= scale;
  }
}

void AdamWUpdate(float* master, float* m, float* v, const float* grad, int64_t n, float lr,
                 float beta1, float beta2, float eps, float weight_decay, int64_t step,
                 float grad_scale) {
  const double correction1 = 1.0 - std::pow(static_cast<double>(beta1), static_cast<double>(step));
  const double correction2 = 1.0 - std::pow(static_cast<double>(beta2), static_cast<double>(step));
  const float step_size = static_cast<float>(lr / correction1);
  const float inv_sqrt_correction2 = static_cast<float>(1.0 / std::sqrt(correction2));
  const float decay = 1.0f - lr * weight_decay;
  const bool avx512 = UseAvx512();
  const int64_t blocks = (n + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static) if (n >= kParallelWork)
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t begin = b * kBlock, end = std::min(n, begin + kBlock);
    if (avx512) {
      internal::AdamWUpdateAvx512(master + begin, m + begin, v + begin, grad + begin, end - begin,
                                  step_size, inv_sqrt_correction2, decay, beta1, beta2, eps,
                                  grad_scale);
      continue;
    }
    for (int64_t i = begin; i < end; ++i) {
      const float g = grad[i] * grad_scale;
      master[i] *= decay;
      m[i] = beta1 * m[i] + (1.0f - beta1) * g;
      v[i] = beta2 * v[i] + (1.0f - beta2) * g * g;
      master[i] -= step_size * m[i] / (std::sqrt(v[i]) * inv_sqrt_correction2 + eps);
    }
  }
}

double SumOfSquares(const float* x, int64_t n) {
  const int64_t blocks = (n + kBlock - 1) / kBlock;
  std::vector<double> partial(static_cast<size_t>(blocks), 0.0);
  const bool avx512 = UseAvx512();
#pragma omp parallel for schedule(static) if (n >= kParallelWork)
  for (int64_t b = 0; b < blocks; ++b) {
    if (avx512) {
      partial[static_cast<size_t>(b)] =
          internal::SumOfSquaresAvx512(x + b * kBlock, std::min(kBlock, n - b * kBlock));
      continue;
    }
    double s = 0;
    for (int64_t i = b * kBlock; i < std::min(n, (b + 1) * kBlock); ++i) {
      s += static_cast<double>(x[i]) * x[i];
    }
    partial[static_cast<size_t>(b)] = s;
  }
  double total = 0;
  for (double p : partial) total += p;
  return total;
}

}  // namespace gemmapod::cpu
