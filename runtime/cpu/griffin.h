// Griffin's temporal-mixing kernels (RecurrentGemma's recurrent block), on dense f32 arrays: the
// causal depthwise convolution, the block-diagonal gate products and the RG-LRU recurrence. Each
// channel is independent, so they thread over channels and stay bitwise the same for any thread
// count.
#pragma once

#include <cstdint>

namespace gemmapod::cpu {

// Causal depthwise convolution of x [T, C] with taps [C, width] (tap k of a channel multiplies the
// input width - 1 - k tokens back) plus bias [C], into out [T, C]. history [width - 1, C] holds
// the inputs of the width - 1 tokens before x, oldest first; token t reads at most reach[t] tokens
// back (its document's), fewer when reach[t] < width - 1. history then holds the last width - 1
// inputs of history followed by x.
void CausalConv1d(const float* x, int64_t T, int64_t C, const float* taps, int64_t width,
                  const float* bias, const int32_t* reach, float* history, float* out);

// out[t, h*bw + j] = sum_i x[t, h*bw + i] * w[h, i, j] + b[h, j]: one dense bw x bw block per head
// of x [T, H * bw]; the sum runs over i in order.
void BlockDiagonalMatMul(const float* x, int64_t T, int64_t H, int64_t bw, const float* w,
                         const float* b, float* out);

// The RG-LRU recurrence over T tokens of C channels, from the convolved input x and the gate
// pre-activations gate_x, gate_a [T, C]:
//   a_t = exp(-8 * sigmoid(gate_a) * softplus(lambda)),
//   h_t = a_t h_{t-1} + sqrt(1 - a_t^2) * sigmoid(gate_x) * x_t,
// where a token at position 0 (positions[t] == 0) starts a document: h_t = sigmoid(gate_x) x_t.
// state [C] holds h before the first token and h_T after; out [T, C] receives every h_t.
void RgLru(const float* x, const float* gate_x, const float* gate_a, const float* lambda,
           const int32_t* positions, int64_t T, int64_t C, float* state, float* out);

// The backward of BlockDiagonalMatMul: dx [T, H * bw] (overwritten) = dout's blocks times each
// block's transpose; dw [H, bw, bw] and db [H, bw] accumulate.
void BlockDiagonalMatMulBackward(const float* x, int64_t T, int64_t H, int64_t bw, const float* w,
                                 const float* dout, float* dx, float* dw, float* db);

// The backward of CausalConv1d over the same chunk, from its inputs (x, taps, the history before
// the chunk, reach) and dout [T, C]: dx [T, C] and dhistory [width - 1, C] (overwritten; the
// gradient of the inputs before the chunk), dtaps [C, width] and dbias [C] (accumulated).
void CausalConv1dBackward(const float* x, int64_t T, int64_t C, const float* taps, int64_t width,
                          const float* history, const int32_t* reach, const float* dout, float* dx,
                          float* dhistory, float* dtaps, float* dbias);

// The backward of RgLru through time, in reverse, the chain cut at each document start: from the
// inputs (x, gate_x, gate_a, lambda, positions, the state before the chunk), the outputs h
// [T, C] and dh [T, C] (dL/dh_t from the layer above; the state after the chunk carries no
// gradient): dx, dgate_x, dgate_a [T, C] and dstate [C] (the state before, overwritten), dlambda
// [C] (accumulated).
void RgLruBackward(const float* x, const float* gate_x, const float* gate_a, const float* lambda,
                   const int32_t* positions, const float* state, const float* h, const float* dh,
                   int64_t T, int64_t C, float* dx, float* dgate_x, float* dgate_a, float* dlambda,
                   float* dstate);

}  // namespace gemmapod::cpu
