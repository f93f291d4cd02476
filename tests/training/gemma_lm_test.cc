// A whole decoder-only Gemma trains on one rank: the loss's gradient matches central differences
// of the loss for parameters across the model (the tied embedding, a layer's projections and
// norms, the final norm), and AdamW on those gradients makes a tiny model memorise a handful of
// sequences (the bar: loss under 0.05).
#include "training/gemma_lm.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

#include "models/gemma/gemma_random.h"
#include "tests/error_of.h"
#include "tests/gradient_check.h"
#include "tests/small_gemma_config.h"
#include "training/adamw.h"
#include "training/rl_formulas.h"

namespace gemmapod {
namespace {

ModelConfig TinyConfig() {
  ModelConfig c = SmallGemma2Config("train-tiny", {32, 16, 2, 2, 1, 8, 32});
  c.final_logit_softcap = 5.0;
  c.attn_logit_softcap = 3.0;
  return c;
}

// Each sequence's first token tells it apart: from a shared first token the next one could not be
// learnt (three sequences starting alike leave log 3 at that position, 0.157 over the batch).
std::vector<std::vector<int32_t>> Sequences() {
  return {{2, 7, 11, 13, 17, 19, 23, 29}, {3, 5, 5, 9, 9, 30, 1, 4}, {4, 12, 8, 6, 3, 27, 25, 0}};
}

// The batch's mean loss; grads += its gradient.
double MeanLossAndGradients(const ModelConfig& c, const GemmaWeights& w, const PackedBatch& batch,
                            GemmaGrads& grads) {
  return GemmaLossAndGradients(c, w, batch, 1.0 / static_cast<double>(CountTargets(batch)), grads)
      .mean();
}

TEST(GemmaLm, GradientMatchesFiniteDifferencesAcrossTheModel) {
  const ModelConfig c = TinyConfig();
  GemmaWeights w = RandomGemmaWeights(c, DType::kF32, 3);
  const PackedBatch batch = PackSequences(Sequences());
  GemmaGrads grads = GemmaGrads::ZerosFor(c, w);
  MeanLossAndGradients(c, w, batch, grads);
  const auto check = [&](const char* what, Tensor& param, const Tensor& grad, int64_t count) {
    double worst = 0, scale = 1e-30;
    for (int64_t i = 0; i < std::min(count, param.numel()); ++i) {
      float& v = param.data<float>()[i];
      const float keep = v;
      GemmaGrads scratch = GemmaGrads::ZerosFor(c, w);
      v = keep + 1e-2f;
      const double up = MeanLossAndGradients(c, w, batch, scratch);
      v = keep - 1e-2f;
      const double down = MeanLossAndGradients(c, w, batch, scratch);
      v = keep;
      const double numeric = (up - down) / 2e-2;
      scale = std::max(scale, std::fabs(numeric));
      worst = std::max(worst, std::fabs(grad.data<float>()[i] - numeric));
    }
    EXPECT_LT(worst / scale, 3e-3) << what;
  };
  // Rows 0..3 of the table: tokens 2 and 3 are rows the lookup and the head both use.
  check("embed_tokens", w.embed_tokens.weight, grads.embed_tokens, 4 * c.hidden_size);
  check("final_norm", w.final_norm, grads.final_norm, c.hidden_size);
  check("layers.0.q_proj", w.layers[0].q_proj.weight, grads.layers[0].attention.q_proj.weight, 48);
  check("layers.1.attn_norm", w.layers[1].attn_norm, grads.layers[1].attn_norm, c.hidden_size);
  check("layers.1.down_proj", w.layers[1].down_proj.weight, grads.layers[1].mlp.down_proj.weight,
        48);
}

TEST(GemmaLm, ATinyModelMemorisesAHandfulOfSequences) {
  const ModelConfig c = TinyConfig();
  GemmaWeights w = RandomGemmaWeights(c, DType::kF32, 4);
  GemmaGrads grads = GemmaGrads::ZerosFor(c, w);
  AdamW optimizer({0.9f, 0.95f, 1e-8f, 0.0f});
  AddGemmaParameters(optimizer, c, w, grads);
  const PackedBatch batch = PackSequences(Sequences());
  double first = 0, loss = 0;
  for (int step = 1; step <= 200; ++step) {
    optimizer.ZeroGrad();
    loss = MeanLossAndGradients(c, w, batch, grads);
    if (step == 1) first = loss;
    optimizer.Step(1e-2f, 1.0);
  }
  std::printf("GEMMA_LM memorisation: loss %.4f at step 1, %.4f after 200 steps\n", first, loss);
  EXPECT_GT(first, 2.0);  // about log(32) for random weights
  EXPECT_LT(loss, 0.05);
}

// Micro-batches scaled by the whole step's target count add up to the whole batch's mean-loss
// gradient (not a mean of per-micro-batch means, which would weigh short micro-batches more).
TEST(GemmaLm, MicroBatchesAccumulateToTheWholeBatchGradient) {
  const ModelConfig c = TinyConfig();
  const GemmaWeights w = RandomGemmaWeights(c, DType::kF32, 6);
  const std::vector<std::vector<int32_t>> all = {{2, 7, 11, 13, 17}, {3, 5}, {4, 12, 8, 6}};
  GemmaGrads whole = GemmaGrads::ZerosFor(c, w);
  const double mean = MeanLossAndGradients(c, w, PackSequences(all), whole);
  GemmaGrads parts = GemmaGrads::ZerosFor(c, w);
  const PackedBatch first = PackSequences({all[0]}), second = PackSequences({all[1], all[2]});
  const double scale = 1.0 / static_cast<double>(CountTargets(first) + CountTargets(second));
  const LossSum a = GemmaLossAndGradients(c, w, first, scale, parts);
  const LossSum b = GemmaLossAndGradients(c, w, second, scale, parts);
  EXPECT_EQ(a.targets + b.targets, 8);
  EXPECT_NEAR((a.sum + b.sum) / 8.0, mean, 1e-6);
  EXPECT_LT(MaxRelativeError(parts.layers[1].mlp.down_proj.weight,
                             ToDoubles(whole.layers[1].mlp.down_proj.weight)),
            1e-5);
  EXPECT_LT(MaxRelativeError(parts.embed_tokens, ToDoubles(whole.embed_tokens)), 1e-5);
  // The forward alone gives the same loss.
  EXPECT_NEAR(GemmaLoss(c, w, PackSequences(all)).mean(), mean, 1e-6);
}

// The cross-entropy written as a token objective (loss -sum log p, slope -1 per target) takes the
// same path through the head's per-row gradient scale and gives the same bits.
TEST(GemmaLm, TheCrossEntropyAsATokenObjectiveGivesTheSameGradients) {
  const ModelConfig c = TinyConfig();
  const GemmaWeights w = RandomGemmaWeights(c, DType::kF32, 8);
  PackedBatch batch = PackSequences(
      Sequences(),
      {{0, 0, 1, 1, 1, 1, 1, 1}, std::vector<uint8_t>(8, 1), std::vector<uint8_t>(8, 1)});
  const double scale = 1.0 / static_cast<double>(CountTargets(batch));
  GemmaGrads plain = GemmaGrads::ZerosFor(c, w), objective = GemmaGrads::ZerosFor(c, w);
  const LossSum a = GemmaLossAndGradients(c, w, batch, scale, plain);
  int64_t seen = 0;
  batch.objective = [&](const std::vector<double>& logp, std::vector<double>* dlogp) {
    seen = static_cast<int64_t>(logp.size());
    LossSum l;
    for (double v : logp) l.sum -= v;
    l.targets = static_cast<int64_t>(logp.size());
    if (dlogp != nullptr) dlogp->assign(logp.size(), -1.0);
    return l;
  };
  const LossSum b = GemmaLossAndGradients(c, w, batch, scale, objective);
  EXPECT_EQ(seen, CountTargets(batch));
  EXPECT_EQ(a.targets, b.targets);
  EXPECT_NEAR(a.sum, b.sum, 1e-9 * std::abs(a.sum));
  const auto same = [](const Tensor& x, const Tensor& y) {
    return x.nbytes() == y.nbytes() && std::memcmp(x.raw(), y.raw(), x.nbytes()) == 0;
  };
  EXPECT_TRUE(same(plain.embed_tokens, objective.embed_tokens));
  EXPECT_TRUE(same(plain.final_norm, objective.final_norm));
  EXPECT_TRUE(
      same(plain.layers[0].attention.q_proj.weight, objective.layers[0].attention.q_proj.weight));
  // The forward alone hands the objective the same log-probabilities.
  EXPECT_NEAR(GemmaLoss(c, w, batch).sum, a.sum, 1e-5 * std::abs(a.sum));
}

// DPO over a chosen/rejected pair (each sequence's learned log-probabilities summed, a fixed
// reference): the gradient through the head's per-row scale matches central differences of the
// objective's loss, and the slopes reach rows of both sequences with opposite signs.
TEST(GemmaLm, ADpoObjectivesGradientMatchesFiniteDifferences) {
  const ModelConfig c = TinyConfig();
  GemmaWeights w = RandomGemmaWeights(c, DType::kF32, 9);
  // A shared prompt (2, 7, 11) and two answers; only the answers are learned.
  PackedBatch batch = PackSequences({{2, 7, 11, 13, 17, 19}, {2, 7, 11, 5, 9}},
                                    {{0, 0, 0, 1, 1, 1}, {0, 0, 0, 1, 1}});
  const std::vector<int64_t> rows_of = {3, 2};  // learned targets per sequence
  batch.objective = [&](const std::vector<double>& logp, std::vector<double>* dlogp) {
    EXPECT_EQ(logp.size(), 5u);
    double chosen = 0, rejected = 0;
    for (int64_t i = 0; i < rows_of[0]; ++i) chosen += logp[static_cast<size_t>(i)];
    for (size_t i = static_cast<size_t>(rows_of[0]); i < logp.size(); ++i) rejected += logp[i];
    const PairLoss p = PreferencePairLoss(PreferenceLoss::kDpo, chosen, rejected, -9.0, -6.5, 0.5);
    if (dlogp != nullptr) {
      dlogp->assign(logp.size(), p.slope_rejected);
      std::fill(dlogp->begin(), dlogp->begin() + rows_of[0], p.slope_chosen);
    }
    return LossSum{p.loss, 1};
  };
  GemmaGrads grads = GemmaGrads::ZerosFor(c, w);
  GemmaLossAndGradients(c, w, batch, 1.0, grads);
  const auto loss = [&] { return GemmaLoss(c, w, batch).sum; };
  const auto check = [&](const char* what, Tensor& param, const Tensor& grad, int64_t count) {
    const GradientAgreement a = CompareWithCentralDifferences(param, grad, count, loss);
    EXPECT_GT(a.scale, 1e-4) << what << ": the loss does not move";
    EXPECT_LT(a.worst / a.scale, 3e-3) << what;
  };
  check("embed_tokens", w.embed_tokens.weight, grads.embed_tokens, 20 * c.hidden_size);
  check("final_norm", w.final_norm, grads.final_norm, c.hidden_size);
  check("layers.0.q_proj", w.layers[0].q_proj.weight, grads.layers[0].attention.q_proj.weight, 48);
  check("layers.1.down_proj", w.layers[1].down_proj.weight, grads.layers[1].mlp.down_proj.weight,
        48);
}

// A reward model's head (a [1, d] scoring head on each sequence's last token after the final
// norm) under the Bradley-Terry loss of a chosen/rejected pair: its gradient, the final norm's and
// the layers' below it match central differences of the loss, and only the last tokens feed it.
TEST(GemmaLm, AScoringHeadsGradientMatchesFiniteDifferences) {
  ModelConfig c = TinyConfig();
  c.num_labels = 1;
  GemmaWeights w = RandomGemmaWeights(c, DType::kF32, 10);
  w.score.weight = Tensor::Empty({1, c.hidden_size}, DType::kF32);
  for (int64_t i = 0; i < c.hidden_size; ++i) {
    w.score.weight.data<float>()[i] = 0.1f * static_cast<float>((i * 7) % 11 - 5);
  }
  PackedBatch batch = PackSequences({{2, 7, 11, 13, 17, 19}, {2, 7, 11, 5, 9}},
                                    {{0, 0, 0, 1, 1, 1}, {0, 0, 0, 1, 1}});
  std::vector<double> seen;
  batch.score_objective = [&](const std::vector<double>& scores, std::vector<double>* dscore) {
    seen = scores;
    const PairLoss p = BradleyTerryLoss(scores[0], scores[1], 0.5);
    if (dscore != nullptr) *dscore = {p.slope_chosen, p.slope_rejected};
    return LossSum{p.loss, 1};
  };
  GemmaGrads grads = GemmaGrads::ZerosFor(c, w);
  ASSERT_TRUE(grads.score.defined());
  GemmaLossAndGradients(c, w, batch, 1.0, grads);
  ASSERT_EQ(seen.size(), 2u);  // one score per sequence
  EXPECT_NE(seen[0], seen[1]);
  const auto loss = [&] { return GemmaLoss(c, w, batch).sum; };
  const auto check = [&](const char* what, Tensor& param, const Tensor& grad, int64_t count) {
    const GradientAgreement a = CompareWithCentralDifferences(param, grad, count, loss);
    EXPECT_GT(a.scale, 1e-4) << what << ": the loss does not move";
    EXPECT_LT(a.worst / a.scale, 3e-3) << what;
  };
  check("score", w.score.weight, grads.score, c.hidden_size);
  check("final_norm", w.final_norm, grads.final_norm, c.hidden_size);
  check("layers.1.down_proj", w.layers[1].down_proj.weight, grads.layers[1].mlp.down_proj.weight,
        48);
  check("embed_tokens", w.embed_tokens.weight, grads.embed_tokens, 20 * c.hidden_size);
  // The language-model head takes no part: the embedding's gradient comes from lookups alone.
  double untouched = 0;
  for (int64_t i = 0; i < c.hidden_size; ++i) {
    untouched += std::abs(grads.embed_tokens.data<float>()[30 * c.hidden_size + i]);
  }
  EXPECT_EQ(untouched, 0.0) << "token 30 is in no sequence";
}

// Recomputing each layer in the backward from its saved input gives the same bits as keeping
// every activation.
TEST(GemmaLm, RecomputingLayersGivesTheSameGradients) {
  const ModelConfig c = TinyConfig();
  const GemmaWeights w = RandomGemmaWeights(c, DType::kF32, 7);
  const PackedBatch batch = PackSequences(Sequences());
  const double scale = 1.0 / static_cast<double>(CountTargets(batch));
  GemmaGrads kept = GemmaGrads::ZerosFor(c, w), recomputed = GemmaGrads::ZerosFor(c, w);
  const LossSum a = GemmaLossAndGradients(c, w, batch, scale, kept, /*recompute=*/false);
  const LossSum b = GemmaLossAndGradients(c, w, batch, scale, recomputed, /*recompute=*/true);
  EXPECT_EQ(a.sum, b.sum);
  const auto same = [](const Tensor& x, const Tensor& y) {
    return x.nbytes() == y.nbytes() && std::memcmp(x.raw(), y.raw(), x.nbytes()) == 0;
  };
  EXPECT_TRUE(same(kept.embed_tokens, recomputed.embed_tokens));
  for (size_t l = 0; l < kept.layers.size(); ++l) {
    EXPECT_TRUE(
        same(kept.layers[l].attention.q_proj.weight, recomputed.layers[l].attention.q_proj.weight))
        << l;
    EXPECT_TRUE(
        same(kept.layers[l].mlp.down_proj.weight, recomputed.layers[l].mlp.down_proj.weight))
        << l;
    EXPECT_TRUE(same(kept.layers[l].attn_norm, recomputed.layers[l].attn_norm)) << l;
  }
}

// Two pipeline stages chained on one process: micro-batch by micro-batch (each stage's backward
// right after the forwards) they give the whole model's bits, the tied embedding's gradient
// summed from the first stage's lookups and the last stage's head; all forwards before the
// backwards (GPipe's order) add the same terms in another order.
TEST(GemmaLm, PipelineStagesChainedGiveTheWholeModelsGradients) {
  const ModelConfig c = TinyConfig();
  ASSERT_GE(c.num_layers, 2);
  const GemmaWeights w = RandomGemmaWeights(c, DType::kF32, 8);
  const std::vector<PackedBatch> micro = {PackSequences({Sequences()[0]}),
                                          PackSequences({Sequences()[1], Sequences()[2]})};
  const double scale = 1.0 / static_cast<double>(CountTargets(micro[0]) + CountTargets(micro[1]));
  GemmaGrads whole = GemmaGrads::ZerosFor(c, w);
  double whole_loss = 0;
  for (const PackedBatch& b : micro) whole_loss += GemmaLossAndGradients(c, w, b, scale, whole).sum;

  const int64_t cut = c.num_layers / 2;
  const GemmaShard first = MakeGemmaShard(c, 1, 0, 0, cut, true, false);
  const GemmaShard last = MakeGemmaShard(c, 1, 0, cut, c.num_layers, false, true);
  const GemmaStageLoss::GradientScale gradient{scale};
  const auto same = [](const Tensor& x, const Tensor& y) {
    return x.nbytes() == y.nbytes() && std::memcmp(x.raw(), y.raw(), x.nbytes()) == 0;
  };
  for (const bool gpipe : {false, true}) {
    SCOPED_TRACE(gpipe ? "gpipe" : "micro-batch by micro-batch");
    GemmaGrads staged = GemmaGrads::ZerosFor(c, w);
    GemmaStageLoss a(c, w, staged, first, false, {}), b(c, w, staged, last, false, {});
    double loss = 0;
    const auto forward = [&](int64_t m) {
      LossSum none, part;
      const Tensor h = a.Forward(m, micro[m], Tensor(), &gradient, none);
      EXPECT_EQ(none.targets, 0);
      EXPECT_FALSE(b.Forward(m, micro[m], h, &gradient, part).defined());
      loss += part.sum;
    };
    const auto backward = [&](int64_t m) {
      EXPECT_FALSE(a.Backward(m, b.Backward(m, Tensor())).defined());
    };
    for (int64_t m = 0; m < 2; ++m) {
      forward(m);
      if (!gpipe) backward(m);
    }
    if (gpipe) {
      for (int64_t m = 0; m < 2; ++m) backward(m);
    }
    EXPECT_EQ(loss, whole_loss);
    for (size_t l = 0; l < staged.layers.size(); ++l) {
      EXPECT_TRUE(
          same(staged.layers[l].attention.q_proj.weight, whole.layers[l].attention.q_proj.weight))
          << l;
      EXPECT_TRUE(same(staged.layers[l].mlp_norm, whole.layers[l].mlp_norm)) << l;
    }
    EXPECT_TRUE(same(staged.final_norm, whole.final_norm));
    if (!gpipe) {
      EXPECT_TRUE(same(staged.embed_tokens, whole.embed_tokens));
    } else {
      EXPECT_LT(MaxRelativeError(staged.embed_tokens, ToDoubles(whole.embed_tokens)), 1e-5);
    }
  }
  // A stage's input of the wrong width, and a backward without its forward, are named.
  GemmaGrads g = GemmaGrads::ZerosFor(c, w);
  GemmaStageLoss b(c, w, g, last, false, {});
  LossSum none;
  EXPECT_THAT(ErrorOf([&] {
                b.Forward(0, micro[0], Tensor::Zeros({5, 3}, DType::kF32), &gradient, none);
              }),
              ::testing::HasSubstr("pipeline: stage input"));
  EXPECT_THAT(ErrorOf([&] { b.Backward(3, Tensor()); }),
              ::testing::HasSubstr("backward of micro-batch 3 without its forward"));
}

TEST(GemmaLm, BatchesWithoutTargetsOrWithBadMasksAreNamed) {
  const ModelConfig c = TinyConfig();
  GemmaWeights w = RandomGemmaWeights(c, DType::kF32, 5);
  GemmaGrads grads = GemmaGrads::ZerosFor(c, w);
  // One-token sequences have no next token: nothing to learn.
  EXPECT_THAT(ErrorOf([&] {
                GemmaLossAndGradients(c, w, PackSequences({{2}, {3}}), 1.0, grads);
              }),
              ::testing::HasSubstr("the batch has no target to learn"));
  EXPECT_THAT(ErrorOf([&] {
                PackSequences({{2, 3, 4}}, {{1, 1}});
              }),
              ::testing::HasSubstr("pack: sequence 0 has 3 tokens and 2 mask entries"));
  EXPECT_THAT(ErrorOf([&] {
                PackSequences({{2, 3}}, {{1, 1}, {1}});
              }),
              ::testing::HasSubstr("pack: 2 loss masks for 1 sequences"));
  // A mask that counts no completion token leaves no target either.
  EXPECT_THAT(ErrorOf([&] {
                GemmaLossAndGradients(c, w, PackSequences({{2, 3, 4}}, {{1, 0, 0}}), 1.0, grads);
              }),
              ::testing::HasSubstr("no target"));
  const PackedBatch masked = PackSequences({{2, 3, 4, 5}}, {{1, 1, 0, 1}});
  EXPECT_EQ(masked.targets, (std::vector<int32_t>{3, -1, 5, -1}));
}

}  // namespace
}  // namespace gemmapod
