// The self-attention block's training forward and backward against central differences of the
// block written out in double precision: q/k/v projections, Gemma 3's per-head qk-norm, half-split
// RoPE, causal or sliding-window attention with GQA and a soft-cap, o_proj. Every parameter's
// gradient and the input's.
#include "models/layers/self_attention_block.h"

#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <random>
#include <vector>

#include "tests/gradient_check.h"

namespace gemmapod {
namespace {

constexpr int64_t T = 5, d = 8, H = 4, KV = 2, hd = 4;
constexpr float kEps = 1e-6f, kTheta = 10000.0f;

struct Params {
  Doubles x, wq, wk, wv, wo, qn, kn;
};

Doubles Project(const Doubles& x, const Doubles& w, int64_t n) {
  Doubles y(static_cast<size_t>(T * n), 0.0);
  const int64_t k = static_cast<int64_t>(w.size()) / n;
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t j = 0; j < n; ++j) {
      for (int64_t i = 0; i < k; ++i) y[t * n + j] += x[t * k + i] * w[j * k + i];
    }
  }
  return y;
}

// Per-head RMSNorm (1 + w) and half-split RoPE of rows [T, heads * hd], in place.
void NormAndRotate(Doubles& y, int64_t heads, const Doubles* norm,
                   const std::vector<int32_t>& pos) {
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t h = 0; h < heads; ++h) {
      double* v = y.data() + t * heads * hd + h * hd;
      if (norm != nullptr) {
        double ms = 0;
        for (int64_t e = 0; e < hd; ++e) ms += v[e] * v[e];
        const double inv = 1 / std::sqrt(ms / hd + kEps);
        for (int64_t e = 0; e < hd; ++e) v[e] = v[e] * inv * (1 + (*norm)[e]);
      }
      for (int64_t i = 0; i < hd / 2; ++i) {
        const double angle = pos[t] * std::pow(double{kTheta}, -2.0 * i / hd);
        const double a = v[i], b = v[i + hd / 2];
        v[i] = a * std::cos(angle) - b * std::sin(angle);
        v[i + hd / 2] = b * std::cos(angle) + a * std::sin(angle);
      }
    }
  }
}

double Loss(const Params& p, bool qk_norm, float softcap, const std::vector<int32_t>& pos,
            const std::vector<int64_t>& lo, const std::vector<int64_t>& hi, const Doubles& r,
            float scale) {
  Doubles q = Project(p.x, p.wq, H * hd), k = Project(p.x, p.wk, KV * hd),
          v = Project(p.x, p.wv, KV * hd);
  NormAndRotate(q, H, qk_norm ? &p.qn : nullptr, pos);
  NormAndRotate(k, KV, qk_norm ? &p.kn : nullptr, pos);
  Doubles attn(static_cast<size_t>(T * H * hd), 0.0);
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t h = 0; h < H; ++h) {
      const int64_t g = h / (H / KV);
      Doubles z;
      double max = -1e300;
      for (int64_t j = lo[t]; j < hi[t]; ++j) {
        double s = 0;
        for (int64_t e = 0; e < hd; ++e)
          s += q[t * H * hd + h * hd + e] * k[j * KV * hd + g * hd + e];
        s *= scale;
        if (softcap > 0) s = softcap * std::tanh(s / softcap);
        z.push_back(s);
        max = std::max(max, s);
      }
      double sum = 0;
      for (double& s : z) sum += (s = std::exp(s - max));
      for (int64_t j = lo[t]; j < hi[t]; ++j) {
        for (int64_t e = 0; e < hd; ++e) {
          attn[t * H * hd + h * hd + e] +=
              z[static_cast<size_t>(j - lo[t])] / sum * v[j * KV * hd + g * hd + e];
        }
      }
    }
  }
  const Doubles out = Project(attn, p.wo, d);
  double total = 0;
  for (size_t i = 0; i < out.size(); ++i) total += out[i] * r[i];
  return total;
}

class SelfAttentionBackwardTest : public ::testing::TestWithParam<std::tuple<bool, float, int>> {};

TEST_P(SelfAttentionBackwardTest, MatchesFiniteDifferences) {
  const auto [qk_norm, softcap, window] = GetParam();
  const Linear q_proj{RandomTensor({H * hd, d}, 1, 0.5f), {}, {}},
      k_proj{RandomTensor({KV * hd, d}, 2, 0.5f), {}, {}},
      v_proj{RandomTensor({KV * hd, d}, 3, 0.5f), {}, {}},
      o_proj{RandomTensor({d, H * hd}, 4, 0.5f), {}, {}};
  const Tensor q_norm = RandomTensor({hd}, 5, 0.3f), k_norm = RandomTensor({hd}, 6, 0.3f);
  const SelfAttentionWeights w{
      q_proj, k_proj, v_proj, o_proj, qk_norm ? &q_norm : nullptr, qk_norm ? &k_norm : nullptr};
  const float scale = 0.6f;
  const SelfAttentionSettings s{AttentionShape{H, KV, hd, scale, softcap, window}, kTheta, 1.0f,
                                kEps};
  const std::vector<int32_t> pos = {0, 1, 2, 3, 4};
  std::vector<int64_t> lo(T), hi(T);
  for (int64_t t = 0; t < T; ++t) {
    lo[t] = window > 0 ? std::max<int64_t>(0, t - window + 1) : 0;
    hi[t] = t + 1;
  }
  const Tensor x = RandomTensor({T, d}, 7, 1.0f), r = RandomTensor({T, d}, 8, 1.0f);
  Tensor out = Tensor::Empty({T, d}, DType::kF32);
  SelfAttentionSaved saved;
  SelfAttentionTrainForward(x, w, s, pos, lo, hi, nullptr, MatmulPrecision::kExact, out, saved);
  SelfAttentionGrads grads = SelfAttentionGrads::ZerosFor(w);
  Tensor dx = Tensor::Empty({T, d}, DType::kF32);
  SelfAttentionBackward(w, s, pos, lo, hi, saved, r, nullptr, dx, grads);

  const Params p{ToDoubles(x),
                 ToDoubles(q_proj.weight),
                 ToDoubles(k_proj.weight),
                 ToDoubles(v_proj.weight),
                 ToDoubles(o_proj.weight),
                 ToDoubles(q_norm),
                 ToDoubles(k_norm)};
  const Doubles rv = ToDoubles(r);
  // The forward in double gives the f32 forward's output to f32 rounding.
  EXPECT_LT(MaxRelativeError(out,
                             [&] {
                               Doubles o(static_cast<size_t>(T * d));
                               for (int64_t i = 0; i < T * d; ++i) {
                                 Doubles onehot(static_cast<size_t>(T * d), 0.0);
                                 onehot[static_cast<size_t>(i)] = 1;
                                 o[static_cast<size_t>(i)] =
                                     Loss(p, qk_norm, softcap, pos, lo, hi, onehot, scale);
                               }
                               return o;
                             }()),
            1e-5);
  const auto wrt = [&](Doubles Params::*field) {
    Params q = p;
    Doubles& v = q.*field;
    Doubles g(v.size());
    for (size_t i = 0; i < v.size(); ++i) {
      const double keep = v[i];
      v[i] = keep + 1e-5;
      const double up = Loss(q, qk_norm, softcap, pos, lo, hi, rv, scale);
      v[i] = keep - 1e-5;
      const double down = Loss(q, qk_norm, softcap, pos, lo, hi, rv, scale);
      v[i] = keep;
      g[i] = (up - down) / 2e-5;
    }
    return g;
  };
  EXPECT_LT(MaxRelativeError(dx, wrt(&Params::x)), 1e-5);
  EXPECT_LT(MaxRelativeError(grads.q_proj.weight, wrt(&Params::wq)), 1e-5);
  EXPECT_LT(MaxRelativeError(grads.k_proj.weight, wrt(&Params::wk)), 1e-5);
  EXPECT_LT(MaxRelativeError(grads.v_proj.weight, wrt(&Params::wv)), 1e-5);
  EXPECT_LT(MaxRelativeError(grads.o_proj.weight, wrt(&Params::wo)), 1e-5);
  if (qk_norm) {
    EXPECT_LT(MaxRelativeError(grads.q_norm, wrt(&Params::qn)), 1e-5);
    EXPECT_LT(MaxRelativeError(grads.k_norm, wrt(&Params::kn)), 1e-5);
  }
}

INSTANTIATE_TEST_SUITE_P(Blocks, SelfAttentionBackwardTest,
                         ::testing::Values(std::tuple{false, 0.0f, 0},  // Gemma 1
                                           std::tuple{false, 2.0f, 3},  // Gemma 2 sliding
                                           std::tuple{true, 0.0f, 0}),  // Gemma 3 global
                         [](const auto& info) {
                           return std::string(std::get<0>(info.param) ? "qk_norm" : "plain") +
                                  (std::get<1>(info.param) > 0 ? "_softcap" : "") +
                                  (std::get<2>(info.param) > 0 ? "_window" : "");
                         });

}  // namespace
}  // namespace gemmapod
