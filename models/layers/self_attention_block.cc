#include "models/layers/self_attention_block.h"

#include "runtime/cpu/ops.h"

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
  if (w.q_norm != nullptr) {
    cpu::RmsNorm(q.data<float>(), w.q_norm->data<float>(), T * H, hd, s.rms_norm_eps,
                 q.data<float>());
    cpu::RmsNorm(k.data<float>(), w.k_norm->data<float>(), T * KV, hd, s.rms_norm_eps,
                 k.data<float>());
  }
  cpu::RopeHalfSplit(q.data<float>(), T, H, hd, batch.positions.data(), s.rope_theta, 1.0f,
                     s.rope_position_scale);
  cpu::RopeHalfSplit(k.data<float>(), T, KV, hd, batch.positions.data(), s.rope_theta, 1.0f,
                     s.rope_position_scale);
  for (size_t b = 0; b < batch.sequence.size(); ++b) {
    const int64_t off = batch.offset[b];
    CachedSelfAttention(s.shape, q.data<float>() + off * H * hd, k.data<float>() + off * KV * hd,
                        v.data<float>() + off * KV * hd, batch.length[b], batch.start[b],
                        cache.Layer(batch.sequence[b], layer), attn.data<float>() + off * H * hd);
  }
  RowParallelLinear(w.o_proj, tp).Forward(attn, out, precision);
}

}  // namespace gemmapod
