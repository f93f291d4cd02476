#include "models/layers/self_attention_block.h"

#include "models/layers/device_tensors.h"
#include "runtime/ops/grad_ops.h"
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
  const ops::Rope rope{s.rope_theta, s.rotary_fraction, s.rope_position_scale};
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

namespace {

AttentionProblem TrainProblem(const AttentionShape& s) {
  AttentionProblem p;
  p.num_heads = s.num_heads;
  p.num_kv_heads = s.num_kv_heads;
  p.head_dim = s.head_dim;
  p.kv_row_stride = s.num_kv_heads * s.head_dim;
  p.scale = s.scale;
  p.softcap = s.softcap;
  return p;
}

}  // namespace

void SelfAttentionTrainForward(const Tensor& x, const SelfAttentionWeights& w,
                               const SelfAttentionSettings& s, std::span<const int32_t> positions,
                               std::span<const int64_t> lo, std::span<const int64_t> hi,
                               Communicator* tp, MatmulPrecision precision, Tensor& out,
                               SelfAttentionSaved& saved) {
  const int64_t T = x.dim(0);
  const int64_t H = s.shape.num_heads, KV = s.shape.num_kv_heads, hd = s.shape.head_dim;
  saved.x = x;
  saved.q = ActivationLike(x, {T, H * hd});
  saved.k = ActivationLike(x, {T, KV * hd});
  saved.v = ActivationLike(x, {T, KV * hd});
  saved.attn = ActivationLike(x, {T, H * hd});
  ColumnParallelLinear(w.q_proj).Forward(x, saved.q, precision);
  ColumnParallelLinear(w.k_proj).Forward(x, saved.k, precision);
  ColumnParallelLinear(w.v_proj).Forward(x, saved.v, precision);
  if (w.q_norm != nullptr) {
    saved.q_pre = CopyOf(saved.q);
    saved.k_pre = CopyOf(saved.k);
    Tensor q_heads = saved.q.Reshape({T * H, hd}), k_heads = saved.k.Reshape({T * KV, hd});
    ops::RmsNorm(q_heads, *w.q_norm, s.rms_norm_eps, q_heads);
    ops::RmsNorm(k_heads, *w.k_norm, s.rms_norm_eps, k_heads);
  }
  const ops::Rope rope{s.rope_theta, s.rotary_fraction, s.rope_position_scale};
  ops::RopeHalfSplit(saved.q, H, hd, positions, rope);
  ops::RopeHalfSplit(saved.k, KV, hd, positions, rope);
  const ops::KeyRunTensors run{saved.k, saved.v, 0, nullptr};
  ops::Attention(TrainProblem(s.shape), saved.q, {&run, 1}, lo, hi, saved.attn);
  RowParallelLinear(w.o_proj, tp).Forward(saved.attn, out, precision);
}

SelfAttentionGrads SelfAttentionGrads::ZerosFor(const SelfAttentionWeights& w) {
  SelfAttentionGrads g{LinearGrad::ZerosFor(w.q_proj),
                       LinearGrad::ZerosFor(w.k_proj),
                       LinearGrad::ZerosFor(w.v_proj),
                       LinearGrad::ZerosFor(w.o_proj),
                       {},
                       {}};
  if (w.q_norm != nullptr) {
    g.q_norm = ZerosOn(w.q_norm->device(), w.q_norm->shape());
    g.k_norm = ZerosOn(w.k_norm->device(), w.k_norm->shape());
  }
  return g;
}

void SelfAttentionBackward(const SelfAttentionWeights& w, const SelfAttentionSettings& s,
                           std::span<const int32_t> positions, std::span<const int64_t> lo,
                           std::span<const int64_t> hi, const SelfAttentionSaved& saved,
                           const Tensor& dout, Communicator* tp, Tensor& dx,
                           SelfAttentionGrads& grads) {
  const int64_t T = saved.x.dim(0);
  const int64_t H = s.shape.num_heads, KV = s.shape.num_kv_heads, hd = s.shape.head_dim;
  Tensor d_attn = ActivationLike(dout, {T, H * hd});
  RowParallelLinear(w.o_proj, tp).Backward(saved.attn, dout, &d_attn, grads.o_proj);
  Tensor dq = ActivationLike(dout, {T, H * hd}), dk = ActivationLike(dout, {T, KV * hd}),
         dv = ActivationLike(dout, {T, KV * hd});
  ops::AttentionBackward(TrainProblem(s.shape), saved.q, saved.k, saved.v, d_attn, lo, hi, dq, dk,
                         dv);
  const ops::Rope rope{s.rope_theta, s.rotary_fraction, s.rope_position_scale};
  ops::RopeHalfSplitBackward(dq, H, hd, positions, rope);
  ops::RopeHalfSplitBackward(dk, KV, hd, positions, rope);
  if (w.q_norm != nullptr) {
    Tensor dq_heads = dq.Reshape({T * H, hd}), dk_heads = dk.Reshape({T * KV, hd});
    Tensor dq_pre = ActivationLike(dout, {T * H, hd}), dk_pre = ActivationLike(dout, {T * KV, hd});
    ops::RmsNormBackward(saved.q_pre.Reshape({T * H, hd}), *w.q_norm, dq_heads, s.rms_norm_eps,
                         dq_pre, grads.q_norm);
    ops::RmsNormBackward(saved.k_pre.Reshape({T * KV, hd}), *w.k_norm, dk_heads, s.rms_norm_eps,
                         dk_pre, grads.k_norm);
    dq = dq_pre.Reshape({T, H * hd});
    dk = dk_pre.Reshape({T, KV * hd});
  }
  Tensor partial = ActivationLike(dout, saved.x.shape());
  ColumnParallelLinear(w.q_proj).Backward(saved.x, dq, &dx, grads.q_proj);
  ColumnParallelLinear(w.k_proj).Backward(saved.x, dk, &partial, grads.k_proj);
  ops::Add(dx, partial, dx);
  ColumnParallelLinear(w.v_proj).Backward(saved.x, dv, &partial, grads.v_proj);
  ops::Add(dx, partial, dx);
  AllReduceSum(tp, dx);
}

}  // namespace gemmapod
