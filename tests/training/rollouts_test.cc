// The rollout engine samples from the policy it trains: on the tiny Gemma 3 fixture, the
// log-probability it records for each sampled token equals the one the trainer's forward
// recomputes over the same weights (within 1e-5), an answer depends on its seed alone (not on
// the prompts beside it), greedy rollouts are `generate`'s answers, and the programmatic rewards
// score as documented.
#include "training/rollouts.h"

#include <gtest/gtest.h>

#include <cmath>
#include <unordered_map>

#include "models/gemma/gemma_decoder.h"
#include "models/gemma/gemma_weights.h"
#include "models/import/hf_config.h"
#include "runtime/checkpoint/safetensors.h"
#include "runtime/error.h"
#include "runtime/tokenizer/chat_template.h"
#include "runtime/tokenizer/tokenizer.h"
#include "serving/generator.h"
#include "training/data.h"
#include "training/gemma_lm.h"
#include "training/policy_objective.h"
#include "training/rewards.h"

namespace gemmapod {
namespace {

struct Fixture {
  ModelConfig config;
  GemmaWeights weights;
  Tokenizer tokenizer;
};

Fixture LoadGemma3() {
  const std::string dir = "tests/fixtures/models/gemma3";
  Fixture f{ReadHfConfig(dir + "/config.json"), {}, Tokenizer::FromFile(dir + "/tokenizer.model")};
  f.weights = LoadGemmaWeights(f.config, *OpenSafetensors(dir));
  return f;
}

std::vector<std::vector<int32_t>> Prompts(const Tokenizer& tokenizer) {
  return {tokenizer.Encode("3 plus 4 is", true), tokenizer.Encode("the cat", true),
          tokenizer.Encode("hello there, how", true)};
}

RolloutOptions Sampling(int64_t max_new_tokens) {
  RolloutOptions o;
  o.max_new_tokens = max_new_tokens;
  o.sampling.temperature = 1.0f;
  return o;
}

TEST(Rollouts, RecordedLogProbabilitiesAreTheTrainersOnTheSameWeights) {
  Fixture f = LoadGemma3();
  GemmaDecoder engine(f.config, f.weights);
  std::vector<std::vector<int32_t>> prompts;
  std::vector<uint64_t> seeds;
  for (int copy = 0; copy < 4; ++copy) {
    for (const auto& p : Prompts(f.tokenizer)) {
      prompts.push_back(p);
      seeds.push_back(static_cast<uint64_t>(100 + prompts.size()));
    }
  }
  const std::vector<Rollout> rollouts =
      GenerateRollouts(engine, f.tokenizer, prompts, seeds, Sampling(12));
  ASSERT_EQ(rollouts.size(), prompts.size());
  std::vector<TrainingExample> answers;
  for (size_t i = 0; i < rollouts.size(); ++i) {
    ASSERT_FALSE(rollouts[i].tokens.empty());
    ASSERT_EQ(rollouts[i].logp.size(), rollouts[i].tokens.size());
    TrainingExample e;
    e.tokens = prompts[i];
    e.learn.assign(e.tokens.size(), 0);
    e.tokens.insert(e.tokens.end(), rollouts[i].tokens.begin(), rollouts[i].tokens.end());
    e.learn.resize(e.tokens.size(), 1);
    answers.push_back(std::move(e));
  }
  std::vector<const TrainingExample*> rows;
  for (const TrainingExample& e : answers) rows.push_back(&e);
  std::unordered_map<const TrainingExample*, std::vector<double>> trainer;
  PackedBatch batch = PackExamples(rows);
  batch.objective = TokenLogProbObjective(rows, trainer);
  GemmaLoss(f.config, f.weights, batch);
  double worst = 0;
  int64_t tokens = 0;
  for (size_t i = 0; i < answers.size(); ++i) {
    const std::vector<double>& recomputed = trainer.at(&answers[i]);
    ASSERT_EQ(recomputed.size(), rollouts[i].logp.size());
    for (size_t t = 0; t < recomputed.size(); ++t) {
      worst = std::max(worst, std::abs(recomputed[t] - rollouts[i].logp[t]));
      EXPECT_LE(rollouts[i].logp[t], 0.0);
      EXPECT_GT(rollouts[i].entropy[t], 0.0);
      ++tokens;
    }
  }
  EXPECT_GT(tokens, 40);
  EXPECT_LT(worst, 1e-5) << "over " << tokens << " sampled tokens";
}

TEST(Rollouts, AnAnswerDependsOnItsSeedAlone) {
  Fixture f = LoadGemma3();
  GemmaDecoder engine(f.config, f.weights);
  const std::vector<std::vector<int32_t>> prompts = Prompts(f.tokenizer);
  const std::vector<Rollout> together =
      GenerateRollouts(engine, f.tokenizer, prompts, {7, 8, 9}, Sampling(10));
  const std::vector<Rollout> alone =
      GenerateRollouts(engine, f.tokenizer, {prompts[1]}, {8}, Sampling(10));
  EXPECT_EQ(alone[0].tokens, together[1].tokens);
  for (size_t t = 0; t < alone[0].logp.size(); ++t) {
    EXPECT_NEAR(alone[0].logp[t], together[1].logp[t], 1e-5);
  }
  const std::vector<Rollout> reseeded =
      GenerateRollouts(engine, f.tokenizer, {prompts[1]}, {9}, Sampling(10));
  EXPECT_NE(reseeded[0].tokens, alone[0].tokens);
  // Sampling other than the policy's own is refused where the logs would not describe it.
  SamplingParams truncated;
  truncated.temperature = 1.0f;
  truncated.top_k = 5;
  EXPECT_THROW(CheckPolicySampling(truncated), Error);
}

TEST(Rollouts, GreedyAnswersAreGeneratesAndStopWhereTold) {
  Fixture f = LoadGemma3();
  GemmaDecoder engine(f.config, f.weights);
  RolloutOptions greedy;
  greedy.max_new_tokens = 8;
  greedy.stop_tokens = GemmaStopTokens(f.tokenizer);
  const std::vector<std::vector<int32_t>> prompts = Prompts(f.tokenizer);
  const std::vector<Rollout> rollouts =
      GenerateRollouts(engine, f.tokenizer, prompts, {0, 0, 0}, greedy);
  for (size_t i = 0; i < prompts.size(); ++i) {
    GenerationRequest request;
    request.prompt = prompts[i];
    request.max_new_tokens = 8;
    request.stop_tokens = greedy.stop_tokens;
    const GenerationResult one = Generate(engine, f.tokenizer, request, nullptr);
    std::vector<int32_t> answer = rollouts[i].tokens;
    if (rollouts[i].stopped) answer.pop_back();  // the stop token: kept for training
    EXPECT_EQ(answer, one.tokens) << i;
    EXPECT_EQ(rollouts[i].text, one.text) << i;
  }
}

// The engine holds the trained model's tensors themselves: a change to the weights (what an
// optimizer step does in place) is what the next rollout samples from, with nothing copied.
TEST(Rollouts, TheEngineReadsTheTrainedTensorsWithoutACopy) {
  Fixture f = LoadGemma3();
  GemmaDecoder engine(f.config, f.weights);
  EXPECT_EQ(engine.weights().embed_tokens.weight.raw(), f.weights.embed_tokens.weight.raw());
  EXPECT_EQ(engine.weights().layers[0].q_proj.weight.raw(),
            f.weights.layers[0].q_proj.weight.raw());
  const std::vector<std::vector<int32_t>> prompts = {Prompts(f.tokenizer)[0]};
  const Rollout before = GenerateRollouts(engine, f.tokenizer, prompts, {3}, Sampling(4))[0];
  Tensor& w = f.weights.layers[0].down_proj.weight;
  for (int64_t i = 0; i < w.numel(); ++i) w.data<float>()[i] *= 1.5f;
  const Rollout after = GenerateRollouts(engine, f.tokenizer, prompts, {3}, Sampling(4))[0];
  EXPECT_NE(before.logp[0], after.logp[0]);
}

TEST(Rewards, BuiltInAndRegistered) {
  const RewardFunction& exact = FindReward("exact_match");
  EXPECT_EQ(exact(" 42\n", "42", ""), 1.0);
  EXPECT_EQ(exact("42 apples", "42", ""), 0.0);
  const RewardFunction& regex = FindReward("regex");
  EXPECT_EQ(regex("the answer is 42.", "", "answer is [0-9]+"), 1.0);
  EXPECT_EQ(regex("no idea", "", "answer is [0-9]+"), 0.0);
  EXPECT_THROW(CheckRewardArgument("regex", "([unclosed"), Error);
  EXPECT_THROW(CheckRewardArgument("regex", ""), Error);
  RegisterReward("length_under_5",
                 [](const std::string& answer, const std::string&, const std::string&) {
                   return answer.size() < 5 ? 1.0 : 0.0;
                 });
  EXPECT_EQ(FindReward("length_under_5")("abc", "", ""), 1.0);
  try {
    FindReward("nope");
    ADD_FAILURE() << "an unknown reward was found";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("exact_match, length_under_5, regex"), std::string::npos)
        << e.what();
  }
}

// GRPO's token objective: each token's loss is weight x (the clipped term + beta x KL), its slope
// the same combination of the formulas' slopes; clipped tokens are counted.
TEST(GrpoObjective, WeighsTheClippedTermAndTheKlPerToken) {
  TrainingExample a, b;
  a.tokens = {2, 5, 6, 7};
  a.learn = {0, 0, 1, 1};
  b.tokens = {2, 9, 3};
  b.learn = {0, 1, 1};
  PolicySamples samples;
  samples[&a] = {{-1.0, -2.0}, {-1.1, -1.5}, 0.5, 0.25};
  samples[&b] = {{-0.5, -3.0}, {-0.4, -2.0}, -1.0, 0.25};
  GrpoOptions options;
  options.beta = 0.1;
  options.clip = 0.2;
  PolicyStats stats;
  const std::vector<double> logp = {-0.7, -2.0, -0.5, -3.5};
  std::vector<double> dlogp;
  const LossSum loss = GrpoObjective({&a, &b}, options, samples, &stats)(logp, &dlogp);
  double want = 0;
  std::vector<double> want_slopes;
  const std::vector<double> old = {-1.0, -2.0, -0.5, -3.0}, ref = {-1.1, -1.5, -0.4, -2.0};
  const std::vector<double> adv = {0.5, 0.5, -1.0, -1.0};
  int clipped = 0;
  for (size_t t = 0; t < 4; ++t) {
    const ClippedPolicyTerm term = PpoPolicyTerm(logp[t], old[t], adv[t], 0.2);
    const ValueAndSlope kl = KlEstimate(KlEstimator::kK3, logp[t], ref[t]);
    want += 0.25 * (term.loss + 0.1 * kl.value);
    want_slopes.push_back(0.25 * (term.slope + 0.1 * kl.slope));
    clipped += term.clipped ? 1 : 0;
  }
  EXPECT_NEAR(loss.sum, want, 1e-12);
  EXPECT_EQ(loss.targets, 4);
  ASSERT_EQ(dlogp.size(), 4u);
  for (size_t t = 0; t < 4; ++t) EXPECT_NEAR(dlogp[t], want_slopes[t], 1e-12) << t;
  EXPECT_EQ(stats.tokens, 4);
  EXPECT_EQ(stats.clipped, clipped);
  EXPECT_GT(clipped, 0);  // token 0's ratio exp(0.3) is past 1 + 0.2 with a positive advantage
  EXPECT_NEAR(stats.ratio_gap, 0.5, 1e-12);
}

}  // namespace
}  // namespace gemmapod
