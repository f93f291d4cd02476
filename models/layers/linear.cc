#include "models/layers/linear.h"

#include "runtime/cpu/int8_matmul.h"
#include "runtime/cpu/ops.h"
#include "runtime/error.h"
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

}  // namespace gemmapod
