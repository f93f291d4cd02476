// The attention backward kernel gives the same bits for any thread count (its heads' partial key
// and value gradients are added in head order), for MQA (one key/value head shared by every
// query head) and GQA. Its values are checked against central differences in
// tests/runtime/ops/grad_ops_test.cc. The AVX-512 head products agree with the portable ones.
#include "runtime/cpu/attention_backward.h"

#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "runtime/cpu/gemv.h"

namespace gemmapod::cpu {
namespace {

struct Gradients {
  std::vector<float> dq, dk, dv;
};

Gradients RunWithThreads(const AttentionProblem& p, int64_t n, int threads) {
  std::mt19937 rng(3);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const int64_t q_row = p.num_heads * p.head_dim, kv_row = p.num_kv_heads * p.head_dim;
  std::vector<float> q(static_cast<size_t>(n * q_row)), k(static_cast<size_t>(n * kv_row)),
      v(k.size()), dout(q.size());
  for (auto* t : {&q, &k, &v, &dout}) {
    for (float& x : *t) x = normal(rng);
  }
  std::vector<int64_t> lo(static_cast<size_t>(n)), hi(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    lo[static_cast<size_t>(i)] = std::max<int64_t>(0, i - 40);  // a sliding window
    hi[static_cast<size_t>(i)] = i + 1;
  }
  Gradients g{std::vector<float>(q.size()), std::vector<float>(k.size()),
              std::vector<float>(k.size())};
  const int before = omp_get_max_threads();
  omp_set_num_threads(threads);
  AttentionBackward(p, q.data(), n, k.data(), v.data(), n, dout.data(), lo.data(), hi.data(),
                    g.dq.data(), g.dk.data(), g.dv.data());
  omp_set_num_threads(before);
  return g;
}

bool Same(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

TEST(AttentionBackwardKernel, SameBitsForAnyThreadCount) {
  for (const auto& [heads, kv_heads] : {std::pair<int64_t, int64_t>{4, 1}, {8, 2}}) {
    AttentionProblem p;
    p.num_heads = heads;
    p.num_kv_heads = kv_heads;
    p.head_dim = 32;
    p.kv_row_stride = kv_heads * 32;
    p.scale = 0.17f;
    p.softcap = 20.0f;
    const Gradients one = RunWithThreads(p, 96, 1), three = RunWithThreads(p, 96, 3),
                    two = RunWithThreads(p, 96, 2);
    EXPECT_TRUE(Same(one.dq, three.dq) && Same(one.dq, two.dq)) << heads << "/" << kv_heads;
    EXPECT_TRUE(Same(one.dk, three.dk) && Same(one.dk, two.dk)) << heads << "/" << kv_heads;
    EXPECT_TRUE(Same(one.dv, three.dv) && Same(one.dv, two.dv)) << heads << "/" << kv_heads;
    double norm = 0;
    for (float x : one.dk) norm += static_cast<double>(x) * x;
    EXPECT_GT(norm, 0.0) << "the check needs a gradient";
  }
}

// Largest |a - b| over the largest |b|.
double RelativeDifference(const std::vector<float>& a, const std::vector<float>& b) {
  double diff = 0, scale = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    diff = std::max(diff, std::abs(static_cast<double>(a[i]) - b[i]));
    scale = std::max(scale, std::abs(static_cast<double>(b[i])));
  }
  return diff / scale;
}

TEST(AttentionBackwardKernel, Avx512HeadProductsAgreeWithPortable) {
  if (!CpuSupports(CpuIsa::kAvx512)) GTEST_SKIP() << "no AVX-512 on this CPU";
  AttentionProblem p;
  p.num_heads = 4;
  p.num_kv_heads = 2;
  p.head_dim = 48;  // three vectors of 16: the AVX-512 path
  p.kv_row_stride = 2 * 48;
  p.scale = 0.14f;
  p.softcap = 30.0f;
  setenv("GEMMAPOD_CPU_ISA", "portable", 1);
  const Gradients portable = RunWithThreads(p, 80, 2);
  setenv("GEMMAPOD_CPU_ISA", "avx512", 1);
  const Gradients avx512 = RunWithThreads(p, 80, 2);
  unsetenv("GEMMAPOD_CPU_ISA");
  // The products are summed in another order (f32 lanes): agreement to f32 rounding.
  EXPECT_LT(RelativeDifference(avx512.dq, portable.dq), 1e-5);
  EXPECT_LT(RelativeDifference(avx512.dk, portable.dk), 1e-5);
  EXPECT_LT(RelativeDifference(avx512.dv, portable.dv), 1e-5);
  EXPECT_FALSE(Same(avx512.dq, portable.dq)) << "both runs took the same path";
}

}  // namespace
}  // namespace gemmapod::cpu
