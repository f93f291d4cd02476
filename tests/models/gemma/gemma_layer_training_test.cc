// The Gemma decoder layer's training path: its forward gives what inference gives (the next
// layer's input an inference run saved), and its backward matches central differences of that
// forward (f32, step 1e-2, so the bound is 2e-3 of the largest gradient: the blocks' own backwards
// are checked to 1e-5 against double-precision references in tests/models/layers/).
#include "models/gemma/gemma_layer_training.h"

#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <random>

#include "models/gemma/gemma_decoder.h"
#include "models/gemma/gemma_random.h"
#include "tests/small_gemma_config.h"

namespace gemmapod {
namespace {

class GemmaLayerTraining : public ::testing::TestWithParam<bool> {};

TEST_P(GemmaLayerTraining, ForwardIsInferencesAndBackwardMatchesFiniteDifferences) {
  const bool gemma3 = GetParam();
  ModelConfig c = SmallGemma2Config("layer-train", {64, 16, 2, 2, 1, 8, 24});
  c.attn_logit_softcap = gemma3 ? 0.0 : 2.0;
  c.qk_norm = gemma3;
  GemmaWeights weights = RandomGemmaWeights(c, DType::kF32, 21);
  GemmaDecoder model(c, weights);
  const std::vector<int32_t> tokens = {2, 17, 40, 5, 9, 33, 12};
  const int64_t T = static_cast<int64_t>(tokens.size());
  KvCache cache(c, 1, 16);
  ActivationStore store;
  model.set_activation_store(&store);
  model.Forward({{SequenceChunk{0, tokens}}}, cache, LogitRows::kAllTokens);

  // Layer 0 is sliding (window 4), layer 1 global.
  std::vector<int32_t> positions(T);
  std::vector<int64_t> lo(T), hi(T);
  for (int64_t t = 0; t < T; ++t) {
    positions[t] = static_cast<int32_t>(t);
    lo[t] = std::max<int64_t>(0, t - c.sliding_window + 1);
    hi[t] = t + 1;
  }
  const GemmaLayerWeights& w = model.weights().layers[0];
  const Tensor h = store.Get(0, ActivationStore::kInput).Clone();
  GemmaLayerSaved saved;
  const Tensor out = GemmaLayerTrainForward(c, 0, w, h, positions, lo, hi, nullptr,
                                            MatmulPrecision::kExact, saved);
  const Tensor& want = store.Get(1, ActivationStore::kInput);
  double worst = 0, scale = 0;
  for (int64_t i = 0; i < out.numel(); ++i) {
    worst = std::max(worst, double{std::fabs(out.data<float>()[i] - want.data<float>()[i])});
    scale = std::max(scale, double{std::fabs(want.data<float>()[i])});
  }
  EXPECT_LT(worst / scale, 1e-5) << "the training forward differs from inference";

  std::mt19937 rng(5);
  std::uniform_real_distribution<float> dist(-1, 1);
  Tensor r = Tensor::Empty(out.shape(), DType::kF32);
  for (int64_t i = 0; i < r.numel(); ++i) r.data<float>()[i] = dist(rng);
  GemmaLayerGrads grads = GemmaLayerGrads::ZerosFor(c, w);
  Tensor dh = Tensor::Empty(h.shape(), DType::kF32);
  GemmaLayerBackward(c, 0, w, positions, lo, hi, saved, r, nullptr, dh, grads);

  GemmaLayerWeights& mutable_w = weights.layers[0];
  Tensor x = h.Clone();
  const auto loss = [&] {
    GemmaLayerSaved s;
    const Tensor o = GemmaLayerTrainForward(c, 0, mutable_w, x, positions, lo, hi, nullptr,
                                            MatmulPrecision::kExact, s);
    double total = 0;
    for (int64_t i = 0; i < o.numel(); ++i)
      total += double{o.data<float>()[i]} * r.data<float>()[i];
    return total;
  };
  const auto check = [&](const char* what, Tensor& param, const Tensor& grad) {
    double worst = 0, scale = 1e-30;
    for (int64_t i = 0; i < param.numel(); ++i) {
      float& v = param.data<float>()[i];
      const float keep = v;
      v = keep + 1e-2f;
      const double up = loss();
      v = keep - 1e-2f;
      const double down = loss();
      v = keep;
      const double numeric = (up - down) / 2e-2;
      scale = std::max(scale, std::fabs(numeric));
      worst = std::max(worst, std::fabs(grad.data<float>()[i] - numeric));
    }
    EXPECT_LT(worst / scale, 2e-3) << what;
  };
  check("input", x, dh);
  check("attn_norm", mutable_w.attn_norm, grads.attn_norm);
  check("post_attn_norm", mutable_w.post_attn_norm, grads.post_attn_norm);
  check("mlp_norm", mutable_w.mlp_norm, grads.mlp_norm);
  check("post_mlp_norm", mutable_w.post_mlp_norm, grads.post_mlp_norm);
  check("q_proj", mutable_w.q_proj.weight, grads.attention.q_proj.weight);
  check("v_proj", mutable_w.v_proj.weight, grads.attention.v_proj.weight);
  check("o_proj", mutable_w.o_proj.weight, grads.attention.o_proj.weight);
  check("down_proj", mutable_w.down_proj.weight, grads.mlp.down_proj.weight);
  if (gemma3) check("k_norm", mutable_w.k_norm, grads.attention.k_norm);
}

INSTANTIATE_TEST_SUITE_P(Layers, GemmaLayerTraining, ::testing::Values(false, true),
                         [](const auto& info) {
                           return std::string(info.param ? "qk_norm" : "softcap");
                         });

}  // namespace
}  // namespace gemmapod
