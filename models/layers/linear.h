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

// The gradients of a Linear's parameters, f32 on the weight's device: weight [N, K] and, where
// the layer has a bias, bias [N].
struct LinearGrad {
  Tensor weight;
  Tensor bias;
  // Zeros shaped like `w`'s parameters.
  static LinearGrad ZerosFor(const Linear& w);
};

// The backward of y = x W^T (+ b), given dy = dL/dy: dx = dy W (skipped when dx is null),
// grad.weight += dy^T x and grad.bias += the sum of dy's rows. f32 and bf16 weights (a bf16
// weight's gradient is f32, for the optimizer's f32 master copy); int8 weights are not trained.
void LinearBackward(const Tensor& x, const Linear& w, const Tensor& dy, Tensor* dx,
                    LinearGrad& grad);

}  // namespace gemmapod
