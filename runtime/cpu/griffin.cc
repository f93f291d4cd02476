#include "runtime/cpu/griffin.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "runtime/cpu/ops.h"

namespace gemmapod::cpu {
namespace {

constexpr float kGateExponent = 8.0f;  // Griffin's c: a = exp(-c * gate * softplus(Λ))
// Channels per thread's block: a block's rows stay in L1 across the tokens.
constexpr int64_t kChannelBlock = 64;
// Below this much work (tokens x channels) one thread is faster than waking the others.
constexpr int64_t kParallelWork = 1 << 15;

float Softplus(float x) { return x > 20.0f ? x : std::log1p(std::exp(x)); }
float Sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }

}  // namespace

void CausalConv1d(const float* x, int64_t T, int64_t C, const float* taps, int64_t width,
                  const float* bias, const int32_t* reach, float* history, float* out) {
  const int64_t held = width - 1;
  const int64_t blocks = (C + kChannelBlock - 1) / kChannelBlock;
#pragma omp parallel for schedule(static) if (T * C >= kParallelWork)
  for (int64_t blk = 0; blk < blocks; ++blk) {
    const int64_t c0 = blk * kChannelBlock, c1 = std::min(C, c0 + kChannelBlock);
    for (int64_t t = 0; t < T; ++t) {
      float* o = out + t * C;
      std::copy(bias + c0, bias + c1, o + c0);
      const int64_t back_max = std::min<int64_t>(reach[t], held);
      for (int64_t back = 0; back <= back_max; ++back) {
        // Inside the chunk, or the history's row held - (back - t) (1..held tokens before it).
        const float* in = t - back >= 0 ? x + (t - back) * C : history + (held - (back - t)) * C;
        const int64_t k = held - back;
        for (int64_t ch = c0; ch < c1; ++ch) o[ch] += taps[ch * width + k] * in[ch];
      }
    }
    // The last `held` inputs of history followed by x, oldest first, for this block's channels.
    std::vector<float> tail(static_cast<size_t>(held * (c1 - c0)));
    for (int64_t r = 0; r < held; ++r) {
      const int64_t source = r + T;  // row of [history; x]
      const float* src = source < held ? history + source * C : x + (source - held) * C;
      std::copy(src + c0, src + c1, tail.begin() + r * (c1 - c0));
    }
    for (int64_t r = 0; r < held; ++r) {
      std::copy_n(tail.begin() + r * (c1 - c0), c1 - c0, history + r * C + c0);
    }
  }
}

void BlockDiagonalMatMul(const float* x, int64_t T, int64_t H, int64_t bw, const float* w,
                         const float* b, float* out) {
  const int64_t width = H * bw;
#pragma omp parallel for schedule(static) if (T * width * bw >= 64 * kParallelWork)
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t h = 0; h < H; ++h) {
      const float* xi = x + t * width + h * bw;
      float* o = out + t * width + h * bw;
      std::copy(b + h * bw, b + (h + 1) * bw, o);
      for (int64_t i = 0; i < bw; ++i) AddScaled(w + (h * bw + i) * bw, xi[i], o, bw);
    }
  }
}

void RgLru(const float* x, const float* gate_x, const float* gate_a, const float* lambda,
           const int32_t* positions, int64_t T, int64_t C, float* state, float* out) {
  const int64_t blocks = (C + kChannelBlock - 1) / kChannelBlock;
#pragma omp parallel for schedule(static) if (T * C >= kParallelWork)
  for (int64_t blk = 0; blk < blocks; ++blk) {
    const int64_t c0 = blk * kChannelBlock, c1 = std::min(C, c0 + kChannelBlock);
    float softplus_lambda[kChannelBlock];
    for (int64_t ch = c0; ch < c1; ++ch) softplus_lambda[ch - c0] = Softplus(lambda[ch]);
    for (int64_t t = 0; t < T; ++t) {
      const bool reset = positions[t] == 0;
      const float* cx = x + t * C;
      const float* gx = gate_x + t * C;
      const float* ga = gate_a + t * C;
      float* o = out + t * C;
      for (int64_t ch = c0; ch < c1; ++ch) {
        const float log_a = -kGateExponent * Sigmoid(ga[ch]) * softplus_lambda[ch - c0];
        const float a = reset ? 0.0f : std::exp(log_a);
        const float multiplier = reset ? 1.0f : std::sqrt(1.0f - std::exp(2.0f * log_a));
        state[ch] = a * state[ch] + cx[ch] * Sigmoid(gx[ch]) * multiplier;
        o[ch] = state[ch];
      }
    }
  }
}

void BlockDiagonalMatMulBackward(const float* x, int64_t T, int64_t H, int64_t bw, const float* w,
                                 const float* dout, float* dx, float* dw, float* db) {
  const int64_t width = H * bw;
  // Threads split the heads: each owns its block of dw and db and its columns of dx.
#pragma omp parallel for schedule(static) if (T * width * bw >= 64 * kParallelWork)
  for (int64_t h = 0; h < H; ++h) {
    for (int64_t t = 0; t < T; ++t) {
      const float* g = dout + t * width + h * bw;
      const float* xi = x + t * width + h * bw;
      float* dxi = dx + t * width + h * bw;
      for (int64_t i = 0; i < bw; ++i) {
        const float* wi = w + (h * bw + i) * bw;
        float* dwi = dw + (h * bw + i) * bw;
        float acc = 0;
        for (int64_t j = 0; j < bw; ++j) {
          acc += wi[j] * g[j];
          dwi[j] += xi[i] * g[j];
        }
        dxi[i] = acc;
      }
      for (int64_t j = 0; j < bw; ++j) db[h * bw + j] += g[j];
    }
  }
}

void CausalConv1dBackward(const float* x, int64_t T, int64_t C, const float* taps, int64_t width,
                          const float* history, const int32_t* reach, const float* dout, float* dx,
                          float* dhistory, float* dtaps, float* dbias) {
  const int64_t held = width - 1;
  const int64_t blocks = (C + kChannelBlock - 1) / kChannelBlock;
#pragma omp parallel for schedule(static) if (T * C >= kParallelWork)
  for (int64_t blk = 0; blk < blocks; ++blk) {
    const int64_t c0 = blk * kChannelBlock, c1 = std::min(C, c0 + kChannelBlock);
    for (int64_t t = 0; t < T; ++t) std::fill(dx + t * C + c0, dx + t * C + c1, 0.0f);
    for (int64_t r = 0; r < held; ++r)
      std::fill(dhistory + r * C + c0, dhistory + r * C + c1, 0.0f);
    for (int64_t t = 0; t < T; ++t) {
      const float* g = dout + t * C;
      for (int64_t ch = c0; ch < c1; ++ch) dbias[ch] += g[ch];
      const int64_t back_max = std::min<int64_t>(reach[t], held);
      for (int64_t back = 0; back <= back_max; ++back) {
        const bool inside = t - back >= 0;
        const int64_t row = inside ? t - back : held - (back - t);
        const float* in = inside ? x + row * C : history + row * C;
        float* din = inside ? dx + row * C : dhistory + row * C;
        const int64_t k = held - back;
        for (int64_t ch = c0; ch < c1; ++ch) {
          din[ch] += taps[ch * width + k] * g[ch];
          dtaps[ch * width + k] += in[ch] * g[ch];
        }
      }
    }
  }
}

void RgLruBackward(const float* x, const float* gate_x, const float* gate_a, const float* lambda,
                   const int32_t* positions, const float* state, const float* h, const float* dh,
                   int64_t T, int64_t C, float* dx, float* dgate_x, float* dgate_a, float* dlambda,
                   float* dstate) {
  const int64_t blocks = (C + kChannelBlock - 1) / kChannelBlock;
#pragma omp parallel for schedule(static) if (T * C >= kParallelWork)
  for (int64_t blk = 0; blk < blocks; ++blk) {
    const int64_t c0 = blk * kChannelBlock, c1 = std::min(C, c0 + kChannelBlock);
    for (int64_t ch = c0; ch < c1; ++ch) {
      const double sp = Softplus(lambda[ch]), dsp = Sigmoid(lambda[ch]);  // softplus' = sigmoid
      double g = 0;  // dL/dh_t, from the outputs and the future
      double dlam = 0;
      for (int64_t t = T - 1; t >= 0; --t) {
        const int64_t at = t * C + ch;
        g += dh[at];
        const double i = Sigmoid(gate_x[at]);
        if (positions[t] == 0) {  // a document starts: h_t = i x_t, nothing flows further back
          dx[at] = static_cast<float>(g * i);
          dgate_x[at] = static_cast<float>(g * x[at] * i * (1 - i));
          dgate_a[at] = 0;
          g = 0;
          continue;
        }
        const double sa = Sigmoid(gate_a[at]);
        const double log_a = -kGateExponent * sa * sp;
        const double a = std::exp(log_a);
        const double mult = std::sqrt(1 - std::exp(2 * log_a));
        const double previous = t > 0 ? h[at - C] : state[ch];
        dx[at] = static_cast<float>(g * mult * i);
        dgate_x[at] = static_cast<float>(g * mult * x[at] * i * (1 - i));
        // h_t = a h_{t-1} + mult(a) i x_t, mult = sqrt(1 - a^2): dh_t/da = h_{t-1} - a / mult i
        // x_t.
        const double da = g * (previous - a / mult * i * x[at]);
        const double dlog_a = da * a;
        dgate_a[at] = static_cast<float>(dlog_a * -kGateExponent * sp * sa * (1 - sa));
        dlam += dlog_a * -kGateExponent * sa * dsp;
        g *= a;
      }
      dlambda[ch] += static_cast<float>(dlam);
      dstate[ch] = static_cast<float>(g);
    }
  }
}

}  // namespace gemmapod::cpu
