// The self-attention block of a Gemma decoder layer, from the normed residual stream to the
// o_proj output: q/k/v projections, Gemma 3's per-head qk RMSNorm, half-split RoPE, cached causal
// (or sliding-window) attention per sequence, o_proj.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "models/layers/attention.h"
#include "models/layers/kv_cache.h"
#include "models/layers/linear.h"
#include "models/layers/parallel.h"
#include "runtime/cpu/matmul.h"
#include "runtime/tensor.h"

namespace gemmapod {

struct SelfAttentionWeights {
  const Linear& q_proj;  // [H*hd, d]
  const Linear& k_proj;  // [KV*hd, d]
  const Linear& v_proj;  // [KV*hd, d]
  const Linear& o_proj;  // [d, H*hd]
  const Tensor* q_norm;  // [hd], or null when the model has no qk-norm
  const Tensor* k_norm;
};

struct SelfAttentionSettings {
  AttentionShape shape;  // heads (this rank's), window, scale, soft-cap
  float rope_theta = 10000;
  float rope_position_scale = 1;  // linear RoPE scaling
  float rms_norm_eps = 1e-6f;
  float rotary_fraction = 1;  // RoPE on this share of each head (RecurrentGemma: 0.5)
};

// Where each sequence's new tokens sit in the batch rows.
struct BatchLayout {
  std::vector<int64_t> sequence;   // cache slot per chunk
  std::vector<int64_t> offset;     // first row per chunk
  std::vector<int64_t> length;     // rows per chunk
  std::vector<int64_t> start;      // position of the chunk's first token
  std::vector<int32_t> positions;  // per row
};

// x: f32 [T, d] (normed); out: f32 [T, d], summed over the tensor-parallel group `tp` (may be
// null): q/k/v are column-parallel (this rank's heads), o_proj row-parallel. q [T, H*hd], k and v
// [T, KV*hd] and attn [T, H*hd] are the caller's buffers, left holding the rotated queries and
// keys, the values and the attention output (what a backward pass starts from). The new keys and
// values are stored in `cache` for layer `layer`; the caller advances the sequences once every
// layer ran.
void SelfAttentionForward(const Tensor& x, const SelfAttentionWeights& w,
                          const SelfAttentionSettings& s, const BatchLayout& batch, KvCache& cache,
                          int64_t layer, Communicator* tp, Tensor& q, Tensor& k, Tensor& v,
                          Tensor& attn, Tensor& out, cpu::MatmulPrecision precision);

// Training: whole sequences at once, no KV cache. Rows of x are the tokens of one or more packed
// sequences; row i has RoPE position positions[i] and attends to rows [lo[i], hi[i]) (its own
// sequence, causal, within the window: the caller's bookkeeping). What the backward reads.
struct SelfAttentionSaved {
  Tensor x;             // the block's (normed) input
  Tensor q_pre, k_pre;  // the projections before qk-norm (kept only with qk-norm)
  Tensor q, k, v;       // after qk-norm and RoPE: what attention read
  Tensor attn;          // attention's output, o_proj's input
};

void SelfAttentionTrainForward(const Tensor& x, const SelfAttentionWeights& w,
                               const SelfAttentionSettings& s, std::span<const int32_t> positions,
                               std::span<const int64_t> lo, std::span<const int64_t> hi,
                               Communicator* tp, MatmulPrecision precision, Tensor& out,
                               SelfAttentionSaved& saved);

// The gradients of the block's parameters (qk-norm weights only with qk-norm).
struct SelfAttentionGrads {
  LinearGrad q_proj, k_proj, v_proj, o_proj;
  Tensor q_norm, k_norm;
  static SelfAttentionGrads ZerosFor(const SelfAttentionWeights& w);
};

// The backward from dout: dx (whole on every rank of tp: one all-reduce of the three
// column-parallel layers' partials), and grads accumulated.
void SelfAttentionBackward(const SelfAttentionWeights& w, const SelfAttentionSettings& s,
                           std::span<const int32_t> positions, std::span<const int64_t> lo,
                           std::span<const int64_t> hi, const SelfAttentionSaved& saved,
                           const Tensor& dout, Communicator* tp, Tensor& dx,
                           SelfAttentionGrads& grads);

}  // namespace gemmapod
