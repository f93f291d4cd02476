// A fine-tuning job as its YAML file describes it (docs/training.md has every key): the model, the
// data, the optimizer and its schedule, the batch, how long, and where checkpoints and metrics
// go. Relative paths are relative to the job file's directory, so a job file and its data can
// move together.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "training/adamw.h"
#include "training/lora.h"
#include "training/lr_schedule.h"
#include "training/pipeline_schedule.h"
#include "training/policy_objective.h"
#include "training/preference_objective.h"

namespace gemmapod {

struct TrainingJob {
  std::string source;  // the job file, for messages

  std::string model;      // .h5 checkpoint to start from
  std::string tokenizer;  // SentencePiece model; empty: the one embedded in the checkpoint
  std::string weights_dtype = "f32";  // what the weights train in: f32, or bf16 with f32 masters

  // What a step minimises: the cross-entropy of the learned tokens (sft), or a preference loss
  // over chosen/rejected pairs against a frozen reference (dpo: DPO or IPO; batch.sequences then
  // counts pairs).
  // grpo: on-policy RL: each step samples grpo.group_size answers per prompt with the weights
  // being trained, rewards them (grpo.reward) and takes GRPO's clipped step (batch.sequences then
  // counts prompts).
  // reward: a reward model (a scoring head on the model's last token) trained with the
  // Bradley-Terry loss on the same pairs as dpo.
  enum class Objective { kSft, kDpo, kGrpo, kReward };
  Objective objective = Objective::kSft;
  struct Dpo {
    PreferenceOptions options;
    std::string reference;             // the frozen reference checkpoint; empty: `model`
    bool precompute_reference = true;  // score every pair once at the start; false: keep the
                                       // reference loaded and score each step's pairs
  } dpo;
  GrpoOptions grpo;
  double reward_margin = 0;  // reward.margin: the Bradley-Terry loss's margin

  struct Data {
    std::string train;
    std::string held_out;          // a file of its own, or
    double held_out_fraction = 0;  // a seeded share of the training file
    int64_t max_length = 0;      // tokens per example (and per packed row); 0: the model's context
    bool skip_too_long = false;  // too_long: error | skip
    bool skip_invalid = false;   // invalid: error | skip
    bool shuffle = true;
    bool packing = false;
  } data;

  // Set: train LoRA adapters on the listed matrices, everything else frozen; checkpoints and the
  // exported model hold the merged weights.
  std::optional<LoraOptions> lora;

  int64_t steps = 0;
  uint64_t seed = 1;
  int64_t batch_sequences = 1;  // rows per optimizer step
  int64_t micro_batch = 0;      // rows per forward/backward; 0: all of them at once
  bool recompute = false;       // keep each layer's input only; recompute the layer in the backward

  AdamWOptions optimizer{0.9f, 0.999f, 1e-8f, 0.0f};
  double max_grad_norm = 1.0;  // 0: no clipping
  int64_t zero_stage = 0;      // 1: optimizer state sharded over the data-parallel ranks (ZeRO-1)
  // Ranks of each tensor-parallel group (parallel.tp) and pipeline stages (parallel.pp); the
  // job's ranks / (tp x pp) are data-parallel replicas of the model. A pipeline runs a replica's
  // micro-batches of a step as parallel.schedule says.
  int64_t tensor_parallel = 1;
  int64_t pipeline_parallel = 1;
  PipelineSchedule pipeline_schedule = PipelineSchedule::kOneFOneB;
  // Sum the data-parallel replicas' gradients while the backward runs (parallel.overlap; without
  // tensor parallelism or ZeRO-1, which sum otherwise).
  bool overlap_gradients = true;
  LrSchedule schedule;

  struct Checkpoints {
    std::string dir;
    int64_t interval = 0;  // steps between checkpoints; 0: only at the end
    int64_t keep = 3;      // the most recent checkpoints kept
  } checkpoint;

  int64_t eval_interval = 0;  // steps between held-out evaluations; 0: at checkpoints and the end
  bool eval_exact_match = false;     // also generate each held-out answer and count exact matches
  int64_t eval_max_new_tokens = 64;  // the most tokens an answer may take
  int64_t log_interval = 1;          // steps between progress lines
};

// Reads and checks a job file: unknown keys, wrong types and impossible values fail with
// "<file>:<line>:<column>: <key>: <what>".
TrainingJob ReadTrainingJob(const std::string& path);

}  // namespace gemmapod
