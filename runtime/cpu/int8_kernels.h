// Per-ISA kernels for int8 weights behind int8_matmul.cc. Internal: callers use int8_matmul.h.
// Plain C types only, for the reason given at the top of gemv_kernels.h (the AVX-512 file is
// compiled with AVX-512 flags and must not share inline C++ helpers with portable code).
#pragma once

#include <cstdint>

namespace gemmapod::cpu::internal {

// y[m * ldy + n] = scale[n] * sum_{i < k} x[m * ldx + i] * w[n * k + i] for m < rows (1..8), n in
// [n_begin, n_end): each weight row is read once for all `rows` activation rows, widened to f32
// (exactly) and multiplied and accumulated in f32. The activations are never rounded to a
// narrower type.
void GemvInt8Portable(const float* x, int64_t ldx, int rows, int64_t k, const int8_t* w,
                      const float* scale, int64_t n_begin, int64_t n_end, float* y, int64_t ldy);
void GemvInt8Avx512(const float* x, int64_t ldx, int rows, int64_t k, const int8_t* w,
                    const float* scale, int64_t n_begin, int64_t n_end, float* y, int64_t ldy);

// out[i] = float(q[i]) for i < count (the scale is applied to the GEMM's output instead).
void WidenInt8Portable(const int8_t* q, int64_t count, float* out);
void WidenInt8Avx512(const int8_t* q, int64_t count, float* out);

}  // namespace gemmapod::cpu::internal
