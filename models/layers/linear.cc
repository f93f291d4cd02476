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

void LinearRow(const Linear& w, int64_t row, float* out) {
  const Tensor& t = w.weight;
  GEMMAPOD_CHECK(t.rank() == 2 && row >= 0 && row < t.dim(0), "LinearRow: row ", row, " of ",
                 t.Describe());
  const int64_t k = t.dim(1);
  switch (t.dtype()) {
    case DType::kI8:
      cpu::DequantizeRowInt8(t.data<int8_t>() + row * k, w.scale.data<float>()[row], out, k);
      return;
    case DType::kBF16:
      ConvertBF16ToF32(t.data<BF16>() + row * k, out, static_cast<size_t>(k));
      return;
    case DType::kF32: {
      const float* src = t.data<float>() + row * k;
      std::copy(src, src + k, out);
      return;
    }
    default:
      throw Error(
          StrCat("LinearRow: weights of type ", DTypeName(t.dtype()), " (", t.Describe(), ")"));
  }
}

}  // namespace gemmapod
