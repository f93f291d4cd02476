// Per-ISA GEMV kernels behind the dispatcher in gemv.cc. Internal: callers use gemv.h.
//
// Every kernel computes y[m * ldy + n] = sum_k x[m, k] * w[n, k] for m < rows (1..kGemvBlockRows)
// and n in [n_begin, n_end), streaming each weight row once for all `rows` activation rows.
// The signatures use only plain C types on purpose: the AVX-512 files are compiled with
// AVX-512 flags, and sharing inline C++ helpers (templates, std::) with them could let the linker
// pick an AVX-512 copy of a helper for portable code.
#pragma once

#include <cstdint>

namespace gemmapod::cpu::internal {

// Activation rows handled per weight pass; larger M loops over blocks of this many rows.
inline constexpr int kGemvBlockRows = 8;

// f32 weights [N, K].
void GemvF32Portable(const float* x, int64_t ldx, int rows, int64_t k, const float* w,
                     int64_t n_begin, int64_t n_end, float* y, int64_t ldy);
void GemvF32Avx512(const float* x, int64_t ldx, int rows, int64_t k, const float* w,
                   int64_t n_begin, int64_t n_end, float* y, int64_t ldy);

// bf16 weights [N, K] (raw bf16 bits), f32 activations; products in f32 (exact for bf16 * f32
// up to f32 rounding).
void GemvBF16Portable(const float* x, int64_t ldx, int rows, int64_t k, const uint16_t* w,
                      int64_t n_begin, int64_t n_end, float* y, int64_t ldy);
void GemvBF16Avx512(const float* x, int64_t ldx, int rows, int64_t k, const uint16_t* w,
                    int64_t n_begin, int64_t n_end, float* y, int64_t ldy);

// bf16 weights with activations pre-split into bf16 halves x = hi + lo, each row padded with
// zeros to `ldx` elements (a multiple of 32). x_lo == nullptr drops the low half (kFastBF16).
void GemvBF16Avx512Bf16(const uint16_t* x_hi, const uint16_t* x_lo, int64_t ldx, int rows,
                        int64_t k, const uint16_t* w, int64_t n_begin, int64_t n_end, float* y,
                        int64_t ldy);

}  // namespace gemmapod::cpu::internal
