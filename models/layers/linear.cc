#include "models/layers/linear.h"

#include "models/layers/device_tensors.h"
#include "runtime/cpu/int8_matmul.h"
#include "runtime/cpu/ops.h"
#include "runtime/error.h"
#include "runtime/ops/grad_ops.h"
#include "runtime/ops/ops.h"

namespace gemmapod {

void LinearProduct(const Tensor& x, const Linear& w, Tensor& y, cpu::MatmulPrecision precision) {
  if (w.quantized()) {
    ops::MatMulInt8(x, w.weight, w.scale, y);
  } else {
    ops::MatMul(x, w.weight, y, precision);
  }
}

void AddBias(const Linear& w, Tensor& y) {
  if (!w.bias.defined()) return;
  ops::AddRowBias(w.bias, y);
}

void LinearForward(const Tensor& x, const Linear& w, Tensor& y, cpu::MatmulPrecision precision) {
  LinearProduct(x, w, y, precision);
  AddBias(w, y);
}

LinearGrad LinearGrad::ZerosFor(const Linear& w) {
  LinearGrad g;
  g.weight = ZerosOn(w.weight.device(), w.weight.shape());
  if (w.bias.defined() && w.bias.numel() > 0) g.bias = ZerosOn(w.bias.device(), w.bias.shape());
  return g;
}

void LinearBackward(const Tensor& x, const Linear& w, const Tensor& dy, Tensor* dx,
                    LinearGrad& grad) {
  GEMMAPOD_CHECK(!w.quantized(), "backward: int8 weights ", w.weight.Describe(),
                 " are not trained (fine-tune a bf16 or f32 checkpoint, or train LoRA adapters)");
  if (dx != nullptr) ops::MatMulGradInput(dy, w.weight, *dx);
  ops::MatMulGradWeight(dy, x, grad.weight, /*accumulate=*/true);
  if (grad.bias.defined() && grad.bias.numel() > 0) ops::RowBiasGrad(dy, grad.bias, true);
}

}  // namespace gemmapod
