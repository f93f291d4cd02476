// A weight matrix as the layers use it: [out_features, in_features] (the PyTorch Linear layout)
// in f32 or bf16, or in int8 with one f32 scale per output row (weight-only quantization, what
// `gemmapod convert --quantize int8` writes). The layers call LinearForward and never ask which.
#pragma once

#include "runtime/cpu/matmul.h"
#include "runtime/tensor.h"

namespace gemmapod {

struct Linear {
  Tensor weight;  // [N, K]: f32, bf16 or i8
  Tensor scale;   // [N] f32 for an i8 weight (row n is scale[n] * weight[n, :]); else undefined
  Tensor bias;    // [N] f32 added to every output row (RecurrentGemma's layers); else undefined

  bool quantized() const { return weight.defined() && weight.dtype() == DType::kI8; }
};

// y = x * W^T (+ bias). x: f32 [..., K]; y: f32 [..., N], preallocated.
void LinearForward(const Tensor& x, const Linear& w, Tensor& y, cpu::MatmulPrecision precision);
// The two halves, for row-parallel layers: each rank's product of its columns, then the bias
// added once to the all-reduced sum.
void LinearProduct(const Tensor& x, const Linear& w, Tensor& y, cpu::MatmulPrecision precision);
void AddBias(const Linear& w, Tensor& y);  // nothing without a bias

}  // namespace gemmapod
