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
#include "tests/gradient_check.h"

namespace gemmapod::ops {
namespace {

double Dot(const Doubles& a, const Doubles& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

TEST(GradOps, MatMulGradientsInF32AndBf16Weights) {
  const int64_t M = 5, K = 7, N = 3;
  for (DType wt : {DType::kF32, DType::kBF16}) {
    const Tensor x = RandomTensor({M, K}, 1), w = RandomTensor({N, K}, 2).To(wt),
                 r = RandomTensor({M, N}, 3);
    const Doubles xv = ToDoubles(x), wv = ToDoubles(w), rv = ToDoubles(r);
    const auto loss = [&](const Doubles& xs, const Doubles& ws) {
      Doubles y(static_cast<size_t>(M * N), 0.0);
      for (int64_t m = 0; m < M; ++m) {
        for (int64_t n = 0; n < N; ++n) {
          for (int64_t k = 0; k < K; ++k) y[m * N + n] += xs[m * K + k] * ws[n * K + k];
        }
      }
      return Dot(y, rv);
    };
    Tensor dx = Tensor::Empty({M, K}, DType::kF32), dw = RandomTensor({N, K}, 4);
    const Tensor dw_before = dw.Clone();
    MatMulGradInput(r, w, dx);
    MatMulGradWeight(r, x, dw, /*accumulate=*/true);
    EXPECT_LT(
        MaxRelativeError(dx, CentralDifferences([&](const Doubles& p) { return loss(p, wv); }, xv)),
        1e-5)
        << DTypeName(wt);
    Doubles want_dw = CentralDifferences([&](const Doubles& p) { return loss(xv, p); }, wv);
    for (size_t i = 0; i < want_dw.size(); ++i) want_dw[i] += dw_before.data<float>()[i];
    EXPECT_LT(MaxRelativeError(dw, want_dw), 1e-5) << DTypeName(wt) << " (accumulated)";
  }
  // A bias: dL/db = the sum of r's rows.
  const Tensor r = RandomTensor({4, 3}, 5);
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
  const Tensor x = RandomTensor({rows, d}, 10), w = RandomTensor({d}, 11, 0.5f),
               r = RandomTensor({rows, d}, 12);
  const Doubles xv = ToDoubles(x), wv = ToDoubles(w), rv = ToDoubles(r);
  const auto loss = [&](const Doubles& xs, const Doubles& ws) {
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
  EXPECT_LT(
      MaxRelativeError(dx, CentralDifferences([&](const Doubles& p) { return loss(p, wv); }, xv)),
      1e-5);
  EXPECT_LT(
      MaxRelativeError(dw, CentralDifferences([&](const Doubles& p) { return loss(xv, p); }, wv)),
      1e-5);
}

TEST(GradOps, GeluTanhAndSoftCap) {
  const Tensor x = RandomTensor({37}, 20, 4.0f), r = RandomTensor({37}, 21);
  const Doubles xv = ToDoubles(x), rv = ToDoubles(r);
  Tensor dx = Tensor::Empty({37}, DType::kF32);
  GeluTanhBackward(x, r, dx);
  const auto gelu = [&](const Doubles& p) {
    double s = 0;
    for (size_t i = 0; i < p.size(); ++i) {
      const double v = p[i];
      s += 0.5 * v * (1 + std::tanh(std::sqrt(2 / M_PI) * (v + 0.044715 * v * v * v))) * rv[i];
    }
    return s;
  };
  EXPECT_LT(MaxRelativeError(dx, CentralDifferences(gelu, xv)), 1e-5);

  const float cap = 2.5f;
  Tensor y = Tensor::Empty({37}, DType::kF32);
  SoftCap(x, cap, y);
  SoftCapBackward(y, r, cap, dx);
  const auto capped = [&](const Doubles& p) {
    double s = 0;
    for (size_t i = 0; i < p.size(); ++i) s += cap * std::tanh(p[i] / cap) * rv[i];
    return s;
  };
  EXPECT_LT(MaxRelativeError(dx, CentralDifferences(capped, xv)), 1e-5);
}

// RoPE's backward rotates back: the adjoint of the rotation. RecurrentGemma's half-rotated heads
// and a scaled position too.
TEST(GradOps, RopeBackwardIsTheTransposedRotation) {
  const int64_t rows = 3, heads = 2, hd = 8;
  const std::vector<int32_t> positions = {0, 5, 1234};
  for (const Rope rope : {Rope{10000, 1, 1}, Rope{10000, 0.5f, 1}, Rope{1e6f, 1, 8}}) {
    const Tensor x = RandomTensor({rows, heads * hd}, 30), r = RandomTensor({rows, heads * hd}, 31);
    const Doubles xv = ToDoubles(x), rv = ToDoubles(r);
    const auto loss = [&](const Doubles& p) {
      Tensor t = Tensor::Empty({rows, heads * hd}, DType::kF32);
      for (size_t i = 0; i < p.size(); ++i) t.data<float>()[i] = static_cast<float>(p[i]);
      // Linear in x: the f32 forward's differences are exact enough with a large step.
      RopeHalfSplit(t, heads, hd, positions, rope);
      return Dot(ToDoubles(t), rv);
    };
    Tensor dx = r.Clone();
    RopeHalfSplitBackward(dx, heads, hd, positions, rope);
    EXPECT_LT(MaxRelativeError(dx, CentralDifferences(loss, xv, 0.25)), 1e-5)
        << rope.rotary_fraction;
  }
}

// Attention in double: query i, head h over keys [lo[i], hi[i]) of key/value head h / group.
double AttentionLoss(const AttentionProblem& p, const Doubles& q, const Doubles& k,
                     const Doubles& v, const Doubles& r, int64_t n, const std::vector<int64_t>& lo,
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
    const Tensor q = RandomTensor({c.n, p.num_heads * p.head_dim}, 70),
                 k = RandomTensor({c.m, p.kv_row_stride}, 71),
                 v = RandomTensor({c.m, p.kv_row_stride}, 72),
                 r = RandomTensor({c.n, p.num_heads * p.head_dim}, 73);
    const int64_t kv = p.num_kv_heads * p.head_dim;
    Tensor dq = Tensor::Empty(q.shape(), DType::kF32), dk = Tensor::Empty({c.m, kv}, DType::kF32),
           dv = Tensor::Empty({c.m, kv}, DType::kF32);
    AttentionBackward(p, q, k, v, r, c.lo, c.hi, dq, dk, dv);
    const Doubles qv = ToDoubles(q), kvv = ToDoubles(k), vv = ToDoubles(v), rv = ToDoubles(r);
    const auto loss = [&](const Doubles& qs, const Doubles& ks, const Doubles& vs) {
      return AttentionLoss(p, qs, ks, vs, rv, c.n, c.lo, c.hi);
    };
    EXPECT_LT(MaxRelativeError(
                  dq, CentralDifferences([&](const Doubles& x) { return loss(x, kvv, vv); }, qv)),
              1e-5);
    // dk and dv hold only the problem's heads: compare with those columns of the numeric gradient.
    const auto heads_of = [&](const Doubles& full) {
      Doubles out;
      for (int64_t j = 0; j < c.m; ++j) {
        for (int64_t e = 0; e < kv; ++e) {
          out.push_back(
              full[static_cast<size_t>(j * p.kv_row_stride + p.first_kv_head * p.head_dim + e)]);
        }
      }
      return out;
    };
    EXPECT_LT(MaxRelativeError(dk, heads_of(CentralDifferences(
                                       [&](const Doubles& x) { return loss(qv, x, vv); }, kvv))),
              1e-5);
    EXPECT_LT(MaxRelativeError(dv, heads_of(CentralDifferences(
                                       [&](const Doubles& x) { return loss(qv, kvv, x); }, vv))),
              1e-5);
  }
}

// Griffin's convolution with a history before the chunk and a document start inside it: every
// input's, tap's, bias's and history row's gradient.
TEST(GradOps, CausalConv1dBackward) {
  const int64_t T = 6, C = 5, width = 4;
  const Tensor x = RandomTensor({T, C}, 80), taps = RandomTensor({C, 1, width}, 81),
               bias = RandomTensor({C}, 82), history = RandomTensor({width - 1, C}, 83),
               r = RandomTensor({T, C}, 84);
  const std::vector<int32_t> reach = {3, 3, 3, 0, 1, 2};  // a document starts at token 3
  const auto loss = [&](const Doubles& xs, const Doubles& ts, const Doubles& bs,
                        const Doubles& hs) {
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
  const Doubles xv = ToDoubles(x), tv = ToDoubles(taps), bv = ToDoubles(bias),
                hv = ToDoubles(history);
  EXPECT_LT(MaxRelativeError(
                dx, CentralDifferences([&](const Doubles& p) { return loss(p, tv, bv, hv); }, xv)),
            1e-5);
  EXPECT_LT(MaxRelativeError(dtaps, CentralDifferences(
                                        [&](const Doubles& p) { return loss(xv, p, bv, hv); }, tv)),
            1e-5);
  EXPECT_LT(MaxRelativeError(dbias, CentralDifferences(
                                        [&](const Doubles& p) { return loss(xv, tv, p, hv); }, bv)),
            1e-5);
  EXPECT_LT(MaxRelativeError(
                dh, CentralDifferences([&](const Doubles& p) { return loss(xv, tv, bv, p); }, hv)),
            1e-5);
}

// The RG-LRU through time from a carried state, with a document start inside the chunk: the
// gradients of the input, both gates, Λ and the state before the chunk.
TEST(GradOps, RgLruBackwardThroughTime) {
  const int64_t T = 7, C = 6;
  const Tensor x = RandomTensor({T, C}, 90), gx = RandomTensor({T, C}, 91, 2.0f),
               ga = RandomTensor({T, C}, 92, 2.0f), lambda = RandomTensor({C}, 93, 2.0f),
               state = RandomTensor({C}, 94), r = RandomTensor({T, C}, 95);
  const std::vector<int32_t> pos = {5, 6, 7, 0, 1, 2, 3};  // continues a document, then a new one
  const auto loss = [&](const Doubles& xs, const Doubles& gxs, const Doubles& gas,
                        const Doubles& ls, const Doubles& s0) {
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
  const Doubles xv = ToDoubles(x), gxv = ToDoubles(gx), gav = ToDoubles(ga), lv = ToDoubles(lambda),
                sv = ToDoubles(state);
  EXPECT_LT(
      MaxRelativeError(
          dx, CentralDifferences([&](const Doubles& p) { return loss(p, gxv, gav, lv, sv); }, xv)),
      1e-5);
  EXPECT_LT(
      MaxRelativeError(
          dgx, CentralDifferences([&](const Doubles& p) { return loss(xv, p, gav, lv, sv); }, gxv)),
      1e-5);
  EXPECT_LT(
      MaxRelativeError(
          dga, CentralDifferences([&](const Doubles& p) { return loss(xv, gxv, p, lv, sv); }, gav)),
      1e-5);
  EXPECT_LT(
      MaxRelativeError(
          dl, CentralDifferences([&](const Doubles& p) { return loss(xv, gxv, gav, p, sv); }, lv)),
      1e-5);
  EXPECT_LT(
      MaxRelativeError(
          ds, CentralDifferences([&](const Doubles& p) { return loss(xv, gxv, gav, lv, p); }, sv)),
      1e-5);
}

TEST(GradOps, EmbeddingGradientAddsRepeatedRows) {
  const Tensor dout = RandomTensor({4, 3}, 40);
  Tensor dtable = RandomTensor({5, 3}, 41);
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

// Megatron's three steps on one shard: the loss and its gradient, with a masked row.
TEST(GradOps, CrossEntropyLossAndGradientWithAMask) {
  const int64_t rows = 4, V = 11;
  const Tensor logits = RandomTensor({rows, V}, 50, 3.0f);
  const std::vector<int32_t> targets = {3, -1, 10, 0};  // row 1 is masked
  const Doubles lv = ToDoubles(logits);
  const auto loss = [&](const Doubles& p) {
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
  // The vocab-parallel steps on one shard holding the whole vocabulary (no all-reduce between).
  const auto per_row = [&] { return Tensor::Empty({rows}, DType::kF32); };
  Tensor row_max = per_row(), sum_exp = per_row(), target_logit = per_row(), lse = per_row(),
         losses = per_row(), dlogits = Tensor::Empty({rows, V}, DType::kF32);
  RowMax(logits, row_max);
  ShardLossTerms(logits, row_max, targets, 0, sum_exp, target_logit);
  CombineLossTerms(row_max, sum_exp, target_logit, targets, lse, losses);
  ShardLossGrad(logits, lse, targets, 0, 1.0f / 3, nullptr, dlogits);
  double mean = 0;
  for (int64_t r = 0; r < rows; ++r) mean += losses.data<float>()[r] / 3;
  EXPECT_NEAR(mean, loss(lv), 1e-6);
  EXPECT_EQ(losses.data<float>()[1], 0.0f);
  EXPECT_LT(MaxRelativeError(dlogits, CentralDifferences(loss, lv)), 1e-5);
  // Ids past the vocabulary are the layer's to refuse (VocabParallelCrossEntropy, which knows
  // the vocabulary); the operations refuse what no vocabulary allows.
  const std::vector<int32_t> bad = {3, -2, 0, 0};
  EXPECT_THAT(ErrorOf([&] { ShardLossTerms(logits, row_max, bad, 0, sum_exp, target_logit); }),
              testing::HasSubstr("ShardLossTerms: target -2 (row 1)"));
}

TEST(GradOps, ShapesThatDoNotFitAreNamed) {
  const Tensor dy = RandomTensor({2, 3}, 60), w = RandomTensor({4, 5}, 61);
  Tensor dx = Tensor::Empty({2, 5}, DType::kF32);
  EXPECT_THAT(ErrorOf([&] { MatMulGradInput(dy, w, dx); }),
              testing::HasSubstr("MatMulGradInput: f32[2, 3]"));
}

}  // namespace
}  // namespace gemmapod::ops
