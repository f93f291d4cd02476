// On-policy RL (GRPO) as a token objective: each answer sampled by the rollout engine is a
// training example whose answer tokens carry the generator's log-probabilities (the "old"
// policy of the clipped ratio), the reference's (for the KL term) and the answer's advantage;
// each token adds weight * (the clipped policy term + beta * KL) to the loss
// (training/rl_formulas.h), the weight being the step's loss normalisation.
#pragma once

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "training/data.h"
#include "training/gemma_lm.h"
#include "training/rl_formulas.h"
#include "training/rollouts.h"

namespace gemmapod {

struct GrpoOptions {
  int64_t group_size = 8;  // answers sampled per prompt
  int64_t epochs = 1;      // optimizer steps over each step's answers
  double clip = 0.2;       // eps of the clipped ratio
  double beta = 0.0;       // the KL term's coefficient; 0: no reference model
  KlEstimator kl = KlEstimator::kK3;
  LossNormalization normalization = LossNormalization::kToken;
  RolloutOptions rollout;              // max_new_tokens and stop strings; sampling from the policy
  std::string reward = "exact_match";  // a registered reward, or "model"
  std::string reward_argument;         // the regex reward's pattern
  std::string reward_model;            // reward "model": a reward model's checkpoint
};

// What a step keeps of each sampled answer between generation and its backward.
struct PolicySample {
  std::vector<double> old_logp;  // per answer token: the generator's log-probability
  std::vector<double> ref_logp;  // per answer token: the reference's (beta > 0)
  double advantage = 0;
  double weight = 0;  // each of its tokens' weight in the step's loss
};
using PolicySamples = std::unordered_map<const TrainingExample*, PolicySample>;

// What the answers' tokens did in a step, added over micro-batches and ranks.
struct PolicyStats {
  int64_t tokens = 0;
  int64_t clipped = 0;   // tokens whose clipped term was the smaller objective
  double kl = 0;         // summed KL estimate against the reference (beta > 0)
  double ratio_gap = 0;  // the largest |log pi - log pi_old| seen: the trainer's recomputed
                         // log-probability against the generator's
};

// The objective of a micro-batch of sampled answers (examples in `samples`): the weighted sum of
// its tokens' losses (LossSum counts tokens; the weights already normalise, so the trainer takes
// the gradient of the sum itself).
TokenObjective GrpoObjective(const std::vector<const TrainingExample*>& rows,
                             const GrpoOptions& options, const PolicySamples& samples,
                             PolicyStats* stats);

// Records each example's per-token log-probabilities into `out` (no gradient): a frozen model
// scoring sampled answers.
TokenObjective TokenLogProbObjective(
    const std::vector<const TrainingExample*>& rows,
    std::unordered_map<const TrainingExample*, std::vector<double>>& out);

}  // namespace gemmapod
