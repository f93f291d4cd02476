// A Gemma decoder layer for training: the same layer GemmaStage runs for inference (pre-norm,
// self-attention, optional post-norm, residual; pre-norm, GeGLU MLP, optional post-norm,
// residual), over whole packed sequences without a KV cache, keeping what its backward reads, and
// that backward: from dL/d(output) to dL/d(input) and every parameter's gradient.
#pragma once

#include <cstdint>
#include <span>

#include "models/gemma/gemma_weights.h"
#include "models/gemma/model_config.h"
#include "models/layers/geglu_mlp.h"
#include "models/layers/self_attention_block.h"

namespace gemmapod {

struct GemmaLayerSaved {
  Tensor input;  // the residual stream entering the layer
  Tensor attention_normed;
  SelfAttentionSaved attention;
  Tensor attention_out;  // o_proj's output, before the post-norm
  Tensor mid;            // the residual stream between the blocks (the MLP half's input)
  Tensor mlp_normed, gate, up, hidden;
  Tensor mlp_out;  // down_proj's output, before the post-norm
};

struct GemmaLayerGrads {
  Tensor attn_norm, post_attn_norm, mlp_norm, post_mlp_norm;  // post-norms only with post_norms
  SelfAttentionGrads attention;
  GegluMlpGrads mlp;
  static GemmaLayerGrads ZerosFor(const ModelConfig& config, const GemmaLayerWeights& w);
};

// Layer `layer` of `config` over h [T, d] (rows: packed sequences; row i at RoPE position
// positions[i] sees rows [lo[i], hi[i]): the caller's causal, windowed, per-sequence ranges for
// this layer's kind). Returns the layer's output; `saved` keeps what the backward reads.
Tensor GemmaLayerTrainForward(const ModelConfig& config, int64_t layer, const GemmaLayerWeights& w,
                              const Tensor& h, std::span<const int32_t> positions,
                              std::span<const int64_t> lo, std::span<const int64_t> hi,
                              Communicator* tp, MatmulPrecision precision, GemmaLayerSaved& saved);

// The layer's two residual halves, which GemmaLayerTrainForward runs one after the other (T5Gemma's
// decoder puts its cross-attention block between them): mid = h + post(attention(norm(h))), and
// out = x + post(mlp(norm(x))) with x = mid. Each saves its own fields of `saved`.
Tensor GemmaAttentionResidualForward(const ModelConfig& config, int64_t layer,
                                     const GemmaLayerWeights& w, const Tensor& h,
                                     std::span<const int32_t> positions,
                                     std::span<const int64_t> lo, std::span<const int64_t> hi,
                                     Communicator* tp, MatmulPrecision precision,
                                     GemmaLayerSaved& saved);
Tensor GemmaMlpResidualForward(const ModelConfig& config, const GemmaLayerWeights& w,
                               const Tensor& x, Communicator* tp, MatmulPrecision precision,
                               GemmaLayerSaved& saved);
// Their backwards: dx from dout (the MLP half), dh from d_mid (the attention half).
void GemmaMlpResidualBackward(const ModelConfig& config, const GemmaLayerWeights& w,
                              const GemmaLayerSaved& saved, const Tensor& dout, Communicator* tp,
                              Tensor& dx, GemmaLayerGrads& grads);
void GemmaAttentionResidualBackward(const ModelConfig& config, int64_t layer,
                                    const GemmaLayerWeights& w, std::span<const int32_t> positions,
                                    std::span<const int64_t> lo, std::span<const int64_t> hi,
                                    const GemmaLayerSaved& saved, const Tensor& d_mid,
                                    Communicator* tp, Tensor& dh, GemmaLayerGrads& grads);

// dh = dL/dh from dout = dL/d(output); grads accumulate.
void GemmaLayerBackward(const ModelConfig& config, int64_t layer, const GemmaLayerWeights& w,
                        std::span<const int32_t> positions, std::span<const int64_t> lo,
                        std::span<const int64_t> hi, const GemmaLayerSaved& saved,
                        const Tensor& dout, Communicator* tp, Tensor& dh, GemmaLayerGrads& grads);

}  // namespace gemmapod
