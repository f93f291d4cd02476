// A training job file: every key read, relative paths taken from the file's directory, and every
// mistake named by file, line, column and key.
#include "training/job_config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "tests/error_of.h"
#include "training/trainer.h"

namespace gemmapod {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

class JobConfig : public ::testing::Test {
 protected:
  JobConfig() {
    dir_ = fs::temp_directory_path() / ("job-config-" + std::to_string(getpid()));
    fs::create_directories(dir_);
  }
  ~JobConfig() override { fs::remove_all(dir_); }
  std::string Write(const std::string& text) {
    const std::string path = (dir_ / "job.yaml").string();
    std::ofstream(path) << text;
    return path;
  }
  static constexpr const char* kMinimal =
      "model: m.h5\ndata:\n  train: d/train.jsonl\nsteps: 10\ncheckpoint:\n  dir: run\n";
  fs::path dir_;
};

TEST_F(JobConfig, ReadsEveryKey) {
  const TrainingJob job = ReadTrainingJob(Write(R"(model: m.h5
tokenizer: /abs/tok.model
weights: bf16
data:
  train: d/train.jsonl
  held_out: d/eval.jsonl
  max_length: 256
  too_long: skip
  invalid: skip
  shuffle: false
  packing: true
steps: 100
seed: 9
recompute: true
lora: {rank: 4, alpha: 8, targets: [q_proj, down_proj]}
batch: {sequences: 8, micro_batch: 2}
optimizer: {lr: 3e-4, beta1: 0.8, beta2: 0.95, eps: 1e-6, weight_decay: 0.1, max_grad_norm: 0.5,
            zero: 1}
parallel: {tp: 2, pp: 2, schedule: gpipe, overlap: false}
schedule: {warmup_steps: 10, decay: linear, min_lr_ratio: 0.1}
checkpoint: {dir: run, interval: 25, keep: 2}
eval: {interval: 5}
log: {interval: 10}
)"));
  EXPECT_EQ(job.model, (dir_ / "m.h5").string());
  EXPECT_EQ(job.tokenizer, "/abs/tok.model");
  EXPECT_EQ(job.weights_dtype, "bf16");
  EXPECT_EQ(job.data.train, (dir_ / "d/train.jsonl").string());
  EXPECT_EQ(job.data.held_out, (dir_ / "d/eval.jsonl").string());
  EXPECT_EQ(job.data.max_length, 256);
  EXPECT_TRUE(job.data.skip_too_long);
  EXPECT_TRUE(job.data.skip_invalid);
  EXPECT_FALSE(job.data.shuffle);
  EXPECT_TRUE(job.data.packing);
  EXPECT_EQ(job.steps, 100);
  EXPECT_EQ(job.seed, 9u);
  EXPECT_EQ(job.batch_sequences, 8);
  EXPECT_EQ(job.micro_batch, 2);
  EXPECT_TRUE(job.recompute);
  ASSERT_TRUE(job.lora.has_value());
  EXPECT_EQ(job.lora->rank, 4);
  EXPECT_DOUBLE_EQ(job.lora->alpha, 8);
  EXPECT_EQ(job.lora->targets, (std::vector<std::string>{"q_proj", "down_proj"}));
  EXPECT_DOUBLE_EQ(job.schedule.peak, 3e-4);
  EXPECT_FLOAT_EQ(job.optimizer.beta1, 0.8f);
  EXPECT_FLOAT_EQ(job.optimizer.beta2, 0.95f);
  EXPECT_FLOAT_EQ(job.optimizer.eps, 1e-6f);
  EXPECT_FLOAT_EQ(job.optimizer.weight_decay, 0.1f);
  EXPECT_DOUBLE_EQ(job.max_grad_norm, 0.5);
  EXPECT_EQ(job.zero_stage, 1);
  EXPECT_EQ(job.tensor_parallel, 2);
  EXPECT_EQ(job.pipeline_parallel, 2);
  EXPECT_EQ(job.pipeline_schedule, PipelineSchedule::kGPipe);
  EXPECT_FALSE(job.overlap_gradients);
  EXPECT_EQ(job.schedule.warmup_steps, 10);
  EXPECT_EQ(job.schedule.decay, LrSchedule::Decay::kLinear);
  EXPECT_DOUBLE_EQ(job.schedule.min_ratio, 0.1);
  EXPECT_EQ(job.schedule.total_steps, 100);
  EXPECT_EQ(job.checkpoint.dir, (dir_ / "run").string());
  EXPECT_EQ(job.checkpoint.interval, 25);
  EXPECT_EQ(job.checkpoint.keep, 2);
  EXPECT_EQ(job.eval_interval, 5);
  EXPECT_EQ(job.log_interval, 10);
}

TEST_F(JobConfig, DefaultsAreAWholeBatchPerStepInF32) {
  const TrainingJob job = ReadTrainingJob(Write(kMinimal));
  EXPECT_EQ(job.weights_dtype, "f32");
  EXPECT_EQ(job.batch_sequences, 1);
  EXPECT_EQ(job.micro_batch, 1);
  EXPECT_TRUE(job.data.shuffle);
  EXPECT_FALSE(job.data.packing);
  EXPECT_DOUBLE_EQ(job.max_grad_norm, 1.0);
  EXPECT_EQ(job.zero_stage, 0);
  EXPECT_EQ(job.tensor_parallel, 1);
  EXPECT_EQ(job.pipeline_parallel, 1);
  EXPECT_EQ(job.pipeline_schedule, PipelineSchedule::kOneFOneB);
  EXPECT_TRUE(job.overlap_gradients);
}

TEST_F(JobConfig, MistakesNameFileLineAndKey) {
  const std::string base = kMinimal;
  const auto error = [&](const std::string& text) {
    return ErrorOf([&] { ReadTrainingJob(Write(text)); });
  };
  EXPECT_THAT(error(base + "epochs: 3\n"), HasSubstr("job.yaml:7:1: epochs: unknown key"));
  EXPECT_THAT(error(base + "batch: {sequences: 6, micro_batch: 4}\n"),
              HasSubstr("batch.micro_batch: must divide batch.sequences (6)"));
  EXPECT_THAT(error(base + "optimizer: {lr: 2}\n"),
              HasSubstr("optimizer.lr: must be in (0, 1], got 2"));
  EXPECT_THAT(error(base + "optimizer: {beta2: 1}\n"),
              HasSubstr("optimizer.beta2: must be in [0, 1), got 1"));
  EXPECT_THAT(error(base + "schedule: {warmup_steps: 20}\n"),
              HasSubstr("warmup_steps (20) is longer than the run (steps: 10)"));
  EXPECT_THAT(error(base + "schedule: {decay: step}\n"), HasSubstr("schedule.decay"));
  EXPECT_THAT(error(base + "weights: int8\n"), HasSubstr("weights"));
  EXPECT_THAT(error(base + "lora: {targets: [qkv]}\n"),
              HasSubstr("job.yaml:7:17: lora.targets: unknown matrix 'qkv' (q_proj, k_proj"));
  EXPECT_THAT(error(base + "lora: {rank: 0}\n"), HasSubstr("lora.rank: must be at least 1"));
  EXPECT_THAT(error(base + "optimizer: {zero: 2}\n"),
              HasSubstr("optimizer.zero: ZeRO stage 2 is not built; 0 (replicated optimizer "
                        "state) or 1 (sharded)"));
  EXPECT_THAT(error(base + "parallel: {tp: 0}\n"), HasSubstr("parallel.tp: must be at least 1"));
  EXPECT_THAT(error(base + "parallel: {pp: 0}\n"), HasSubstr("parallel.pp: must be at least 1"));
  EXPECT_THAT(error(base + "parallel: {schedule: interleaved}\n"), HasSubstr("parallel.schedule"));
  EXPECT_THAT(error(base + "parallel: {dp: 2}\n"), HasSubstr("parallel.dp: unknown key"));
  EXPECT_THAT(error("model: m.h5\ndata: {train: t.jsonl, held_out: e.jsonl, "
                    "held_out_fraction: 0.1}\nsteps: 1\ncheckpoint: {dir: r}\n"),
              HasSubstr("give held_out (a file) or held_out_fraction"));
  EXPECT_THAT(error("model: m.h5\ndata: {train: t.jsonl}\ncheckpoint: {dir: r}\n"),
              HasSubstr("job.yaml:1:1: steps: missing required key"));
  EXPECT_THAT(error("model: m.h5\ndata: {train: t.jsonl}\nsteps: 0\ncheckpoint: {dir: r}\n"),
              HasSubstr("steps: must be at least 1, got 0"));
  EXPECT_THAT(error("model: m.h5\ndata: {train: t.jsonl, max_length: 1}\nsteps: 2\n"
                    "checkpoint: {dir: r}\n"),
              HasSubstr("data.max_length: must be at least 2"));
}

// The objectives' settings: defaults, relative paths, and mistakes named by key.
TEST_F(JobConfig, ObjectivesAndTheirSettings) {
  const std::string base = kMinimal;
  const TrainingJob dpo = ReadTrainingJob(
      Write(base + "objective: dpo\ndpo: {beta: 0.2, loss: ipo, reference: r.h5}\n"));
  EXPECT_EQ(dpo.objective, TrainingJob::Objective::kDpo);
  EXPECT_DOUBLE_EQ(dpo.dpo.options.beta, 0.2);
  EXPECT_EQ(dpo.dpo.options.loss, PreferenceLoss::kIpo);
  EXPECT_EQ(dpo.dpo.reference, (dir_ / "r.h5").string());
  EXPECT_TRUE(dpo.dpo.precompute_reference);
  const TrainingJob grpo = ReadTrainingJob(
      Write(base + "objective: grpo\ngrpo: {group_size: 4, epochs: 2, stop: [\"\\n\"], "
                   "reward: model, reward_model: rm.h5, loss_normalization: sequence}\n"));
  EXPECT_EQ(grpo.grpo.group_size, 4);
  EXPECT_EQ(grpo.grpo.epochs, 2);
  EXPECT_EQ(grpo.grpo.rollout.stop_strings, std::vector<std::string>{"\n"});
  EXPECT_EQ(grpo.grpo.reward_model, (dir_ / "rm.h5").string());
  EXPECT_EQ(grpo.grpo.normalization, LossNormalization::kSequence);
  EXPECT_EQ(grpo.grpo.rollout.sampling.temperature, 1.0f);  // the policy's own distribution
  const TrainingJob reward =
      ReadTrainingJob(Write(base + "objective: reward\nreward: {margin: 0.5}\n"));
  EXPECT_DOUBLE_EQ(reward.reward_margin, 0.5);

  const auto error = [&](const std::string& text) {
    return ErrorOf([&] { ReadTrainingJob(Write(text)); });
  };
  EXPECT_THAT(error(base + "objective: ppo\n"), HasSubstr("objective"));
  EXPECT_THAT(error(base + "objective: dpo\ndpo: {loss: ipo, label_smoothing: 0.1}\n"),
              HasSubstr("dpo.label_smoothing: label smoothing is DPO's (loss: dpo)"));
  EXPECT_THAT(error(base + "objective: dpo\ndpo: {label_smoothing: 0.5}\n"),
              HasSubstr("dpo.label_smoothing: must be in [0, 0.5), got 0.5"));
  EXPECT_THAT(error(base + "objective: grpo\ngrpo: {stop: [\"\"]}\n"),
              HasSubstr("a stop string cannot be empty"));
  EXPECT_THAT(error(base + "objective: grpo\ngrpo: {clip: 1.5}\n"),
              HasSubstr("grpo.clip: must be in [0, 1), got 1.5"));
  EXPECT_THAT(error(base + "objective: grpo\ngrpo: {beta: -1}\n"),
              HasSubstr("grpo.beta: must be 0 (no KL term) or above"));
  EXPECT_THAT(error(base + "objective: grpo\ngrpo: {kl: k5}\n"), HasSubstr("grpo.kl"));
  EXPECT_THAT(error(base + "objective: grpo\ngrpo: {epochs: 0}\n"),
              HasSubstr("grpo.epochs: must be at least 1"));
  EXPECT_THAT(error(base + "objective: grpo\ngrpo: {reward_model: rm.h5}\n"),
              HasSubstr("grpo.reward_model: a reward model scores answers with reward: model"));
  EXPECT_THAT(error(base + "objective: reward\nreward: {margin: 1, scale: 2}\n"),
              HasSubstr("reward.scale: unknown key"));
  EXPECT_THAT(error(base + "objective: reward\ndpo: {beta: 0.1}\n"),
              HasSubstr("dpo: the dpo: settings need objective: dpo"));
}

// A resumed run must be the same run: every identity difference is named with its job key; a
// key the checkpoint predates counts as its default, so an sft checkpoint written before
// `objective` existed resumes as sft and refuses dpo.
TEST(ResumeIdentity, DifferencesAreNamedAndNewKeysDefault) {
  const Attributes old_sft = {{"seed", int64_t{1}}, {"micro_batch", int64_t{4}}};
  Attributes job = old_sft;
  job["objective"] = std::string("sft");
  job["grpo_epochs"] = int64_t{1};
  EXPECT_NO_THROW(CheckSameRun(old_sft, job, "ckpt.h5", "job.yaml"));
  job["objective"] = std::string("dpo");
  job["micro_batch"] = int64_t{2};
  EXPECT_THAT(ErrorOf([&] { CheckSameRun(old_sft, job, "ckpt.h5", "job.yaml"); }),
              HasSubstr("job.yaml differs from the run in ckpt.h5: micro_batch was 4 and is now 2 "
                        "(batch.micro_batch); objective was sft and is now dpo (objective)"));
  job = old_sft;
  job["dpo_beta"] = 0.1;  // not added later with a default: a checkpoint without it is foreign
  EXPECT_THAT(ErrorOf([&] { CheckSameRun(old_sft, job, "ckpt.h5", "job.yaml"); }),
              HasSubstr("ckpt.h5: trainer attribute 'dpo_beta' is missing"));
}

}  // namespace
}  // namespace gemmapod
