// The parameters of a decoder-only Gemma, named by what they do, and the one visitor that maps
// them to their Hugging Face names and shapes. Loading, saving, converting and (later) sharding all
// walk ForEachGemmaParameter, so a name or shape is written down exactly once.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "models/gemma/model_config.h"
#include "models/layers/linear.h"
#include "runtime/checkpoint/tensor_source.h"
#include "runtime/tensor.h"

namespace gemmapod {

struct GemmaLayerWeights {
  Tensor attn_norm;       // [d] RMSNorm before attention ("input_layernorm")
  Linear q_proj;          // [H*hd, d]
  Linear k_proj;          // [KV*hd, d]
  Linear v_proj;          // [KV*hd, d]
  Linear o_proj;          // [d, H*hd]
  Tensor q_norm;          // [hd] Gemma 3 only
  Tensor k_norm;          // [hd] Gemma 3 only
  Tensor post_attn_norm;  // [d] Gemma 2/3 only
  Tensor mlp_norm;        // [d] RMSNorm before the MLP
  Tensor post_mlp_norm;   // [d] Gemma 2/3 only
  Linear gate_proj;       // [ffn, d]
  Linear up_proj;         // [ffn, d]
  Linear down_proj;       // [d, ffn]
};

struct GemmaWeights {
  Linear embed_tokens;  // [V, d]; also the output head (tied)
  std::vector<GemmaLayerWeights> layers;
  Tensor final_norm;  // [d]
  Linear score;       // [num_labels, d]: a reward model's head (config.num_labels > 0 only)
};

// What a parameter is: its Hugging Face name, its full logical shape, and whether it is a norm
// weight (kept in f32 whatever the checkpoint stores: norms are tiny and computed in f32) or the
// per-row scales of an int8 matrix ("<matrix>.weight_scale", f32 [rows], in int8 checkpoints).
struct GemmaParameter {
  std::string name;
  Shape shape;
  bool is_norm = false;
  bool is_scale = false;
};

// Calls fn(parameter, slot) for every parameter of `config`, in checkpoint order; `slot` is the
// member of `weights` that holds it.
void ForEachGemmaParameter(const ModelConfig& config, GemmaWeights& weights,
                           const std::function<void(const GemmaParameter&, Tensor&)>& fn);
std::vector<GemmaParameter> GemmaParameters(const ModelConfig& config);

// Calls fn(name, linear) for every matrix of the layers (not the embedding), in checkpoint order;
// `name` is its Hugging Face name without ".weight" ("model.layers.0.self_attn.q_proj").
void ForEachGemmaLinear(const ModelConfig& config, GemmaWeights& weights,
                        const std::function<void(const std::string&, Linear&)>& fn);

// Reads every parameter from `source`, checking names and shapes against the config (the error
// names the tensor and both shapes). Matrices keep their stored dtype (f32 or bf16, or i8 with
// their scales in an int8 checkpoint); norms become f32. A tensor in `source` that the config does
// not name is an error (the file and the config disagree about the model), except a tied
// lm_head.weight, which duplicates the embedding.
GemmaWeights LoadGemmaWeights(const ModelConfig& config, const TensorSource& source);

// Quantizes every matrix of whole f32 or bf16 weights (the embedding too) to int8 with one scale
// per row, in place, as `gemmapod convert --quantize int8` stores them; returns the config that
// describes the result (quantization int8).
ModelConfig QuantizeGemmaWeightsInt8(const ModelConfig& config, GemmaWeights& weights);

}  // namespace gemmapod
