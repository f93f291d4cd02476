// What fine-tuning a decoder-only Gemma on one rank holds in memory, counted from the model's
// shapes and the job (training/trainer.cc prints it and refuses a run that cannot fit;
// `gemmapod plan --train job.yaml` prints it without running).
#pragma once

#include <cstdint>
#include <string>

#include "models/gemma/model_config.h"
#include "training/job_config.h"

namespace gemmapod {

struct TrainingMemory {
  int64_t weights = 0;        // the model's tensors in their training dtype (+ adapters)
  int64_t gradients = 0;      // f32, for what trains
  int64_t optimizer = 0;      // AdamW's f32 moments (+ f32 masters of bf16 weights)
  int64_t activations = 0;    // what the layers keep for the backward, per micro-batch
  int64_t reference = 0;      // frozen models kept loaded: a reference (DPO without
                              // precomputing, GRPO with a KL term) and GRPO's reward model
  int64_t rollout_cache = 0;  // GRPO: the rollout engine's KV cache for a step's answers
  int64_t head = 0;           // logits and their gradient for the rows with a target
  int64_t trainable_parameters = 0;
  int64_t micro_batch_tokens = 0;
  int64_t largest_tensor = 0;  // elements of the model's largest tensor (the embedding)
  // Rank 0 of a sharded job while it writes a checkpoint (PerRankTrainingMemory sets it): the
  // largest tensor gathered whole in f32, and one rank's part of it received. Not in total():
  // only rank 0 holds it, and only while saving.
  int64_t save_gather = 0;
  int64_t total() const {
    return weights + gradients + optimizer + activations + head + reference + rollout_cache;
  }
};

// Every parameter trained in full: weights in the job's dtype, f32 gradients and moments (and f32
// masters of bf16 weights), and the micro-batch's token count; activations and logits are left
// for the family to count.
TrainingMemory FullTrainingMemory(int64_t parameters, const TrainingJob& job, int64_t max_length);

// The worst case of a micro-batch: micro_batch rows of max_length tokens, every token a target.
TrainingMemory PlanTrainingMemory(const ModelConfig& config, const TrainingJob& job,
                                  int64_t max_length);

// The plan as lines for a terminal.
std::string RenderTrainingMemory(const TrainingMemory& memory);

// What one pipeline stage holds of the whole model: `parameters` (a fraction: its layers, and the
// embedding or the head at the ends), `layers` (the fraction of the layers whose activations it
// keeps), for `in_flight` micro-batches at once (GPipe: all of them; 1F1B: at most the stages
// from this one to the last), and the logits if it is the last stage. The default: the whole
// model, one micro-batch at a time.
struct PipelineStageShare {
  double parameters = 1;
  double layers = 1;
  int64_t in_flight = 1;
  bool head = true;
};

// One rank's share of `whole` (one rank's plan of the whole model): its pipeline stage's share,
// tensor parallelism over `tp` ranks splitting the weights, gradients and optimizer state (the
// replicated norms are a rounding error of that; activations and logits are counted whole, an
// upper bound), and ZeRO-1 splitting the optimizer state again over the `replicas`; and, where
// any of them splits the model, what rank 0 gathers while it saves (save_gather).
TrainingMemory PerRankTrainingMemory(TrainingMemory whole, int64_t tp, int64_t replicas, bool zero,
                                     const PipelineStageShare& stage = {});

// The memory this machine has free for a new process (MemAvailable), or -1 when unknown.
int64_t AvailableMemoryBytes();
// This process's resident memory now (VmRSS) and its peak so far (VmHWM), or -1 when unknown.
int64_t ResidentMemoryBytes();
int64_t PeakResidentMemoryBytes();

}  // namespace gemmapod
