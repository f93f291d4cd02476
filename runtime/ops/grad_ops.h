// The backward operations of the device seam: the gradients of the operations in ops.h, with the
// same checks (one device, f32 activations, agreeing shapes, named in errors) and the same
// dispatch to the backend of the tensors' device. A backend without them throws, naming the
// operation and the device.
#pragma once

#include <cstdint>
#include <span>

#include "runtime/ops/ops.h"

namespace gemmapod::ops {

// For y = x w^T (MatMul): dx = dy w, with dy [..., N], w [N, K] (f32 or bf16: its values as the
// forward multiplied them), dx [..., K].
void MatMulGradInput(const Tensor& dy, const Tensor& w, Tensor& dx);
// dw (+)= dy^T x over all rows: dy [..., N], x [..., K], dw f32 [N, K]; `accumulate` adds to dw
// (micro-batches, a weight used twice).
void MatMulGradWeight(const Tensor& dy, const Tensor& x, Tensor& dw, bool accumulate);
// dbias (+)= the sum of dy's rows: dy [..., N], dbias f32 [N].
void RowBiasGrad(const Tensor& dy, Tensor& dbias, bool accumulate);

// Gemma's RMSNorm (1 + w): dx from x, weight and dy (all [..., d] but weight [d]); dweight [d]
// accumulates, unless it is undefined (a frozen weight).
void RmsNormBackward(const Tensor& x, const Tensor& weight, const Tensor& dy, float eps, Tensor& dx,
                     Tensor& dweight);
// dx = dy * gelu_tanh'(x).
void GeluTanhBackward(const Tensor& x, const Tensor& dy, Tensor& dx);
// For y = cap * tanh(x / cap), from the output y: dx = dy * (1 - (y / cap)^2).
void SoftCapBackward(const Tensor& y, const Tensor& dy, float cap, Tensor& dx);
// RoPE is a rotation: its backward rotates the gradient back (in place), by the same angles
// negated.
void RopeHalfSplitBackward(Tensor& dx, int64_t heads, int64_t head_dim,
                           std::span<const int32_t> positions, const Rope& rope);
// Attention's backward over one run of keys and values at positions [0, k.dim(0)) (a sequence
// attending to itself, or to an encoder output): q, dout, dq [n, H * hd]; k, v [m, row width],
// the problem's heads from first_kv_head; dk, dv f32 [m, KV * hd]. Query i saw [lo[i], hi[i]).
// Recomputes the softmax; dq, dk, dv are overwritten.
void AttentionBackward(const AttentionProblem& problem, const Tensor& q, const Tensor& k,
                       const Tensor& v, const Tensor& dout, std::span<const int64_t> lo,
                       std::span<const int64_t> hi, Tensor& dq, Tensor& dk, Tensor& dv);
// The embedding lookup's gradient: dtable[rows[i], :] += dout[i, :] (rows of -1 skipped), for
// dout f32 [rows.size(), d] and dtable f32 [vocab rows, d].
void ScatterAddRows(const Tensor& dout, std::span<const int64_t> rows, Tensor& dtable);

// Griffin's recurrent block (ops.h's CausalConv1d and RgLru), backward over the same chunk.
// CausalConv1dBackward: from x [T, C], taps [C, 1, width], the history before the chunk
// [width - 1, C], reach and dout [T, C]: dx and dhistory (overwritten), dtaps [C, 1, width] and
// dbias [C] (accumulated).
void CausalConv1dBackward(const Tensor& x, const Tensor& taps, const Tensor& history,
                          std::span<const int32_t> reach, const Tensor& dout, Tensor& dx,
                          Tensor& dhistory, Tensor& dtaps, Tensor& dbias);
// BlockDiagonalMatMulBackward: from x and w of the forward and dout [T, H * bw]: dx
// (overwritten), dw [H, bw, bw] and db [H, bw] (accumulated).
void BlockDiagonalMatMulBackward(const Tensor& x, const Tensor& w, const Tensor& dout, Tensor& dx,
                                 Tensor& dw, Tensor& db);
// RgLruBackward: through time in reverse, cut at document starts, from the forward's inputs (x,
// gate_x, gate_a [T, C], lambda [C], positions, the state before the chunk [C]), its outputs h
// [T, C] and dh [T, C]: dx, dgate_x, dgate_a and dstate (the state before; overwritten), dlambda
// (accumulated).
void RgLruBackward(const Tensor& x, const Tensor& gate_x, const Tensor& gate_a,
                   const Tensor& lambda, std::span<const int32_t> positions, const Tensor& state,
                   const Tensor& h, const Tensor& dh, Tensor& dx, Tensor& dgate_x, Tensor& dgate_a,
                   Tensor& dlambda, Tensor& dstate);

// Cross-entropy over a vocabulary split across ranks, without the full logits anywhere
// (Megatron's vocab-parallel cross-entropy): each rank holds logits [rows, shard] for token ids
// [first_id, first_id + shard); targets are global ids (-1: masked). With the row maxima
// all-reduced (max) between the steps, and the sums all-reduced (sum):
//   RowMax          max over the shard of each row, into row_max [rows];
//   ShardLossTerms  sum_exp[r] = sum over the shard of exp(logit - row_max[r]), and
//                   target_logit[r] = the target's logit where this shard holds it, else 0;
//   ShardLossGrad   dlogits = (exp(logit - log_sum_exp[r]) - onehot) * grad_scale * row_scale[r]
//                   on the shard (row_scale f32 [rows], or null: 1), 0 on masked rows, where
//                   log_sum_exp = row_max + log(all-reduced sum_exp). A per-row scale is the
//                   gradient of any loss of the targets' log-probabilities (DPO, PPO), not only
//                   of their sum.
void RowMax(const Tensor& logits, Tensor& row_max);
void ShardLossTerms(const Tensor& logits, const Tensor& row_max, std::span<const int32_t> targets,
                    int64_t first_id, Tensor& sum_exp, Tensor& target_logit);
void ShardLossGrad(const Tensor& logits, const Tensor& log_sum_exp,
                   std::span<const int32_t> targets, int64_t first_id, float grad_scale,
                   const Tensor* row_scale, Tensor& dlogits);
// Between them, per row (all [rows]): log_sum_exp = row_max + log(sum_exp), and
// losses = log_sum_exp - target_logit (0 on masked rows, targets[r] == -1).
void CombineLossTerms(const Tensor& row_max, const Tensor& sum_exp, const Tensor& target_logit,
                      std::span<const int32_t> targets, Tensor& log_sum_exp, Tensor& losses);

// One AdamW step, PyTorch's torch.optim.AdamW: with g = grad * grad_scale (the clipping factor),
//   w -= lr * weight_decay * w;  m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;
//   w -= lr / (1 - b1^step) * m / (sqrt(v) / sqrt(1 - b2^step) + eps).
// master, m, v, grad: f32 of one shape; master, m and v are updated in place.
struct AdamWStep {
  float lr = 0;
  float beta1 = 0.9f;
  float beta2 = 0.999f;
  float eps = 1e-8f;
  float weight_decay = 0;
  int64_t step = 1;  // 1 for the first step (bias correction)
  float grad_scale = 1;
};
void AdamWUpdate(Tensor& master, Tensor& m, Tensor& v, const Tensor& grad, const AdamWStep& s);
// The sum of squares of t's elements, in double (global-norm gradient clipping).
double SumOfSquares(const Tensor& t);
// dst = src converted to dst's dtype (f32 or bf16, rounding to nearest even): a bf16 model
// weight refreshed from its f32 master copy.
void CastInto(const Tensor& src, Tensor& dst);

}  // namespace gemmapod::ops
