#include "models/layers/device_tensors.h"

#include "runtime/ops/ops.h"

namespace gemmapod {
namespace {

// `t` as one row, for the column operations.
Tensor AsRow(const Tensor& t) { return t.Reshape({1, t.numel()}); }

}  // namespace

Tensor ActivationLike(const Tensor& like, Shape shape) {
  return Tensor::Empty(std::move(shape), DType::kF32, like.device());
}

Tensor ZerosOn(Device device, Shape shape) {
  Tensor t = Tensor::Empty(std::move(shape), DType::kF32, device);
  Tensor row = AsRow(t);
  ops::FillColumns(row, 0, t.numel(), 0.0f);
  return t;
}

Tensor CopyOf(const Tensor& t) {
  Tensor copy = Tensor::Empty(t.shape(), t.dtype(), t.device());
  Tensor row = AsRow(copy);
  ops::CopyColumns(AsRow(t), 0, row, 0, t.numel());
  return copy;
}

}  // namespace gemmapod
