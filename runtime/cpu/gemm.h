// Prompt/training GEMM on the CPU through oneDNN: y = x * w^T with w stored [N, K] (read in
// place as oneDNN's transposed `ba` weights). Primitives are cached per shape and type.
#pragma once

#include <cstdint>

#include "runtime/cpu/matmul.h"
#include "runtime/dtype.h"

namespace gemmapod::cpu {

// How kExact runs bf16 weights (oneDNN 2.6 multiplies bf16 weights only by bf16 activations, so
// x is split into bf16 halves hi + lo):
enum class BF16ExactGemm {
  // One matmul of [hi; lo] ([2M, K]) into a [2M, N] scratch, then y = top + bottom. The
  // default: oneDNN packs the weights once per call, not twice, which makes it up to 2.7x
  // faster for M below ~32 and equal for large M (docs/performance.md).
  kStackedRows,
  // Two matmuls, the second accumulating into y through a sum post-op (no scratch).
  kSumPostOp,
};

// x [M, K] f32, w [N, K] f32, y [M, N] f32; all dense row-major.
void GemmF32(const float* x, int64_t m, int64_t k, const float* w, int64_t n, float* y);

// x [M, K] f32, w [N, K] bf16, y [M, N] f32. kFastBF16 rounds x to bf16 once; kExact splits it.
void GemmBF16(const float* x, int64_t m, int64_t k, const BF16* w, int64_t n, float* y,
              MatmulPrecision precision, BF16ExactGemm exact_method = BF16ExactGemm::kStackedRows);

// The products of a backward pass, f32: c [M, N] (+)= op(a) [M, K] * op(b) [K, N], where op(a) is
// a stored [M, K], or its transpose when a is stored [K, M] (a_transposed); op(b) is b stored
// [K, N] (b_stored_kn), or the transpose of b stored [N, K] (a weight, as the forward reads it).
// accumulate adds to c instead of overwriting it (weight gradients over micro-batches).
void GemmF32Transposed(const float* a, bool a_transposed, const float* b, bool b_stored_kn,
                       int64_t m, int64_t k, int64_t n, float* c, bool accumulate);
// Number of oneDNN primitives in the cache (for tests).
int64_t CachedGemmPrimitives();

}  // namespace gemmapod::cpu
