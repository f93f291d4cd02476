// The CUDA backend: device memory for Tensor, host <-> device copies, and the device kernels
// the runtime needs (bf16 conversion, cuBLAS matmul). Built only when nvcc is found; this
// header stays free of CUDA headers so CPU-side code can include it.
#pragma once

#include "runtime/cpu/matmul.h"
#include "runtime/tensor.h"

namespace gemmapod::cuda {

// Number of usable CUDA devices; 0 when there is no GPU or no driver (never throws).
int DeviceCount();
// Registers the CUDA allocator so Tensor::Empty(..., Device::Cuda(i)) works. Idempotent.
void RegisterCudaBackend();

// Copies between any two of host/device tensors of equal dtype and element count.
void Copy(const Tensor& src, Tensor& dst);
// A device copy of a host tensor, and back.
Tensor ToDevice(const Tensor& host, int device);
Tensor ToHost(const Tensor& device_tensor);

// f32 <-> bf16 on the device, rounding to nearest even like runtime/dtype.h.
void ConvertF32ToBF16(const Tensor& src, Tensor& dst);
void ConvertBF16ToF32(const Tensor& src, Tensor& dst);

// y = x * w^T on the device, same shapes and layout as cpu::MatMul: x f32 [..., K], w f32 or
// bf16 [N, K], y f32 [..., N], all on one device; returns when y is written. f32 weights run an
// f32 GEMM (no TF32);
// bf16 weights run a bf16 tensor-core GEMM with activations rounded to bf16 (kFastBF16) or split
// into two bf16 halves accumulated in f32 (kExact).
void MatMul(const Tensor& x, const Tensor& w, Tensor& y,
            cpu::MatmulPrecision precision = cpu::MatmulPrecision::kExact);

}  // namespace gemmapod::cuda
