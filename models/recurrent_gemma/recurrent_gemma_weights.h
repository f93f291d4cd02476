// The parameters of a RecurrentGemma (Griffin) model under their Hugging Face names, and the one
// visitor that names and shapes them (loading, conversion and, later, sharding walk it).
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "models/layers/linear.h"
#include "models/layers/recurrent_block.h"
#include "models/recurrent_gemma/recurrent_gemma_config.h"
#include "runtime/checkpoint/tensor_source.h"

namespace gemmapod {

// Local multi-query attention.
struct LocalAttentionWeights {
  Linear q_proj;  // [H*hd, d]
  Linear k_proj;  // [KV*hd, d]
  Linear v_proj;  // [KV*hd, d]
  Linear o_proj;  // [d, H*hd] + bias
};

struct RecurrentGemmaLayerWeights {
  Tensor temporal_pre_norm;         // [d]
  RecurrentBlockWeights recurrent;  // set on recurrent layers
  LocalAttentionWeights attention;  // set on attention layers
  Tensor channel_pre_norm;          // [d]
  Linear gate_proj;                 // [ffn, d] + bias: the GELU branch
  Linear up_proj;                   // [ffn, d] + bias
  Linear down_proj;                 // [d, ffn] + bias
};

struct RecurrentGemmaWeights {
  Linear embed_tokens;  // [V, d], tied output head
  std::vector<RecurrentGemmaLayerWeights> layers;
  Tensor final_norm;  // [d]
};

struct RecurrentGemmaParameter {
  std::string name;
  Shape shape;
};

// Whether a parameter is a weight matrix (kept in its stored dtype, f32 or bf16) rather than a
// vector, convolution taps or gate blocks and biases (computed in f32 by the model's own loops).
bool IsRecurrentGemmaMatrix(const RecurrentGemmaParameter& p);

void ForEachRecurrentGemmaParameter(
    const RecurrentGemmaConfig& config, RecurrentGemmaWeights& weights,
    const std::function<void(const RecurrentGemmaParameter&, Tensor&)>& fn);
std::vector<RecurrentGemmaParameter> RecurrentGemmaParameters(const RecurrentGemmaConfig& config);

// Checks that `source` holds exactly the config's parameters (a tied lm_head.weight aside), with
// their shapes, as f32 or bf16; the error names the origin and the tensor.
void CheckRecurrentGemmaTensors(const RecurrentGemmaConfig& config, const TensorSource& source);

// Reads every parameter (f32 or bf16 matrices; everything else becomes f32), checking names and
// shapes; a tied lm_head.weight is skipped, any other unknown tensor is an error.
RecurrentGemmaWeights LoadRecurrentGemmaWeights(const RecurrentGemmaConfig& config,
                                                const TensorSource& source);

}  // namespace gemmapod
