// The attention backward kernel gives the same bits for any thread count (its heads' partial key
// and value gradients are added in head order), for MQA (one key/value head shared by every
// query head) and GQA. Its values are checked against central differences in
// tests/runtime/ops/grad_ops_test.cc.
#include "runtime/cpu/attention_backward.h"

#include <gtest/gtest.h>
#include <omp.h>

#include <cstring>
#include <random>
#include <vector>

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

}  // namespace
}  // namespace gemmapod::cpu
