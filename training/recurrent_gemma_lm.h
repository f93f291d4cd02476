// The language-model loss of a whole RecurrentGemma (Griffin) on one rank and its gradient with
// respect to every parameter, over packed sequences (each document's recurrence, convolution and
// local attention start fresh at its first token). Built from the layers' training forwards and
// backwards: Griffin's recurrent block (RG-LRU backward through time), the self-attention block
// with RoPE on half of each head and a local window, the GeGLU MLP with biases, the tied
// embedding and the soft-capped head.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "models/layers/geglu_mlp.h"
#include "models/layers/linear.h"
#include "models/layers/recurrent_block.h"
#include "models/recurrent_gemma/recurrent_gemma_shard.h"
#include "models/recurrent_gemma/recurrent_gemma_weights.h"
#include "training/gemma_lm.h"

namespace gemmapod {

struct RecurrentGemmaLayerGrads {
  Tensor temporal_pre_norm;
  RecurrentBlockGrads recurrent;              // recurrent layers
  LinearGrad q_proj, k_proj, v_proj, o_proj;  // attention layers
  Tensor channel_pre_norm;
  GegluMlpGrads mlp;
};

struct RecurrentGemmaGrads {
  Tensor embed_tokens;
  std::vector<RecurrentGemmaLayerGrads> layers;
  Tensor final_norm;
  static RecurrentGemmaGrads ZerosFor(const RecurrentGemmaConfig& config,
                                      const RecurrentGemmaWeights& weights);
};

// grads += the gradient of scale * (the batch's summed loss); see GemmaLossAndGradients.
// Under tensor parallelism (`parallel`) the weights are a shard (models/recurrent_gemma/
// recurrent_gemma_shard.h) and the gradients of the replicated key/value projections partial.
LossSum RecurrentGemmaLossAndGradients(const RecurrentGemmaConfig& config,
                                       const RecurrentGemmaWeights& weights,
                                       const PackedBatch& batch, double scale,
                                       RecurrentGemmaGrads& grads,
                                       const LossParallelism& parallel = {});

// One pipeline stage's part of the loss, micro-batch by micro-batch (see GemmaStageLoss): the
// layers [first_layer, end_layer) of `shard`, the embedding on the first stage, the final norm
// and tied head on the last (whose forward takes the loss's gradient down to the norm's input).
class RecurrentGemmaStageLoss {
 public:
  RecurrentGemmaStageLoss(const RecurrentGemmaConfig& config, const RecurrentGemmaWeights& weights,
                          RecurrentGemmaGrads& grads, const RecurrentGemmaShard& shard,
                          const LossParallelism& parallel);
  ~RecurrentGemmaStageLoss();
  Tensor Forward(int64_t micro, PackedBatch batch, const Tensor& input,
                 const GemmaStageLoss::GradientScale* backward, LossSum& loss);
  Tensor Backward(int64_t micro, const Tensor& doutput);

  // Called with a layer's checkpoint prefix ("model.layers.3.") as its backward ends: its
  // gradients are final for the micro-batch (data parallelism starts summing them).
  std::function<void(const std::string& prefix)> layer_done;

 private:
  struct InFlight;
  const RecurrentGemmaConfig& c_;
  const RecurrentGemmaWeights& w_;
  RecurrentGemmaGrads& grads_;
  RecurrentGemmaShard shard_;
  LossParallelism parallel_;
  InFlightMicroBatches<InFlight> in_flight_;
};

// The loss alone, with the same forward (tests; held-out evaluation).
LossSum RecurrentGemmaLoss(const RecurrentGemmaConfig& config, const RecurrentGemmaWeights& weights,
                           const PackedBatch& batch, const LossParallelism& parallel = {});

}  // namespace gemmapod
