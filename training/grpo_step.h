// The rollout half of a GRPO step (training/trainer.cc runs the other half, the policy's
// forward and backward over the answers): this replica's prompts answered group_size times each
// by the rollout engine over the weights being trained, each answer rewarded, the groups'
// advantages and the step's loss weights computed, and the answers laid out as training examples
// in the replica's micro-batches (a prompt's answers stay in its micro-batch).
#pragma once

#include <cstdint>
#include <vector>

#include "training/data.h"
#include "training/policy_objective.h"

namespace gemmapod {

class DataParallel;
class TrainableModel;
class Tokenizer;

struct GrpoRollouts {
  std::vector<TrainingExample> answers;  // prompt + answer, the answer learned
  PolicySamples samples;                 // by answer
  std::vector<std::vector<const TrainingExample*>> micro_batches;
  // Over every replica's answers of the step.
  double reward_mean = 0, reward_std = 0, length_mean = 0, entropy_mean = 0;
  double stopped = 0;  // the share of answers that ended by a stop token or string
  int64_t tokens = 0;  // this replica's tokens (prompts and answers)
  double generation_s = 0, reference_s = 0;
};

// `prompts`: this replica's micro-batches of prompt examples (their prompt_length first ids and
// their answer, the reward's reference); `first_prompt` the index of its first prompt in the
// step and `step_prompts` the step's prompts over every replica. Answer g of prompt p is sampled
// with a seed of (job seed, step, p, g), so any layout draws the same answers. `reference`
// (beta > 0) scores the answers' tokens; `reward_model` (grpo.reward: model; null otherwise)
// scores each answer in place of the reward function.
GrpoRollouts RunGrpoRollouts(TrainableModel& policy, TrainableModel* reference,
                             TrainableModel* reward_model, const Tokenizer& tokenizer,
                             const GrpoOptions& options,
                             const std::vector<std::vector<const TrainingExample*>>& prompts,
                             int64_t first_prompt, int64_t step_prompts, uint64_t seed,
                             int64_t step, const DataParallel& dp);

// Greedy answers to `held_out` (this replica's) and their summed reward.
double HeldOutReward(TrainableModel& policy, TrainableModel* reward_model,
                     const Tokenizer& tokenizer, const GrpoOptions& options,
                     const std::vector<TrainingExample>& held_out);

}  // namespace gemmapod
