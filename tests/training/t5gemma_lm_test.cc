// A whole T5Gemma trains on one rank: the training forward's loss equals the loss of the
// inference model's logits (two pairs of different lengths, the encoder's sliding layers
// narrower than the inputs), and the gradient of parameters on both sides matches central
// differences of the loss: the decoder's, its cross-attention's, and the encoder's, whose only
// path to the loss runs through every decoder layer's cross-attention.
#include "training/t5gemma_lm.h"

#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "models/t5gemma/t5gemma.h"
#include "models/t5gemma/t5gemma_config.h"
#include "models/t5gemma/t5gemma_random.h"
#include "runtime/checkpoint/safetensors.h"
#include "tests/gradient_check.h"
#include "tests/training/reference_gradients.h"
#include "training/adamw.h"

namespace gemmapod {
namespace {

T5GemmaConfig TinyConfig() {
  T5GemmaConfig c = LoadT5GemmaConfigYaml("configs/models/tiny-t5gemma.yaml");
  for (ModelConfig* m : {&c.encoder, &c.decoder}) {
    m->vocab_size = 64;
    m->num_layers = 2;
    m->layer_kinds.resize(2);
  }
  return c;
}

std::vector<std::vector<int32_t>> Inputs() { return {{5, 9, 13, 22, 31, 7, 8}, {17, 3, 44}}; }
std::vector<std::vector<int32_t>> Targets() { return {{2, 11, 12, 40}, {2, 6, 60, 61, 33, 9}}; }

TEST(T5GemmaLm, TrainingLossEqualsTheInferenceModels) {
  const T5GemmaConfig c = TinyConfig();
  const T5GemmaWeights w = RandomT5GemmaWeights(c, DType::kF32, 1);
  const Seq2SeqBatch batch = PackSeq2Seq(Inputs(), Targets());
  T5Gemma model(c, w);
  const Tensor logits = model.Forward(Inputs(), Targets());
  double sum = 0;
  int64_t count = 0;
  const int64_t V = c.decoder.vocab_size;
  for (size_t t = 0; t < batch.decoder.tokens.size(); ++t) {
    if (batch.decoder.targets[t] < 0) continue;
    const float* row = logits.data<float>() + t * V;
    double max = -INFINITY, z = 0;
    for (int64_t v = 0; v < V; ++v) max = std::max(max, double{row[v]});
    for (int64_t v = 0; v < V; ++v) z += std::exp(row[v] - max);
    sum += std::log(z) + max - row[batch.decoder.targets[t]];
    ++count;
  }
  const LossSum train = T5GemmaLoss(c, w, batch);
  EXPECT_EQ(train.targets, count);
  EXPECT_NEAR(train.mean(), sum / static_cast<double>(count), 2e-5);
}

TEST(T5GemmaLm, GradientMatchesFiniteDifferencesOnBothSides) {
  const T5GemmaConfig c = TinyConfig();
  T5GemmaWeights w = RandomT5GemmaWeights(c, DType::kF32, 2);
  const Seq2SeqBatch batch = PackSeq2Seq(Inputs(), Targets(), {{1, 1, 0, 1}, {1, 1, 1, 1, 1, 1}});
  T5GemmaGrads grads = T5GemmaGrads::ZerosFor(c, w);
  T5GemmaLossAndGradients(c, w, batch, 1.0 / static_cast<double>(CountTargets(batch.decoder)),
                          grads);
  const auto check = [&](const char* what, Tensor& param, const Tensor& grad, int64_t count) {
    const GradientAgreement a = CompareWithCentralDifferences(
        param, grad, count, [&] { return T5GemmaLoss(c, w, batch).mean(); });
    EXPECT_GT(a.scale, 1e-5) << what << ": nothing to compare";
    EXPECT_LT(a.worst / a.scale, 5e-3) << what;
  };
  // Rows 5.. of the encoder's table: tokens 5, 7, 8, 9 are inputs.
  check("encoder.embed_tokens", w.encoder.embed_tokens.weight, grads.encoder.embed_tokens,
        10 * c.encoder.hidden_size);
  check("encoder.layers.0.q_proj", w.encoder.layers[0].q_proj.weight,
        grads.encoder.layers[0].attention.q_proj.weight, 32);
  check("encoder.layers.1.down_proj", w.encoder.layers[1].down_proj.weight,
        grads.encoder.layers[1].mlp.down_proj.weight, 32);
  check("encoder.final_norm", w.encoder.final_norm, grads.encoder.final_norm, 16);
  check("cross.0.k_proj", w.cross[0].k_proj.weight, grads.cross[0].k_proj.weight, 32);
  check("cross.1.v_proj", w.cross[1].v_proj.weight, grads.cross[1].v_proj.weight, 32);
  check("cross.1.q_proj", w.cross[1].q_proj.weight, grads.cross[1].q_proj.weight, 32);
  check("cross.0.pre_norm", w.cross[0].pre_norm, grads.cross[0].pre_norm, 16);
  check("cross.0.post_norm", w.cross[0].post_norm, grads.cross[0].post_norm, 16);
  check("decoder.layers.0.k_proj", w.decoder.layers[0].k_proj.weight,
        grads.decoder.layers[0].attention.k_proj.weight, 32);
  check("decoder.layers.1.post_mlp_norm", w.decoder.layers[1].post_mlp_norm,
        grads.decoder.layers[1].post_mlp_norm, 16);
  check("decoder.embed_tokens", w.decoder.embed_tokens.weight, grads.decoder.embed_tokens,
        4 * c.decoder.hidden_size);
}

// Every parameter's gradient against PyTorch autograd on transformers'
// T5GemmaForConditionalGeneration (tools/golden/make_t5gemma_grad_fixtures.py), for the balanced
// and the unbalanced (wider encoder) fixtures.
class T5GemmaLmReference : public ::testing::TestWithParam<const char*> {};

TEST_P(T5GemmaLmReference, EveryGradientMatchesPyTorch) {
  const std::string dir = std::string("tests/fixtures/models/t5gemma/") + GetParam();
  const T5GemmaConfig c = ReadHfT5GemmaConfig(dir + "/config.json");
  T5GemmaWeights w = LoadT5GemmaShard(c, WholeT5Gemma(c), *OpenSafetensors(dir));
  ForEachT5GemmaShardParameter(c, WholeT5Gemma(c), w,
                               [](const GemmaParameter& p, const ParameterSlice&, Tensor& slot) {
                                 if (!p.is_norm && slot.dtype() != DType::kF32) {
                                   slot = slot.To(DType::kF32);
                                 }
                               });
  std::ifstream in(dir + "/training/reference.json");
  const nlohmann::json ref = nlohmann::json::parse(in);
  const auto inputs = ref["inputs"].get<std::vector<std::vector<int32_t>>>();
  const auto targets = ref["targets"].get<std::vector<std::vector<int32_t>>>();
  std::vector<std::vector<uint8_t>> learn;
  for (const auto& t : targets) learn.emplace_back(t.size(), 1);
  learn[0][ref["masked_target"].get<size_t>()] = 0;
  const Seq2SeqBatch batch = PackSeq2Seq(inputs, targets, learn);
  T5GemmaGrads grads = T5GemmaGrads::ZerosFor(c, w);
  AdamW optimizer({});
  AddT5GemmaParameters(optimizer, c, w, grads);
  const LossSum loss = T5GemmaLossAndGradients(
      c, w, batch, 1.0 / static_cast<double>(CountTargets(batch.decoder)), grads);
  const double want = ref["loss"].get<double>();
  EXPECT_NEAR(loss.mean(), want, 1e-5 * want);
  const auto torch = OpenSafetensors(dir + "/training/grads.safetensors");
  const double largest = ref["largest_gradient"].get<double>();
  const WorstGradient worst = CompareGradients(optimizer, *torch);
  std::printf(
      "t5gemma %s: loss %.6f (PyTorch %.6f), %zu gradients, worst %.2e of the largest "
      "(%s)\n",
      GetParam(), loss.mean(), want, worst.compared, worst.difference / largest,
      worst.name.c_str());
  EXPECT_LT(worst.difference, 1e-4 * largest) << worst.name;
}

INSTANTIATE_TEST_SUITE_P(Fixtures, T5GemmaLmReference, ::testing::Values("balanced", "unbalanced"));

}  // namespace
}  // namespace gemmapod
