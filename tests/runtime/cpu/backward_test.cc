// The AVX-512 family of the training kernels (runtime/cpu/backward_kernels.h) against double
// references and the portable family, through the public functions with GEMMAPOD_CPU_ISA
// choosing the path: the cross-entropy's exponentials over vocabulary rows, GELU's backward, the
// squared norm, and the AdamW update (the same bits as the portable loop).
#include "runtime/cpu/backward.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "runtime/cpu/gemv.h"

namespace gemmapod::cpu {
namespace {

class ScopedIsa {
 public:
  explicit ScopedIsa(const char* isa) { setenv("GEMMAPOD_CPU_ISA", isa, 1); }
  ~ScopedIsa() { unsetenv("GEMMAPOD_CPU_ISA"); }
};

std::vector<float> Normal(size_t n, float stddev, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, stddev);
  std::vector<float> x(n);
  for (float& v : x) v = normal(rng);
  return x;
}

class BackwardAvx512 : public testing::Test {
 protected:
  void SetUp() override {
    if (!CpuSupports(CpuIsa::kAvx512)) GTEST_SKIP() << "no AVX-512 on this CPU";
  }
};

// Rows whose length is not a multiple of 16 (the masked tail), logits spread like a vocabulary's
// (a few large, most far below the maximum, some below exp's f32 range).
TEST_F(BackwardAvx512, CrossEntropyExponentialsMatchDouble) {
  ScopedIsa isa("avx512");
  for (int64_t shard : {1, 15, 16, 17, 1000, 4099}) {
    const int64_t rows = 3;
    std::vector<float> logits = Normal(static_cast<size_t>(rows * shard), 8.0f, 5);
    if (shard > 20) logits[7] = -300.0f;  // exp underflows to 0
    std::vector<float> row_max(rows), sum_exp(rows), target_logit(rows), lse(rows);
    std::vector<int32_t> targets = {0, -1, static_cast<int32_t>(shard - 1)};
    for (int64_t r = 0; r < rows; ++r) {
      row_max[r] = *std::max_element(logits.begin() + r * shard, logits.begin() + (r + 1) * shard);
    }
    ShardLossTerms(logits.data(), rows, shard, row_max.data(), targets.data(), 0, sum_exp.data(),
                   target_logit.data());
    for (int64_t r = 0; r < rows; ++r) {
      double sum = 0;
      for (int64_t v = 0; v < shard; ++v)
        sum += std::exp(double{logits[r * shard + v]} - row_max[r]);
      EXPECT_NEAR(sum_exp[r], sum, 1e-6 * sum) << "shard " << shard << " row " << r;
      lse[r] = row_max[r] + static_cast<float>(std::log(sum));
    }
    std::vector<float> dlogits(logits.size(), -7.0f);
    const float scale = 0.25f;
    ShardLossGrad(logits.data(), rows, shard, lse.data(), targets.data(), 0, scale, nullptr,
                  dlogits.data());
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t v = 0; v < shard; ++v) {
        const size_t i = static_cast<size_t>(r * shard + v);
        if (targets[r] < 0) {
          ASSERT_EQ(dlogits[i], 0.0f);
          continue;
        }
        double want = std::exp(double{logits[i]} - lse[r]) * scale;
        if (v == targets[r]) want -= scale;
        // f32 exponentials of an argument rounded to f32: a few units in the last place of the
        // probability (the one-hot subtraction then cancels to an absolute error of that size).
        ASSERT_NEAR(dlogits[i], want, 1e-6 * scale + 4e-7 * std::abs(want))
            << "shard " << shard << " row " << r << " id " << v;
      }
    }
  }
}

TEST_F(BackwardAvx512, ExponentialKeepsNaN) {
  ScopedIsa isa("avx512");
  std::vector<float> logits = {0.0f, std::numeric_limits<float>::quiet_NaN(), -1.0f};
  const float row_max = 0.0f;
  const int32_t target = 0;
  float sum_exp = 0, target_logit = 0;
  ShardLossTerms(logits.data(), 1, 3, &row_max, &target, 0, &sum_exp, &target_logit);
  EXPECT_TRUE(std::isnan(sum_exp)) << "a NaN logit must not vanish from the loss";
}

TEST_F(BackwardAvx512, GeluBackwardMatchesDouble) {
  ScopedIsa isa("avx512");
  std::vector<float> x = Normal(1237, 3.0f, 7), dy = Normal(1237, 1.0f, 8), dx(1237);
  x[0] = 0.0f;
  x[1] = 1e-6f;
  x[2] = 40.0f;
  x[3] = -40.0f;
  GeluTanhBackward(x.data(), dy.data(), dx.data(), static_cast<int64_t>(x.size()));
  for (size_t i = 0; i < x.size(); ++i) {
    const double v = x[i];
    const double t = std::tanh(0.7978845608028654 * (v + 0.044715 * v * v * v));
    const double slope = 0.7978845608028654 * (1 + 3 * 0.044715 * v * v);
    const double want = dy[i] * (0.5 * (1 + t) + 0.5 * v * (1 - t * t) * slope);
    ASSERT_NEAR(dx[i], want, 1e-6 * (1 + std::abs(dy[i]) * (1 + std::abs(v)))) << "x = " << v;
  }
}

TEST_F(BackwardAvx512, SumOfSquaresMatchesDouble) {
  ScopedIsa isa("avx512");
  for (int64_t n : {5, 33, 100003}) {
    const std::vector<float> x = Normal(static_cast<size_t>(n), 2.0f, 9);
    double want = 0;
    for (float v : x) want += double{v} * v;
    EXPECT_NEAR(SumOfSquares(x.data(), n), want, 1e-12 * want) << n;
  }
}

TEST_F(BackwardAvx512, AdamWGivesThePortableBits) {
  const int64_t n = 40009;  // threaded blocks and a masked tail
  const std::vector<float> grad = Normal(n, 0.01f, 11), start = Normal(n, 0.5f, 12);
  struct State {
    std::vector<float> w, m, v;
  };
  auto run = [&](const char* isa) {
    ScopedIsa scoped(isa);
    State s{start, std::vector<float>(n, 0.0f), std::vector<float>(n, 0.0f)};
    for (int64_t step = 1; step <= 3; ++step) {
      AdamWUpdate(s.w.data(), s.m.data(), s.v.data(), grad.data(), n, 1e-3f, 0.9f, 0.999f, 1e-8f,
                  0.01f, step, 0.7f);
    }
    return s;
  };
  const State portable = run("portable"), avx512 = run("avx512");
  EXPECT_EQ(std::memcmp(portable.w.data(), avx512.w.data(), n * sizeof(float)), 0);
  EXPECT_EQ(std::memcmp(portable.m.data(), avx512.m.data(), n * sizeof(float)), 0);
  EXPECT_EQ(std::memcmp(portable.v.data(), avx512.v.data(), n * sizeof(float)), 0);
  EXPECT_NE(std::memcmp(start.data(), avx512.w.data(), n * sizeof(float)), 0) << "no update";
}

}  // namespace
}  // namespace gemmapod::cpu
