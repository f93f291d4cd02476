// The device seam: the operations model layers call, on tensors, dispatched on the device the
// tensors live on. Each operation checks what every backend would (one device for all operands,
// f32 activations, shapes that agree) and names the operation and the tensors when they do not,
// then runs the backend registered for that device (runtime/ops/backend.h). The CPU backend is
// built in (today's kernels); a device backend registers itself at start-up, as its allocator
// does, and passes tests/runtime/ops/backend_ops_test.cc.
#pragma once

#include <cstdint>
#include <span>

#include "runtime/attention_problem.h"
#include "runtime/precision.h"
#include "runtime/tensor.h"

namespace gemmapod::ops {

// y = x w^T. x: f32 [..., K]; w: f32 or bf16 [N, K]; y: f32 [..., N], preallocated.
void MatMul(const Tensor& x, const Tensor& w, Tensor& y, MatmulPrecision precision);
// The same with int8 weights and one f32 scale per output row (row n of W is scale[n] * w[n, :]).
void MatMulInt8(const Tensor& x, const Tensor& w, const Tensor& scale, Tensor& y);
// y[r, :] += bias for every row r of y [..., N]; bias f32 [N].
void AddRowBias(const Tensor& bias, Tensor& y);

// Embedding lookup: out[i, :] = table[rows[i], :] * scale for every i, zeros where rows[i] is -1
// (a token another rank's vocabulary slice holds). table: f32, bf16, or int8 with `row_scale`
// f32 [table rows] (null otherwise); out: f32 [rows.size(), table columns].
void GatherRows(const Tensor& table, const Tensor* row_scale, std::span<const int64_t> rows,
                float scale, Tensor& out);

// KV cache and ring writes: dst[rows[i], :] = src[i, :] for every i, skipping entries of -1 (rows
// a ring has no room for). src, dst: f32 [.., width] with equal widths.
void ScatterRows(const Tensor& src, std::span<const int64_t> rows, Tensor& dst);

// Column blocks of 2-d tensors with equal row counts: dst[r, dst_col + j] = src[r, src_col + j]
// for j < width (a head out of a row of heads, a rank's vocabulary block into the full logits).
void CopyColumns(const Tensor& src, int64_t src_col, Tensor& dst, int64_t dst_col, int64_t width);
// x[r, j] = value for every row r of the 2-d x and j in [begin, end) (padding logits, a state
// reset).
void FillColumns(Tensor& x, int64_t begin, int64_t end, float value);

// Gemma's RMSNorm over the last dimension: out = x / sqrt(mean(x^2) + eps) * (1 + weight).
// x, out: f32 [..., d] (out may be x); weight: f32 [d].
void RmsNorm(const Tensor& x, const Tensor& weight, float eps, Tensor& out);

// Elementwise over equal shapes (out may alias an input).
void Add(const Tensor& a, const Tensor& b, Tensor& out);
void Mul(const Tensor& a, const Tensor& b, Tensor& out);
void Scale(const Tensor& x, float s, Tensor& out);
void GeluTanh(const Tensor& x, Tensor& out);            // Gemma's gelu (tanh approximation)
void SoftCap(const Tensor& x, float cap, Tensor& out);  // cap * tanh(x / cap)

// Half-split rotary embedding in place: x f32 [rows, heads * head_dim], row r at positions[r];
// the first head_dim * rotary_fraction features of each head rotate, by angles position /
// position_scale * theta^(-2i / rotary_dim).
struct Rope {
  float theta = 10000;
  float rotary_fraction = 1;
  float position_scale = 1;
};
void RopeHalfSplit(Tensor& x, int64_t heads, int64_t head_dim, std::span<const int32_t> positions,
                   const Rope& rope);

// Griffin's recurrent block (RecurrentGemma).
// Causal depthwise convolution of x [T, C] with taps [C, 1, width] (tap k multiplies the input
// width - 1 - k tokens back) and bias [C], into out [T, C]. history [width - 1, C] holds the
// inputs of the width - 1 tokens before x, oldest first, and afterwards the last width - 1 inputs
// (history then x). Token t reads at most reach[t] (< width) tokens back: its own document's.
void CausalConv1d(const Tensor& x, const Tensor& taps, const Tensor& bias,
                  std::span<const int32_t> reach, Tensor& history, Tensor& out);
// One dense block per head: out[t, h*bw + j] = sum_i x[t, h*bw + i] w[h, i, j] + b[h, j];
// x, out f32 [T, H * bw], w [H, bw, bw], b [H, bw].
void BlockDiagonalMatMul(const Tensor& x, const Tensor& w, const Tensor& b, Tensor& out);
// The RG-LRU recurrence (Griffin): a_t = exp(-8 sigmoid(gate_a[t]) softplus(lambda)),
// h_t = a_t h_{t-1} + sqrt(1 - a_t^2) sigmoid(gate_x[t]) x[t], with h_t = sigmoid(gate_x[t]) x[t]
// where positions[t] == 0 (a document starts). x, gate_x, gate_a, out f32 [T, C]; lambda [C];
// state [C] (or [1, C]) holds h before the chunk and h_T after; out receives every h_t.
void RgLru(const Tensor& x, const Tensor& gate_x, const Tensor& gate_a, const Tensor& lambda,
           std::span<const int32_t> positions, Tensor& state, Tensor& out);

// Positions [first, first + keys.dim(0)) of a key run: keys and values f32 [rows, row width]
// (views of a KV cache, a ring, an encoder output); `valid`, when not null, has one entry per row
// and 0 hides that position (padding).
struct KeyRunTensors {
  Tensor keys;
  Tensor values;
  int64_t first = 0;
  const uint8_t* valid = nullptr;
};

// Attention of n queries q [n, H * hd] over the positions the runs hold, query i seeing
// [lo[i], hi[i]) of them: scores scaled, soft-capped, masked, softmax in f32, then values, into
// out [n, H * hd]. A query that sees no key gets zeros. The problem's kv_row_stride is the runs'
// row width.
void Attention(const AttentionProblem& problem, const Tensor& q,
               std::span<const KeyRunTensors> runs, std::span<const int64_t> lo,
               std::span<const int64_t> hi, Tensor& out);

}  // namespace gemmapod::ops
