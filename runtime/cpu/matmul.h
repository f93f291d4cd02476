// Matrix products on the CPU for f32 activations against f32 or bf16 weights.
// Weights use the PyTorch/Hugging Face Linear layout [out_features, in_features], so a
// checkpoint tensor is used as stored: y[m, n] = sum_k x[m, k] * w[n, k].
#pragma once

#include "runtime/tensor.h"

namespace gemmapod::cpu {

enum class MatmulPrecision {
  // Products carry (close to) f32 precision of the activations. For bf16 weights the activations
  // are split into two bf16 halves (x = hi + lo), so the error per product is about 2^-16
  // relative instead of bf16's 2^-9. The default: what golden tests against f32 references need.
  kExact,
  // Activations rounded to bf16 once (as PyTorch bf16 inference does): twice the GEMM throughput.
  kFastBF16,
};

// y = x * w^T. x: f32 [M, K]; w: f32 or bf16 [N, K]; y: f32 [M, N] (preallocated).
// Small M (decode) streams the weights once with the GEMV kernels; large M (prompts, training)
// runs the GEMM path (oneDNN).
void MatMul(const Tensor& x, const Tensor& w, Tensor& y,
            MatmulPrecision precision = MatmulPrecision::kExact);

}  // namespace gemmapod::cpu
