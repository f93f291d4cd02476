// The language-model loss of a whole decoder-only Gemma on one rank and its gradient with respect
// to every parameter: packed sequences in, mean next-token cross-entropy out, gradients
// accumulated (so micro-batches add up). Built from the layers' training forwards and backwards;
// the tied embedding gets its gradient from the lookup and from the head.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "models/gemma/gemma_layer_training.h"
#include "models/gemma/gemma_shard.h"
#include "models/gemma/gemma_weights.h"
#include "models/layers/parallel.h"
#include "runtime/error.h"

namespace gemmapod {

struct GemmaGrads {
  Tensor embed_tokens;  // f32 [V, d]
  std::vector<GemmaLayerGrads> layers;
  Tensor final_norm;
  Tensor score;  // a reward model's head
  static GemmaGrads ZerosFor(const ModelConfig& config, const GemmaWeights& weights);
};

// A batch's summed token cross-entropies and how many targets it had.
struct LossSum {
  double sum = 0;
  int64_t targets = 0;
  double mean() const { return targets > 0 ? sum / static_cast<double>(targets) : 0.0; }
};

// A loss over the log-probabilities log pi(a_t) of a batch's targets, in place of the
// cross-entropy (whose loss is -sum log pi): `logp` has one entry per token with a target, in
// batch order. Returns the summed loss and what it counts (pairs for DPO, tokens for PPO), and,
// given `dlogp`, fills it with d(summed loss)/d logp per entry. The gradient taken is that of
// scale * the summed loss, as for the cross-entropy; the same function runs on every
// tensor-parallel rank, which all see the whole log-probabilities.
using TokenObjective =
    std::function<LossSum(const std::vector<double>& logp, std::vector<double>* dlogp)>;
// A loss over a scoring head's outputs (a reward model's), one score per sequence of the batch in
// order, read off its last token: the summed loss, and given `dscore` its slope per score.
using ScoreObjective =
    std::function<LossSum(const std::vector<double>& scores, std::vector<double>* dscore)>;

// Sequences packed one after another; each token's target is the next token of its sequence,
// and `loss_mask` (per token, empty: all) says which targets count (a prompt's do not).
struct PackedBatch {
  std::vector<int32_t> tokens;
  std::vector<int32_t> targets;  // -1: no loss at this token
  std::vector<int32_t> positions;
  std::vector<int64_t> sequence_start;  // per token: the row its sequence starts at
  TokenObjective objective;             // what the targets are scored by; empty: cross-entropy
  // Set: the model's scoring head (GemmaWeights::score) reads each sequence's last token instead
  // of the language-model head, and this scores its outputs.
  ScoreObjective score_objective;
};
PackedBatch PackSequences(const std::vector<std::vector<int32_t>>& sequences,
                          const std::vector<std::vector<uint8_t>>& loss_mask = {});

class AdamW;
// Whether LoRA adapters are attached to any of the layers' matrices (only they then train).
bool HasAdapters(const GemmaWeights& weights);
// The gradient tensor of each of `weights`' tensors (by the weight tensor's address), for
// registering parameters by the names a weight visitor gives them.
void MapGemmaGradients(GemmaWeights& weights, GemmaGrads& grads,
                       std::map<const Tensor*, Tensor*>& grad_of);
// Registers every parameter of `weights` with its gradient in `grads`: matrices with weight decay,
// norms without (Gemma has no biases).
void AddGemmaParameters(AdamW& optimizer, const ModelConfig& config, GemmaWeights& weights,
                        GemmaGrads& grads);

// How many targets a batch has to learn.
int64_t CountTargets(const PackedBatch& batch);
// Every family's loss takes these: a batch whose per-token fields agree and that has something to
// learn (errors say which), and the per-token losses summed on the host in double.
void CheckPackedBatch(const PackedBatch& batch);
double SumOfLosses(const Tensor& losses);
// Tensor parallelism of a loss: the group (null: one rank) and this rank's rows of the tied
// embedding (vocab_size 0: all of them). The layers' weights are the group's shards
// (models/gemma/gemma_shard.h); the losses come out whole on every rank.
struct LossParallelism {
  Communicator* tp = nullptr;
  VocabSlice vocab;
};

// The last pipeline stage of every decoder: the loss of `h` (the last layer's output) through the
// final norm, the tied head and the cross-entropy against `targets` (-1: none; only rows with a
// target reach the head; `objective`, when set, scores the targets' log-probabilities instead of
// the cross-entropy), and its gradient for scale * the summed loss taken at once: the
// embedding's and the final norm's gradients accumulate, and the gradient at the final norm's
// input comes back (zero on rows without a target).
struct TiedHeadGradient {
  LossSum loss;
  Tensor dh;
};
// `scale` null: the loss alone (evaluation), no gradient and `dh` undefined.
TiedHeadGradient TiedHeadLossAndGradient(const Tensor& h, const Tensor& final_norm,
                                         const Linear& embed_tokens, double rms_norm_eps,
                                         double final_logit_softcap, int64_t vocab_size,
                                         const std::vector<int32_t>& targets, const double* scale,
                                         const LossParallelism& parallel, Tensor& embed_grad,
                                         Tensor& final_norm_grad,
                                         const TokenObjective& objective = {});

// The last stage of a reward model: each sequence's last row of `h` through the final norm and
// the scoring head `score` ([1, d]), the objective over the scores, and its gradient for scale *
// the summed loss (the head's and the final norm's gradients accumulate; the gradient at the
// final norm's input comes back, zero on the other rows). `scale` null: the loss alone.
TiedHeadGradient ScoreHeadLossAndGradient(const Tensor& h, const Tensor& final_norm,
                                          const Linear& score, double rms_norm_eps,
                                          const std::vector<int64_t>& sequence_start,
                                          const ScoreObjective& objective, const double* scale,
                                          Tensor& score_grad, Tensor& final_norm_grad);

// A stage loss's bookkeeping of the micro-batches between their forward and their backward.
template <typename InFlight>
class InFlightMicroBatches {
 public:
  void Keep(int64_t micro, std::unique_ptr<InFlight> state) {
    GEMMAPOD_CHECK(kept_.emplace(micro, std::move(state)).second, "pipeline: micro-batch ", micro,
                   " forwarded twice before its backward");
  }
  std::unique_ptr<InFlight> Take(int64_t micro) {
    const auto it = kept_.find(micro);
    GEMMAPOD_CHECK(it != kept_.end(), "pipeline: backward of micro-batch ", micro,
                   " without its forward");
    std::unique_ptr<InFlight> state = std::move(it->second);
    kept_.erase(it);
    return state;
  }

 private:
  std::map<int64_t, std::unique_ptr<InFlight>> kept_;
};

// grads += the gradient of scale * (the batch's summed loss). A step accumulated over several
// micro-batches passes scale = 1 / (the targets of the whole step), so its gradient is the step's
// mean loss's whatever the split (not a mean of per-micro-batch means). `recompute`: keep only
// each layer's input through the forward and run the layer again before its backward (activation
// memory of one layer instead of all, for about a third more compute); the gradients are the
// same bits.
// With tensor parallelism each rank accumulates its shards' gradients (the replicated norms'
// and, where ranks share a key/value head, the shared parts' are partial: GemmaTensorParallel
// sums them).
LossSum GemmaLossAndGradients(const ModelConfig& config, const GemmaWeights& weights,
                              const PackedBatch& batch, double scale, GemmaGrads& grads,
                              bool recompute = false, const LossParallelism& parallel = {});

// One pipeline stage's part of the loss (models/gemma/gemma_shard.h: the layers
// [first_layer, end_layer), the embedding on the first stage, the final norm and tied head on
// the last), micro-batch by micro-batch as a pipeline schedule asks (training/pipeline_schedule.h):
// Forward keeps what the micro-batch's Backward reads until it runs. The last stage takes the
// loss's gradient within its forward, down to the final norm's input, so the logits never wait
// for the schedule. The whole model is the stage WholeGemma gives (GemmaLossAndGradients).
class GemmaStageLoss {
 public:
  GemmaStageLoss(const ModelConfig& config, const GemmaWeights& weights, GemmaGrads& grads,
                 const GemmaShard& shard, bool recompute, const LossParallelism& parallel);
  ~GemmaStageLoss();

  struct GradientScale {
    double scale;  // the gradient is that of scale * the micro-batch's summed loss
  };
  // `input`: the previous stage's output, [tokens, d] (ignored on the first stage). Returns this
  // stage's output, or on the last stage nothing, with the micro-batch's loss in `loss`.
  // `backward` null: forward only, nothing kept.
  Tensor Forward(int64_t micro, PackedBatch batch, const Tensor& input,
                 const GradientScale* backward, LossSum& loss);
  // `doutput`: the next stage's gradient of this stage's output (ignored on the last stage).
  // Returns the gradient of this stage's input, or nothing on the first stage. Gradients
  // accumulate.
  Tensor Backward(int64_t micro, const Tensor& doutput);

  // Called with a layer's checkpoint prefix ("model.layers.3.") as its backward ends: its
  // gradients are final for the micro-batch (data parallelism starts summing them).
  std::function<void(const std::string& prefix)> layer_done;

 private:
  struct InFlight;
  const ModelConfig& c_;
  const GemmaWeights& w_;
  GemmaGrads& grads_;
  GemmaShard shard_;
  bool recompute_;
  LossParallelism parallel_;
  InFlightMicroBatches<InFlight> in_flight_;
};

// The loss alone (held-out evaluation): the same forward, nothing kept for a backward.
LossSum GemmaLoss(const ModelConfig& config, const GemmaWeights& weights, const PackedBatch& batch,
                  const LossParallelism& parallel = {});

}  // namespace gemmapod
