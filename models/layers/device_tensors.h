// The tensors layers make for themselves (scratch activations, caches, states, copies), made on
// the device their operands live on, from that device's allocator, and filled or copied through
// the operations of the seam: models/ never touches their bytes from the host.
#pragma once

#include "runtime/device.h"
#include "runtime/tensor.h"

namespace gemmapod {

// f32, uninitialised, on `like`'s device.
Tensor ActivationLike(const Tensor& like, Shape shape);
// f32 zeros on `device`.
Tensor ZerosOn(Device device, Shape shape);
// A copy of the f32 tensor `t` on its device.
Tensor CopyOf(const Tensor& t);

}  // namespace gemmapod
