// `gemmapod train` with objective: grpo on the tiny Gemma 3 fixture: the policy learns a regex
// reward (the held-out mean reward of greedy answers rises from 0), the trainer's recomputed
// log-probabilities equal the generator's at every step, a run killed during a save resumes
// bit-identically (the answers are drawn from seeds of the step and prompt, not from a stream),
// two data-parallel replicas give one rank's run, the KL term against the model is reported, and
// mistakes are named.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "runtime/checkpoint/hdf5_checkpoint.h"
#include "runtime/error.h"
#include "tests/launch/run_gemmapod.h"
#include "tests/launch/training_runs.h"

namespace {

namespace fs = std::filesystem;

using gemmapod::Contains;
using gemmapod::Gemmapod;
using Result = gemmapod::CliResult;
using Metrics = gemmapod::RunMetrics;

class GrpoCli : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = fs::temp_directory_path() / ("grpo-cli-" + std::to_string(getpid()));
    fs::create_directories(dir_);
    convert_ = Gemmapod("convert tests/fixtures/models/gemma3 " + (dir_ / "tiny.h5").string());
    std::ofstream prompts(dir_ / "prompts.jsonl");
    for (int i = 0; i < 40; ++i) {
      prompts << R"({"prompt": ")" << i % 10 << " plus " << (i * 7) % 10
              << R"( is", "completion": " )" << i % 10 + (i * 7) % 10 << "\"}\n";
    }
  }
  static void TearDownTestSuite() { fs::remove_all(dir_); }

  static constexpr const char* kRegex =
      "group_size: 8, max_new_tokens: 6, reward: regex, reward_argument: \"[0-9]\"";

  // `grpo`: the grpo: settings (default: 8 answers of up to 6 tokens, rewarded for a digit).
  static std::string Job(const std::string& run, const std::string& grpo = kRegex, int steps = 12,
                         const std::string& extra = "") {
    const std::string path = (dir_ / (run + ".yaml")).string();
    std::ofstream(path) << "model: tiny.h5\nobjective: grpo\n"
                        << "grpo: {" << grpo << "}\n"
                        << "data: {train: prompts.jsonl, held_out_fraction: 0.2, max_length: 64}\n"
                        << "steps: " << steps << "\nbatch: {sequences: 4, micro_batch: 2}\n"
                        << "optimizer: {lr: 1e-2}\n"
                        << "checkpoint: {dir: " << run << ", interval: 4}\n"
                        << "eval: {interval: 4}\n"
                        << extra;
    return path;
  }
  static fs::path Run(const std::string& run) { return dir_ / run; }

  // Every number of every metrics line but the timings, by step and key.
  static Metrics Read(const std::string& run) {
    return gemmapod::ReadRunMetrics(Run(run) / "metrics.jsonl", [](const std::string& key) {
      return key.size() > 2 && key.substr(key.size() - 2) == "_s";
    });
  }

  static inline fs::path dir_;
  static inline Result convert_;
};

TEST_F(GrpoCli, LearnsARegexRewardAndResumesExactly) {
  ASSERT_EQ(convert_.exit_code, 0) << convert_.output;
  const Result r = Gemmapod("train --config " + Job("grpo"), 120);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(Contains(r.output,
                       "GRPO: 8 answers per prompt, up to 6 tokens each, reward regex, "
                       "token-normalised loss"))
      << r.output;
  EXPECT_TRUE(Contains(r.output, "rollout KV cache [0-9.]+ MiB")) << r.output;
  EXPECT_TRUE(Contains(r.output,
                       "step 12/12 \\| loss [-0-9.e]+ \\| reward [0-9.]+ \\+- [0-9.]+ "
                       "\\| len [0-9.]+ \\| gen [0-9.]+ s"))
      << r.output;
  // The curves are the rewards: the answers' mean and the held-out greedy answers'.
  std::ifstream svg(Run("grpo") / "reward.svg");
  const std::string picture((std::istreambuf_iterator<char>(svg)), {});
  EXPECT_NE(picture.find(">reward</text>"), std::string::npos) << picture.substr(0, 300);
  EXPECT_NE(picture.find("<polyline"), std::string::npos);
  EXPECT_FALSE(fs::exists(Run("grpo") / "loss.svg"));
  const Metrics m = Read("grpo");
  EXPECT_EQ(m.at({0, "held_out_reward"}), 0.0);  // the random model writes no digit greedily
  EXPECT_GE(m.at({12, "held_out_reward"}), 0.75);
  EXPECT_GT(m.at({12, "reward_mean"}), m.at({1, "reward_mean"}));
  for (int64_t step = 1; step <= 12; ++step) {
    // The ratio's "old" policy is the generator's record: it agrees with the trainer's forward.
    EXPECT_LT(m.at({step, "logp_gap_max"}), 1e-5) << "step " << step;
    EXPECT_GT(m.at({step, "entropy"}), 0.0);
    EXPECT_GE(m.at({step, "clip_fraction"}), 0.0);
    EXPECT_GT(m.at({step, "response_length"}), 0.0);
    EXPECT_LE(m.at({step, "response_length"}), 6.0);
  }

  const std::string job = Job("grpo-killed");
  EXPECT_EQ(Gemmapod("train --config " + job + " --inject-kill-during-save 8", 120).exit_code,
            128 + 9);
  const Result resumed = Gemmapod("train --config " + job + " --resume", 120);
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_TRUE(Contains(resumed.output, "resuming from .*step-00000004.h5")) << resumed.output;
  EXPECT_EQ(Read("grpo-killed"), m);
  gemmapod::ExpectSameCheckpoints(Run("grpo-killed") / "model.h5", Run("grpo") / "model.h5");
  const Result other = Gemmapod(
      "train --config " +
          Job("grpo-killed",
              "group_size: 4, max_new_tokens: 6, reward: regex, reward_argument: \"[0-9]\"") +
          " --resume",
      120);
  EXPECT_TRUE(Contains(other.output, "grpo_group_size was 8 and is now 4")) << other.output;
}

// Two replicas answer half the prompts each with the same seeds: one rank's run. With a KL term
// the reference (the model) is loaded, counted in the plan, and the KL is reported; with two
// epochs per step the second optimizer step's ratio leaves the clip range on some tokens.
TEST_F(GrpoCli, ReplicasAndTheKlTerm) {
  ASSERT_EQ(convert_.exit_code, 0) << convert_.output;
  const std::string kl =
      std::string(kRegex) + ", beta: 0.05, kl: k3, loss_normalization: sequence, epochs: 2";
  ASSERT_EQ(Gemmapod("train --config " + Job("kl-one", kl, 3), 120).exit_code, 0);
  const Result two = gemmapod::MpirunGemmapod(2, "train --config " + Job("kl-two", kl, 3), 240);
  ASSERT_EQ(two.exit_code, 0) << two.output;
  EXPECT_TRUE(Contains(two.output, "KL k3 x 0.05 against the model")) << two.output;
  EXPECT_TRUE(Contains(two.output, "frozen models 1.3 MiB")) << two.output;
  const Metrics want = Read("kl-one"), got = Read("kl-two");
  ASSERT_EQ(got.size(), want.size());
  for (const auto& [key, value] : want) {
    ASSERT_TRUE(got.count(key)) << key.second << " at step " << key.first;
    if (key.second == "logp_gap_max") continue;  // a rounding measure itself
    EXPECT_NEAR(got.at(key), value, 1e-5 * std::abs(value) + 1e-7)
        << key.second << " at step " << key.first;
  }
  // The KL is the mean over both updates' tokens: step 1's first update is at the reference, its
  // second is not.
  EXPECT_GT(want.at({1, "kl"}), 0.0);
  double clipped = 0;
  for (int64_t step = 1; step <= 3; ++step) clipped += want.at({step, "clip_fraction"});
  EXPECT_GT(clipped, 0.0);
}

// Rewards from a trained reward model: one trained on preference pairs (the right sum over a
// wrong one) scores each answer, and GRPO raises the mean score of the greedy held-out answers.
TEST_F(GrpoCli, ARewardModelScoresTheAnswers) {
  ASSERT_EQ(convert_.exit_code, 0) << convert_.output;
  {
    std::ofstream pairs(dir_ / "pairs.jsonl");
    for (int i = 0; i < 40; ++i) {
      const int a = i % 10, b = (i * 7) % 10;
      pairs << R"({"prompt": ")" << a << " plus " << b << R"( is", "chosen": " )" << a + b
            << R"(", "rejected": " the"})"
            << "\n";
    }
  }
  const std::string rm = (dir_ / "rm.yaml").string();
  std::ofstream(rm) << "model: tiny.h5\nobjective: reward\n"
                    << "data: {train: pairs.jsonl, max_length: 64}\nsteps: 12\n"
                    << "batch: {sequences: 4}\noptimizer: {lr: 1e-2}\n"
                    << "checkpoint: {dir: rm}\n";
  const Result trained = Gemmapod("train --config " + rm, 120);
  ASSERT_EQ(trained.exit_code, 0) << trained.output;
  const Result r = Gemmapod(
      "train --config " +
          Job("by-model",
              "group_size: 8, max_new_tokens: 4, reward: model, reward_model: rm/model.h5"),
      180);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(Contains(r.output, "reward model")) << r.output;
  const Metrics m = Read("by-model");
  EXPECT_GT(m.at({12, "held_out_reward"}), m.at({0, "held_out_reward"}));
  EXPECT_GT(m.at({12, "reward_mean"}), m.at({1, "reward_mean"}));
  const Result missing = Gemmapod("train --config " + Job("no-model", "reward: model"));
  EXPECT_TRUE(Contains(missing.output, "reward: model needs reward_model:")) << missing.output;
}

// RecurrentGemma's rollouts come from its inference model over the trained tensors, one
// sequence's chunk at a time: it learns the regex reward too. Its decode path (the recurrence
// step by step, the convolution's history) sums differently from the training scan: the gap to
// the trainer's log-probabilities is larger than decoder-only Gemma's, below 1e-4 here.
TEST_F(GrpoCli, RecurrentGemmaLearnsTheRewardToo) {
  const std::string rg = (dir_ / "rg.h5").string();
  ASSERT_EQ(Gemmapod("convert tests/fixtures/models/recurrentgemma/hf " + rg).exit_code, 0);
  std::string job = Job("rg", kRegex, 8);
  {
    std::ifstream in(job);
    std::string text((std::istreambuf_iterator<char>(in)), {});
    text.replace(text.find("tiny.h5"), 7, rg);
    std::ofstream(job) << text;
  }
  const Result r = Gemmapod("train --config " + job, 180);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const Metrics m = Read("rg");
  EXPECT_GE(m.at({8, "held_out_reward"}), 0.75);
  EXPECT_GT(m.at({8, "held_out_reward"}), m.at({0, "held_out_reward"}));
  for (int64_t step = 1; step <= 8; ++step) {
    EXPECT_LT(m.at({step, "logp_gap_max"}), 1e-4) << "step " << step;
  }
}

TEST_F(GrpoCli, MistakesAreNamed) {
  ASSERT_EQ(convert_.exit_code, 0) << convert_.output;
  const Result tp =
      gemmapod::MpirunGemmapod(2, "train --config " + Job("tp", kRegex, 2, "parallel: {tp: 2}\n"));
  EXPECT_TRUE(Contains(tp.output,
                       "objective: grpo: rollouts over a model-parallel training group "
                       "are not built yet"))
      << tp.output;
  const Result regex =
      Gemmapod("train --config " + Job("regex", "reward: regex, reward_argument: \"([0-9\""));
  EXPECT_TRUE(
      Contains(regex.output, "grpo: reward regex: the pattern '\\(\\[0-9' does not compile"))
      << regex.output;
  const Result unknown = Gemmapod("train --config " + Job("unknown", "reward: sparkle"));
  EXPECT_TRUE(Contains(unknown.output,
                       "grpo.reward: reward 'sparkle' is not registered \\(known: "
                       "exact_match, regex\\)"))
      << unknown.output;
  const Result group = Gemmapod("train --config " + Job("group", "group_size: 1"));
  EXPECT_TRUE(Contains(group.output, "grpo.group_size: must be at least 2")) << group.output;
  const std::string lonely = (dir_ / "lonely.yaml").string();
  std::ofstream(lonely) << "model: tiny.h5\ndata: {train: prompts.jsonl}\nsteps: 1\n"
                        << "grpo: {group_size: 4}\ncheckpoint: {dir: x}\n";
  const Result settings = Gemmapod("train --config " + lonely);
  EXPECT_TRUE(Contains(settings.output, "the grpo: settings need objective: grpo"))
      << settings.output;
}

}  // namespace
