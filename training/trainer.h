// The fine-tuning loop of `gemmapod train` on one rank: a job file in; steps of accumulated
// micro-batches, AdamW under the schedule, held-out evaluations, progress lines, metrics as JSONL,
// the loss curves as SVG and training checkpoints out. A resumed run continues bit-identically:
// the data cursor, the optimizer's masters and moments and the step are all in the checkpoint,
// and nothing else is random.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>

#include "runtime/checkpoint/attributes.h"
#include "training/job_config.h"

namespace gemmapod {

struct TrainRunOptions {
  bool resume = false;
  std::string resume_from;  // a checkpoint; empty: the newest in the job's checkpoint.dir
  // Testing: SIGKILL this process half-way through writing the checkpoint of this step.
  int64_t kill_during_save_at_step = -1;
};

// What a finished run reports (tests; the CLI prints it as it goes).
struct TrainRunSummary {
  int64_t first_step = 0;  // the first step this process ran (1, or one past the resumed step)
  int64_t last_step = 0;
  double last_loss = 0;
  double held_out_loss = -1;        // the last evaluation's mean loss; -1 without held-out data
  double exact_match = -1;          // the last evaluation's held-out exact match; -1 when not asked
  double held_out_reward = -1;      // objective: grpo: the last evaluation's mean reward
  double preference_accuracy = -1;  // objective: dpo: the last evaluation's held-out pairs
                                    // ranked right (implicit reward of chosen above rejected)
  std::string exported_model;
};

// Files of a run directory beside its checkpoints.
inline constexpr const char* kMetricsFile = "metrics.jsonl";
inline constexpr const char* kLossCurveFile = "loss.svg";
inline constexpr const char* kRewardCurveFile = "reward.svg";  // GRPO: rewards against the step
inline constexpr const char* kExportedModelFile = "model.h5";

class Communicator;

// The ranks of a job (sharding/process_grid.h's order: rank = tp_rank + tp (dp_rank + dp
// pp_rank)): tensor-parallel groups of parallel.tp consecutive ranks, each holding a shard of a
// pipeline stage; pipeline groups of a replica's stages (a stage's rank in it is its index);
// data-parallel groups of the ranks that hold the same part (the replicas); model groups of one
// replica's ranks (stage-major). Null groups: one process.
struct TrainingGroups {
  Communicator* world = nullptr;
  Communicator* tp = nullptr;
  Communicator* dp = nullptr;
  Communicator* pp = nullptr;
  Communicator* model = nullptr;
};

// Every replica loads its shard and reads the data; each runs its contiguous share of a step's
// micro-batches (training/data_parallel.h) and of the held-out evaluation; the job's rank 0
// alone logs and writes the metrics, checkpoints and the exported model (whole tensors, gathered
// from the tensor-parallel group). The checkpoint directory must be one every rank reads (one
// host, or a shared filesystem).
TrainRunSummary RunTrainingJob(const TrainingJob& job, const TrainRunOptions& options,
                               std::FILE* log, const TrainingGroups& groups = {});

// Refuses to resume the run a checkpoint's trainer attributes (`saved`) describe with a job whose
// identity differs (data, seed, batch, objective and its settings...), naming every difference
// and the job keys behind it. Keys added to the identity after the run began count as their
// defaults (an sft run's checkpoint from before `objective` existed resumes as sft).
void CheckSameRun(const Attributes& saved, const Attributes& job, const std::string& checkpoint,
                  const std::string& job_file);

// Refuses a step that data parallelism over `replicas` ranks cannot split evenly, naming the
// job's keys.
void CheckDataParallelBatch(const TrainingJob& job, int replicas);
// Refuses a job whose parallel.tp x parallel.pp does not divide the job's `ranks`, or asks for
// what model parallelism does not do yet (LoRA, held-out exact match).
void CheckModelParallelJob(const TrainingJob& job, int ranks);

}  // namespace gemmapod
