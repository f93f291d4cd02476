// Programmatic rewards for on-policy RL: a function of an answer's text and the example's
// reference answer, returning a number (usually 0 or 1). Built in: exact_match (the answer,
// trimmed, equals the reference, trimmed) and regex (the answer contains a match of a pattern).
// A new reward is one RegisterReward call (a name and a function) before the job is read; the
// job file names it (`grpo.reward`).
#pragma once

#include <functional>
#include <string>
#include <vector>

namespace gemmapod {

// `answer`: the generated text (a stop string excluded); `reference`: the example's answer (its
// "completion"); `argument`: the job's grpo.reward_argument (the regex's pattern).
using RewardFunction = std::function<double(const std::string& answer, const std::string& reference,
                                            const std::string& argument)>;

void RegisterReward(const std::string& name, RewardFunction reward);
// The reward registered under `name`; an error listing the known names otherwise.
const RewardFunction& FindReward(const std::string& name);
std::vector<std::string> RewardNames();

// A regex reward's pattern compiles (ECMAScript); an error naming it otherwise.
void CheckRewardArgument(const std::string& name, const std::string& argument);

}  // namespace gemmapod
