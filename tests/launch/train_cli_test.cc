// `gemmapod train` as users run it, on the tiny Gemma 3 fixture: a run writes its checkpoints,
// metrics, loss curve and exported model; a run killed (SIGKILL) half-way through a save leaves
// the previous checkpoint whole, and resuming from it gives losses and weights bit-identical to
// the uninterrupted run (f32 weights, and bf16 weights with f32 masters); mistakes are named.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "runtime/checkpoint/hdf5_checkpoint.h"
#include "runtime/error.h"
#include "tests/launch/run_gemmapod.h"
#include "tests/launch/training_runs.h"

namespace {

namespace fs = std::filesystem;

using gemmapod::Contains;
using gemmapod::Gemmapod;
using Result = gemmapod::CliResult;

class TrainCli : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = fs::temp_directory_path() / ("train-cli-" + std::to_string(getpid()));
    fs::create_directories(dir_);
    model_ = (dir_ / "tiny.h5").string();
    convert_ = Gemmapod("convert tests/fixtures/models/gemma3 " + model_);
    std::ofstream data(dir_ / "train.jsonl");
    for (int i = 0; i < 24; ++i) {
      data << R"({"prompt": ")" << i << " plus " << (i * 7) % 10 << R"( is", "completion": " )"
           << i + (i * 7) % 10 << "\"}\n";
    }
    data << R"({"messages": [{"role": "user", "content": "hi"}, )"
         << R"({"role": "assistant", "content": "hello"}]})"
         << "\n";
    data << R"({"text": "the cat sat on the mat"})"
         << "\n";
  }
  static void TearDownTestSuite() { fs::remove_all(dir_); }

  // A job file in the test directory; `extra` adds or overrides top-level keys.
  static std::string Job(const std::string& name, const std::string& run_dir,
                         const std::string& extra = "", const std::string& model = "tiny.h5") {
    const std::string path = (dir_ / (name + ".yaml")).string();
    std::ofstream(path) << "model: " << model << "\n"
                        << "data: {train: train.jsonl, held_out_fraction: 0.2, max_length: 64, "
                        << "packing: true}\n"
                        << "steps: 12\n"
                        << "batch: {sequences: 4, micro_batch: 2}\n"
                        << "optimizer: {lr: 1e-2, weight_decay: 0.01}\n"
                        << "schedule: {warmup_steps: 2}\n"
                        << "checkpoint: {dir: " << run_dir << ", interval: 4, keep: 2}\n"
                        << extra;
    return path;
  }
  static fs::path Run(const std::string& run_dir) { return dir_ / run_dir; }

  // Every line of a run's metrics by step and kind ("loss" or "held_out_loss").
  static std::map<std::pair<int64_t, std::string>, double> Metrics(const std::string& run_dir) {
    std::map<std::pair<int64_t, std::string>, double> out;
    std::ifstream in(Run(run_dir) / "metrics.jsonl");
    std::string line;
    while (std::getline(in, line)) {
      const nlohmann::json j = nlohmann::json::parse(line);
      for (const char* key : {"loss", "held_out_loss"}) {
        if (j.contains(key)) out[{j["step"].get<int64_t>(), key}] = j[key].get<double>();
      }
    }
    return out;
  }

  // Every tensor of two checkpoints within `relative` of b's in the L2 norm. (Element by element
  // is too strict a measure: where a gradient element is near zero, AdamW's m / sqrt(v) turns
  // the rounding of another summation order into a step of up to the learning rate.)
  static void ExpectCloseWeights(const fs::path& a, const fs::path& b, double relative) {
    const auto ra = gemmapod::Hdf5CheckpointReader::Open(a.string());
    const auto rb = gemmapod::Hdf5CheckpointReader::Open(b.string());
    ASSERT_EQ(ra->List().size(), rb->List().size());
    for (const gemmapod::TensorInfo& info : ra->List()) {
      const gemmapod::Tensor x = ra->Read(info.name).To(gemmapod::DType::kF32);
      const gemmapod::Tensor y = rb->Read(info.name).To(gemmapod::DType::kF32);
      ASSERT_EQ(x.numel(), y.numel()) << info.name;
      double diff = 0, norm = 0;
      for (int64_t i = 0; i < x.numel(); ++i) {
        const double d = double{x.data<float>()[i]} - y.data<float>()[i];
        diff += d * d;
        norm += double{y.data<float>()[i]} * y.data<float>()[i];
      }
      EXPECT_LE(std::sqrt(diff), relative * std::sqrt(norm)) << a << ": " << info.name;
    }
  }

  // The optimizer's moments of two training checkpoints, each tensor within `relative` of the
  // largest |value| of b's.
  static void ExpectCloseState(const fs::path& a, const fs::path& b, double relative) {
    const auto ra = gemmapod::Hdf5CheckpointReader::Open(a.string());
    const auto rb = gemmapod::Hdf5CheckpointReader::Open(b.string());
    for (const char* group : {"optimizer/exp_avg", "optimizer/exp_avg_sq"}) {
      for (const gemmapod::TensorInfo& info : rb->ListGroup(group)) {
        const gemmapod::Tensor x = ra->ReadFromGroup(group, info.name);
        const gemmapod::Tensor y = rb->ReadFromGroup(group, info.name);
        ASSERT_EQ(x.numel(), y.numel()) << group << "/" << info.name;
        double diff = 0, scale = 0;
        for (int64_t i = 0; i < x.numel(); ++i) {
          diff = std::max(diff, std::abs(double{x.data<float>()[i]} - y.data<float>()[i]));
          scale = std::max(scale, std::abs(double{y.data<float>()[i]}));
        }
        EXPECT_LE(diff, relative * scale) << a << ": " << group << "/" << info.name;
      }
    }
  }

  // The same steps and kinds, each loss within `relative` of the other.
  static void ExpectCloseMetrics(const std::map<std::pair<int64_t, std::string>, double>& got,
                                 const std::map<std::pair<int64_t, std::string>, double>& want,
                                 double relative, const std::string& run) {
    ASSERT_EQ(got.size(), want.size()) << run;
    for (const auto& [key, value] : want) {
      ASSERT_TRUE(got.count(key)) << run << ": no " << key.second << " at step " << key.first;
      EXPECT_NEAR(got.at(key), value, relative * std::abs(value))
          << run << ": " << key.second << " at step " << key.first;
    }
  }

  // RecurrentGemma's fixture has 3 heads (and a 512-word vocabulary), which no tp splits: its
  // shape with 4 heads, as a config file for random-checkpoint.
  static std::string RecurrentGemmaWithFourHeads() {
    std::ifstream in("configs/models/tiny-recurrentgemma.yaml");
    std::string config((std::istreambuf_iterator<char>(in)), {});
    for (const auto& [from, to] :
         {std::pair<std::string, std::string>{"num_heads: 3", "num_heads: 4"},
          {"lru_width: 72", "lru_width: 64"}}) {
      EXPECT_NE(config.find(from), std::string::npos) << from;
      if (config.find(from) != std::string::npos)
        config.replace(config.find(from), from.size(), to);
    }
    const std::string path = (dir_ / "rg-4-heads.yaml").string();
    std::ofstream(path) << config;
    return path;
  }

  static inline fs::path dir_;
  static inline std::string model_;
  static inline Result convert_;
};

TEST_F(TrainCli, ARunWritesCheckpointsMetricsCurveAndAModelThatGenerates) {
  ASSERT_EQ(convert_.exit_code, 0) << convert_.output;
  const Result r = Gemmapod("train --config " + Job("plain", "plain"), 120);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(Contains(r.output, "train: 26 examples from .*train.jsonl")) << r.output;
  EXPECT_TRUE(Contains(r.output, "train: 5 held-out examples")) << r.output;
  EXPECT_TRUE(Contains(r.output, "step 0/12 \\| held-out loss [0-9.]+")) << r.output;
  EXPECT_TRUE(Contains(r.output,
                       "step 12/12 \\| loss [0-9.]+ \\| lr [0-9.e-]+ \\| grad-norm [0-9.e+-]+ "
                       "\\| [0-9]+ tok/s \\| eta 0s"))
      << r.output;
  // keep: 2 leaves the last two checkpoints.
  EXPECT_FALSE(fs::exists(Run("plain") / "step-00000004.h5"));
  EXPECT_TRUE(fs::exists(Run("plain") / "step-00000008.h5"));
  EXPECT_TRUE(fs::exists(Run("plain") / "step-00000012.h5"));
  std::ifstream svg(Run("plain") / "loss.svg");
  const std::string picture((std::istreambuf_iterator<char>(svg)), {});
  EXPECT_EQ(picture.rfind("<svg ", 0), 0u) << picture.substr(0, 200);
  EXPECT_NE(picture.find("<polyline"), std::string::npos);
  const auto metrics = Metrics("plain");
  EXPECT_EQ(metrics.size(), 12u + 4u);  // 12 steps; held-out at 0, 4, 8, 12
  EXPECT_LT(metrics.at({12, "loss"}), metrics.at({1, "loss"}));
  // The exported model and every checkpoint are models: generate reads them as they are.
  for (const char* file : {"model.h5", "step-00000012.h5"}) {
    const Result g = Gemmapod("generate --model " + (Run("plain") / file).string() +
                              " --prompt '3 plus 1 is' --max-tokens 3");
    EXPECT_EQ(g.exit_code, 0) << file << ": " << g.output;
  }
  const Result hf = Gemmapod("convert " + (Run("plain") / "model.h5").string() + " " +
                             (dir_ / "exported-hf").string());
  ASSERT_EQ(hf.exit_code, 0) << hf.output;
  EXPECT_TRUE(fs::exists(dir_ / "exported-hf" / "model.safetensors"));
}

// `plan --train` counts what the job holds: every parameter's weight, gradient and two moments
// in f32 (the tiny model has 350464 parameters), or only the adapters' with LoRA.
TEST_F(TrainCli, PlanCountsTrainingMemory) {
  ASSERT_EQ(convert_.exit_code, 0) << convert_.output;
  const Result full = Gemmapod("plan --train " + Job("plan", "plan-run"));
  ASSERT_EQ(full.exit_code, 0) << full.output;
  EXPECT_TRUE(Contains(full.output, "every parameter, f32 weights")) << full.output;
  EXPECT_TRUE(Contains(full.output, "weights 1.3 MiB, gradients 1.3 MiB, optimizer 2.7 MiB"))
      << full.output;
  EXPECT_TRUE(Contains(full.output, "per micro-batch of 128 tokens at most")) << full.output;
  EXPECT_TRUE(Contains(full.output, "\\(350464 trainable parameters\\)")) << full.output;
  // Per rank of a pod: tp 2 halves the weights, gradients and optimizer state.
  const Result pod = Gemmapod("plan --train " + Job("plan-pod", "plan-run") +
                              " --pod tests/launch/pods/tp2-dp2.yaml");
  ASSERT_EQ(pod.exit_code, 0) << pod.output;
  EXPECT_TRUE(Contains(pod.output, "on each of 4 ranks \\(tp 2 x 2 replica\\(s\\)\\)"))
      << pod.output;
  EXPECT_TRUE(Contains(pod.output, "weights 0.7 MiB, gradients 0.7 MiB, optimizer 1.3 MiB"))
      << pod.output;
  // Rank 0 of a sharded job gathers the largest tensor (the embedding) whole while it saves.
  EXPECT_TRUE(Contains(pod.output, "; rank 0 adds up to [0-9.]+ MiB while it writes a checkpoint"))
      << pod.output;
  EXPECT_FALSE(Contains(full.output, "rank 0 adds")) << full.output;
  // Per pipeline stage: each its layers (the embedding on both ends), the logits on the last,
  // and under 1F1B the first stage's 2 micro-batches in flight of its half of the layers.
  const Result stages =
      Gemmapod("plan --train " + Job("plan-pp", "plan-run") + " --pod tests/launch/pods/pp2.yaml");
  ASSERT_EQ(stages.exit_code, 0) << stages.output;
  EXPECT_TRUE(Contains(stages.output, "on each of 2 ranks \\(tp 1 x pp 2 x 1 replica\\(s\\)\\)"))
      << stages.output;
  EXPECT_TRUE(Contains(stages.output, "stage 0 memory: .* logits 0.0 MiB")) << stages.output;
  EXPECT_TRUE(Contains(stages.output, "stage 1 memory: .* logits 0.[1-9]")) << stages.output;
  const Result lora = Gemmapod(
      "plan --train " + Job("plan-lora", "plan-run", "lora: {rank: 2, targets: [q_proj]}\n"));
  ASSERT_EQ(lora.exit_code, 0) << lora.output;
  // q_proj is [128, 64] in each of the 7 layers: 2 * (128 + 64) * 7 adapter parameters.
  EXPECT_TRUE(Contains(lora.output, "\\(2688 trainable parameters\\)")) << lora.output;
  EXPECT_FALSE(fs::exists(Run("plan-run"))) << "plan runs nothing";
}

TEST_F(TrainCli, AKillDuringASaveLosesNothingAndTheResumeIsBitIdentical) {
  ASSERT_EQ(convert_.exit_code, 0) << convert_.output;
  const Result whole = Gemmapod("train --config " + Job("whole", "whole"), 120);
  ASSERT_EQ(whole.exit_code, 0) << whole.output;

  const std::string job = Job("killed", "killed");
  const Result killed = Gemmapod("train --config " + job + " --inject-kill-during-save 8", 120);
  EXPECT_EQ(killed.exit_code, 128 + 9) << killed.output;
  EXPECT_TRUE(fs::exists(Run("killed") / "step-00000004.h5"));
  EXPECT_FALSE(fs::exists(Run("killed") / "step-00000008.h5"));
  int temporaries = 0;
  for (const auto& e : fs::directory_iterator(Run("killed"))) {
    temporaries += Contains(e.path().filename().string(), "^step-00000008.h5.tmp-") ? 1 : 0;
  }
  EXPECT_EQ(temporaries, 1) << "the killed save's temporary file";
  const Result earlier =
      Gemmapod("generate --model " + (Run("killed") / "step-00000004.h5").string() +
               " --prompt 'hi' --max-tokens 2");
  EXPECT_EQ(earlier.exit_code, 0) << "the previous checkpoint loads: " << earlier.output;

  const Result resumed = Gemmapod("train --config " + job + " --resume", 120);
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_TRUE(Contains(resumed.output, "removed 1 unfinished checkpoint file")) << resumed.output;
  EXPECT_TRUE(Contains(resumed.output, "resuming from .*step-00000004.h5 at step 4"))
      << resumed.output;
  EXPECT_EQ(Metrics("killed"), Metrics("whole"));  // every loss, to the last bit
  gemmapod::ExpectSameCheckpoints(Run("killed") / "model.h5", Run("whole") / "model.h5");
  gemmapod::ExpectSameCheckpoints(Run("killed") / "step-00000012.h5",
                                  Run("whole") / "step-00000012.h5");
}

TEST_F(TrainCli, RecomputingLayersGivesTheSameRun) {
  ASSERT_EQ(convert_.exit_code, 0) << convert_.output;
  ASSERT_EQ(Gemmapod("train --config " + Job("keep", "keep"), 120).exit_code, 0);
  const Result r =
      Gemmapod("train --config " + Job("recompute", "recompute", "recompute: true\n"), 120);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(Metrics("recompute"), Metrics("keep"));
  gemmapod::ExpectSameCheckpoints(Run("recompute") / "model.h5", Run("keep") / "model.h5");
}

TEST_F(TrainCli, Bf16WeightsResumeFromTheirF32Masters) {
  ASSERT_EQ(convert_.exit_code, 0) << convert_.output;
  const Result whole = Gemmapod(
      "train --config " + Job("bf16-whole", "bf16-whole", "weights: bf16\nseed: 5\n"), 120);
  ASSERT_EQ(whole.exit_code, 0) << whole.output;
  // A new directory continuing from the first run's step 8 (--resume-from).
  const Result resumed =
      Gemmapod("train --config " + Job("bf16-resumed", "bf16-resumed", "weights: bf16\nseed: 5\n") +
                   " --resume-from " + (Run("bf16-whole") / "step-00000008.h5").string(),
               120);
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  gemmapod::ExpectSameCheckpoints(Run("bf16-resumed") / "model.h5", Run("bf16-whole") / "model.h5");
  const auto a = Metrics("bf16-whole"), b = Metrics("bf16-resumed");
  for (int64_t step = 9; step <= 12; ++step) {
    EXPECT_EQ(a.at({step, "loss"}), b.at({step, "loss"})) << "step " << step;
  }
}

TEST_F(TrainCli, LoraTrainsAdaptersResumesExactlyAndExportsMergedWeights) {
  ASSERT_EQ(convert_.exit_code, 0) << convert_.output;
  const std::string lora = "lora: {rank: 4, alpha: 8, targets: [q_proj, v_proj, down_proj]}\n";
  const Result whole = Gemmapod("train --config " + Job("lora-whole", "lora-whole", lora), 120);
  ASSERT_EQ(whole.exit_code, 0) << whole.output;
  EXPECT_TRUE(Contains(whole.output, "LoRA rank 4, alpha 8 on q_proj,v_proj,down_proj"))
      << whole.output;
  const std::string job = Job("lora-killed", "lora-killed", lora);
  EXPECT_EQ(Gemmapod("train --config " + job + " --inject-kill-during-save 8", 120).exit_code,
            128 + 9);
  const Result resumed = Gemmapod("train --config " + job + " --resume", 120);
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_EQ(Metrics("lora-killed"), Metrics("lora-whole"));
  gemmapod::ExpectSameCheckpoints(Run("lora-killed") / "model.h5", Run("lora-whole") / "model.h5");
  // The export holds merged matrices: adapted ones moved, frozen ones did not.
  const auto base = gemmapod::Hdf5CheckpointReader::Open(model_);
  const auto tuned =
      gemmapod::Hdf5CheckpointReader::Open((Run("lora-whole") / "model.h5").string());
  const auto same = [&](const std::string& name) {
    const gemmapod::Tensor a = base->Read(name).To(gemmapod::DType::kF32);
    const gemmapod::Tensor b = tuned->Read(name).To(gemmapod::DType::kF32);
    return std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0;
  };
  EXPECT_FALSE(same("model.layers.0.self_attn.q_proj.weight"));
  EXPECT_FALSE(same("model.layers.1.mlp.down_proj.weight"));
  EXPECT_TRUE(same("model.layers.0.self_attn.k_proj.weight"));
  EXPECT_TRUE(same("model.embed_tokens.weight"));
  EXPECT_TRUE(same("model.layers.0.input_layernorm.weight"));
  const Result g = Gemmapod("generate --model " + (Run("lora-whole") / "model.h5").string() +
                            " --prompt '3 plus 1 is' --max-tokens 3");
  EXPECT_EQ(g.exit_code, 0) << g.output;
  const Result other = Gemmapod(
      "train --config " + Job("lora-killed", "lora-killed", "lora: {rank: 2}\n") + " --resume");
  EXPECT_TRUE(Contains(other.output, "lora_rank was 4 and is now 2")) << other.output;
  EXPECT_TRUE(Contains(other.output,
                       "lora_targets was q_proj,v_proj,down_proj and is now "
                       "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"))
      << other.output;
}

// RecurrentGemma trains through the same loop: a SIGKILL mid-save and a resume give the
// uninterrupted run's bits, and the exported model generates.
TEST_F(TrainCli, RecurrentGemmaTrainsAndResumesExactly) {
  const std::string rg = (dir_ / "rg.h5").string();
  const Result converted = Gemmapod("convert tests/fixtures/models/recurrentgemma/hf " + rg);
  ASSERT_EQ(converted.exit_code, 0) << converted.output;
  const Result whole = Gemmapod("train --config " + Job("rg-whole", "rg-whole", "", "rg.h5"), 120);
  ASSERT_EQ(whole.exit_code, 0) << whole.output;
  const auto metrics = Metrics("rg-whole");
  EXPECT_LT(metrics.at({12, "loss"}), metrics.at({1, "loss"}));
  const std::string job = Job("rg-killed", "rg-killed", "", "rg.h5");
  EXPECT_EQ(Gemmapod("train --config " + job + " --inject-kill-during-save 8", 120).exit_code,
            128 + 9);
  const Result resumed = Gemmapod("train --config " + job + " --resume", 120);
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_EQ(Metrics("rg-killed"), metrics);
  gemmapod::ExpectSameCheckpoints(Run("rg-killed") / "model.h5", Run("rg-whole") / "model.h5");
  const Result g = Gemmapod("generate --model " + (Run("rg-whole") / "model.h5").string() +
                            " --prompt '3 plus 1 is' --max-tokens 3");
  EXPECT_EQ(g.exit_code, 0) << g.output;
  const Result lora =
      Gemmapod("train --config " + Job("rg-lora", "rg-lora", "lora: {rank: 2}\n", "rg.h5"));
  EXPECT_TRUE(Contains(lora.output, "adapters are built for decoder-only Gemma so far"))
      << lora.output;
}

// T5Gemma trains on {"input", "target"} pairs through the same loop, resumes exactly after a
// SIGKILL mid-save, and its exported model generates.
TEST_F(TrainCli, T5GemmaTrainsOnPairsAndResumesExactly) {
  const std::string t5 = (dir_ / "t5.h5").string();
  const Result converted = Gemmapod("convert tests/fixtures/models/t5gemma/balanced " + t5);
  ASSERT_EQ(converted.exit_code, 0) << converted.output;
  {
    std::ofstream pairs(dir_ / "pairs.jsonl");
    for (int i = 0; i < 20; ++i) {
      pairs << R"({"input": ")" << i << " plus " << i % 3 << R"(", "target": ")" << i + i % 3
            << "\"}\n";
    }
  }
  const std::string data = "data: {train: pairs.jsonl, held_out_fraction: 0.2, max_length: 32}\n";
  const auto job = [&](const std::string& name) {
    const std::string path = (dir_ / (name + ".yaml")).string();
    std::ofstream(path) << "model: t5.h5\n"
                        << data << "steps: 12\nbatch: {sequences: 4}\n"
                        << "optimizer: {lr: 1e-2}\ncheckpoint: {dir: " << name
                        << ", interval: 4, keep: 2}\n";
    return path;
  };
  const Result whole = Gemmapod("train --config " + job("t5-whole"), 120);
  ASSERT_EQ(whole.exit_code, 0) << whole.output;
  const auto metrics = Metrics("t5-whole");
  EXPECT_LT(metrics.at({12, "loss"}), metrics.at({1, "loss"}));
  EXPECT_TRUE(metrics.count({12, "held_out_loss"}));
  EXPECT_EQ(Gemmapod("train --config " + job("t5-killed") + " --inject-kill-during-save 8", 120)
                .exit_code,
            128 + 9);
  const Result resumed = Gemmapod("train --config " + job("t5-killed") + " --resume", 120);
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_EQ(Metrics("t5-killed"), metrics);
  gemmapod::ExpectSameCheckpoints(Run("t5-killed") / "model.h5", Run("t5-whole") / "model.h5");
  const Result g = Gemmapod("generate --model " + (Run("t5-whole") / "model.h5").string() +
                            " --prompt '3 plus 1' --max-tokens 3");
  EXPECT_EQ(g.exit_code, 0) << g.output;
}

// Data parallelism: mpirun starts replicas that split each step's micro-batches and the held-out
// evaluation; their summed gradients give one rank's losses and weights (to the rounding of a
// different summation order) for decoder-only Gemma 2, RecurrentGemma and T5Gemma, with 2 and 4
// ranks, with the optimizer state replicated and sharded (ZeRO-1). A replica killed mid-save loses
// nothing, and the run resumes on another number of ranks (replicated: on one rank; sharded: on
// four, each taking another share of the saved state).
TEST_F(TrainCli, DataParallelRanksTrainAsOneRank) {
  {
    std::ofstream pairs(dir_ / "dp-pairs.jsonl");
    for (int i = 0; i < 20; ++i) {
      pairs << R"({"input": ")" << i << " plus " << i % 3 << R"(", "target": ")" << i + i % 3
            << "\"}\n";
    }
  }
  struct Family {
    std::string name, fixture, data;
  };
  const std::string text_data =
      "data: {train: train.jsonl, held_out_fraction: 0.2, max_length: 64, packing: true}\n";
  const std::vector<Family> families = {
      {"g2", "tests/fixtures/models/gemma2", text_data},
      {"rg", "tests/fixtures/models/recurrentgemma/hf", text_data},
      {"t5", "tests/fixtures/models/t5gemma/unbalanced",
       "data: {train: dp-pairs.jsonl, held_out_fraction: 0.2, max_length: 32}\n"}};
  for (const Family& f : families) {
    const std::string model = (dir_ / ("dp-" + f.name + ".h5")).string();
    const Result converted = Gemmapod("convert " + f.fixture + " " + model);
    ASSERT_EQ(converted.exit_code, 0) << converted.output;
    const auto job = [&](const std::string& run, int zero = 0) {
      const std::string path = (dir_ / (run + ".yaml")).string();
      std::ofstream(path) << "model: " << model << "\n"
                          << f.data << "steps: 5\nbatch: {sequences: 4, micro_batch: 1}\n"
                          << "optimizer: {lr: 1e-2, weight_decay: 0.01, zero: " << zero << "}\n"
                          << "checkpoint: {dir: " << run << ", interval: 2, keep: 3}\n";
      return path;
    };
    const std::string one = f.name + "-dp1";
    const Result single = Gemmapod("train --config " + job(one), 120);
    ASSERT_EQ(single.exit_code, 0) << single.output;
    const auto want = Metrics(one);
    ASSERT_EQ(want.size(), 5u + 4u) << f.name;  // 5 steps; held-out at 0, 2, 4, 5
    for (int zero : {0, 1}) {
      for (int ranks : {2, 4}) {
        const std::string run =
            f.name + "-dp" + std::to_string(ranks) + "-zero" + std::to_string(zero);
        const Result r = gemmapod::MpirunGemmapod(ranks, "train --config " + job(run, zero), 240);
        ASSERT_EQ(r.exit_code, 0) << r.output;
        EXPECT_TRUE(Contains(r.output, "data parallelism over " + std::to_string(ranks) + " ranks"))
            << r.output;
        EXPECT_EQ(Contains(r.output, "ZeRO-1: optimizer state sharded over the " +
                                         std::to_string(ranks) + " ranks"),
                  zero == 1)
            << r.output;
        ExpectCloseMetrics(Metrics(run), want, 1e-5, run);
        ExpectCloseWeights(Run(run) / "model.h5", Run(one) / "model.h5", 1e-5);
      }
    }
    // Killed while rank 0 writes step 4: step 2 stays, and one rank finishes the run.
    const std::string killed = f.name + "-killed";
    EXPECT_NE(gemmapod::MpirunGemmapod(
                  2, "train --config " + job(killed) + " --inject-kill-during-save 4", 240)
                  .exit_code,
              0);
    EXPECT_TRUE(fs::exists(Run(killed) / "step-00000002.h5"));
    EXPECT_FALSE(fs::exists(Run(killed) / "step-00000004.h5"));
    const Result resumed = Gemmapod("train --config " + job(killed) + " --resume", 120);
    ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
    EXPECT_TRUE(Contains(resumed.output, "resuming from .*step-00000002.h5")) << resumed.output;
    ExpectCloseMetrics(Metrics(killed), want, 1e-5, killed);
    ExpectCloseWeights(Run(killed) / "model.h5", Run(one) / "model.h5", 1e-5);
    // Sharded: the state rank 0 gathered into step 2, shared out again over four ranks.
    const std::string sharded = f.name + "-sharded-killed";
    EXPECT_NE(gemmapod::MpirunGemmapod(
                  2, "train --config " + job(sharded, 1) + " --inject-kill-during-save 4", 240)
                  .exit_code,
              0);
    const Result reshared =
        gemmapod::MpirunGemmapod(4, "train --config " + job(sharded, 1) + " --resume", 240);
    ASSERT_EQ(reshared.exit_code, 0) << reshared.output;
    ExpectCloseMetrics(Metrics(sharded), want, 1e-5, sharded);
    ExpectCloseWeights(Run(sharded) / "model.h5", Run(one) / "model.h5", 1e-5);
  }
  const Result uneven =
      gemmapod::MpirunGemmapod(3, "train --config " + Job("dp-uneven", "dp-uneven"));
  EXPECT_NE(uneven.exit_code, 0);
  EXPECT_TRUE(Contains(uneven.output,
                       "makes 2 micro-batch\\(es\\) a step, which 3 data-parallel "
                       "ranks cannot share evenly"))
      << uneven.output;
  EXPECT_EQ(uneven.output.find("rank 1"), std::string::npos) << "reported once: " << uneven.output;
}

// Tensor parallelism (Gemma, RecurrentGemma and T5Gemma): groups of 2 and 4 ranks, alone, with
// data-parallel replicas, and with the replicas' optimizer state sharded, give one rank's losses,
// weights and optimizer moments. Gemma 3's single key/value head is held by every rank of the group
// (its gradient summed over them); Gemma 2's two are split at tp 2 and shared by pairs at tp 4. A
// run saved with tp 2 resumes with tp 1 and 2 replicas, and the reverse. The jobs use AdamW's eps
// 1e-6: at the default 1e-8 a gradient element that is rounding noise around zero (a sum that
// cancels) moves its weight by a whole learning rate in a direction the summation order picks,
// which says nothing about the layout.
TEST_F(TrainCli, TensorParallelLayoutsTrainAsOneRank) {
  struct Layout {
    int ranks, tp, zero;
  };
  struct Family {
    std::string name, make, data;  // make: the command that writes the model (+ its path)
    std::vector<Layout> layouts;
    bool switch_layouts;
  };
  {
    std::ofstream pairs(dir_ / "tp-pairs.jsonl");
    for (int i = 0; i < 20; ++i) {
      pairs << R"({"input": ")" << i << " plus " << i % 3 << R"(", "target": ")" << i + i % 3
            << "\"}\n";
    }
  }
  const std::string text =
      "data: {train: train.jsonl, held_out_fraction: 0.2, max_length: 64, packing: true}\n";
  // The unbalanced T5Gemma: the encoder's two key/value heads split at tp 2, the decoder's one
  // (self- and cross-attention) held by both ranks.
  const std::vector<Family> families = {
      {"tp-g3",
       "convert tests/fixtures/models/gemma3",
       text,
       {{2, 2, 0}, {4, 4, 0}, {4, 2, 0}, {4, 2, 1}},
       true},
      {"tp-g2", "convert tests/fixtures/models/gemma2", text, {{2, 2, 0}, {4, 4, 0}}, false},
      {"tp-rg",
       "random-checkpoint --dtype f32 --config " + RecurrentGemmaWithFourHeads() +
           " --tokenizer tests/fixtures/models/recurrentgemma/hf/tokenizer.model --out",
       text,
       {{2, 2, 0}, {4, 4, 0}, {4, 2, 1}},
       false},
      {"tp-t5",
       "convert tests/fixtures/models/t5gemma/unbalanced",
       "data: {train: tp-pairs.jsonl, held_out_fraction: 0.2, max_length: 32}\n",
       {{2, 2, 0}, {4, 2, 1}},
       true}};
  for (const Family& f : families) {
    const std::string model = (dir_ / (f.name + ".h5")).string();
    const Result made = Gemmapod(f.make + " " + model);
    ASSERT_EQ(made.exit_code, 0) << made.output;
    const auto job = [&](const std::string& run, int tp, int zero) {
      const std::string path = (dir_ / (run + ".yaml")).string();
      std::ofstream(path) << "model: " << model << "\n"
                          << f.data << "steps: 5\nbatch: {sequences: 4, micro_batch: 1}\n"
                          << "optimizer: {lr: 1e-2, weight_decay: 0.01, eps: 1e-6, zero: " << zero
                          << "}\nparallel: {tp: " << tp << "}\n"
                          << "checkpoint: {dir: " << run << ", interval: 2, keep: 3}\n";
      return path;
    };
    const std::string one = f.name + "-one";
    const Result single = Gemmapod("train --config " + job(one, 1, 0), 120);
    ASSERT_EQ(single.exit_code, 0) << single.output;
    const auto want = Metrics(one);
    for (const Layout& l : f.layouts) {
      const std::string run = f.name + "-" + std::to_string(l.ranks) + "x" + std::to_string(l.tp) +
                              "-zero" + std::to_string(l.zero);
      const Result r =
          gemmapod::MpirunGemmapod(l.ranks, "train --config " + job(run, l.tp, l.zero), 240);
      ASSERT_EQ(r.exit_code, 0) << r.output;
      EXPECT_TRUE(Contains(r.output, "tensor parallelism over " + std::to_string(l.tp) + " ranks"))
          << r.output;
      ExpectCloseMetrics(Metrics(run), want, 1e-5, run);
      // Whole tensors in the checkpoint (gathered from the group), the moments included (their
      // small elements carry five steps of rounding differences).
      ExpectCloseWeights(Run(run) / "model.h5", Run(one) / "model.h5", 1e-5);
      ExpectCloseState(Run(run) / "step-00000005.h5", Run(one) / "step-00000005.h5", 1e-4);
    }
    if (!f.switch_layouts) continue;
    // Saved with tp 2 (killed while writing step 4), resumed on 2 replicas of the whole model;
    // and saved by 2 replicas, resumed with tp 2.
    for (const auto& [saved, resumed] : {std::pair<int, int>{2, 1}, {1, 2}}) {
      const std::string run = f.name + "-switch-tp" + std::to_string(saved);
      EXPECT_NE(gemmapod::MpirunGemmapod(
                    2, "train --config " + job(run, saved, 0) + " --inject-kill-during-save 4", 240)
                    .exit_code,
                0);
      const Result r =
          gemmapod::MpirunGemmapod(2, "train --config " + job(run, resumed, 0) + " --resume", 240);
      ASSERT_EQ(r.exit_code, 0) << r.output;
      EXPECT_TRUE(Contains(r.output, "resuming from .*step-00000002.h5")) << r.output;
      ExpectCloseMetrics(Metrics(run), want, 1e-5, run);
      ExpectCloseWeights(Run(run) / "model.h5", Run(one) / "model.h5", 1e-5);
    }
  }
  const Result uneven = gemmapod::MpirunGemmapod(
      3, "train --config " + Job("tp-uneven", "tp-uneven", "parallel: {tp: 2}\n"));
  EXPECT_TRUE(
      Contains(uneven.output, "parallel.tp 2 x parallel.pp 1 does not divide the job's 3 ranks"))
      << uneven.output;
  const Result heads = gemmapod::MpirunGemmapod(
      8, "train --config " + Job("tp-heads", "tp-heads", "parallel: {tp: 8}\n"));
  EXPECT_NE(heads.exit_code, 0);
  EXPECT_TRUE(Contains(heads.output, "parallel.tp 8: ")) << heads.output;
}

// Pipeline stages (each a rank's range of layers; the embedding on the first, the tied head on
// the last; T5Gemma's encoder stages before its decoder stages, the encoder's output passed along
// the decoder stages and its gradient summed back) under 1F1B and GPipe, alone and with tensor
// parallelism, data parallelism and ZeRO-1: for Gemma 2 and 3, RecurrentGemma and the unbalanced
// T5Gemma, the same losses, weights and optimizer moments as one rank over 5 steps. A run saved
// with tp 2 x pp 2 resumes with tp 1 and 2 replicas, and the reverse.
TEST_F(TrainCli, PipelineLayoutsTrainAsOneRank) {
  struct Layout {
    int ranks, tp, pp, zero;
    std::string schedule;
  };
  struct Family {
    std::string name, make, data;
    std::vector<Layout> layouts;
    bool switch_layouts;
  };
  const std::string text =
      "data: {train: train.jsonl, held_out_fraction: 0.2, max_length: 64, packing: true}\n";
  {
    std::ofstream pairs(dir_ / "pp-pairs.jsonl");
    for (int i = 0; i < 20; ++i) {
      pairs << R"({"input": ")" << i << " plus " << i % 3 << R"(", "target": ")" << i + i % 3
            << "\"}\n";
    }
  }
  const std::vector<Family> families = {
      {"pp-g2",
       "convert tests/fixtures/models/gemma2",
       text,
       {{2, 1, 2, 0, "1f1b"},
        {2, 1, 2, 0, "gpipe"},
        {4, 2, 2, 0, "1f1b"},
        {4, 1, 2, 1, "1f1b"},
        {4, 1, 4, 0, "gpipe"}},
       true},
      {"pp-g3",
       "convert tests/fixtures/models/gemma3",
       text,
       {{2, 1, 2, 0, "1f1b"}, {4, 2, 2, 0, "gpipe"}},
       false},
      {"pp-rg",
       "random-checkpoint --dtype f32 --config " + RecurrentGemmaWithFourHeads() +
           " --tokenizer tests/fixtures/models/recurrentgemma/hf/tokenizer.model --out",
       text,
       {{2, 1, 2, 0, "1f1b"}, {4, 2, 2, 0, "1f1b"}, {4, 1, 2, 1, "gpipe"}},
       false},
      {"pp-t5",
       "convert tests/fixtures/models/t5gemma/unbalanced",
       "data: {train: pp-pairs.jsonl, held_out_fraction: 0.2, max_length: 32}\n",
       {{2, 1, 2, 0, "1f1b"}, {4, 1, 4, 0, "1f1b"}, {4, 2, 2, 0, "gpipe"}, {4, 1, 2, 1, "1f1b"}},
       false}};
  for (const Family& f : families) {
    const std::string model = (dir_ / (f.name + ".h5")).string();
    const Result made = Gemmapod(f.make + " " + model);
    ASSERT_EQ(made.exit_code, 0) << made.output;
    const auto job = [&](const std::string& run, const Layout& l) {
      const std::string path = (dir_ / (run + ".yaml")).string();
      std::ofstream(path) << "model: " << model << "\n"
                          << f.data << "steps: 5\nbatch: {sequences: 4, micro_batch: 1}\n"
                          << "optimizer: {lr: 1e-2, weight_decay: 0.01, eps: 1e-6, zero: " << l.zero
                          << "}\nparallel: {tp: " << l.tp << ", pp: " << l.pp
                          << ", schedule: " << l.schedule << "}\n"
                          << "checkpoint: {dir: " << run << ", interval: 2, keep: 3}\n";
      return path;
    };
    const std::string one = f.name + "-one";
    const Result single = Gemmapod("train --config " + job(one, {1, 1, 1, 0, "1f1b"}), 120);
    ASSERT_EQ(single.exit_code, 0) << single.output;
    const auto want = Metrics(one);
    for (const Layout& l : f.layouts) {
      const std::string run = gemmapod::StrCat(f.name, "-", l.ranks, "x", l.tp, "x", l.pp, "-",
                                               l.schedule, "-zero", l.zero);
      const Result r = gemmapod::MpirunGemmapod(l.ranks, "train --config " + job(run, l), 240);
      ASSERT_EQ(r.exit_code, 0) << r.output;
      EXPECT_TRUE(Contains(
          r.output, gemmapod::StrCat("pipeline of ", l.pp, " stages, ", l.schedule,
                                     " schedule over ", 4 * l.tp * l.pp / l.ranks, " micro-batch")))
          << r.output;
      ExpectCloseMetrics(Metrics(run), want, 1e-5, run);
      ExpectCloseWeights(Run(run) / "model.h5", Run(one) / "model.h5", 1e-5);
      ExpectCloseState(Run(run) / "step-00000005.h5", Run(one) / "step-00000005.h5", 1e-4);
      // Each step reports the stages' idle share.
      std::ifstream in(Run(run) / "metrics.jsonl");
      std::string line;
      int bubbles = 0;
      while (std::getline(in, line)) {
        const nlohmann::json j = nlohmann::json::parse(line);
        if (!j.contains("pipeline_bubble")) continue;
        EXPECT_GE(j["pipeline_bubble"].get<double>(), 0.0) << line;
        EXPECT_LT(j["pipeline_bubble"].get<double>(), 1.0) << line;
        ++bubbles;
      }
      EXPECT_EQ(bubbles, 5) << run;
    }
    if (!f.switch_layouts) continue;
    // Saved by tp 2 x pp 2 (killed while writing step 4), resumed by 2 replicas of the whole
    // model; and the reverse.
    for (const auto& [saved, resumed] :
         {std::pair<Layout, Layout>{{4, 2, 2, 0, "1f1b"}, {2, 1, 1, 0, "1f1b"}},
          {{2, 1, 1, 0, "1f1b"}, {4, 2, 2, 0, "1f1b"}}}) {
      const std::string run = gemmapod::StrCat(f.name, "-switch-", saved.ranks);
      EXPECT_NE(gemmapod::MpirunGemmapod(
                    saved.ranks,
                    "train --config " + job(run, saved) + " --inject-kill-during-save 4", 240)
                    .exit_code,
                0);
      const Result r = gemmapod::MpirunGemmapod(
          resumed.ranks, "train --config " + job(run, resumed) + " --resume", 240);
      ASSERT_EQ(r.exit_code, 0) << r.output;
      EXPECT_TRUE(Contains(r.output, "resuming from .*step-00000002.h5")) << r.output;
      // The step after the resume, and every one after it, as the uninterrupted run.
      ExpectCloseMetrics(Metrics(run), want, 1e-6, run);
      ExpectCloseWeights(Run(run) / "model.h5", Run(one) / "model.h5", 1e-5);
    }
  }
  const Result uneven = gemmapod::MpirunGemmapod(
      2, "train --config " + Job("pp-uneven", "pp-uneven", "parallel: {pp: 2, tp: 2}\n"));
  EXPECT_TRUE(
      Contains(uneven.output, "parallel.tp 2 x parallel.pp 2 does not divide the job's 2 ranks"))
      << uneven.output;
  const Result deep = gemmapod::MpirunGemmapod(
      8, "train --config " + Job("pp-deep", "pp-deep", "parallel: {pp: 8}\n"));
  EXPECT_TRUE(
      Contains(deep.output, "parallel.pp 8: more pipeline stages than the model's 7 layers"))
      << deep.output;
}

// `gemmapod launch` passes its pod file on: the pod's tp splits the model and its other ranks are
// replicas, its pp makes pipeline stages; a job whose parallel.tp disagrees is refused.
TEST_F(TrainCli, ALaunchedPodLaysOutTheJob) {
  ASSERT_EQ(convert_.exit_code, 0) << convert_.output;
  const Result r = Gemmapod(
      "launch --pod tests/launch/pods/tp2-dp2.yaml -- train --config " + Job("pod", "pod-run"),
      240);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(Contains(r.output, "tensor parallelism over 2 ranks")) << r.output;
  EXPECT_TRUE(Contains(r.output, "data parallelism over 2 ranks")) << r.output;
  const Result disagrees =
      Gemmapod("launch --pod tests/launch/pods/tp2-dp2.yaml -- train --config " +
                   Job("pod-tp4", "pod-tp4", "parallel: {tp: 4}\n"),
               120);
  EXPECT_NE(disagrees.exit_code, 0);
  EXPECT_TRUE(Contains(disagrees.output, "parallel.tp 4 disagrees with tp 2 of .*tp2-dp2.yaml"))
      << disagrees.output;
  const Result alone = Gemmapod("train --config " + Job("pod-alone", "pod-alone") +
                                " --pod tests/launch/pods/tp2-dp2.yaml");
  EXPECT_NE(alone.exit_code, 0);
  EXPECT_TRUE(Contains(alone.output, "tp2-dp2.yaml: 4 ranks, but the job was started with 1"))
      << alone.output;
  const Result stages = Gemmapod(
      "launch --pod tests/launch/pods/pp2.yaml -- train --config " + Job("pod-pp", "pod-pp"), 240);
  ASSERT_EQ(stages.exit_code, 0) << stages.output;
  EXPECT_TRUE(Contains(stages.output, "pipeline of 2 stages, 1f1b schedule")) << stages.output;
}

// Ranks that resume from different checkpoints (each found its own newest: directories that are
// not one shared filesystem) are refused instead of training from different weights.
TEST_F(TrainCli, RanksResumingFromDifferentCheckpointsAreRefused) {
  ASSERT_EQ(convert_.exit_code, 0) << convert_.output;
  const auto write_job = [&](const fs::path& dir, int steps, const char* lr) {
    fs::create_directories(dir);
    fs::copy_file(model_, dir / "tiny.h5", fs::copy_options::overwrite_existing);
    fs::copy_file(dir_ / "train.jsonl", dir / "train.jsonl", fs::copy_options::overwrite_existing);
    std::ofstream(dir / "job.yaml")
        << "model: tiny.h5\ndata: {train: train.jsonl, max_length: 64}\n"
        << "steps: " << steps << "\nbatch: {sequences: 2, micro_batch: 1}\n"
        << "optimizer: {lr: " << lr << "}\ncheckpoint: {dir: run}\n";
  };
  const fs::path a = dir_ / "resume-a", b = dir_ / "resume-b";
  write_job(a, 2, "1e-2");
  write_job(b, 2, "5e-3");  // the same run's identity, other weights after two steps
  for (const fs::path& d : {a, b}) {
    const Result r = gemmapod::RunShell("cd " + d.string() + " && timeout 120 " + GEMMAPOD_BIN +
                                        " train --config job.yaml 2>&1");
    ASSERT_EQ(r.exit_code, 0) << r.output;
  }
  write_job(a, 4, "1e-2");
  write_job(b, 4, "5e-3");
  const std::string train = std::string(GEMMAPOD_BIN) + " train --config job.yaml --resume";
  const Result r = gemmapod::RunShell(
      "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl=self,vader "
      "OMPI_MCA_rmaps_base_oversubscribe=1 timeout 120 mpirun -np 1 -wdir " +
      a.string() + " " + train + " : -np 1 -wdir " + b.string() + " " + train + " 2>&1");
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_TRUE(Contains(r.output,
                       "the job's ranks read different files at \\S*run/step-00000002.h5: "
                       "rank\\(s\\) 1 "))
      << r.output;
}

// A replica killed in the middle of a data-parallel run ends the whole job within seconds (no
// rank is left waiting in a collective), and the run resumes from its last checkpoint.
TEST_F(TrainCli, AKilledReplicaEndsTheJobAndTheRunResumes) {
  ASSERT_EQ(convert_.exit_code, 0) << convert_.output;
  const std::string job = Job("killed-replica", "killed-replica");
  const std::string long_job = (dir_ / "killed-replica-long.yaml").string();
  {
    std::ifstream in(job);
    std::string text((std::istreambuf_iterator<char>(in)), {});
    text.replace(text.find("steps: 12"), 9, "steps: 400");
    text.replace(text.find("interval: 4"), 11, "interval: 20");
    std::ofstream(long_job) << text;
  }
  auto run = std::async(std::launch::async,
                        [&] { return gemmapod::MpirunGemmapod(2, "train --config " + long_job); });
  pid_t victim = -1;
  for (int i = 0; i < 1200 && victim < 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    if (fs::exists(Run("killed-replica") / "step-00000020.h5")) {
      victim = gemmapod::FindRank(long_job, 1);
    }
  }
  ASSERT_GT(victim, 0) << "the run never reached its first checkpoint";
  const auto killed = std::chrono::steady_clock::now();
  ASSERT_EQ(kill(victim, SIGKILL), 0);
  const Result r = run.get();
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - killed).count();
  EXPECT_LT(seconds, 10.0) << r.output;
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_NE(r.exit_code, 124) << "timed out: the surviving rank hung\n" << r.output;
  EXPECT_TRUE(Contains(r.output, "rank 1 .*(signal 9|Killed)")) << r.output;
  const Result resumed = Gemmapod("train --config " + long_job + " --resume", 120);
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_TRUE(Contains(resumed.output, "resuming from .*step-000000[0-9]0.h5")) << resumed.output;
  EXPECT_TRUE(Contains(resumed.output, "step 400/400 \\| loss")) << resumed.output;
}

TEST_F(TrainCli, MistakesAreNamed) {
  ASSERT_EQ(convert_.exit_code, 0) << convert_.output;
  const std::string job = Job("errors", "errors");
  ASSERT_EQ(Gemmapod("train --config " + job, 120).exit_code, 0);
  const Result again = Gemmapod("train --config " + job);
  EXPECT_NE(again.exit_code, 0);
  EXPECT_TRUE(Contains(again.output, "already holds a run's checkpoints .*pass --resume"))
      << again.output;
  const Result other_seed =
      Gemmapod("train --config " + Job("errors", "errors", "seed: 2\n") + " --resume");
  EXPECT_NE(other_seed.exit_code, 0);
  EXPECT_TRUE(Contains(other_seed.output, "seed was 1 and is now 2")) << other_seed.output;
  const Result nothing = Gemmapod("train --config " + Job("empty", "empty") + " --resume");
  EXPECT_TRUE(Contains(nothing.output, "resume: no checkpoint \\(step-\\*.h5\\) in .*empty"))
      << nothing.output;
  const Result model_only =
      Gemmapod("train --config " + Job("fresh", "fresh") + " --resume-from " + model_);
  EXPECT_TRUE(Contains(model_only.output, "a model checkpoint without training state"))
      << model_only.output;
  std::ofstream(dir_ / "bad.jsonl") << R"({"text": "fine"})"
                                    << "\n"
                                    << R"({"text": })"
                                    << "\n";
  const std::string bad = (dir_ / "bad.yaml").string();
  std::ofstream(bad)
      << "model: tiny.h5\ndata: {train: bad.jsonl}\nsteps: 1\ncheckpoint: {dir: b}\n";
  const Result bad_data = Gemmapod("train --config " + bad);
  EXPECT_TRUE(Contains(bad_data.output, "bad.jsonl:2: not valid JSON")) << bad_data.output;
  const Result bad_key = Gemmapod("train --config " + Job("typo", "typo", "stpes: 3\n"));
  EXPECT_TRUE(Contains(bad_key.output, "typo.yaml:8:1: stpes: unknown key")) << bad_key.output;
}

}  // namespace
