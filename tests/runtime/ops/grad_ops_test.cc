// The backward operations of the seam (runtime/ops/grad_ops.h) against central finite
// differences of double-precision forwards written out here: for a scalar loss L = sum(out * r)
// with random r, each operation's gradient must match dL/d(input) numerically. Odd shapes, f32
// and bf16 weights, masked rows, repeated rows.
#include "runtime/ops/grad_ops.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <random>
#include <vector>

#include "tests/error_of.h"

namespace gemmapod::ops {
namespace {

using Vec = std::vector<double>;

Tensor Random(Shape shape, uint32_t seed, float scale = 1.0f) {
  Tensor t = Tensor::Empty(std::move(shape), DType::kF32);
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-scale, scale);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = dist(rng);
  return t;
}

Vec ToVec(const Tensor& t) {
  const Tensor f = t.dtype() == DType::kF32 ? t : t.To(DType::kF32);
  return Vec(f.data<float>(), f.data<float>() + f.numel());
}

// dL/dp by central differences of the double-precision loss L(p), step h.
Vec Numeric(const std::function<double(const Vec&)>& loss, Vec p, double h = 1e-5) {
  Vec g(p.size());
  for (size_t i = 0; i < p.size(); ++i) {
    const double keep = p[i];
    p[i] = keep + h;
    const double up = loss(p);
    p[i] = keep - h;
    const double down = loss(p);
    p[i] = keep;
    g[i] = (up - down) / (2 * h);
  }
  return g;
}

// max |got - want| / max |want|.
double Relative(const Tensor& got, const Vec& want) {
  double worst = 0, scale = 1e-30;
  for (size_t i = 0; i < want.size(); ++i) {
    scale = std::max(scale, std::fabs(want[i]));
    worst = std::max(worst, std::fabs(got.data<float>()[i] - want[i]));
  }
  return worst / scale;
}

double Dot(const Vec& a, const Vec& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

TEST(GradOps, MatMulGradientsInF32AndBf16Weights) {
  const int64_t M = 5, K = 7, N = 3;
  for (DType wt : {DType::kF32, DType::kBF16}) {
    const Tensor x = Random({M, K}, 1), w = Random({N, K}, 2).To(wt), r = Random({M, N}, 3);
    const Vec xv = ToVec(x), wv = ToVec(w), rv = ToVec(r);
    const auto loss = [&](const Vec& xs, const Vec& ws) {
      Vec y(static_cast<size_t>(M * N), 0.0);
      for (int64_t m = 0; m < M; ++m) {
        for (int64_t n = 0; n < N; ++n) {
          for (int64_t k = 0; k < K; ++k) y[m * N + n] += xs[m * K + k] * ws[n * K + k];
        }
      }
      return Dot(y, rv);
    };
    Tensor dx = Tensor::Empty({M, K}, DType::kF32), dw = Random({N, K}, 4);
    const Tensor dw_before = dw.Clone();
    MatMulGradInput(r, w, dx);
    MatMulGradWeight(r, x, dw, /*accumulate=*/true);
    EXPECT_LT(Relative(dx, Numeric([&](const Vec& p) { return loss(p, wv); }, xv)), 1e-5)
        << DTypeName(wt);
    Vec want_dw = Numeric([&](const Vec& p) { return loss(xv, p); }, wv);
    for (size_t i = 0; i < want_dw.size(); ++i) want_dw[i] += dw_before.data<float>()[i];
    EXPECT_LT(Relative(dw, want_dw), 1e-5) << DTypeName(wt) << " (accumulated)";
  }
  // A bias: dL/db = the sum of r's rows.
  const Tensor r = Random({4, 3}, 5);
  Tensor db = Tensor::Empty({3}, DType::kF32);
  RowBiasGrad(r, db, false);
  for (int64_t n = 0; n < 3; ++n) {
    double want = 0;
    for (int64_t m = 0; m < 4; ++m) want += r.data<float>()[m * 3 + n];
    EXPECT_NEAR(db.data<float>()[n], want, 1e-6);
  }
}

TEST(GradOps, RmsNormGradientOfInputAndOnePlusWeight) {
  const int64_t rows = 3, d = 9;
  const float eps = 1e-6f;
  const Tensor x = Random({rows, d}, 10), w = Random({d}, 11, 0.5f), r = Random({rows, d}, 12);
  const Vec xv = ToVec(x), wv = ToVec(w), rv = ToVec(r);
  const auto loss = [&](const Vec& xs, const Vec& ws) {
    double total = 0;
    for (int64_t i = 0; i < rows; ++i) {
      double ms = 0;
      for (int64_t j = 0; j < d; ++j) ms += xs[i * d + j] * xs[i * d + j];
      const double inv = 1 / std::sqrt(ms / d + eps);
      for (int64_t j = 0; j < d; ++j) total += xs[i * d + j] * inv * (1 + ws[j]) * rv[i * d + j];
    }
    return total;
  };
  Tensor dx = Tensor::Empty({rows, d}, DType::kF32), dw = Tensor::Zeros({d}, DType::kF32);
  RmsNormBackward(x, w, r, eps, dx, dw);
  EXPECT_LT(Relative(dx, Numeric([&](const Vec& p) { return loss(p, wv); }, xv)), 1e-5);
  EXPECT_LT(Relative(dw, Numeric([&](const Vec& p) { return loss(xv, p); }, wv)), 1e-5);
}

TEST(GradOps, GeluTanhAndSoftCap) {
  const Tensor x = Random({37}, 20, 4.0f), r = Random({37}, 21);
  const Vec xv = ToVec(x), rv = ToVec(r);
  Tensor dx = Tensor::Empty({37}, DType::kF32);
  GeluTanhBackward(x, r, dx);
  const auto gelu = [&](const Vec& p) {
    double s = 0;
    for (size_t i = 0; i < p.size(); ++i) {
      const double v = p[i];
      s += 0.5 * v * (1 + std::tanh(std::sqrt(2 / M_PI) * (v + 0.044715 * v * v * v))) * rv[i];
    }
    return s;
  };
  EXPECT_LT(Relative(dx, Numeric(gelu, xv)), 1e-5);

  const float cap = 2.5f;
  Tensor y = Tensor::Empty({37}, DType::kF32);
  SoftCap(x, cap, y);
  SoftCapBackward(y, r, cap, dx);
  const auto capped = [&](const Vec& p) {
    double s = 0;
    for (size_t i = 0; i < p.size(); ++i) s += cap * std::tanh(p[i] / cap) * rv[i];
    return s;
  };
  EXPECT_LT(Relative(dx, Numeric(capped, xv)), 1e-5);
}

// RoPE's backward rotates back: the adjoint of the rotation. RecurrentGemma's half-rotated heads
// and a scaled position too.
TEST(GradOps, RopeBackwardIsTheTransposedRotation) {
  const int64_t rows = 3, heads = 2, hd = 8;
  const std::vector<int32_t> positions = {0, 5, 1234};
  for (const Rope rope : {Rope{10000, 1, 1}, Rope{10000, 0.5f, 1}, Rope{1e6f, 1, 8}}) {
    const Tensor x = Random({rows, heads * hd}, 30), r = Random({rows, heads * hd}, 31);
    const Vec xv = ToVec(x), rv = ToVec(r);
    const auto loss = [&](const Vec& p) {
      Tensor t = Tensor::Empty({rows, heads * hd}, DType::kF32);
      for (size_t i = 0; i < p.size(); ++i) t.data<float>()[i] = static_cast<float>(p[i]);
      // Linear in x: the f32 forward's differences are exact enough with a large step.
      RopeHalfSplit(t, heads, hd, positions, rope);
      return Dot(ToVec(t), rv);
    };
    Tensor dx = r.Clone();
    RopeHalfSplitBackward(dx, heads, hd, positions, rope);
    EXPECT_LT(Relative(dx, Numeric(loss, xv, 0.25)), 1e-5) << rope.rotary_fraction;
  }
}

// Attention in double: query i, head h over keys [lo[i], hi[i]) of key/value head h / group.
double AttentionLoss(const AttentionProblem& p, const Vec& q, const Vec& k, const Vec& v,
                     const Vec& r, int64_t n, const std::vector<int64_t>& lo,
                     const std::vector<int64_t>& hi) {
  const int64_t H = p.num_heads, hd = p.head_dim, group = H / p.num_kv_heads;
  double total = 0;
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t h = 0; h < H; ++h) {
      const int64_t at = (p.first_kv_head + h / group) * hd;
      std::vector<double> z;
      double max = -1e300;
      for (int64_t j = lo[i]; j < hi[i]; ++j) {
        double s = 0;
        for (int64_t e = 0; e < hd; ++e)
          s += q[i * H * hd + h * hd + e] * k[j * p.kv_row_stride + at + e];
        s *= p.scale;
        if (p.softcap > 0) s = p.softcap * std::tanh(s / p.softcap);
        z.push_back(s);
        max = std::max(max, s);
      }
      double sum = 0;
      for (double& s : z) sum += (s = std::exp(s - max));
      for (int64_t e = 0; e < hd; ++e) {
        double o = 0;
        for (int64_t j = lo[i]; j < hi[i]; ++j) {
          o += z[static_cast<size_t>(j - lo[i])] / sum * v[j * p.kv_row_stride + at + e];
        }
        total += o * r[i * H * hd + h * hd + e];
      }
    }
  }
  return total;
}

// Causal self-attention with GQA and a soft-cap, a sliding window with a query that sees
// nothing, and cross-attention to more keys than queries reading two of a row's three heads.
TEST(GradOps, AttentionBackwardInEveryVariant) {
  struct Case {
    const char* name;
    AttentionProblem p;
    int64_t n, m;
    std::vector<int64_t> lo, hi;
  };
  const std::vector<Case> cases = {
      {"causal gqa softcap", {4, 2, 3, 6, 0.7f, 2.0f, 0}, 5, 5, {0, 0, 0, 0, 0}, {1, 2, 3, 4, 5}},
      {"window, empty query", {2, 1, 4, 4, 0.5f, 0.0f, 0}, 4, 4, {0, 0, 1, 3}, {1, 2, 3, 3}},
      {"cross, two of three heads", {2, 2, 3, 9, 0.6f, 0.0f, 1}, 3, 6, {0, 0, 0}, {6, 6, 6}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    const AttentionProblem& p = c.p;
    const Tensor q = Random({c.n, p.num_heads * p.head_dim}, 70),
                 k = Random({c.m, p.kv_row_stride}, 71), v = Random({c.m, p.kv_row_stride}, 72),
                 r = Random({c.n, p.num_heads * p.head_dim}, 73);
    const int64_t kv = p.num_kv_heads * p.head_dim;
    Tensor dq = Tensor::Empty(q.shape(), DType::kF32), dk = Tensor::Empty({c.m, kv}, DType::kF32),
           dv = Tensor::Empty({c.m, kv}, DType::kF32);
    AttentionBackward(p, q, k, v, r, c.lo, c.hi, dq, dk, dv);
    const Vec qv = ToVec(q), kvv = ToVec(k), vv = ToVec(v), rv = ToVec(r);
    const auto loss = [&](const Vec& qs, const Vec& ks, const Vec& vs) {
      return AttentionLoss(p, qs, ks, vs, rv, c.n, c.lo, c.hi);
    };
    EXPECT_LT(Relative(dq, Numeric([&](const Vec& x) { return loss(x, kvv, vv); }, qv)), 1e-5);
    // dk and dv hold only the problem's heads: compare with those columns of the numeric gradient.
    const auto heads_of = [&](const Vec& full) {
      Vec out;
      for (int64_t j = 0; j < c.m; ++j) {
        for (int64_t e = 0; e < kv; ++e) {
          out.push_back(
              full[static_cast<size_t>(j * p.kv_row_stride + p.first_kv_head * p.head_dim + e)]);
        }
      }
      return out;
    };
    EXPECT_LT(Relative(dk, heads_of(Numeric([&](const Vec& x) { return loss(qv, x, vv); }, kvv))),
              1e-5);
    EXPECT_LT(Relative(dv, heads_of(Numeric([&](const Vec& x) { return loss(qv, kvv, x); }, vv))),
              1e-5);
  }
}

// Griffin's convolution with a history before the chunk and a document start inside it: every
// input's, tap's, bias's and history row's gradient.
TEST(GradOps, CausalConv1dBackward) {
  const int64_t T = 6, C = 5, width = 4;
  const Tensor x = Random({T, C}, 80), taps = Random({C, 1, width}, 81), bias = Random({C}, 82),
               history = Random({width - 1, C}, 83), r = Random({T, C}, 84);
  const std::vector<int32_t> reach = {3, 3, 3, 0, 1, 2};  // a document starts at token 3
  const auto loss = [&](const Vec& xs, const Vec& ts, const Vec& bs, const Vec& hs) {
    double total = 0;
    for (int64_t t = 0; t < T; ++t) {
      for (int64_t c = 0; c < C; ++c) {
        double o = bs[c];
        for (int64_t back = 0; back <= reach[t]; ++back) {
          const double in =
              t - back >= 0 ? xs[(t - back) * C + c] : hs[(width - 1 - (back - t)) * C + c];
          o += ts[c * width + width - 1 - back] * in;
        }
        total += o * r.data<float>()[t * C + c];
      }
    }
    return total;
  };
  Tensor dx = Tensor::Empty({T, C}, DType::kF32), dh = Tensor::Empty({width - 1, C}, DType::kF32),
         dtaps = Tensor::Zeros({C, 1, width}, DType::kF32), dbias = Tensor::Zeros({C}, DType::kF32);
  CausalConv1dBackward(x, taps, history, reach, r, dx, dh, dtaps, dbias);
  const Vec xv = ToVec(x), tv = ToVec(taps), bv = ToVec(bias), hv = ToVec(history);
  EXPECT_LT(Relative(dx, Numeric([&](const Vec& p) { return loss(p, tv, bv, hv); }, xv)), 1e-5);
  EXPECT_LT(Relative(dtaps, Numeric([&](const Vec& p) { return loss(xv, p, bv, hv); }, tv)), 1e-5);
  EXPECT_LT(Relative(dbias, Numeric([&](const Vec& p) { return loss(xv, tv, p, hv); }, bv)), 1e-5);
  EXPECT_LT(Relative(dh, Numeric([&](const Vec& p) { return loss(xv, tv, bv, p); }, hv)), 1e-5);
}

// The RG-LRU through time from a carried state, with a document start inside the chunk: the
// gradients of the input, both gates, Λ and the state before the chunk.
TEST(GradOps, RgLruBackwardThroughTime) {
  const int64_t T = 7, C = 6;
  const Tensor x = Random({T, C}, 90), gx = Random({T, C}, 91, 2.0f), ga = Random({T, C}, 92, 2.0f),
               lambda = Random({C}, 93, 2.0f), state = Random({C}, 94), r = Random({T, C}, 95);
  const std::vector<int32_t> pos = {5, 6, 7, 0, 1, 2, 3};  // continues a document, then a new one
  const auto loss = [&](const Vec& xs, const Vec& gxs, const Vec& gas, const Vec& ls,
                        const Vec& s0) {
    const auto sigmoid = [](double v) { return 1 / (1 + std::exp(-v)); };
    double total = 0;
    for (int64_t c = 0; c < C; ++c) {
      double h = s0[c];
      const double sp = std::log1p(std::exp(ls[c]));
      for (int64_t t = 0; t < T; ++t) {
        const double log_a = -8 * sigmoid(gas[t * C + c]) * sp;
        const double gated = sigmoid(gxs[t * C + c]) * xs[t * C + c];
        h = pos[t] == 0 ? gated : std::exp(log_a) * h + std::sqrt(1 - std::exp(2 * log_a)) * gated;
        total += h * r.data<float>()[t * C + c];
      }
    }
    return total;
  };
  Tensor state_copy = state.Clone(), h = Tensor::Empty({T, C}, DType::kF32);
  RgLru(x, gx, ga, lambda, pos, state_copy, h);
  Tensor dx = Tensor::Empty({T, C}, DType::kF32), dgx = Tensor::Empty({T, C}, DType::kF32),
         dga = Tensor::Empty({T, C}, DType::kF32), dl = Tensor::Zeros({C}, DType::kF32),
         ds = Tensor::Empty({C}, DType::kF32);
  RgLruBackward(x, gx, ga, lambda, pos, state, h, r, dx, dgx, dga, dl, ds);
  const Vec xv = ToVec(x), gxv = ToVec(gx), gav = ToVec(ga), lv = ToVec(lambda), sv = ToVec(state);
  EXPECT_LT(Relative(dx, Numeric([&](const Vec& p) { return loss(p, gxv, gav, lv, sv); }, xv)),
            1e-5);
  EXPECT_LT(Relative(dgx, Numeric([&](const Vec& p) { return loss(xv, p, gav, lv, sv); }, gxv)),
            1e-5);
  EXPECT_LT(Relative(dga, Numeric([&](const Vec& p) { return loss(xv, gxv, p, lv, sv); }, gav)),
            1e-5);
  EXPECT_LT(Relative(dl, Numeric([&](const Vec& p) { return loss(xv, gxv, gav, p, sv); }, lv)),
            1e-5);
  EXPECT_LT(Relative(ds, Numeric([&](const Vec& p) { return loss(xv, gxv, gav, lv, p); }, sv)),
            1e-5);
}

TEST(GradOps, EmbeddingGradientAddsRepeatedRows) {
  const Tensor dout = Random({4, 3}, 40);
  Tensor dtable = Random({5, 3}, 41);
  const Tensor before = dtable.Clone();
  const std::vector<int64_t> rows = {2, -1, 2, 0};  // a repeat, and a row of another rank
  ScatterAddRows(dout, rows, dtable);
  for (int64_t v = 0; v < 5; ++v) {
    for (int64_t j = 0; j < 3; ++j) {
      double want = before.data<float>()[v * 3 + j];
      for (size_t i = 0; i < rows.size(); ++i) {
        if (rows[i] == v) want += dout.data<float>()[static_cast<int64_t>(i) * 3 + j];
      }
      EXPECT_NEAR(dtable.data<float>()[v * 3 + j], want, 1e-6) << v << "," << j;
    }
  }
}

TEST(GradOps, CrossEntropyLossAndGradientWithAMask) {
  const int64_t rows = 4, V = 11;
  const Tensor logits = Random({rows, V}, 50, 3.0f);
  const std::vector<int32_t> targets = {3, -1, 10, 0};  // row 1 is masked
  const Vec lv = ToVec(logits);
  const auto loss = [&](const Vec& p) {
    double total = 0;
    for (int64_t r = 0; r < rows; ++r) {
      if (targets[r] < 0) continue;
      double max = -1e30, sum = 0;
      for (int64_t v = 0; v < V; ++v) max = std::max(max, p[r * V + v]);
      for (int64_t v = 0; v < V; ++v) sum += std::exp(p[r * V + v] - max);
      total += std::log(sum) + max - p[r * V + targets[r]];
    }
    return total / 3;  // the mean over the three unmasked tokens
  };
  Tensor losses = Tensor::Empty({rows}, DType::kF32),
         dlogits = Tensor::Empty({rows, V}, DType::kF32);
  CrossEntropy(logits, targets, 1.0f / 3, losses, dlogits);
  double mean = 0;
  for (int64_t r = 0; r < rows; ++r) mean += losses.data<float>()[r] / 3;
  EXPECT_NEAR(mean, loss(lv), 1e-6);
  EXPECT_EQ(losses.data<float>()[1], 0.0f);
  EXPECT_LT(Relative(dlogits, Numeric(loss, lv)), 1e-5);
  const std::vector<int32_t> bad = {3, 11, 0, 0};
  EXPECT_THAT(ErrorOf([&] { CrossEntropy(logits, bad, 1.0f, losses, dlogits); }),
              testing::HasSubstr("target 11 (row 1) is outside the vocabulary of 11"));
}

TEST(GradOps, ShapesThatDoNotFitAreNamed) {
  const Tensor dy = Random({2, 3}, 60), w = Random({4, 5}, 61);
  Tensor dx = Tensor::Empty({2, 5}, DType::kF32);
  EXPECT_THAT(ErrorOf([&] { MatMulGradInput(dy, w, dx); }),
              testing::HasSubstr("MatMulGradInput: f32[2, 3]"));
}

}  // namespace
}  // namespace gemmapod::ops
