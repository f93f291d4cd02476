#include <algorithm>
#include <cstdint>
#include <limits>
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

// Round to nearest even with the integer steps of FloatToBF16 in runtime/dtype.h, so device and
// host conversions agree bit for bit: the hardware conversion (cvt.rn.bf16.f32) returns one
// canonical NaN where the host keeps the NaN's payload.
__device__ __forceinline__ uint16_t RoundToBF16Bits(float f) {
  uint32_t u = __float_as_uint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x0040u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

__device__ __forceinline__ float BF16BitsToFloat(uint16_t bits) {
  return __uint_as_float(static_cast<uint32_t>(bits) << 16);
}

__global__ void F32ToBF16Kernel(const float* src, uint16_t* dst, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    dst[i] = RoundToBF16Bits(src[i]);
  }
}

__global__ void BF16ToF32Kernel(const uint16_t* src, float* dst, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    dst[i] = BF16BitsToFloat(src[i]);
  }
}

// x = hi + lo with hi = bf16(x) and lo = bf16(x - hi): the part of x that one bf16 cannot hold
// (the split cpu::MatMul's kExact path makes).
__global__ void SplitBF16Kernel(const float* x, uint16_t* hi, uint16_t* lo, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const uint16_t h = RoundToBF16Bits(x[i]);
    hi[i] = h;
    lo[i] = RoundToBF16Bits(x[i] - BF16BitsToFloat(h));
  }
}

// Grid for the grid-stride kernels above; callers skip the launch when n == 0 (a grid of zero
// blocks is a launch error).
int GridFor(int64_t n) { return static_cast<int>(std::min<int64_t>((n + 255) / 256, 4096)); }

void CheckConversion(const Tensor& src, DType src_type, const Tensor& dst, DType dst_type,
                     const char* what) {
  GEMMAPOD_CHECK(!src.device().is_cpu() && src.device() == dst.device(), what,
                 ": both tensors must be on the same CUDA device, got ", src.Describe(), " and ",
                 dst.Describe());
  GEMMAPOD_CHECK(src.dtype() == src_type && dst.dtype() == dst_type && src.numel() == dst.numel(),
                 what, ": needs ", DTypeName(src_type), " into ", DTypeName(dst_type),
                 " of equal size, got ", src.Describe(), " into ", dst.Describe());
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
  if (src.nbytes() == 0) return;
  if (!dst.device().is_cpu()) {
    GEMMAPOD_CUDA_CHECK(cudaSetDevice(dst.device().index));
  } else if (!src.device().is_cpu()) {
    GEMMAPOD_CUDA_CHECK(cudaSetDevice(src.device().index));
  }
  GEMMAPOD_CUDA_CHECK(cudaMemcpy(dst.raw(), src.raw(), src.nbytes(), KindOf(src, dst)));
  // cudaMemcpy may return before a copy into device memory has landed (host-to-device from
  // pageable memory returns once the data is staged; device-to-device does not wait at all).
  // Wait, so that dst is ready for any stream, e.g. a communicator's non-default one.
  if (!dst.device().is_cpu()) GEMMAPOD_CUDA_CHECK(cudaStreamSynchronize(nullptr));
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
  CheckConversion(src, DType::kF32, dst, DType::kBF16, "cuda::ConvertF32ToBF16");
  if (src.numel() == 0) return;
  GEMMAPOD_CUDA_CHECK(cudaSetDevice(src.device().index));
  F32ToBF16Kernel<<<GridFor(src.numel()), 256>>>(
      src.data<float>(), reinterpret_cast<uint16_t*>(dst.data<BF16>()), src.numel());
  GEMMAPOD_CUDA_CHECK(cudaGetLastError());
  GEMMAPOD_CUDA_CHECK(cudaDeviceSynchronize());
}

void ConvertBF16ToF32(const Tensor& src, Tensor& dst) {
  CheckConversion(src, DType::kBF16, dst, DType::kF32, "cuda::ConvertBF16ToF32");
  if (src.numel() == 0) return;
  GEMMAPOD_CUDA_CHECK(cudaSetDevice(src.device().index));
  BF16ToF32Kernel<<<GridFor(src.numel()), 256>>>(
      reinterpret_cast<const uint16_t*>(src.data<BF16>()), dst.data<float>(), src.numel());
  GEMMAPOD_CUDA_CHECK(cudaGetLastError());
  GEMMAPOD_CUDA_CHECK(cudaDeviceSynchronize());
}

void MatMul(const Tensor& x, const Tensor& w, Tensor& y, cpu::MatmulPrecision precision) {
  auto what = [&] {
    return StrCat(" (x: ", x.Describe(), ", w: ", w.Describe(), ", y: ", y.Describe(), ")");
  };
  GEMMAPOD_CHECK(!x.device().is_cpu() && w.device() == x.device() && y.device() == x.device(),
                 "cuda::MatMul: all operands must be on one CUDA device", what());
  GEMMAPOD_CHECK(x.dtype() == DType::kF32 && y.dtype() == DType::kF32,
                 "cuda::MatMul: activations and output must be f32", what());
  GEMMAPOD_CHECK(w.dtype() == DType::kF32 || w.dtype() == DType::kBF16,
                 "cuda::MatMul: weights must be f32 or bf16", what());
  GEMMAPOD_CHECK(w.rank() == 2 && x.rank() >= 1 && x.dim(-1) == w.dim(1),
                 "cuda::MatMul: x[..., K] and w[N, K] do not fit y[..., N] = x * w^T", what());
  Shape want = x.shape();
  want.back() = w.dim(0);
  GEMMAPOD_CHECK(y.shape() == want, "cuda::MatMul: y must have shape ", ShapeToString(want),
                 what());
  const int64_t n64 = w.dim(0), k64 = w.dim(1);
  const int64_t m64 = k64 == 0 ? y.numel() / std::max<int64_t>(n64, 1) : x.numel() / k64;
  constexpr int64_t kIntMax = std::numeric_limits<int>::max();
  GEMMAPOD_CHECK(m64 <= kIntMax && n64 <= kIntMax && k64 <= kIntMax,
                 "cuda::MatMul: dimensions past cuBLAS's 32-bit range", what());
  const int dev = x.device().index;
  if (m64 == 0 || n64 == 0) return;
  GEMMAPOD_CUDA_CHECK(cudaSetDevice(dev));
  if (k64 == 0) {  // an empty sum: cuBLAS may leave C untouched, cpu::MatMul writes zeros
    GEMMAPOD_CUDA_CHECK(cudaMemset(y.raw(), 0, y.nbytes()));
    GEMMAPOD_CUDA_CHECK(cudaDeviceSynchronize());
    return;
  }
  const int m = static_cast<int>(m64), k = static_cast<int>(k64), n = static_cast<int>(n64);
  cublasHandle_t h = HandleFor(dev);
  // cuBLAS is column-major: row-major y[M,N] is the column-major N x M matrix C, and
  // C = W^T X where W (K x N) and X (K x M) are w and x read column-major. The handle keeps the
  // default math mode, so f32 GEMMs stay f32 (no TF32) unless NVIDIA_TF32_OVERRIDE says else.
  const float one = 1.0f, zero = 0.0f;
  if (w.dtype() == DType::kF32) {
    GEMMAPOD_CUBLAS_CHECK(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, n, m, k, &one, w.raw(),
                                       CUDA_R_32F, k, x.raw(), CUDA_R_32F, k, &zero, y.raw(),
                                       CUDA_R_32F, n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  } else {
    Tensor hi = Tensor::Empty(x.shape(), DType::kBF16, x.device());
    Tensor lo = Tensor::Empty(x.shape(), DType::kBF16, x.device());
    SplitBF16Kernel<<<GridFor(x.numel()), 256>>>(
        x.data<float>(), reinterpret_cast<uint16_t*>(hi.data<BF16>()),
        reinterpret_cast<uint16_t*>(lo.data<BF16>()), x.numel());
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
