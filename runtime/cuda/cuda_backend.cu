#include <cuda_bf16.h>

#include <mutex>

#include "runtime/cuda/cuda_backend.h"
#include "runtime/cuda/cuda_check.h"

namespace gemmapod::cuda {

namespace {

class CudaAllocator final : public DeviceAllocator {
 public:
  void* Allocate(Device device, size_t bytes) override {
    GEMMAPOD_CUDA_CHECK(cudaSetDevice(device.index));
    void* p = nullptr;
    const cudaError_t err = cudaMalloc(&p, bytes == 0 ? 1 : bytes);
    if (err != cudaSuccess) {
      throw Error(StrCat("out of device memory on ", device.ToString(), " allocating ", bytes,
                         " bytes: ", cudaGetErrorString(err)));
    }
    return p;
  }
  void Free(Device device, void* ptr) override {
    cudaSetDevice(device.index);
    cudaFree(ptr);
  }
};

cudaMemcpyKind KindOf(const Tensor& src, const Tensor& dst) {
  if (src.device().is_cpu())
    return dst.device().is_cpu() ? cudaMemcpyHostToHost : cudaMemcpyHostToDevice;
  return dst.device().is_cpu() ? cudaMemcpyDeviceToHost : cudaMemcpyDeviceToDevice;
}

__global__ void F32ToBF16Kernel(const float* src, __nv_bfloat16* dst, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    dst[i] = __float2bfloat16_rn(src[i]);
  }
}

__global__ void BF16ToF32Kernel(const __nv_bfloat16* src, float* dst, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    dst[i] = __bfloat162float(src[i]);
  }
}

// lo = bf16(x - float(bf16(x))): the part of x that one bf16 cannot hold.
__global__ void SplitBF16Kernel(const float* x, __nv_bfloat16* hi, __nv_bfloat16* lo, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const __nv_bfloat16 h = __float2bfloat16_rn(x[i]);
    hi[i] = h;
    lo[i] = __float2bfloat16_rn(x[i] - __bfloat162float(h));
  }
}

int GridFor(int64_t n) { return static_cast<int>(std::min<int64_t>((n + 255) / 256, 4096)); }

void CheckDevicePair(const Tensor& a, const Tensor& b, const char* what) {
  GEMMAPOD_CHECK(!a.device().is_cpu() && a.device() == b.device(), what,
                 ": both tensors must be on the same CUDA device, got ", a.Describe(), " and ",
                 b.Describe());
  GEMMAPOD_CHECK(a.numel() == b.numel(), what, ": ", a.Describe(), " vs ", b.Describe());
}

cublasHandle_t HandleFor(int device) {
  static std::mutex mu;
  static cublasHandle_t handles[64] = {};
  std::lock_guard<std::mutex> lock(mu);
  GEMMAPOD_CHECK(device >= 0 && device < 64, "CUDA device index ", device, " out of range");
  if (handles[device] == nullptr) {
    GEMMAPOD_CUDA_CHECK(cudaSetDevice(device));
    GEMMAPOD_CUBLAS_CHECK(cublasCreate(&handles[device]));
  }
  return handles[device];
}

}  // namespace

int DeviceCount() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no driver" error
    return 0;
  }
  return n;
}

void RegisterCudaBackend() {
  static CudaAllocator allocator;
  RegisterAllocator(DeviceKind::kCuda, &allocator);
}

void Copy(const Tensor& src, Tensor& dst) {
  GEMMAPOD_CHECK(src.dtype() == dst.dtype() && src.numel() == dst.numel(), "Copy: ", src.Describe(),
                 " into ", dst.Describe());
  if (!dst.device().is_cpu()) GEMMAPOD_CUDA_CHECK(cudaSetDevice(dst.device().index));
  GEMMAPOD_CUDA_CHECK(cudaMemcpy(dst.raw(), src.raw(), src.nbytes(), KindOf(src, dst)));
}

Tensor ToDevice(const Tensor& host, int device) {
  RegisterCudaBackend();
  Tensor t = Tensor::Empty(host.shape(), host.dtype(), Device::Cuda(device));
  Copy(host, t);
  return t;
}

Tensor ToHost(const Tensor& device_tensor) {
  Tensor t = Tensor::Empty(device_tensor.shape(), device_tensor.dtype());
  Copy(device_tensor, t);
  return t;
}

void ConvertF32ToBF16(const Tensor& src, Tensor& dst) {
  CheckDevicePair(src, dst, "cuda::ConvertF32ToBF16");
  GEMMAPOD_CUDA_CHECK(cudaSetDevice(src.device().index));
  F32ToBF16Kernel<<<GridFor(src.numel()), 256>>>(
      src.data<float>(), reinterpret_cast<__nv_bfloat16*>(dst.data<BF16>()), src.numel());
  GEMMAPOD_CUDA_CHECK(cudaGetLastError());
  GEMMAPOD_CUDA_CHECK(cudaDeviceSynchronize());
}

void ConvertBF16ToF32(const Tensor& src, Tensor& dst) {
  CheckDevicePair(src, dst, "cuda::ConvertBF16ToF32");
  GEMMAPOD_CUDA_CHECK(cudaSetDevice(src.device().index));
  BF16ToF32Kernel<<<GridFor(src.numel()), 256>>>(
      reinterpret_cast<const __nv_bfloat16*>(src.data<BF16>()), dst.data<float>(), src.numel());
  GEMMAPOD_CUDA_CHECK(cudaGetLastError());
  GEMMAPOD_CUDA_CHECK(cudaDeviceSynchronize());
}

void MatMul(const Tensor& x, const Tensor& w, Tensor& y, cpu::MatmulPrecision precision) {
  GEMMAPOD_CHECK(x.rank() == 2 && w.rank() == 2 && y.rank() == 2 && x.dim(1) == w.dim(1) &&
                     y.dim(0) == x.dim(0) && y.dim(1) == w.dim(0),
                 "cuda::MatMul: x ", x.Describe(), ", w ", w.Describe(), ", y ", y.Describe(),
                 " do not fit y[M,N] = x[M,K] * w[N,K]^T");
  GEMMAPOD_CHECK(x.dtype() == DType::kF32 && y.dtype() == DType::kF32,
                 "cuda::MatMul: activations and output must be f32");
  const int dev = x.device().index;
  GEMMAPOD_CHECK(!x.device().is_cpu() && w.device() == x.device() && y.device() == x.device(),
                 "cuda::MatMul: all operands must be on one CUDA device");
  const int m = static_cast<int>(x.dim(0)), k = static_cast<int>(x.dim(1)),
            n = static_cast<int>(w.dim(0));
  cublasHandle_t h = HandleFor(dev);
  GEMMAPOD_CUDA_CHECK(cudaSetDevice(dev));
  // cuBLAS is column-major: row-major y[M,N] is the column-major N x M matrix C, and
  // C = W^T X where W (K x N) and X (K x M) are w and x read column-major.
  const float one = 1.0f, zero = 0.0f;
  if (w.dtype() == DType::kF32) {
    GEMMAPOD_CUBLAS_CHECK(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, n, m, k, &one, w.raw(),
                                       CUDA_R_32F, k, x.raw(), CUDA_R_32F, k, &zero, y.raw(),
                                       CUDA_R_32F, n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  } else {
    GEMMAPOD_CHECK(w.dtype() == DType::kBF16, "cuda::MatMul: weights must be f32 or bf16, got ",
                   w.Describe());
    Tensor hi = Tensor::Empty(x.shape(), DType::kBF16, x.device());
    Tensor lo = Tensor::Empty(x.shape(), DType::kBF16, x.device());
    SplitBF16Kernel<<<GridFor(x.numel()), 256>>>(
        x.data<float>(), reinterpret_cast<__nv_bfloat16*>(hi.data<BF16>()),
        reinterpret_cast<__nv_bfloat16*>(lo.data<BF16>()), x.numel());
    GEMMAPOD_CUDA_CHECK(cudaGetLastError());
    GEMMAPOD_CUBLAS_CHECK(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, n, m, k, &one, w.raw(),
                                       CUDA_R_16BF, k, hi.raw(), CUDA_R_16BF, k, &zero, y.raw(),
                                       CUDA_R_32F, n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    if (precision == cpu::MatmulPrecision::kExact) {
      GEMMAPOD_CUBLAS_CHECK(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, n, m, k, &one, w.raw(),
                                         CUDA_R_16BF, k, lo.raw(), CUDA_R_16BF, k, &one, y.raw(),
                                         CUDA_R_32F, n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    }
  }
  GEMMAPOD_CUDA_CHECK(cudaDeviceSynchronize());
}

}  // namespace gemmapod::cuda
