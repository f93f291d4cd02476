#include "models/layers/linear.h"

#include "models/layers/device_tensors.h"
#include "runtime/cpu/int8_matmul.h"
#include "runtime/cpu/ops.h"
#include "runtime/error.h"
#include "runtime/ops/grad_ops.h"
#include "runtime/ops/ops.h"

namespace gemmapod {

namespace {

// z = x A^T: the adapter's rank-r projection of x, [rows, r].
Tensor LoraDown(const Tensor& x2, const LoraAdapter& lora, cpu::MatmulPrecision precision) {
  Tensor z = ActivationLike(x2, {x2.dim(0), lora.a.dim(0)});
  ops::MatMul(x2, lora.a, z, precision);
  return z;
}

// Rows of x and y as 2-d views (the layers pass [T, K] or [..., K]).
Tensor Rows(const Tensor& t) {
  return t.Reshape({t.numel() / t.dim(t.rank() - 1), t.dim(t.rank() - 1)});
}

}  // namespace

void LinearProduct(const Tensor& x, const Linear& w, Tensor& y, cpu::MatmulPrecision precision) {
  if (w.quantized()) {
    ops::MatMulInt8(x, w.weight, w.scale, y);
  } else {
    ops::MatMul(x, w.weight, y, precision);
  }
  if (w.lora) {
    const Tensor x2 = Rows(x);
    Tensor y2 = Rows(y);
    const Tensor z = LoraDown(x2, *w.lora, precision);
    Tensor up = ActivationLike(y2, y2.shape());
    ops::MatMul(z, w.lora->b, up, precision);
    ops::Scale(up, w.lora->scale, up);
    ops::Add(y2, up, y2);
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
  if (w.lora) {
    g.lora_a = ZerosOn(w.lora->a.device(), w.lora->a.shape());
    g.lora_b = ZerosOn(w.lora->b.device(), w.lora->b.shape());
    return g;
  }
  g.weight = ZerosOn(w.weight.device(), w.weight.shape());
  if (w.bias.defined() && w.bias.numel() > 0) g.bias = ZerosOn(w.bias.device(), w.bias.shape());
  return g;
}

void LinearBackward(const Tensor& x, const Linear& w, const Tensor& dy, Tensor* dx,
                    LinearGrad& grad) {
  GEMMAPOD_CHECK(!w.quantized(), "backward: int8 weights ", w.weight.Describe(),
                 " are not trained (fine-tune a bf16 or f32 checkpoint)");
  if (dx != nullptr) ops::MatMulGradInput(dy, w.weight, *dx);
  if (grad.weight.defined()) ops::MatMulGradWeight(dy, x, grad.weight, /*accumulate=*/true);
  if (grad.bias.defined() && grad.bias.numel() > 0) ops::RowBiasGrad(dy, grad.bias, true);
  if (!w.lora) return;
  GEMMAPOD_CHECK(grad.lora_a.defined() && grad.lora_b.defined(),
                 "backward: a Linear with an adapter needs the adapter's gradients");
  const LoraAdapter& lora = *w.lora;
  const Tensor x2 = Rows(x);
  Tensor dy_scaled = ActivationLike(dy, Rows(dy).shape());
  ops::Scale(Rows(dy), lora.scale, dy_scaled);
  const Tensor z = LoraDown(x2, lora, cpu::MatmulPrecision::kExact);
  ops::MatMulGradWeight(dy_scaled, z, grad.lora_b, /*accumulate=*/true);
  Tensor dz = ActivationLike(z, z.shape());
  ops::MatMulGradInput(dy_scaled, lora.b, dz);
  ops::MatMulGradWeight(dz, x2, grad.lora_a, /*accumulate=*/true);
  if (dx != nullptr) {
    Tensor dx2 = Rows(*dx);
    Tensor through = ActivationLike(dx2, dx2.shape());
    ops::MatMulGradInput(dz, lora.a, through);
    ops::Add(dx2, through, dx2);
  }
}

}  // namespace gemmapod
