// `gemmapod train` on preference pairs, on the tiny Gemma 3 fixture and a generated set (the
// right sum of two digits chosen over a wrong one). objective: dpo: the held-out loss starts at
// exactly log 2 (the policy is the reference), DPO and IPO raise the held-out preference
// accuracy, a run killed during a save resumes bit-identically, every tp/pp/dp layout gives one
// rank's losses, the reference kept loaded gives the precomputed one's. objective: reward: a
// reward model learns to rank the held-out pairs, resumes exactly and splits over layouts.
// Mistakes are named.
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

class PreferenceCli : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = fs::temp_directory_path() / ("preference-cli-" + std::to_string(getpid()));
    fs::create_directories(dir_);
    convert_ = Gemmapod("convert tests/fixtures/models/gemma3 " + (dir_ / "tiny.h5").string());
    std::ofstream pairs(dir_ / "pairs.jsonl");
    for (int i = 0; i < 40; ++i) {
      const int a = i % 10, b = (i * 7) % 10;
      pairs << R"({"prompt": ")" << a << " plus " << b << R"( is", "chosen": " )" << a + b
            << R"(", "rejected": " )" << a + b + 1 << "\"}\n";
    }
    // The chat form: two conversations that differ in the model's turn.
    pairs << R"({"chosen": [{"role": "user", "content": "hi"}, {"role": "model", "content": )"
          << R"("hello"}], "rejected": [{"role": "user", "content": "hi"}, )"
          << R"({"role": "model", "content": "go away"}]})"
          << "\n";
  }
  static void TearDownTestSuite() { fs::remove_all(dir_); }

  static std::string Job(const std::string& run, const std::string& extra = "", int steps = 12) {
    const std::string path = (dir_ / (run + ".yaml")).string();
    std::ofstream(path) << "model: tiny.h5\nobjective: dpo\n"
                        << "data: {train: pairs.jsonl, held_out_fraction: 0.2, max_length: 64}\n"
                        << "steps: " << steps << "\nbatch: {sequences: 4, micro_batch: 1}\n"
                        << "optimizer: {lr: 1e-2}\n"
                        << "checkpoint: {dir: " << run << ", interval: 4}\n"
                        << "eval: {interval: 4}\n"
                        << extra;
    return path;
  }
  static fs::path Run(const std::string& run) { return dir_ / run; }

  // Every number of every metrics line but the timings and the pipeline's idle share.
  static Metrics Read(const std::string& run) {
    return gemmapod::ReadRunMetrics(Run(run) / "metrics.jsonl", [](const std::string& key) {
      return key == "elapsed_s" || key == "reference_s" || key == "pipeline_bubble";
    });
  }

  // The losses and rewards are functions of beta (log pi - log pi_ref) over whole sequences: the
  // difference of two sums of about 40 in magnitude, so another summation order moves them by
  // about 1e-5 absolute (a layout that was wrong would move them by 1e-2 and more).
  static void ExpectSameRun(const Metrics& got, const Metrics& want, const std::string& run) {
    ASSERT_EQ(got.size(), want.size()) << run;
    for (const auto& [key, value] : want) {
      ASSERT_TRUE(got.count(key)) << run << ": no " << key.second << " at step " << key.first;
      const bool reward = key.second.find("reward") != std::string::npos;
      EXPECT_NEAR(got.at(key), value, 1e-4 * std::abs(value) + (reward ? 2e-4 : 1e-6))
          << run << ": " << key.second << " at step " << key.first;
    }
  }

  static inline fs::path dir_;
  static inline Result convert_;
};

TEST_F(PreferenceCli, RaisesHeldOutPreferenceAccuracyAndResumesExactly) {
  ASSERT_EQ(convert_.exit_code, 0) << convert_.output;
  const Result r = Gemmapod("train --config " + Job("dpo", "dpo: {beta: 0.5}\n"), 120);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(Contains(r.output, "train: 41 examples from .*pairs.jsonl")) << r.output;
  EXPECT_TRUE(Contains(r.output, "reference log-probabilities of 41 pair\\(s\\)")) << r.output;
  EXPECT_TRUE(Contains(r.output, "step 12/12 \\| loss [0-9.]+ \\| pref-acc [0-9.]+% \\| margin"))
      << r.output;
  const Metrics m = Read("dpo");
  // The policy starts as the reference: every margin is 0, so the loss is log 2, and no pair is
  // ranked right yet.
  EXPECT_NEAR(m.at({0, "held_out_loss"}), std::log(2.0), 1e-9);
  EXPECT_EQ(m.at({0, "held_out_preference_accuracy"}), 0.0);
  EXPECT_EQ(m.at({0, "held_out_pairs"}), 8.0);
  EXPECT_GE(m.at({12, "held_out_preference_accuracy"}), 0.75);
  EXPECT_GT(m.at({12, "held_out_reward_margin"}), 1.0);
  EXPECT_LT(m.at({12, "held_out_loss"}), 0.3);
  EXPECT_GT(m.at({12, "chosen_reward"}), m.at({12, "rejected_reward"}));

  // Killed while saving step 8, resumed from step 4: the reference is scored again from the
  // model file and the run continues to the same bits.
  const std::string job = Job("dpo-killed", "dpo: {beta: 0.5}\n");
  EXPECT_EQ(Gemmapod("train --config " + job + " --inject-kill-during-save 8", 120).exit_code,
            128 + 9);
  const Result resumed = Gemmapod("train --config " + job + " --resume", 120);
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_TRUE(Contains(resumed.output, "resuming from .*step-00000004.h5")) << resumed.output;
  EXPECT_EQ(Read("dpo-killed"), m);
  gemmapod::ExpectSameCheckpoints(Run("dpo-killed") / "model.h5", Run("dpo") / "model.h5");
  // A resume with another beta is another run.
  const Result other =
      Gemmapod("train --config " + Job("dpo-killed", "dpo: {beta: 0.1}\n") + " --resume", 120);
  EXPECT_TRUE(Contains(other.output, "dpo_beta was 0.5 and is now 0.1 \\(dpo.\\*\\)"))
      << other.output;
}

TEST_F(PreferenceCli, IpoAndAReferenceKeptLoaded) {
  ASSERT_EQ(convert_.exit_code, 0) << convert_.output;
  const Result ipo = Gemmapod("train --config " + Job("ipo", "dpo: {beta: 0.5, loss: ipo}\n"), 120);
  ASSERT_EQ(ipo.exit_code, 0) << ipo.output;
  const Metrics m = Read("ipo");
  EXPECT_NEAR(m.at({0, "held_out_loss"}), 1.0, 1e-9);  // (0 - 1 / (2 beta))^2
  EXPECT_GE(m.at({12, "held_out_preference_accuracy"}), 0.75);

  // The reference loaded beside the policy scores each step's pairs: the plan counts it, and the
  // run is the precomputed one's (to rounding: the pairs are batched differently).
  const Result plan =
      Gemmapod("plan --train " + Job("kept", "dpo: {beta: 0.5, precompute_reference: false}\n", 4));
  EXPECT_TRUE(Contains(plan.output, "frozen models 1.3 MiB")) << plan.output;
  const Result kept = Gemmapod(
      "train --config " + Job("kept", "dpo: {beta: 0.5, precompute_reference: false}\n", 4), 120);
  ASSERT_EQ(kept.exit_code, 0) << kept.output;
  EXPECT_TRUE(Contains(kept.output, "the training pairs are scored at each step")) << kept.output;
  const Result pre = Gemmapod("train --config " + Job("pre", "dpo: {beta: 0.5}\n", 4), 120);
  ASSERT_EQ(pre.exit_code, 0) << pre.output;
  ExpectSameRun(Read("kept"), Read("pre"), "kept");
}

// tp 2, pp 2, tp 2 x pp 2 and 2 replicas give one rank's losses, rewards and accuracies; so does
// RecurrentGemma under tp 2.
TEST_F(PreferenceCli, LayoutsTrainAsOneRank) {
  ASSERT_EQ(convert_.exit_code, 0) << convert_.output;
  const std::string dpo = "dpo: {beta: 0.5}\n";
  ASSERT_EQ(Gemmapod("train --config " + Job("one", dpo, 3), 120).exit_code, 0);
  const Metrics want = Read("one");
  int layouts = 0;
  for (const auto& [ranks, parallel] : {std::pair<int, std::string>{2, "{tp: 2}"},
                                        {2, "{pp: 2}"},
                                        {4, "{tp: 2, pp: 2}"},
                                        {2, "{tp: 1}"}}) {
    const std::string run = "layout-" + std::to_string(++layouts);
    const Result r = gemmapod::MpirunGemmapod(
        ranks, "train --config " + Job(run, dpo + "parallel: " + parallel + "\n", 3), 240);
    ASSERT_EQ(r.exit_code, 0) << r.output;
    ExpectSameRun(Read(run), want, run + " " + parallel);
  }
  const std::string rg = (dir_ / "rg.h5").string();
  ASSERT_EQ(Gemmapod("convert tests/fixtures/models/recurrentgemma/hf " + rg).exit_code, 0);
  const auto rg_job = [&](const std::string& run, const std::string& parallel) {
    const std::string path = Job(run, dpo + "parallel: " + parallel + "\n", 3);
    std::ifstream in(path);
    std::string text((std::istreambuf_iterator<char>(in)), {});
    text.replace(text.find("tiny.h5"), 7, rg);
    std::ofstream(path) << text;
    return path;
  };
  ASSERT_EQ(Gemmapod("train --config " + rg_job("rg-one", "{tp: 1}"), 120).exit_code, 0);
  const Result rg_pp =
      gemmapod::MpirunGemmapod(2, "train --config " + rg_job("rg-pp", "{pp: 2}"), 240);
  ASSERT_EQ(rg_pp.exit_code, 0) << rg_pp.output;
  ExpectSameRun(Read("rg-pp"), Read("rg-one"), "rg-pp");
}

// A reward model: a zero scoring head added to the language model scores every pair alike at
// step 0 (loss log 2, nothing ranked); trained with Bradley-Terry it ranks the held-out pairs,
// exports a model with its head (which still generates), resumes exactly, and tp 2 / pp 2 train
// as one rank.
TEST_F(PreferenceCli, ARewardModelRanksHeldOutPairs) {
  ASSERT_EQ(convert_.exit_code, 0) << convert_.output;
  const auto job = [&](const std::string& run, const std::string& extra, int steps) {
    std::string path = Job(run, extra, steps);
    std::ifstream in(path);
    std::string text((std::istreambuf_iterator<char>(in)), {});
    text.replace(text.find("objective: dpo"), 14, "objective: reward");
    std::ofstream(path) << text;
    return path;
  };
  const Result r = Gemmapod("train --config " + job("rm", "reward: {margin: 0.0}\n", 12), 120);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(Contains(r.output, "reward model: a scoring head on each sequence's last token"))
      << r.output;
  const Metrics m = Read("rm");
  EXPECT_NEAR(m.at({0, "held_out_loss"}), std::log(2.0), 1e-9);
  EXPECT_EQ(m.at({0, "held_out_preference_accuracy"}), 0.0);
  EXPECT_GE(m.at({12, "held_out_preference_accuracy"}), 0.75);
  EXPECT_GT(m.at({12, "held_out_reward_margin"}), 0.5);
  {
    const auto model = gemmapod::Hdf5CheckpointReader::Open((Run("rm") / "model.h5").string());
    EXPECT_TRUE(model->Has("score.weight"));
  }
  const Result g = Gemmapod("generate --model " + (Run("rm") / "model.h5").string() +
                            " --prompt '3 plus 4 is' --max-tokens 2");
  EXPECT_EQ(g.exit_code, 0) << g.output;
  // Fine-tuned as a language model (with weight decay), the reward model keeps its head bit for
  // bit: no objective but reward trains it.
  std::ofstream(dir_ / "text.jsonl") << R"({"text": "the cat sat on the mat"})"
                                     << "\n";
  const std::string sft = (dir_ / "sft-rm.yaml").string();
  std::ofstream(sft) << "model: rm/model.h5\ndata: {train: text.jsonl}\nsteps: 2\n"
                     << "optimizer: {lr: 1e-2, weight_decay: 0.1}\ncheckpoint: {dir: sft-rm}\n";
  const Result tuned = Gemmapod("train --config " + sft, 120);
  ASSERT_EQ(tuned.exit_code, 0) << tuned.output;
  {
    const auto before = gemmapod::Hdf5CheckpointReader::Open((Run("rm") / "model.h5").string());
    const auto after = gemmapod::Hdf5CheckpointReader::Open((Run("sft-rm") / "model.h5").string());
    const gemmapod::Tensor x = before->Read("score.weight"), y = after->Read("score.weight");
    ASSERT_EQ(x.nbytes(), y.nbytes());
    EXPECT_EQ(std::memcmp(x.raw(), y.raw(), x.nbytes()), 0);
    const gemmapod::Tensor e0 = before->Read("model.norm.weight"),
                           e1 = after->Read("model.norm.weight");
    EXPECT_NE(std::memcmp(e0.raw(), e1.raw(), e0.nbytes()), 0) << "the rest trained";
  }

  const std::string killed = job("rm-killed", "", 12);
  EXPECT_EQ(Gemmapod("train --config " + killed + " --inject-kill-during-save 8", 120).exit_code,
            128 + 9);
  const Result resumed = Gemmapod("train --config " + killed + " --resume", 120);
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_EQ(Read("rm-killed"), m);
  gemmapod::ExpectSameCheckpoints(Run("rm-killed") / "model.h5", Run("rm") / "model.h5");

  ASSERT_EQ(Gemmapod("train --config " + job("rm-one", "", 3), 120).exit_code, 0);
  for (const std::string parallel : {"{tp: 2}", "{pp: 2}"}) {
    const std::string run = parallel == "{tp: 2}" ? "rm-tp" : "rm-pp";
    const Result split = gemmapod::MpirunGemmapod(
        2, "train --config " + job(run, "parallel: " + parallel + "\n", 3), 240);
    ASSERT_EQ(split.exit_code, 0) << split.output;
    ExpectSameRun(Read(run), Read("rm-one"), run);
  }
}

TEST_F(PreferenceCli, MistakesAreNamed) {
  ASSERT_EQ(convert_.exit_code, 0) << convert_.output;
  std::ofstream(dir_ / "half.jsonl") << R"({"prompt": "a", "chosen": " b", "rejected": " c"})"
                                     << "\n"
                                     << R"({"prompt": "a", "chosen": " b"})"
                                     << "\n";
  std::string job = Job("half", "");
  {
    std::ifstream in(job);
    std::string text((std::istreambuf_iterator<char>(in)), {});
    text.replace(text.find("pairs.jsonl"), 11, "half.jsonl");
    std::ofstream(job) << text;
  }
  const Result half = Gemmapod("train --config " + job);
  EXPECT_TRUE(Contains(half.output,
                       "half.jsonl:2: a preference pair needs \"chosen\" and "
                       "\"rejected\""))
      << half.output;
  // Pairs without the objective that reads them, its settings without it, packing with it.
  const std::string sft = (dir_ / "sft.yaml").string();
  std::ofstream(sft) << "model: tiny.h5\ndata: {train: pairs.jsonl}\nsteps: 1\n"
                     << "checkpoint: {dir: sft}\n";
  const Result sft_pairs = Gemmapod("train --config " + sft);
  EXPECT_TRUE(Contains(sft_pairs.output,
                       "pairs.jsonl:1: a preference pair .* needs a preference "
                       "objective \\(objective: dpo\\)"))
      << sft_pairs.output;
  const std::string no_objective = (dir_ / "no-objective.yaml").string();
  std::ofstream(no_objective) << "model: tiny.h5\ndata: {train: pairs.jsonl}\nsteps: 1\n"
                              << "dpo: {beta: 0.1}\ncheckpoint: {dir: x}\n";
  const Result lonely = Gemmapod("train --config " + no_objective);
  EXPECT_TRUE(Contains(lonely.output,
                       "no-objective.yaml:4:[0-9]+: dpo: the dpo: settings need objective: dpo"))
      << lonely.output;
  const std::string packed = (dir_ / "packed.yaml").string();
  std::ofstream(packed) << "model: tiny.h5\nobjective: dpo\n"
                        << "data: {train: pairs.jsonl, packing: true}\nsteps: 1\n"
                        << "checkpoint: {dir: x}\n";
  const Result packing = Gemmapod("train --config " + packed);
  EXPECT_TRUE(Contains(packing.output, "packing: true does not apply to objective: dpo"))
      << packing.output;
  const std::string lora = (dir_ / "lora-reward.yaml").string();
  std::ofstream(lora) << "model: tiny.h5\nobjective: reward\ndata: {train: pairs.jsonl}\n"
                      << "steps: 1\nlora: {rank: 2}\ncheckpoint: {dir: x}\n";
  const Result adapters = Gemmapod("train --config " + lora);
  EXPECT_TRUE(Contains(adapters.output,
                       "lora-reward.yaml:5:[0-9]+: lora: a reward model's "
                       "scoring head trains in full"))
      << adapters.output;
  const Result beta = Gemmapod("train --config " + Job("beta", "dpo: {beta: 0}\n"));
  EXPECT_TRUE(Contains(beta.output, "dpo.beta: must be above 0")) << beta.output;
  // A T5Gemma trains on {"input", "target"} pairs, so its preference pairs are two targets of
  // one input; prompt/completion pairs are refused by line.
  const Result t5 =
      Gemmapod("convert tests/fixtures/models/t5gemma/unbalanced " + (dir_ / "t5.h5").string());
  ASSERT_EQ(t5.exit_code, 0) << t5.output;
  std::string t5_job = Job("t5", "");
  {
    std::ifstream in(t5_job);
    std::string text((std::istreambuf_iterator<char>(in)), {});
    text.replace(text.find("tiny.h5"), 7, "t5.h5");
    std::ofstream(t5_job) << text;
  }
  const Result refused = Gemmapod("train --config " + t5_job);
  EXPECT_TRUE(Contains(refused.output, "pairs.jsonl:1: missing \"input\"")) << refused.output;
}

// T5Gemma: DPO over two targets of one input (the encoder runs once per sequence, the
// cross-attention carries the gradient into it), from log 2 at step 0; two pipeline stages (the
// encoder's and the decoder's layers) give one rank's run.
TEST_F(PreferenceCli, T5GemmaPrefersItsChosenTargets) {
  ASSERT_EQ(convert_.exit_code, 0) << convert_.output;
  const std::string t5 = (dir_ / "t5-dpo.h5").string();
  ASSERT_EQ(Gemmapod("convert tests/fixtures/models/t5gemma/unbalanced " + t5).exit_code, 0);
  {
    std::ofstream pairs(dir_ / "t5-pairs.jsonl");
    for (int i = 0; i < 40; ++i) {
      const int a = i % 10, b = (i * 7) % 10;
      pairs << R"({"input": ")" << a << " plus " << b << R"(", "chosen": ")" << a + b
            << R"(", "rejected": ")" << a + b + 1 << "\"}\n";
    }
  }
  const auto job = [&](const std::string& run, const std::string& extra, int steps) {
    std::string path = Job(run, "dpo: {beta: 0.5}\n" + extra, steps);
    std::ifstream in(path);
    std::string text((std::istreambuf_iterator<char>(in)), {});
    text.replace(text.find("tiny.h5"), 7, t5);
    text.replace(text.find("pairs.jsonl"), 11, "t5-pairs.jsonl");
    std::ofstream(path) << text;
    return path;
  };
  const Result r = Gemmapod("train --config " + job("t5-dpo", "", 12), 180);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const Metrics m = Read("t5-dpo");
  EXPECT_NEAR(m.at({0, "held_out_loss"}), std::log(2.0), 1e-9);
  EXPECT_GE(m.at({12, "held_out_preference_accuracy"}), 0.75);
  ASSERT_EQ(Gemmapod("train --config " + job("t5-one", "", 3), 120).exit_code, 0);
  const Result pp =
      gemmapod::MpirunGemmapod(2, "train --config " + job("t5-pp", "parallel: {pp: 2}\n", 3), 240);
  ASSERT_EQ(pp.exit_code, 0) << pp.output;
  ExpectSameRun(Read("t5-pp"), Read("t5-one"), "t5-pp");
}

}  // namespace
