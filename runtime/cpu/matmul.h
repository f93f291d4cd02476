// Matrix products on the CPU for f32 activations against f32 or bf16 weights.
// Weights use the PyTorch/Hugging Face Linear layout [out_features, in_features], so a
// checkpoint tensor is used as stored: y[m, n] = sum_k x[m, k] * w[n, k].
#pragma once

#include "runtime/precision.h"
#include "runtime/tensor.h"

namespace gemmapod::cpu {

// The run's precision setting (runtime/precision.h), under the name the CPU kernels always used.
using MatmulPrecision = gemmapod::MatmulPrecision;

// y = x * w^T. x: f32 [M, K]; w: f32 or bf16 [N, K]; y: f32 [M, N] (preallocated).
// Small M (decode) streams the weights once with the GEMV kernels; large M (prompts, training)
// runs the GEMM path (oneDNN).
void MatMul(const Tensor& x, const Tensor& w, Tensor& y,
            MatmulPrecision precision = MatmulPrecision::kExact);

}  // namespace gemmapod::cpu
