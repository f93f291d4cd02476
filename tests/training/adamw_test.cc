// AdamW against PyTorch's torch.optim.AdamW update written out in double precision: three steps
// with weight decay on one parameter and not the other, global-norm clipping as
// torch.nn.utils.clip_grad_norm_ does it, and a bf16 weight refreshed from its f32 master. Then
// the learning-rate schedule's shape.
#include "training/adamw.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <numbers>
#include <random>
#include <vector>

#include "tests/error_of.h"
#include "tests/gradient_check.h"
#include "training/lr_schedule.h"

namespace gemmapod {
namespace {

struct Reference {
  std::vector<double> w, m, v;
  bool decay;
};

TEST(AdamW, ThreeStepsMatchTorchsFormulaWithDecayAndClipping) {
  const AdamWOptions o{0.9f, 0.95f, 1e-8f, 0.1f};
  AdamW optimizer(o);
  Tensor a = RandomTensor({3, 4}, 1), b = RandomTensor({5}, 2).To(DType::kBF16);
  Tensor ga = Tensor::Zeros({3, 4}, DType::kF32), gb = Tensor::Zeros({5}, DType::kF32);
  optimizer.Add("a.weight", a, ga, /*decay=*/true);
  optimizer.Add("b.norm", b, gb, /*decay=*/false);
  std::vector<Reference> ref(2);
  const Tensor b32 = b.To(DType::kF32);
  ref[0] = {{a.data<float>(), a.data<float>() + a.numel()}, {}, {}, true};
  ref[1] = {{b32.data<float>(), b32.data<float>() + b32.numel()}, {}, {}, false};
  for (Reference& r : ref) r.m = r.v = std::vector<double>(r.w.size(), 0.0);

  const float lrs[3] = {1e-2f, 5e-3f, 2e-3f};
  const double max_norms[3] = {0.0, 0.5, 100.0};  // no clipping, clipping, a bound not reached
  for (int step = 1; step <= 3; ++step) {
    const Tensor new_a = RandomTensor({3, 4}, 10 + step), new_b = RandomTensor({5}, 20 + step);
    std::copy_n(new_a.data<float>(), 12, ga.data<float>());
    std::copy_n(new_b.data<float>(), 5, gb.data<float>());
    const Tensor* grads[2] = {&ga, &gb};
    double norm = 0;
    for (const Tensor* g : grads) {
      for (int64_t i = 0; i < g->numel(); ++i)
        norm += double{g->data<float>()[i]} * g->data<float>()[i];
    }
    norm = std::sqrt(norm);
    const double scale = max_norms[step - 1] > 0 && norm > max_norms[step - 1]
                             ? max_norms[step - 1] / (norm + 1e-6)
                             : 1.0;
    EXPECT_NEAR(optimizer.Step(lrs[step - 1], max_norms[step - 1]), norm, 1e-9 * norm);
    const double lr = lrs[step - 1];
    for (int p = 0; p < 2; ++p) {
      Reference& r = ref[static_cast<size_t>(p)];
      for (size_t i = 0; i < r.w.size(); ++i) {
        const double g = grads[p]->data<float>()[i] * scale;
        if (r.decay) r.w[i] *= 1 - lr * o.weight_decay;
        r.m[i] = o.beta1 * r.m[i] + (1 - o.beta1) * g;
        r.v[i] = o.beta2 * r.v[i] + (1 - o.beta2) * g * g;
        const double c1 = 1 - std::pow(double{o.beta1}, step);
        const double c2 = 1 - std::pow(double{o.beta2}, step);
        r.w[i] -= lr / c1 * r.m[i] / (std::sqrt(r.v[i]) / std::sqrt(c2) + o.eps);
      }
    }
  }
  EXPECT_EQ(optimizer.steps(), 3);
  const char* names[2] = {"a.weight", "b.norm"};
  for (int p = 0; p < 2; ++p) {
    const Tensor& master = optimizer.master(names[p]);
    const Reference& r = ref[static_cast<size_t>(p)];
    for (size_t i = 0; i < r.w.size(); ++i) {
      EXPECT_NEAR(master.data<float>()[i], r.w[i], 2e-6) << names[p] << "[" << i << "]";
      EXPECT_NEAR(optimizer.first_moment(names[p]).data<float>()[i], r.m[i], 1e-6);
    }
  }
  // The f32 weight is its master; the bf16 weight is its master rounded.
  EXPECT_EQ(a.data<float>(), optimizer.master("a.weight").data<float>());
  const Tensor rounded = optimizer.master("b.norm").To(DType::kBF16);
  EXPECT_EQ(std::memcmp(rounded.raw(), b.raw(), b.nbytes()), 0);

  optimizer.ZeroGrad();
  EXPECT_EQ(optimizer.GradNorm(), 0.0);
  EXPECT_THAT(ErrorOf([&] { optimizer.Add("a.weight", a, ga, true); }),
              testing::HasSubstr("'a.weight' added twice"));
  gb.data<float>()[2] = std::nanf("");
  EXPECT_THAT(ErrorOf([&] { optimizer.Step(1e-3f, 1.0); }),
              testing::HasSubstr("the gradient norm is nan"));
}

// ZeRO-1's shard of the state: given the global norm, a sharded optimizer updates exactly its
// elements (a range that starts inside one parameter and ends inside the next), bit for bit as
// the whole optimizer does, and leaves the others alone; its state restores from whole tensors.
TEST(AdamW, ShardedStateUpdatesItsElementsAsTheWholeOptimizerDoes) {
  const AdamWOptions o{0.9f, 0.95f, 1e-8f, 0.1f};
  Tensor a = RandomTensor({3, 4}, 1), b = RandomTensor({5}, 2).To(DType::kBF16);
  Tensor a2 = a.Clone(), b2 = b.Clone();
  Tensor ga = RandomTensor({3, 4}, 3), gb = RandomTensor({5}, 4);
  AdamW whole(o), shard(o);
  whole.Add("a", a, ga, true);
  whole.Add("b", b, gb, false);
  shard.Add("a", a2, ga, true);
  shard.Add("b", b2, gb, false);
  shard.KeepStateOf(7, 15);  // a's elements 7..11, b's 0..2
  EXPECT_EQ(shard.owned("a"), (std::pair<int64_t, int64_t>{7, 12}));
  EXPECT_EQ(shard.owned("b"), (std::pair<int64_t, int64_t>{0, 3}));
  EXPECT_EQ(shard.first_moment("a").numel(), 5);
  const Tensor a_before = a2.Clone(), b_before = b2.Clone();
  for (int step = 0; step < 2; ++step) {
    const double norm = whole.Step(1e-2f, 0.5);
    shard.Step(1e-2f, 0.5, norm);
  }
  for (int64_t i = 0; i < 12; ++i) {
    const float want = i >= 7 ? a.data<float>()[i] : a_before.data<float>()[i];
    EXPECT_EQ(std::memcmp(&a2.data<float>()[i], &want, 4), 0) << "a[" << i << "]";
  }
  for (int64_t i = 0; i < 5; ++i) {
    const BF16 want = i < 3 ? b.data<BF16>()[i] : b_before.data<BF16>()[i];
    EXPECT_EQ(std::memcmp(&b2.data<BF16>()[i], &want, 2), 0) << "b[" << i << "]";
  }
  AdamW restored(o);
  Tensor a3 = a.Clone(), b3 = b.Clone();
  restored.Add("a", a3, ga, true);
  restored.Add("b", b3, gb, false);
  restored.KeepStateOf(7, 15);
  restored.Restore("b", whole.master("b"), whole.first_moment("b"), whole.second_moment("b"));
  EXPECT_EQ(std::memcmp(restored.second_moment("b").raw(), shard.second_moment("b").raw(), 12), 0);
  EXPECT_EQ(std::memcmp(restored.master("b").raw(), shard.master("b").raw(), 12), 0);
}

TEST(LrSchedule, WarmUpThenCosineOrLinearDecay) {
  LrSchedule s;
  s.peak = 1e-3;
  s.warmup_steps = 10;
  s.total_steps = 110;
  s.min_ratio = 0.1;
  EXPECT_DOUBLE_EQ(s.At(1), 1e-4);
  EXPECT_DOUBLE_EQ(s.At(10), 1e-3);
  EXPECT_NEAR(s.At(60), 1e-3 * (0.1 + 0.9 * 0.5), 1e-15);  // half-way: cos(pi/2) = 0
  EXPECT_NEAR(s.At(110), 1e-4, 1e-15);
  s.decay = LrSchedule::Decay::kLinear;
  EXPECT_NEAR(s.At(35), 1e-3 * (0.1 + 0.9 * 0.75), 1e-15);
  s.decay = LrSchedule::Decay::kConstant;
  EXPECT_DOUBLE_EQ(s.At(100), 1e-3);
  s.warmup_steps = 200;
  EXPECT_THAT(ErrorOf([&] { s.Validate(); }), testing::HasSubstr("200 warm-up steps of 110"));
}

}  // namespace
}  // namespace gemmapod
