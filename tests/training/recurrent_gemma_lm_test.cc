// A whole RecurrentGemma trains on one rank: the training forward's loss equals the loss of the
// inference model's logits (packed documents, each resetting the recurrence, the convolution and
// the local attention window), and the gradient of parameters across the model (the tied
// embedding, RG-LRU's Λ, gates and convolution taps, an attention layer's projections and bias,
// the MLP's biases, the norms) matches central differences of the loss.
#include "training/recurrent_gemma_lm.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "models/recurrent_gemma/recurrent_gemma.h"
#include "models/recurrent_gemma/recurrent_gemma_config.h"
#include "runtime/checkpoint/hdf5_checkpoint.h"
#include "runtime/checkpoint/safetensors.h"
#include "tests/gradient_check.h"
#include "tests/training/reference_gradients.h"
#include "training/adamw.h"
#include "training/data.h"
#include "training/trainable_model.h"

namespace gemmapod {
namespace {

RecurrentGemmaConfig TinyConfig() {
  RecurrentGemmaConfig c = LoadRecurrentGemmaConfigYaml("configs/models/tiny-recurrentgemma.yaml");
  c.vocab_size = 64;
  c.num_layers = 3;  // recurrent, recurrent, attention
  c.blocks.resize(3);
  c.attention_window = 4;  // shorter than the documents, so the window matters
  c.final_logit_softcap = 5;
  return c;
}

RecurrentGemmaWeights RandomWeights(const RecurrentGemmaConfig& c, uint32_t seed) {
  RecurrentGemmaWeights w;
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 0.25f);
  ForEachRecurrentGemmaParameter(c, w, [&](const RecurrentGemmaParameter& p, Tensor& slot) {
    slot = Tensor::Empty(p.shape, DType::kF32);
    for (int64_t i = 0; i < slot.numel(); ++i) slot.data<float>()[i] = normal(rng);
  });
  return w;
}

// Two documents (the second longer than the window and the convolution) and a masked prompt.
PackedBatch Batch() {
  return PackSequences({{2, 7, 11, 13, 17, 19, 23, 29, 31, 5}, {3, 5, 5, 9, 9, 30, 1, 4}},
                       {{1, 1, 1, 1, 1, 1, 1, 1, 1, 1}, {1, 0, 0, 1, 1, 1, 1, 1}});
}

TEST(RecurrentGemmaLm, TrainingLossEqualsTheInferenceModels) {
  const RecurrentGemmaConfig c = TinyConfig();
  const RecurrentGemmaWeights w = RandomWeights(c, 1);
  const PackedBatch batch = Batch();
  RecurrentGemma model(c, w);
  RecurrentGemmaState state(c, 1);
  RecurrentChunk chunk{0, batch.tokens, batch.positions};
  const Tensor logits = model.Forward(chunk, state, /*all_logits=*/true);
  double sum = 0;
  int64_t count = 0;
  for (size_t t = 0; t < batch.tokens.size(); ++t) {
    if (batch.targets[t] < 0) continue;
    const float* row = logits.data<float>() + t * c.vocab_size;
    double max = -INFINITY, z = 0;
    for (int64_t v = 0; v < c.vocab_size; ++v) max = std::max(max, double{row[v]});
    for (int64_t v = 0; v < c.vocab_size; ++v) z += std::exp(row[v] - max);
    sum += std::log(z) + max - row[batch.targets[t]];
    ++count;
  }
  const LossSum train = RecurrentGemmaLoss(c, w, batch);
  EXPECT_EQ(train.targets, count);
  EXPECT_NEAR(train.mean(), sum / static_cast<double>(count), 2e-5);
}

TEST(RecurrentGemmaLm, GradientMatchesFiniteDifferencesAcrossTheModel) {
  const RecurrentGemmaConfig c = TinyConfig();
  RecurrentGemmaWeights w = RandomWeights(c, 2);
  const PackedBatch batch = Batch();
  RecurrentGemmaGrads grads = RecurrentGemmaGrads::ZerosFor(c, w);
  RecurrentGemmaLossAndGradients(c, w, batch, 1.0 / static_cast<double>(CountTargets(batch)),
                                 grads);
  const auto check = [&](const char* what, Tensor& param, const Tensor& grad, int64_t count) {
    const GradientAgreement a = CompareWithCentralDifferences(
        param, grad, count, [&] { return RecurrentGemmaLoss(c, w, batch).mean(); });
    EXPECT_GT(a.scale, 1e-5) << what << ": nothing to compare";
    EXPECT_LT(a.worst / a.scale, 5e-3) << what;
  };
  RecurrentGemmaLayerWeights& r0 = w.layers[0];
  RecurrentGemmaLayerGrads& g0 = grads.layers[0];
  check("embed_tokens", w.embed_tokens.weight, grads.embed_tokens, 4 * c.hidden_size);
  check("final_norm", w.final_norm, grads.final_norm, c.hidden_size);
  check("layers.0.temporal_pre_norm", r0.temporal_pre_norm, g0.temporal_pre_norm, 16);
  check("layers.0.recurrent_param", r0.recurrent.recurrent_param, g0.recurrent.recurrent_param, 16);
  check("layers.0.conv_weight", r0.recurrent.conv_weight, g0.recurrent.conv_weight, 16);
  check("layers.0.input_gate_weight", r0.recurrent.input_gate_weight,
        g0.recurrent.input_gate_weight, 16);
  check("layers.0.linear_x", r0.recurrent.linear_x.weight, g0.recurrent.linear_x.weight, 16);
  check("layers.1.mlp.up_proj.bias", w.layers[1].up_proj.bias, grads.layers[1].mlp.up_proj.bias,
        16);
  RecurrentGemmaLayerWeights& a2 = w.layers[2];
  RecurrentGemmaLayerGrads& ga2 = grads.layers[2];
  check("layers.2.q_proj", a2.attention.q_proj.weight, ga2.q_proj.weight, 32);
  check("layers.2.k_proj", a2.attention.k_proj.weight, ga2.k_proj.weight, 32);
  check("layers.2.o_proj.bias", a2.attention.o_proj.bias, ga2.o_proj.bias, 16);
  check("layers.2.channel_pre_norm", a2.channel_pre_norm, ga2.channel_pre_norm, 16);
}

// Every parameter's gradient against PyTorch autograd on transformers' RecurrentGemmaForCausalLM
// (tools/golden/make_recurrentgemma_grad_fixtures.py), through the trainer's own path: the model
// written as a checkpoint, loaded by LoadTrainableModel, its parameters registered by name.
TEST(RecurrentGemmaLm, EveryGradientMatchesPyTorch) {
  const std::string dir = "tests/fixtures/models/recurrentgemma/hf";
  const RecurrentGemmaConfig c = ReadHfRecurrentGemmaConfig(dir + "/config.json");
  RecurrentGemmaWeights w = LoadRecurrentGemmaWeights(c, *OpenSafetensors(dir));
  const std::string path = (std::filesystem::temp_directory_path() /
                            ("rg-reference-" + std::to_string(getpid()) + ".h5"))
                               .string();
  {
    Hdf5CheckpointWriter writer = Hdf5CheckpointWriter::Create(path);
    writer.SetConfig(ToAttributes(c));
    ForEachRecurrentGemmaParameter(
        c, w, [&](const RecurrentGemmaParameter& p, Tensor& slot) { writer.Write(p.name, slot); });
    writer.Commit();
  }
  const auto model = LoadTrainableModel(*Hdf5CheckpointReader::Open(path), DType::kF32);
  std::filesystem::remove(path);
  EXPECT_EQ(model->family(), "recurrent_gemma");
  AdamW optimizer({});
  model->RegisterParameters(optimizer);

  std::ifstream in("tests/fixtures/models/recurrentgemma/training/reference.json");
  const nlohmann::json ref = nlohmann::json::parse(in);
  const auto sequences = ref["sequences"].get<std::vector<std::vector<int32_t>>>();
  std::vector<std::vector<uint8_t>> learn;
  for (const auto& seq : sequences) learn.emplace_back(seq.size(), 1);
  for (int j = 1; j <= ref["masked_prefix"].get<int>(); ++j) learn[0][static_cast<size_t>(j)] = 0;
  const PackedBatch batch = PackSequences(sequences, learn);
  std::vector<TrainingExample> examples(sequences.size());
  std::vector<const TrainingExample*> rows;
  for (size_t i = 0; i < sequences.size(); ++i) {
    examples[i].tokens = sequences[i];
    examples[i].learn = learn[i];
    rows.push_back(&examples[i]);
  }
  const LossSum loss =
      model->LossAndGradients(rows, 1.0 / static_cast<double>(CountTargets(batch)), false);
  const double want = ref["loss"].get<double>();
  EXPECT_NEAR(loss.mean(), want, 1e-5 * want);
  const auto torch =
      OpenSafetensors("tests/fixtures/models/recurrentgemma/training/grads.safetensors");
  const double largest = ref["largest_gradient"].get<double>();
  const WorstGradient worst = CompareGradients(optimizer, *torch);
  std::printf(
      "recurrentgemma: loss %.6f (PyTorch %.6f), %zu gradients, worst %.2e of the largest "
      "(%s)\n",
      loss.mean(), want, worst.compared, worst.difference / largest, worst.name.c_str());
  EXPECT_LT(worst.difference, 1e-4 * largest) << worst.name;
}

}  // namespace
}  // namespace gemmapod
