// What the trainer needs of a model family, so one training loop (training/trainer.cc) runs them
// all: load from a checkpoint in the dtype it trains in, register its parameters (under the
// checkpoint's names) with the optimizer, the loss with and without gradients over a packed
// batch, and the model written back as a checkpoint. Decoder-only Gemma, RecurrentGemma and
// T5Gemma implement it.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "runtime/checkpoint/attributes.h"
#include "training/adamw.h"
#include "training/gemma_lm.h"
#include "training/job_config.h"
#include "training/memory_plan.h"

namespace gemmapod {

class Communicator;
class Hdf5CheckpointReader;
class TensorParallelParameters;
class Hdf5CheckpointWriter;
class Tokenizer;
struct ExactMatch;
struct TrainingExample;

class TrainableModel {
 public:
  virtual ~TrainableModel() = default;

  virtual std::string family() const = 0;  // "gemma", "recurrent_gemma", "t5gemma"
  virtual int64_t vocab_size() const = 0;
  virtual int64_t max_context() const = 0;

  // Adapters on the chosen matrices; everything else frozen. Families without LoRA refuse.
  virtual void AttachLora(const LoraOptions& options, uint64_t seed) = 0;
  // Every trainable parameter with its gradient, named as in the checkpoint.
  virtual void RegisterParameters(AdamW& optimizer) = 0;
  // Over examples packed one after another (each its own document); grads += the gradient of
  // scale * the summed loss.
  virtual LossSum LossAndGradients(const std::vector<const TrainingExample*>& examples,
                                   double scale, bool recompute) = 0;
  virtual LossSum Loss(const std::vector<const TrainingExample*>& examples) = 0;
  // Encoder-decoder: examples are {"input", "target"} pairs.
  virtual bool seq2seq() const { return false; }
  // The config and every tensor (adapters merged) into a checkpoint being written; `wrote`
  // after each tensor, with its name.
  virtual void WriteModel(Hdf5CheckpointWriter& writer,
                          const std::function<void(const std::string&)>& wrote) = 0;
  // Held-out exact match through the family's generation engine over the trained weights.
  virtual ExactMatch HeldOutExactMatch(const Tokenizer& tokenizer,
                                       const std::vector<TrainingExample>& held_out,
                                       int64_t max_new_tokens) = 0;
  virtual TrainingMemory PlanMemory(const TrainingJob& job, int64_t max_length) const = 0;

  // Tensor parallelism (decoder-only Gemma so far; a model without it holds everything and these
  // do nothing). After a step's micro-batches: sums the gradients the group's ranks hold in part
  // (replicated parameters that each rank's shard feeds differently).
  virtual void SyncGradients() {}
  // Writing a checkpoint: WriteModel on the group's rank 0 gathers every tensor while the other
  // ranks are in SendModel; WholeOf gathers a tensor shaped as parameter `name` (an optimizer
  // tensor) while the others are in SendPartOf, in the same order.
  virtual void SendModel() {}
  Tensor WholeOf(const std::string& name, const Tensor& mine) const;
  void SendPartOf(const std::string& name, const Tensor& mine) const;
  // Resuming: this rank's part of parameter `name`'s whole checkpoint tensor.
  Tensor PartOf(const std::string& name, const Tensor& whole) const;

 protected:
  // The family's tensor-parallel bookkeeping, or null for a model held whole.
  virtual const TensorParallelParameters* tensor_parallel() const { return nullptr; }
};

// The model of a checkpoint, its matrices in `dtype` (f32 or bf16). With `tp` (a group of more
// than one rank; collective over it) this rank's shard of it. Errors name the file (an int8
// checkpoint, a family that does not train yet or not under tensor parallelism, a model that
// does not split over the group).
std::unique_ptr<TrainableModel> LoadTrainableModel(const Hdf5CheckpointReader& checkpoint,
                                                   DType dtype, Communicator* tp = nullptr);

// What training the checkpoint's model as `job` says holds in memory, from its config alone (no
// weights read), and the longest row the model takes.
struct TrainingPlan {
  std::string family, name;
  int64_t max_context = 0;
  int64_t max_length = 0;  // data.max_length, or the family's default (Gemma: its context)
  TrainingMemory memory;
};
TrainingPlan PlanTraining(const Hdf5CheckpointReader& checkpoint, const TrainingJob& job);

}  // namespace gemmapod
