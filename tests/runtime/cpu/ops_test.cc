// Elementwise and reduction ops against straightforward double-precision references.
#include "runtime/cpu/ops.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "runtime/error.h"
#include "tests/runtime/cpu/matmul_reference.h"

namespace gemmapod::cpu {
namespace {

using testing::RandomFloats;

// Lengths around the 16-lane partial sums the kernels use.
const int64_t kLengths[] = {1, 15, 16, 17, 100, 1000};

TEST(Ops, AddMulScaleAddScaled) {
  for (int64_t n : kLengths) {
    const auto a = RandomFloats(n, 1), b = RandomFloats(n, 2);
    std::vector<float> out(n), acc = b;
    Add(a.data(), b.data(), out.data(), n);
    for (int64_t i = 0; i < n; ++i) EXPECT_EQ(out[i], a[i] + b[i]);
    Mul(a.data(), b.data(), out.data(), n);
    for (int64_t i = 0; i < n; ++i) EXPECT_EQ(out[i], a[i] * b[i]);
    Scale(a.data(), 3.5f, out.data(), n);
    for (int64_t i = 0; i < n; ++i) EXPECT_EQ(out[i], a[i] * 3.5f);
    AddScaled(a.data(), -2.0f, acc.data(), n);
    for (int64_t i = 0; i < n; ++i) EXPECT_FLOAT_EQ(acc[i], b[i] - 2.0f * a[i]);
  }
  // In place: out aliases a.
  std::vector<float> a = {1, 2, 3}, b = {10, 20, 30};
  Add(a.data(), b.data(), a.data(), 3);
  EXPECT_EQ(a, (std::vector<float>{11, 22, 33}));
}

TEST(Ops, GeluTanh) {
  // Long enough for the threaded path, with a tail the vector lanes do not cover.
  const auto x = RandomFloats(100003, 3, 6.0f);
  std::vector<float> y(x.size());
  GeluTanh(x.data(), y.data(), static_cast<int64_t>(x.size()));
  for (size_t i = 0; i < x.size(); ++i) {
    const double v = x[i];
    const double ref = 0.5 * v * (1 + std::tanh(std::sqrt(2 / M_PI) * (v + 0.044715 * v * v * v)));
    ASSERT_NEAR(y[i], ref, 1e-6 + 1e-6 * std::fabs(ref)) << "x=" << v << " at " << i;
  }
}

TEST(Ops, ExpShiftedSumIsASoftmaxNumerator) {
  auto x = RandomFloats(1001, 5, 20.0f);  // odd length: a tail past the vector lanes
  const std::vector<float> original = x;
  const float shift = *std::max_element(x.begin(), x.end());
  const float sum = ExpShiftedSum(x.data(), shift, static_cast<int64_t>(x.size()));
  double want_sum = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    // The argument as f32 computes it; then exp exactly: what is left is the vector expf's own
    // rounding (a couple of ulps).
    const float arg = original[i] - shift;
    const double want = std::exp(static_cast<double>(arg));
    want_sum += want;
    ASSERT_NEAR(x[i], want, 3e-7 * want) << i;
  }
  EXPECT_NEAR(sum, want_sum, 1e-6 * want_sum);
}

TEST(Ops, SoftCap) {
  const auto x = RandomFloats(500, 4, 100.0f);
  std::vector<float> y(x.size());
  SoftCap(x.data(), 30.0f, y.data(), static_cast<int64_t>(x.size()));
  for (size_t i = 0; i < x.size(); ++i) {
    const double ref = 30.0 * std::tanh(x[i] / 30.0);
    EXPECT_NEAR(y[i], ref, 1e-5 * 30.0) << "x=" << x[i];
  }
}

TEST(Ops, GemmaRmsNormScalesByOnePlusWeight) {
  for (int64_t dim : {1, 17, 256}) {
    const int64_t rows = 3;
    const auto x = RandomFloats(rows * dim, 5, 4.0f);
    const auto w = RandomFloats(dim, 6, 0.5f);
    std::vector<float> y(rows * dim);
    const float eps = 1e-6f;
    RmsNorm(x.data(), w.data(), rows, dim, eps, y.data());
    for (int64_t r = 0; r < rows; ++r) {
      double ss = 0;
      for (int64_t j = 0; j < dim; ++j) ss += double(x[r * dim + j]) * x[r * dim + j];
      const double inv = 1.0 / std::sqrt(ss / dim + eps);
      for (int64_t j = 0; j < dim; ++j) {
        const double ref = x[r * dim + j] * inv * (1.0 + w[j]);
        EXPECT_NEAR(y[r * dim + j], ref, 1e-5 * (1 + std::fabs(ref))) << dim;
      }
    }
  }
}

TEST(Ops, SoftmaxRows) {
  const int64_t rows = 4, cols = 37;
  auto x = RandomFloats(rows * cols, 7, 20.0f);
  x[5] = 1000.0f;  // large values must not overflow: the max is subtracted
  std::vector<float> y(x.size());
  Softmax(x.data(), rows, cols, y.data());
  for (int64_t r = 0; r < rows; ++r) {
    double mx = -1e300, sum = 0;
    for (int64_t j = 0; j < cols; ++j) mx = std::max<double>(mx, x[r * cols + j]);
    for (int64_t j = 0; j < cols; ++j) sum += std::exp(x[r * cols + j] - mx);
    for (int64_t j = 0; j < cols; ++j) {
      const double ref = std::exp(x[r * cols + j] - mx) / sum;
      EXPECT_NEAR(y[r * cols + j], ref, 1e-6 + 1e-5 * ref);
    }
  }
  // A fully masked row gives zeros, not NaN; in place works.
  std::vector<float> masked(5, -std::numeric_limits<float>::infinity());
  masked[4] = -std::numeric_limits<float>::infinity();
  Softmax(masked.data(), 1, 5, masked.data());
  for (float v : masked) EXPECT_EQ(v, 0.0f);
}

void CheckRope(int64_t head_dim, float fraction) {
  const int64_t rows = 3, heads = 2;
  const std::vector<int32_t> pos = {0, 7, 4000};
  const float theta = 10000.0f;
  const auto x0 = RandomFloats(rows * heads * head_dim, 8);
  auto x = x0;
  RopeHalfSplit(x.data(), rows, heads, head_dim, pos.data(), theta, fraction);
  const int64_t rot = static_cast<int64_t>(head_dim * fraction), half = rot / 2;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t h = 0; h < heads; ++h) {
      const float* a = x0.data() + (r * heads + h) * head_dim;
      const float* b = x.data() + (r * heads + h) * head_dim;
      for (int64_t i = 0; i < half; ++i) {
        const double ang = pos[r] * std::pow(double(theta), -2.0 * i / rot);
        const double re = a[i] * std::cos(ang) - a[i + half] * std::sin(ang);
        const double im = a[i + half] * std::cos(ang) + a[i] * std::sin(ang);
        EXPECT_NEAR(b[i], re, 1e-5);
        EXPECT_NEAR(b[i + half], im, 1e-5);
      }
      for (int64_t i = rot; i < head_dim; ++i) EXPECT_EQ(b[i], a[i]);  // untouched tail
    }
}

TEST(Ops, RopeHalfSplitFullHead) { CheckRope(16, 1.0f); }
TEST(Ops, RopeHalfSplitFirstHalfLikeRecurrentGemma) { CheckRope(16, 0.5f); }
TEST(Ops, RopeRejectsOddRotaryDim) {
  std::vector<float> x(6);
  const int32_t pos = 0;
  EXPECT_THROW(RopeHalfSplit(x.data(), 1, 1, 6, &pos, 10000.0f, 0.5f), Error);
}

TEST(Ops, EmbeddingGatherFromF32AndBF16) {
  const int64_t vocab = 10, dim = 5;
  const auto table = RandomFloats(vocab * dim, 9);
  const auto table_bf16 = testing::ToBF16(table);
  const std::vector<int32_t> ids = {3, 0, 9, 3};
  std::vector<float> out(ids.size() * dim), out_bf16(out.size());
  EmbeddingGather(table.data(), vocab, dim, ids.data(), 4, 2.0f, out.data());
  EmbeddingGather(table_bf16.data(), vocab, dim, ids.data(), 4, 2.0f, out_bf16.data());
  for (size_t r = 0; r < ids.size(); ++r)
    for (int64_t j = 0; j < dim; ++j) {
      EXPECT_EQ(out[r * dim + j], table[ids[r] * dim + j] * 2.0f);
      EXPECT_EQ(out_bf16[r * dim + j], BF16ToFloat(table_bf16[ids[r] * dim + j]) * 2.0f);
    }
  const int32_t bad = 10;
  EXPECT_THROW(EmbeddingGather(table.data(), vocab, dim, &bad, 1, 1.0f, out.data()), Error);
}

TEST(Ops, ArgMaxAndRowReductions) {
  std::vector<float> x = {1, 5, -2, 5, std::numeric_limits<float>::quiet_NaN(), 3};
  EXPECT_EQ(ArgMax(x.data(), 6), 1);  // first of the ties, NaN ignored
  x[0] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_EQ(ArgMax(x.data(), 6), 1);
  EXPECT_THROW(ArgMax(x.data(), 0), Error);

  for (int64_t cols : kLengths) {
    const int64_t rows = 3;
    const auto v = RandomFloats(rows * cols, 10);
    std::vector<float> sums(rows), maxes(rows);
    RowSum(v.data(), rows, cols, sums.data());
    RowMax(v.data(), rows, cols, maxes.data());
    for (int64_t r = 0; r < rows; ++r) {
      double s = 0, m = -1e300;
      for (int64_t j = 0; j < cols; ++j) {
        s += v[r * cols + j];
        m = std::max<double>(m, v[r * cols + j]);
      }
      EXPECT_NEAR(sums[r], s, 1e-5 * cols);
      EXPECT_EQ(maxes[r], m);
    }
  }
}

}  // namespace
}  // namespace gemmapod::cpu
