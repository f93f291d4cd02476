#include "training/grpo_step.h"

#include <chrono>
#include <cmath>

#include "runtime/error.h"
#include "runtime/tokenizer/chat_template.h"
#include "training/data_parallel.h"
#include "training/rewards.h"
#include "training/trainable_model.h"

namespace gemmapod {
namespace {

using Clock = std::chrono::steady_clock;

uint64_t Mix(uint64_t x) {  // SplitMix64's finaliser: the same on every platform
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

uint64_t AnswerSeed(uint64_t seed, int64_t step, int64_t prompt, int64_t sample) {
  return Mix(Mix(Mix(seed) ^ static_cast<uint64_t>(step)) ^ static_cast<uint64_t>(prompt)) ^
         static_cast<uint64_t>(sample);
}

std::vector<int32_t> PromptOf(const TrainingExample& e) {
  GEMMAPOD_CHECK(e.prompt_length > 0, "grpo: line ", e.line,
                 " has no prompt; GRPO's data are {\"prompt\", \"completion\"} lines (the "
                 "completion is the reward's reference answer) or chats");
  return {e.tokens.begin(), e.tokens.begin() + e.prompt_length};
}

// A sampled answer as a training example: the prompt, then the answer's tokens, learned.
TrainingExample AnswerExample(const std::vector<int32_t>& prompt, const Rollout& rollout,
                              const TrainingExample& source) {
  TrainingExample a;
  a.tokens = prompt;
  a.learn.assign(a.tokens.size(), 0);
  a.tokens.insert(a.tokens.end(), rollout.tokens.begin(), rollout.tokens.end());
  a.learn.resize(a.tokens.size(), 1);
  a.line = source.line;
  a.prompt_length = static_cast<int64_t>(prompt.size());
  a.answer = rollout.text;
  return a;
}

// Each answer's reward: the registered function of its text and the source's reference answer,
// or the reward model's score of the whole sequence (scored in `batches`).
std::vector<double> Rewards(const std::vector<TrainingExample>& answers,
                            const std::vector<const TrainingExample*>& source,
                            const GrpoOptions& options, TrainableModel* reward_model,
                            const std::vector<std::vector<const TrainingExample*>>& batches) {
  std::vector<double> rewards;
  if (reward_model != nullptr) {
    std::unordered_map<const TrainingExample*, double> scored;
    reward_model->SetScoreObjective([&](const std::vector<const TrainingExample*>& rows) {
      return ScoreObjective(
          [&scored, rows](const std::vector<double>& scores, std::vector<double>* dscore) {
            GEMMAPOD_CHECK(dscore == nullptr && scores.size() == rows.size(),
                           "grpo: the reward model scores answers without a gradient");
            for (size_t i = 0; i < rows.size(); ++i) scored[rows[i]] = scores[i];
            return LossSum{0.0, static_cast<int64_t>(rows.size())};
          });
    });
    for (const auto& rows : batches) reward_model->Loss(rows);
    reward_model->SetScoreObjective(nullptr);
    for (const TrainingExample& a : answers) rewards.push_back(scored.at(&a));
  } else {
    const RewardFunction& reward = FindReward(options.reward);
    for (size_t i = 0; i < answers.size(); ++i) {
      rewards.push_back(reward(answers[i].answer, source[i]->answer, options.reward_argument));
    }
  }
  for (size_t i = 0; i < rewards.size(); ++i) {
    GEMMAPOD_CHECK(std::isfinite(rewards[i]), "grpo: reward '", options.reward, "' gave ",
                   rewards[i], " for the answer to line ", source[i]->line);
  }
  return rewards;
}

RolloutOptions WithStopTokens(RolloutOptions options, const Tokenizer& tokenizer) {
  for (int32_t id : GemmaStopTokens(tokenizer)) options.stop_tokens.push_back(id);
  return options;
}

}  // namespace

GrpoRollouts RunGrpoRollouts(TrainableModel& policy, TrainableModel* reference,
                             TrainableModel* reward_model, const Tokenizer& tokenizer,
                             const GrpoOptions& options,
                             const std::vector<std::vector<const TrainingExample*>>& prompts,
                             int64_t first_prompt, int64_t step_prompts, uint64_t seed,
                             int64_t step, const DataParallel& dp) {
  const Clock::time_point begin = Clock::now();
  const int64_t group = options.group_size;
  std::vector<std::vector<int32_t>> asked;
  std::vector<uint64_t> seeds;
  std::vector<const TrainingExample*> source;
  int64_t index = first_prompt;
  for (const auto& micro : prompts) {
    for (const TrainingExample* p : micro) {
      const std::vector<int32_t> prompt = PromptOf(*p);
      for (int64_t g = 0; g < group; ++g) {
        asked.push_back(prompt);
        seeds.push_back(AnswerSeed(seed, step, index, g));
        source.push_back(p);
      }
      ++index;
    }
  }
  const std::vector<Rollout> rollouts =
      policy.Rollouts(tokenizer, asked, seeds, WithStopTokens(options.rollout, tokenizer));
  GrpoRollouts out;
  out.generation_s = std::chrono::duration<double>(Clock::now() - begin).count();

  // The answers as training examples (prompt + answer, the answer learned), in the prompts'
  // micro-batches.
  out.answers.reserve(rollouts.size());
  for (size_t i = 0; i < rollouts.size(); ++i) {
    out.answers.push_back(AnswerExample(asked[i], rollouts[i], *source[i]));
    out.tokens += static_cast<int64_t>(out.answers.back().tokens.size());
  }
  size_t next = 0;
  for (const auto& micro : prompts) {
    std::vector<const TrainingExample*> rows;
    for (size_t k = 0; k < micro.size() * static_cast<size_t>(group); ++k) {
      rows.push_back(&out.answers[next++]);
    }
    out.micro_batches.push_back(std::move(rows));
  }
  const std::vector<double> rewards =
      Rewards(out.answers, source, options, reward_model, out.micro_batches);
  std::vector<int64_t> lengths;
  double reward_sum = 0, reward_squares = 0, entropy_sum = 0, stopped = 0;
  int64_t answer_tokens = 0;
  for (size_t i = 0; i < rollouts.size(); ++i) {
    reward_sum += rewards[i];
    reward_squares += rewards[i] * rewards[i];
    lengths.push_back(static_cast<int64_t>(rollouts[i].tokens.size()));
    answer_tokens += lengths.back();
    for (double h : rollouts[i].entropy) entropy_sum += h;
    stopped += rollouts[i].stopped ? 1 : 0;
  }
  const std::vector<double> advantages = GroupAdvantages(rewards, group);
  // The normalisation is over the whole step: every replica's answers and tokens.
  const double all_answers = static_cast<double>(step_prompts * group);
  const double all_tokens = dp.Sum(static_cast<double>(answer_tokens));
  std::vector<double> weights =
      TokenWeights(options.normalization, lengths, options.rollout.max_new_tokens);
  for (double& w : weights) {
    w *= options.normalization == LossNormalization::kToken
             ? static_cast<double>(answer_tokens) / all_tokens
             : static_cast<double>(rollouts.size()) / all_answers;
  }
  for (size_t i = 0; i < rollouts.size(); ++i) {
    out.samples[&out.answers[i]] = {rollouts[i].logp, {}, advantages[i], weights[i]};
  }
  if (reference != nullptr) {  // the KL term's reference log-probabilities
    const Clock::time_point scoring = Clock::now();
    std::unordered_map<const TrainingExample*, std::vector<double>> scored;
    reference->SetObjective([&](const std::vector<const TrainingExample*>& rows) {
      return TokenLogProbObjective(rows, scored);
    });
    for (const auto& rows : out.micro_batches) reference->Loss(rows);
    reference->SetObjective(nullptr);
    for (auto& [answer, sample] : out.samples) sample.ref_logp = scored.at(answer);
    out.reference_s = std::chrono::duration<double>(Clock::now() - scoring).count();
  }
  const std::vector<double> totals =
      dp.Sum(std::vector<double>{reward_sum, reward_squares, entropy_sum, stopped});
  out.reward_mean = totals[0] / all_answers;
  out.reward_std =
      std::sqrt(std::max(0.0, totals[1] / all_answers - out.reward_mean * out.reward_mean));
  out.entropy_mean = all_tokens > 0 ? totals[2] / all_tokens : 0.0;
  out.length_mean = all_tokens / all_answers;
  out.stopped = totals[3] / all_answers;
  return out;
}

double HeldOutReward(TrainableModel& policy, TrainableModel* reward_model,
                     const Tokenizer& tokenizer, const GrpoOptions& options,
                     const std::vector<TrainingExample>& held_out) {
  std::vector<std::vector<int32_t>> prompts;
  std::vector<const TrainingExample*> source;
  for (const TrainingExample& e : held_out) {
    prompts.push_back(PromptOf(e));
    source.push_back(&e);
  }
  RolloutOptions greedy = WithStopTokens(options.rollout, tokenizer);
  greedy.sampling = SamplingParams{};  // temperature 0: the policy's most likely answer
  const std::vector<Rollout> rollouts =
      policy.Rollouts(tokenizer, prompts, std::vector<uint64_t>(prompts.size(), 0), greedy);
  std::vector<TrainingExample> answers;
  for (size_t i = 0; i < rollouts.size(); ++i) {
    answers.push_back(AnswerExample(prompts[i], rollouts[i], held_out[i]));
  }
  std::vector<std::vector<const TrainingExample*>> batches(1);
  for (const TrainingExample& a : answers) batches[0].push_back(&a);
  double total = 0;
  for (double r : Rewards(answers, source, options, reward_model, batches)) total += r;
  return total;
}

}  // namespace gemmapod
