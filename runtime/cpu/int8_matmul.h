// Weight-only int8 matrix products on the CPU: int8 weights [N, K] (PyTorch Linear layout, row n
// is output channel n) with one f32 scale per row, f32 activations and outputs:
//
//   y[m, n] = scale[n] * sum_k x[m, k] * q[n, k]
//
// The activations stay f32 (never quantized), so the only error against the f32 model is the
// rounding of the weights to the int8 grid; the products themselves carry f32 precision. Decode
// streams half the bytes of bf16 weights, which is what makes it worth having.
#pragma once

#include <cstdint>

#include "runtime/cpu/gemv.h"
#include "runtime/dtype.h"
#include "runtime/tensor.h"

namespace gemmapod::cpu {

// y = scale * (x * w^T). x: f32 [..., K]; w: i8 [N, K]; scale: f32 [N]; y: f32 [..., N]
// (preallocated). Up to Int8GemvMaxRows() activation rows stream the weights once per block of
// 8 rows (GEMV kernels, ActiveCpuIsa()); more rows dequantize panels of weight rows to f32 and
// run oneDNN's GEMM on them. Bad operands throw gemmapod::Error naming the tensors.
void MatMulInt8(const Tensor& x, const Tensor& w, const Tensor& scale, Tensor& y);

// Per-row symmetric absmax quantization of w [n, k] (row-major): scale[r] = max_k |w[r, k]| / 127
// and q[r, k] = round-half-to-even(w[r, k] / scale[r]) clamped to [-127, 127] (-128 is never
// produced, so negating a row stays on the grid). Every element then dequantizes to within
// scale[r] / 2 of its input. A row whose scale would be 0 (all zeros, or so tiny that absmax/127
// underflows) gets scale 1 and q = round(w) = 0: dequantization gives zeros, and dividing by a
// stored scale never divides by zero. A non-finite weight throws gemmapod::Error naming its row.
// Rows are quantized in parallel (OpenMP).
void QuantizeRowsInt8(const float* w, int64_t n, int64_t k, int8_t* q, float* scale);
void QuantizeRowsInt8(const BF16* w, int64_t n, int64_t k, int8_t* q, float* scale);

// out[i] = scale * q[i] for i < k: one row back to f32 (embedding lookups with int8 tables).
void DequantizeRowInt8(const int8_t* q, float scale, float* out, int64_t k);

// The largest M that MatMulInt8 runs on the GEMV kernels (measured: docs in int8_matmul.cc).
int64_t Int8GemvMaxRows();

// The two paths on raw dense row-major arrays (x [M, K], w [N, K], scale [N], y [M, N]), for
// benchmarks and tests; MatMulInt8 picks between them.
// Each weight row is read once for a block of up to 8 rows of x; more blocks walk w in column
// tiles that stay in L2, so w comes from memory once. Parallel over output columns with OpenMP;
// small problems and one-thread runs execute inline. `isa` must be supported by the CPU.
void GemvInt8(const float* x, int64_t m, int64_t k, const int8_t* w, const float* scale, int64_t n,
              float* y, CpuIsa isa);
// Dequantizes `panel_rows` weight rows at a time to f32 (0: up to 256, a multiple of 16 chosen
// from K) into a per-thread scratch and multiplies each panel with oneDNN; each OpenMP thread
// takes an equal share of the weight rows.
void GemmInt8(const float* x, int64_t m, int64_t k, const int8_t* w, const float* scale, int64_t n,
              float* y, int64_t panel_rows = 0);

}  // namespace gemmapod::cpu
