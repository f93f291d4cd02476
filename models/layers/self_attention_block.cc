#include "models/layers/self_attention_block.h"

#include "runtime/ops/ops.h"

namespace gemmapod {

void SelfAttentionForward(const Tensor& x, const SelfAttentionWeights& w,
                          const SelfAttentionSettings& s, const BatchLayout& batch, KvCache& cache,
                          int64_t layer, Communicator* tp, Tensor& q, Tensor& k, Tensor& v,
                          Tensor& attn, Tensor& out, cpu::MatmulPrecision precision) {
  const int64_t T = x.dim(0);
  const int64_t H = s.shape.num_heads, KV = s.shape.num_kv_heads, hd = s.shape.head_dim;
  ColumnParallelLinear(w.q_proj).Forward(x, q, precision);
  ColumnParallelLinear(w.k_proj).Forward(x, k, precision);
  ColumnParallelLinear(w.v_proj).Forward(x, v, precision);
  if (w.q_norm != nullptr) {  // Gemma 3's per-head qk-norm: rows of head_dim
    Tensor q_heads = q.Reshape({T * H, hd}), k_heads = k.Reshape({T * KV, hd});
    ops::RmsNorm(q_heads, *w.q_norm, s.rms_norm_eps, q_heads);
    ops::RmsNorm(k_heads, *w.k_norm, s.rms_norm_eps, k_heads);
  }
  const ops::Rope rope{s.rope_theta, 1.0f, s.rope_position_scale};
  ops::RopeHalfSplit(q, H, hd, batch.positions, rope);
  ops::RopeHalfSplit(k, KV, hd, batch.positions, rope);
  for (size_t b = 0; b < batch.sequence.size(); ++b) {
    const int64_t off = batch.offset[b], end = off + batch.length[b];
    Tensor attn_rows = attn.Slice(off, end);
    CachedSelfAttention(s.shape, q.Slice(off, end), k.Slice(off, end), v.Slice(off, end),
                        batch.start[b], cache.Layer(batch.sequence[b], layer), attn_rows);
  }
  RowParallelLinear(w.o_proj, tp).Forward(attn, out, precision);
}

}  // namespace gemmapod
