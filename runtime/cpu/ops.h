// Elementwise and reduction kernels the Gemma models need, on dense f32 arrays. Plain loops the
// compiler vectorises; `out` may alias an input wherever both have the same length (in place).
#pragma once

#include <cstdint>

#include "runtime/dtype.h"

namespace gemmapod::cpu {

// out[i] = a[i] + b[i]
void Add(const float* a, const float* b, float* out, int64_t n);
// out[i] = a[i] * b[i]
void Mul(const float* a, const float* b, float* out, int64_t n);
// out[i] = a[i] * s
void Scale(const float* a, float s, float* out, int64_t n);
// acc[i] += a[i] * s (residual adds, gradient accumulation)
void AddScaled(const float* a, float s, float* acc, int64_t n);

// out = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
void GeluTanh(const float* x, float* out, int64_t n);
// out = cap * tanh(x / cap) (Gemma 2 attention-logit and final-logit soft-capping)
void SoftCap(const float* x, float cap, float* out, int64_t n);
// x[i] = exp(x[i] - shift) in place; returns the sum (a softmax row, shift = its max).
float ExpShiftedSum(float* x, float shift, int64_t n);

// Gemma RMSNorm per row of x [rows, dim]: out = x / sqrt(mean(x^2) + eps) * (1 + weight[j]),
// the sum of squares accumulated in f32 (16 partial sums).
void RmsNorm(const float* x, const float* weight, int64_t rows, int64_t dim, float eps, float* out);

// Softmax of each row of x [rows, cols], max-subtracted; in place allowed.
void Softmax(const float* x, int64_t rows, int64_t cols, float* out);

// Rotary position embedding, half-split convention (Gemma, RecurrentGemma): for every head of
// x [rows, heads, head_dim] (in place), the first rotary_dim = head_dim * rotary_fraction
// features are rotated in pairs (i, i + rotary_dim / 2) by angle positions[row] * inv_freq[i],
// inv_freq[i] = theta^(-2i / rotary_dim); the remaining features pass through unchanged.
// RecurrentGemma rotates half of each head (rotary_fraction = 0.5). rotary_dim must be even.
// Linear RoPE scaling (Gemma 3 >= 4B global layers) divides every position by `position_scale`.
void RopeHalfSplit(float* x, int64_t rows, int64_t heads, int64_t head_dim,
                   const int32_t* positions, float theta, float rotary_fraction = 1.0f,
                   float position_scale = 1.0f);

// out[r, :] = table[ids[r], :] * scale for r < count; table [vocab, dim]. Throws gemmapod::Error
// on an id outside [0, vocab).
void EmbeddingGather(const float* table, int64_t vocab, int64_t dim, const int32_t* ids,
                     int64_t count, float scale, float* out);
void EmbeddingGather(const BF16* table, int64_t vocab, int64_t dim, const int32_t* ids,
                     int64_t count, float scale, float* out);

// Index of the largest element (the first one on ties; NaN never wins). n must be > 0.
int64_t ArgMax(const float* x, int64_t n);

// out[r] = sum / max over row r of x [rows, cols].
void RowSum(const float* x, int64_t rows, int64_t cols, float* out);
void RowMax(const float* x, int64_t rows, int64_t cols, float* out);

}  // namespace gemmapod::cpu
