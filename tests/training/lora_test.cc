// LoRA on a whole decoder-only Gemma: a new adapter changes nothing, the adapters' gradients
// match central differences of the loss (with everything else frozen: no gradient is even made
// for it), merging gives the same model, and training the adapters alone lowers the loss.
#include "training/lora.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "models/gemma/gemma_random.h"
#include "tests/error_of.h"
#include "tests/small_gemma_config.h"
#include "training/adamw.h"
#include "training/gemma_lm.h"

namespace gemmapod {
namespace {

ModelConfig TinyConfig() {
  ModelConfig c = SmallGemma2Config("lora-tiny", {32, 16, 2, 2, 1, 8, 32});
  c.final_logit_softcap = 5.0;
  return c;
}

PackedBatch Batch() {
  return PackSequences({{2, 7, 11, 13, 17, 19}, {3, 5, 5, 9, 30}},
                       {{1, 1, 1, 1, 1, 1}, {1, 0, 1, 1, 1}});
}

double MeanLoss(const ModelConfig& c, const GemmaWeights& w, const PackedBatch& b) {
  return GemmaLoss(c, w, b).mean();
}

// B random too, so A's gradient is not zero.
void RandomiseB(const ModelConfig& c, GemmaWeights& w) {
  std::mt19937 rng(9);
  std::normal_distribution<float> normal(0.0f, 0.3f);
  ForEachGemmaLinear(c, w, [&](const std::string&, Linear& l) {
    if (!l.lora) return;
    for (int64_t i = 0; i < l.lora->b.numel(); ++i) l.lora->b.data<float>()[i] = normal(rng);
  });
}

TEST(Lora, ANewAdapterChangesNothing) {
  const ModelConfig c = TinyConfig();
  GemmaWeights w = RandomGemmaWeights(c, DType::kF32, 1);
  const double before = MeanLoss(c, w, Batch());
  AttachLora(c, w, {4, 8, {"q_proj", "v_proj", "down_proj"}}, 1);
  EXPECT_TRUE(w.layers[0].q_proj.lora && w.layers[1].down_proj.lora);
  EXPECT_FALSE(w.layers[0].k_proj.lora);
  EXPECT_EQ(MeanLoss(c, w, Batch()), before);
}

TEST(Lora, AdapterGradientsMatchFiniteDifferencesAndTheRestIsFrozen) {
  const ModelConfig c = TinyConfig();
  GemmaWeights w = RandomGemmaWeights(c, DType::kF32, 2);
  AttachLora(c, w, {2, 4, {"q_proj", "o_proj", "up_proj", "down_proj"}}, 2);
  RandomiseB(c, w);
  GemmaGrads grads = GemmaGrads::ZerosFor(c, w);
  EXPECT_FALSE(grads.embed_tokens.defined());
  EXPECT_FALSE(grads.final_norm.defined());
  EXPECT_FALSE(grads.layers[0].attn_norm.defined());
  EXPECT_FALSE(grads.layers[0].attention.q_proj.weight.defined());
  EXPECT_FALSE(grads.layers[0].attention.k_proj.weight.defined());  // frozen, without an adapter
  const PackedBatch batch = Batch();
  GemmaLossAndGradients(c, w, batch, 1.0 / static_cast<double>(CountTargets(batch)), grads);
  const auto check = [&](const char* what, Tensor& param, const Tensor& grad) {
    double worst = 0, scale = 1e-30;
    for (int64_t i = 0; i < std::min<int64_t>(param.numel(), 24); ++i) {
      float& v = param.data<float>()[i];
      const float keep = v;
      v = keep + 1e-2f;
      const double up = MeanLoss(c, w, batch);
      v = keep - 1e-2f;
      const double down = MeanLoss(c, w, batch);
      v = keep;
      const double numeric = (up - down) / 2e-2;
      scale = std::max(scale, std::fabs(numeric));
      worst = std::max(worst, std::fabs(grad.data<float>()[i] - numeric));
    }
    EXPECT_GT(scale, 1e-4) << what << ": the check needs a gradient to compare";
    EXPECT_LT(worst / scale, 3e-3) << what;
  };
  check("layers.0.q_proj.A", w.layers[0].q_proj.lora->a, grads.layers[0].attention.q_proj.lora_a);
  check("layers.0.q_proj.B", w.layers[0].q_proj.lora->b, grads.layers[0].attention.q_proj.lora_b);
  check("layers.1.o_proj.A", w.layers[1].o_proj.lora->a, grads.layers[1].attention.o_proj.lora_a);
  check("layers.1.up_proj.B", w.layers[1].up_proj.lora->b, grads.layers[1].mlp.up_proj.lora_b);
  check("layers.0.down_proj.A", w.layers[0].down_proj.lora->a,
        grads.layers[0].mlp.down_proj.lora_a);
}

TEST(Lora, MergingGivesTheSameModel) {
  const ModelConfig c = TinyConfig();
  GemmaWeights w = RandomGemmaWeights(c, DType::kF32, 3);
  AttachLora(c, w, {4, 16, LoraOptions().targets}, 3);
  RandomiseB(c, w);
  const double adapted = MeanLoss(c, w, Batch());
  const GemmaWeights merged = MergedLoraWeights(c, w);
  EXPECT_FALSE(merged.layers[0].q_proj.lora);
  EXPECT_TRUE(w.layers[0].q_proj.lora) << "merging leaves the training weights alone";
  EXPECT_NEAR(MeanLoss(c, merged, Batch()), adapted, 1e-5 * std::fabs(adapted));
}

TEST(Lora, TrainingTheAdaptersAloneLowersTheLoss) {
  const ModelConfig c = TinyConfig();
  GemmaWeights w = RandomGemmaWeights(c, DType::kF32, 4);
  const Tensor embed_before = w.embed_tokens.weight.Clone();
  AttachLora(c, w, {8, 16, LoraOptions().targets}, 4);
  GemmaGrads grads = GemmaGrads::ZerosFor(c, w);
  AdamW optimizer({0.9f, 0.99f, 1e-8f, 0.0f});
  AddGemmaParameters(optimizer, c, w, grads);
  EXPECT_EQ(optimizer.names().size(), 2u * 7u * 2u);  // A and B of 7 matrices in 2 layers
  EXPECT_EQ(optimizer.names().front(), "model.layers.0.self_attn.q_proj.lora_A.weight");
  const PackedBatch batch = Batch();
  double first = 0, last = 0;
  for (int step = 1; step <= 60; ++step) {
    last = GemmaLossAndGradients(c, w, batch, 1.0 / static_cast<double>(CountTargets(batch)), grads)
               .mean();
    if (step == 1) first = last;
    optimizer.Step(1e-2f, 1.0);
    optimizer.ZeroGrad();
  }
  std::printf("LoRA: loss %.4f -> %.4f in 60 steps\n", first, last);
  EXPECT_LT(last, 0.5 * first);
  EXPECT_EQ(std::memcmp(embed_before.raw(), w.embed_tokens.weight.raw(), embed_before.nbytes()), 0)
      << "the frozen embedding moved";
}

TEST(Lora, BadOptionsAreNamed) {
  const ModelConfig c = TinyConfig();
  GemmaWeights w = RandomGemmaWeights(c, DType::kF32, 5);
  EXPECT_THAT(ErrorOf([&] {
                AttachLora(c, w, {4, 8, {"qkv_proj"}}, 1);
              }),
              ::testing::HasSubstr("lora.targets: unknown matrix 'qkv_proj'"));
  EXPECT_THAT(ErrorOf([&] {
                AttachLora(c, w, {64, 8, {"q_proj"}}, 1);
              }),
              ::testing::HasSubstr("lora.rank 64 is above the smaller side of "
                                   "model.layers.0.self_attn.q_proj"));
}

}  // namespace
}  // namespace gemmapod
