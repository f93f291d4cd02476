// The checks every operation of the seam makes before its backend runs (ops.cc, grad_ops.cc).
#pragma once

#include <algorithm>
#include <initializer_list>

#include "runtime/error.h"
#include "runtime/ops/backend.h"

namespace gemmapod::ops::internal {

// The backend for the device all of `tensors` live on; the operation's name in every error.
inline Backend& On(const char* op, std::initializer_list<const Tensor*> tensors) {
  const Device device = (*tensors.begin())->device();
  for (const Tensor* t : tensors) {
    GEMMAPOD_CHECK(t->device() == device, op, ": operands on ", device.ToString(), " and ",
                   t->device().ToString(), " (", t->Describe(), "); move them to one device");
  }
  Backend* backend = BackendFor(device.kind);
  GEMMAPOD_CHECK(backend != nullptr, op, ": no operations backend for ", device.ToString(),
                 " in this build");
  return *backend;
}

inline void CheckF32(const char* op, std::initializer_list<const Tensor*> tensors) {
  for (const Tensor* t : tensors) {
    GEMMAPOD_CHECK(t->dtype() == DType::kF32, op, ": ", t->Describe(), " is not f32");
  }
}

inline void CheckSameShape(const char* op, const Tensor& a, const Tensor& b) {
  GEMMAPOD_CHECK(a.shape() == b.shape(), op, ": ", a.Describe(), " and ", b.Describe(),
                 " differ in shape");
}

// x [..., K] against w [N, K] into y [..., N].
inline void CheckProduct(const char* op, const Tensor& x, const Tensor& w, const Tensor& y) {
  GEMMAPOD_CHECK(w.rank() == 2 && x.rank() >= 1 && y.rank() == x.rank() && x.dim(-1) == w.dim(1) &&
                     y.dim(-1) == w.dim(0) &&
                     x.numel() / std::max<int64_t>(x.dim(-1), 1) ==
                         y.numel() / std::max<int64_t>(y.dim(-1), 1),
                 op, ": ", x.Describe(), " x ", w.Describe(), "^T does not fit ", y.Describe());
  CheckF32(op, {&x, &y});
}

}  // namespace gemmapod::ops::internal
