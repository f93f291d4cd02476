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
#include "training/rollouts.h"

namespace gemmapod {

class Communicator;
class Hdf5CheckpointReader;
class ModelParallelParameters;
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
  // scale * the summed loss. The whole model (or a tensor-parallel shard of it) as one stage:
  // StageForward and StageBackward of a single micro-batch.
  virtual LossSum LossAndGradients(const std::vector<const TrainingExample*>& examples,
                                   double scale, bool recompute);
  virtual LossSum Loss(const std::vector<const TrainingExample*>& examples);
  // Called with a layer's checkpoint prefix ("model.layers.3.") as the backward finishes its
  // gradients, until set to null (data parallelism sums them while the backward goes on).
  using LayerDone = std::function<void(const std::string& prefix)>;
  virtual void SetLayerDone(LayerDone hook) = 0;
  // What each micro-batch's targets are scored by (training/gemma_lm.h's TokenObjective), made
  // from its examples as the stage with the head runs them; null: the cross-entropy. Preference
  // and policy objectives (DPO, PPO, GRPO) set one for the whole run.
  using ObjectiveOf =
      std::function<TokenObjective(const std::vector<const TrainingExample*>& examples)>;
  void SetObjective(ObjectiveOf objective) { objective_of_ = std::move(objective); }
  // The same for a scoring head's outputs (a reward model): set, each micro-batch's sequences are
  // scored by the head GemmaWeights::score at their last token instead of the language-model head.
  using ScoreObjectiveOf =
      std::function<ScoreObjective(const std::vector<const TrainingExample*>& examples)>;
  void SetScoreObjective(ScoreObjectiveOf objective) { score_objective_of_ = std::move(objective); }
  // Makes the model a reward model: a scoring head of one output, zero, trained with the rest
  // (before RegisterParameters). A model that has one keeps it; families without one refuse.
  virtual void AddScoreHead();
  // Keeps a reward model's scoring head as it is (before RegisterParameters): objectives other
  // than `reward` give it no gradient, and weight decay alone would shrink it.
  virtual void FreezeScoreHead() {}
  // Encoder-decoder: examples are {"input", "target"} pairs.
  virtual bool seq2seq() const { return false; }
  // The config and every tensor (adapters merged) into a checkpoint being written; `wrote`
  // after each tensor, with its name and dtype.
  virtual void WriteModel(Hdf5CheckpointWriter& writer,
                          const std::function<void(const std::string&, DType)>& wrote) = 0;
  // Held-out exact match through the family's generation engine over the trained weights.
  virtual ExactMatch HeldOutExactMatch(const Tokenizer& tokenizer,
                                       const std::vector<TrainingExample>& held_out,
                                       int64_t max_new_tokens) = 0;
  virtual TrainingMemory PlanMemory(const TrainingJob& job, int64_t max_length) const = 0;
  // On-policy RL: answers to `prompts` sampled by the family's generation engine over the
  // weights being trained (training/rollouts.h). Families without one refuse.
  virtual std::vector<Rollout> Rollouts(const Tokenizer& tokenizer,
                                        const std::vector<std::vector<int32_t>>& prompts,
                                        const std::vector<uint64_t>& seeds,
                                        const RolloutOptions& options);

  // Pipeline parallelism (a model loaded as one stage: training/pipeline_engine.h runs these as
  // the schedule says). The shapes of the f32 tensors this stage receives from the previous stage
  // and sends to the next for micro-batch `examples` (a gradient has its activation's shape); the
  // stage's forward (`input`: the previous stage's output; with `gradient`, kept for the backward
  // and the gradient of scale * the summed loss taken), returning its output or, on the last
  // stage, nothing and the loss; and its backward from the gradient of its output, returning that
  // of its input (nothing on the first stage). A family without pipeline stages refuses.
  virtual Shape InputBoundary(const std::vector<const TrainingExample*>& examples) const;
  virtual Shape OutputBoundary(const std::vector<const TrainingExample*>& examples) const;
  struct StageGradient {
    double scale;
    bool recompute;  // keep only each layer's input, and run the layer again in the backward
  };
  virtual Tensor StageForward(int64_t micro, const std::vector<const TrainingExample*>& examples,
                              const Tensor& input, const StageGradient* gradient, LossSum& loss);
  virtual Tensor StageBackward(int64_t micro, const Tensor& doutput);

  // Model parallelism (tensor parallelism, and pipeline stages; a model held whole does nothing
  // here). After a step's micro-batches: sums the gradients the model group's ranks hold in part
  // (replicated parameters that each rank's shard feeds differently, the tied embedding of the
  // first and last stages).
  virtual void SyncGradients() {}
  // Writing a checkpoint: WriteModel on the model group's rank 0 gathers every tensor while the
  // other ranks are in SendModel; WholeOf gathers a tensor shaped as parameter `name` (an
  // optimizer tensor; `mine` undefined where this rank holds none of it) while the others are in
  // SendPartOf, in the order of ParameterNames.
  virtual void SendModel() {}
  Tensor WholeOf(const std::string& name, const Tensor& mine) const;
  void SendPartOf(const std::string& name, const Tensor& mine) const;
  // Resuming: this rank's part of parameter `name`'s whole checkpoint tensor.
  Tensor PartOf(const std::string& name, const Tensor& whole) const;
  // Every trained parameter of the whole model, in checkpoint order (a pipeline stage's
  // optimizer holds only its own).
  std::vector<std::string> ParameterNames(const AdamW& optimizer) const;

 protected:
  // The family's model-parallel bookkeeping, or null for a model held whole.
  virtual const ModelParallelParameters* model_parallel() const { return nullptr; }
  // The objective of a micro-batch of `examples` (empty: the cross-entropy).
  TokenObjective ObjectiveFor(const std::vector<const TrainingExample*>& examples) const {
    return objective_of_ ? objective_of_(examples) : TokenObjective();
  }
  ScoreObjective ScoreObjectiveFor(const std::vector<const TrainingExample*>& examples) const {
    return score_objective_of_ ? score_objective_of_(examples) : ScoreObjective();
  }

 private:
  ObjectiveOf objective_of_;
  ScoreObjectiveOf score_objective_of_;
};

// How a model is split over the ranks of one replica: tensor-parallel groups of `tp` ranks, each
// holding a shard of a pipeline stage's layers; `stages` groups, stage s's ranks being ranks
// [s tp, (s + 1) tp) of `model` (the replica's ranks).
struct ModelParallelism {
  Communicator* tp = nullptr;
  Communicator* model = nullptr;
  int stages = 1;
  int stage = 0;
  bool active() const;  // more than one rank
};

// The model of a checkpoint, its matrices in `dtype` (f32 or bf16); under model parallelism
// (collective over its groups) this rank's part of it. Errors name the file (an int8
// checkpoint, a family that does not train yet or not under this layout, a model that does not
// split over it).
std::unique_ptr<TrainableModel> LoadTrainableModel(const Hdf5CheckpointReader& checkpoint,
                                                   DType dtype,
                                                   const ModelParallelism& parallel = {});

// What training the checkpoint's model as `job` says holds in memory, from its config alone (no
// weights read), and the longest row the model takes.
struct TrainingPlan {
  std::string family, name;
  int64_t max_context = 0;
  int64_t max_length = 0;  // data.max_length, or the family's default (Gemma: its context)
  TrainingMemory memory;
};
TrainingPlan PlanTraining(const Hdf5CheckpointReader& checkpoint, const TrainingJob& job);

// What each of the job's parallel.pp stages holds of the model (training/memory_plan.h), laid out
// as LoadTrainableModel lays them out, with `micro_batches` a step on each replica under the
// job's schedule. One stage: the whole model.
std::vector<PipelineStageShare> PipelineStageShares(const Hdf5CheckpointReader& checkpoint,
                                                    const TrainingJob& job, int64_t micro_batches);

}  // namespace gemmapod
