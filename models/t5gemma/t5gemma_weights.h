// The parameters of a T5Gemma, named by what they do, and the one visitor that maps them to their
// Hugging Face names, shapes and (for a shard) slices. Each stack is a Gemma 2 stack
// (GemmaWeights: embedding, layers, final norm) under T5Gemma's names; every decoder layer adds a
// cross-attention block. Loading, converting, planning and sharding all walk
// ForEachT5GemmaShardParameter, so a name, shape or split is written down once.
//
// A rank runs one part: encoder layers or decoder layers (a pipeline stage never mixes them), or
// the whole model on one rank. Within a part the splits are Gemma's (models/gemma_shard.h); the
// cross-attention block splits like self-attention: q_proj by the decoder's query heads, k_proj
// and v_proj by its key/value heads (their inputs, the encoder width, whole), o_proj by columns.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "models/gemma/gemma_shard.h"
#include "models/gemma/gemma_weights.h"
#include "models/t5gemma/t5gemma_config.h"

namespace gemmapod {

struct CrossAttentionWeights {
  Tensor pre_norm;   // [d_dec]
  Linear q_proj;     // [H*hd, d_dec]
  Linear k_proj;     // [KV*hd, d_enc]
  Linear v_proj;     // [KV*hd, d_enc]
  Linear o_proj;     // [d_dec, H*hd]
  Tensor post_norm;  // [d_dec]
};

struct T5GemmaWeights {
  GemmaWeights encoder;  // layers indexed by model layer; slots outside the shard stay empty
  GemmaWeights decoder;
  std::vector<CrossAttentionWeights> cross;  // per decoder layer
};

// What one rank holds: encoder layers, decoder layers, or (one rank) both stacks whole. The
// encoder's "head" is its final norm: the last encoder stage holds it and no embedding unless it
// is also the first.
struct T5GemmaShard {
  bool has_encoder = false;
  bool has_decoder = false;
  GemmaShard encoder;
  GemmaShard decoder;
};

T5GemmaShard WholeT5Gemma(const T5GemmaConfig& config);

// Calls fn(parameter, slice, slot) for every parameter `shard` holds: the encoder's, then the
// decoder's, then the decoder's cross-attention, each layer in order. Names and shapes are
// Hugging Face's; an int8 checkpoint adds "<matrix>_scale" after each matrix.
void ForEachT5GemmaShardParameter(
    const T5GemmaConfig& config, const T5GemmaShard& shard, T5GemmaWeights& weights,
    const std::function<void(const GemmaParameter&, const ParameterSlice&, Tensor&)>& fn);
std::vector<GemmaParameter> T5GemmaParameters(const T5GemmaConfig& config);

// Checks that `source` holds exactly the config's parameters (a tied lm_head.out_proj.weight
// excepted), with their shapes and a dtype the config allows; errors name the origin and tensor.
void CheckT5GemmaTensors(const T5GemmaConfig& config, const TensorSource& source);

// The shard's slices read from `source` after CheckT5GemmaTensors; `tp` (this rank's group,
// collective) checks the stored checksums of tensors read in slices.
T5GemmaWeights LoadT5GemmaShard(const T5GemmaConfig& config, const T5GemmaShard& shard,
                                const TensorSource& source, Communicator* tp = nullptr);

// Bytes of the shard's weights when matrices take `matrix_bytes` per element (norms and scales
// are f32).
int64_t T5GemmaShardWeightBytes(const T5GemmaConfig& config, const T5GemmaShard& shard,
                                int64_t matrix_bytes);

}  // namespace gemmapod
