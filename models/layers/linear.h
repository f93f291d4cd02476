// A weight matrix as the layers use it: [out_features, in_features] (the PyTorch Linear layout)
// in f32 or bf16, or in int8 with one f32 scale per output row (weight-only quantization, what
// `gemmapod convert --quantize int8` writes). The layers call LinearForward and never ask which.
#pragma once

#include <memory>

#include "runtime/cpu/matmul.h"
#include "runtime/tensor.h"

namespace gemmapod {

// A low-rank adapter (LoRA, Hu et al. 2021) on a Linear: y += scale * (x A^T) B^T, with A [r, K]
// and B [N, r] in f32 and scale = alpha / r. B starts at zero, so a new adapter changes nothing.
// Under tensor parallelism it is sliced with its matrix (a column-parallel layer's B by rows, a
// row-parallel layer's A by columns): the adapter's product is linear in x like the matrix's, so
// a row-parallel layer's partial sums still add up.
struct LoraAdapter {
  Tensor a;  // [r, K]
  Tensor b;  // [N, r]
  float scale = 1.0f;
};

struct Linear {
  Tensor weight;  // [N, K]: f32, bf16 or i8
  Tensor scale;   // [N] f32 for an i8 weight (row n is scale[n] * weight[n, :]); else undefined
  Tensor bias;    // [N] f32 added to every output row (RecurrentGemma's layers); else undefined
  // Copies of the Linear (a serving engine over training weights) share the adapter.
  std::shared_ptr<LoraAdapter> lora = nullptr;

  bool quantized() const { return weight.defined() && weight.dtype() == DType::kI8; }
};

// y = x * W^T (+ bias). x: f32 [..., K]; y: f32 [..., N], preallocated.
void LinearForward(const Tensor& x, const Linear& w, Tensor& y, cpu::MatmulPrecision precision);
// The two halves, for row-parallel layers: each rank's product of its columns, then the bias
// added once to the all-reduced sum.
void LinearProduct(const Tensor& x, const Linear& w, Tensor& y, cpu::MatmulPrecision precision);
void AddBias(const Linear& w, Tensor& y);  // nothing without a bias

// The gradients of a Linear's parameters, f32 on the weight's device: weight [N, K] and, where
// the layer has a bias, bias [N]; with an adapter, its A and B instead (the matrix and bias are
// frozen: fine-tuning trains only the adapter). An undefined tensor is a frozen parameter.
struct LinearGrad {
  Tensor weight;
  Tensor bias;
  Tensor lora_a, lora_b;
  // Zeros shaped like `w`'s trainable parameters.
  static LinearGrad ZerosFor(const Linear& w);
};

// The backward of y = x W^T (+ b) (+ the adapter's term), given dy = dL/dy: dx = dy W (+ the
// adapter's share; skipped when dx is null), and every defined gradient accumulated:
// weight += dy^T x, bias += the sum of dy's rows, lora_b += scale dy^T (x A^T),
// lora_a += scale (dy B)^T x. f32 and bf16 weights (a bf16 weight's gradient is f32, for the
// optimizer's f32 master copy); an int8 weight is not trained, but its adapter can be.
void LinearBackward(const Tensor& x, const Linear& w, const Tensor& dy, Tensor* dx,
                    LinearGrad& grad);

}  // namespace gemmapod
