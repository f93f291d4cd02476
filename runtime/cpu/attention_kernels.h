// Per-ISA attention microkernels behind the driver in attention.cc. Internal: callers use
// attention.h. Plain C types only, for the reason gemv_kernels.h gives (the AVX-512 file is
// compiled with AVX-512 flags and must share no inline C++ helper with portable code).
#pragma once

#include <cstdint>

namespace gemmapod::cpu::internal {

// Keys per block and query rows per tile.
inline constexpr int kAttentionKeyBlock = 16;
inline constexpr int kAttentionRowTile = 8;

// scores[r * 16 + j] = sum_e q_rows[r][e] * keys[j][e] for r < rows (1..8), j < 16. Every key
// pointer is valid (the driver points hidden positions at a row of zeros).
void AttentionScoresPortable(const float* const* q_rows, int rows, const float* const* keys,
                             int64_t head_dim, float* scores);
// Same; head_dim must be a multiple of 16.
void AttentionScoresAvx512(const float* const* q_rows, int rows, const float* const* keys,
                           int64_t head_dim, float* scores);

// acc[r * head_dim + e] = acc[r * head_dim + e] * rescale[r] + sum_j p[r * 16 + j] * values[j][e]
// for r < rows (1..8).
void AttentionAccumulatePortable(float* acc, int rows, const float* rescale, const float* p,
                                 const float* const* values, int64_t head_dim);
// Same; head_dim must be a multiple of 16.
void AttentionAccumulateAvx512(float* acc, int rows, const float* rescale, const float* p,
                               const float* const* values, int64_t head_dim);

}  // namespace gemmapod::cpu::internal
