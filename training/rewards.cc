#include "training/rewards.h"

#include <map>
#include <mutex>
#include <regex>

#include "runtime/error.h"

namespace gemmapod {
namespace {

std::string Trim(const std::string& s) {
  const char* ws = " \t\n\r\f\v";
  const size_t b = s.find_first_not_of(ws);
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(ws) - b + 1);
}

struct Registry {
  std::mutex mu;
  std::map<std::string, RewardFunction> rewards = {
      {"exact_match",
       [](const std::string& answer, const std::string& reference, const std::string&) {
         return Trim(answer) == Trim(reference) ? 1.0 : 0.0;
       }},
      {"regex",
       [](const std::string& answer, const std::string&, const std::string& pattern) {
         return std::regex_search(answer, std::regex(pattern, std::regex::ECMAScript)) ? 1.0 : 0.0;
       }},
  };
};

Registry& Rewards() {
  static Registry registry;
  return registry;
}

}  // namespace

void RegisterReward(const std::string& name, RewardFunction reward) {
  GEMMAPOD_CHECK(!name.empty() && reward, "rewards: a reward needs a name and a function");
  Registry& r = Rewards();
  const std::lock_guard<std::mutex> lock(r.mu);
  r.rewards[name] = std::move(reward);
}

const RewardFunction& FindReward(const std::string& name) {
  Registry& r = Rewards();
  const std::lock_guard<std::mutex> lock(r.mu);
  const auto it = r.rewards.find(name);
  if (it == r.rewards.end()) {
    std::string known;
    for (const auto& [n, f] : r.rewards) known += (known.empty() ? "" : ", ") + n;
    throw Error(StrCat("reward '", name, "' is not registered (known: ", known, ")"));
  }
  return it->second;
}

std::vector<std::string> RewardNames() {
  Registry& r = Rewards();
  const std::lock_guard<std::mutex> lock(r.mu);
  std::vector<std::string> names;
  for (const auto& [n, f] : r.rewards) names.push_back(n);
  return names;
}

void CheckRewardArgument(const std::string& name, const std::string& argument) {
  if (name != "regex") return;
  GEMMAPOD_CHECK(!argument.empty(), "reward regex: needs a pattern (grpo.reward_argument)");
  try {
    std::regex(argument, std::regex::ECMAScript);
  } catch (const std::regex_error& e) {
    throw Error(StrCat("reward regex: the pattern '", argument, "' does not compile: ", e.what()));
  }
}

}  // namespace gemmapod
