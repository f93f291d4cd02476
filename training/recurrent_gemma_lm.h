// The language-model loss of a whole RecurrentGemma (Griffin) on one rank and its gradient with
// respect to every parameter, over packed sequences (each document's recurrence, convolution and
// local attention start fresh at its first token). Built from the layers' training forwards and
// backwards: Griffin's recurrent block (RG-LRU backward through time), the self-attention block
// with RoPE on half of each head and a local window, the GeGLU MLP with biases, the tied
// embedding and the soft-capped head.
#pragma once

#include <vector>

#include "models/layers/geglu_mlp.h"
#include "models/layers/linear.h"
#include "models/layers/recurrent_block.h"
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

// The loss alone, with the same forward (tests; held-out evaluation).
LossSum RecurrentGemmaLoss(const RecurrentGemmaConfig& config, const RecurrentGemmaWeights& weights,
                           const PackedBatch& batch, const LossParallelism& parallel = {});

}  // namespace gemmapod
