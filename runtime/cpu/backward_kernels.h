// Per-ISA kernels behind backward.cc (and the training step's reductions): the exponentials of
// the cross-entropy over a vocabulary row, GELU's backward, the squared gradient norm and the
// AdamW update. Internal: callers use backward.h, which picks a family by ActiveCpuIsa().
// Plain C types only, as in gemv_kernels.h: the AVX-512 file must share no inline C++ helper
// with portable code.
#pragma once

#include <cstdint>

namespace gemmapod::cpu::internal {

// sum_i exp(z[i] - shift), the exponentials in f32 (relative error below 3e-7) summed in double
// in a fixed lane order.
double SumExpShiftedAvx512(const float* z, int64_t n, float shift);

// out[i] = exp(z[i] - shift) * scale, in f32.
void ScaledExpShiftedAvx512(const float* z, int64_t n, float shift, float scale, float* out);

// dx = dy * gelu_tanh'(x), tanh from the same exponential (absolute error below 3e-7).
void GeluTanhBackwardAvx512(const float* x, const float* dy, float* dx, int64_t n);

// sum of x[i]^2 in double, in a fixed lane order.
double SumOfSquaresAvx512(const float* x, int64_t n);

// The AdamW update of backward.cc's portable loop, operation for operation (no fused
// multiply-adds), so it gives the same bits.
void AdamWUpdateAvx512(float* master, float* m, float* v, const float* grad, int64_t n,
                       float step_size, float inv_sqrt_correction2, float decay, float beta1,
                       float beta2, float eps, float grad_scale);

// The head-vector products of attention_backward.cc: sum_e a[e] * b[e] (in f32 lanes, summed
// in double at the end) and y += alpha * x, over n floats (a multiple of 16 for AVX-512).
double HeadDotAvx512(const float* a, const float* b, int64_t n);
void HeadAxpyAvx512(float alpha, const float* x, float* y, int64_t n);

}  // namespace gemmapod::cpu::internal
