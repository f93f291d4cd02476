// The CUDA backend against the CPU reference: copies, bf16 conversions bit for bit against
// runtime/dtype.h, and cuBLAS matmuls against cpu::MatMul within the bounds stated above
// ExpectMatMulMatchesCpu. Skips (does not fail) on machines without a GPU, where it still proves
// the backend links and reports zero devices cleanly.
#include "runtime/cuda/cuda_backend.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

namespace gemmapod {
namespace {

class CudaBackendTest : public testing::Test {
 protected:
  void SetUp() override {
    if (cuda::DeviceCount() == 0) GTEST_SKIP() << "no CUDA device on this machine";
    cuda::RegisterCudaBackend();
  }
};

Tensor Ramp(Shape shape, float scale) {
  Tensor t = Tensor::Empty(std::move(shape), DType::kF32);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = scale * std::sin(0.7f * i + 0.1f);
  return t;
}

TEST(CudaBackend, DeviceCountNeverThrows) { EXPECT_GE(cuda::DeviceCount(), 0); }

TEST_F(CudaBackendTest, CopiesRoundTrip) {
  const Tensor host = Ramp({17, 33}, 3.0f);
  const Tensor back = cuda::ToHost(cuda::ToDevice(host, 0));
  for (int64_t i = 0; i < host.numel(); ++i)
    ASSERT_EQ(back.data<float>()[i], host.data<float>()[i]);
  // Device to device, then back.
  const Tensor dev = cuda::ToDevice(host, 0);
  Tensor dev2 = Tensor::Empty({17, 33}, DType::kF32, Device::Cuda(0));
  cuda::Copy(dev, dev2);
  const Tensor back2 = cuda::ToHost(dev2);
  for (int64_t i = 0; i < host.numel(); ++i)
    ASSERT_EQ(back2.data<float>()[i], host.data<float>()[i]);
  // Empty tensors copy as no-ops; mismatched ones are refused.
  Tensor empty = Tensor::Empty({0, 4}, DType::kF32, Device::Cuda(0));
  EXPECT_EQ(cuda::ToHost(empty).numel(), 0);
  Tensor wrong = Tensor::Empty({17, 32}, DType::kF32, Device::Cuda(0));
  EXPECT_THROW(cuda::Copy(host, wrong), Error);
}

// f32 values that probe bf16 rounding: ties (both parities), values just off a tie, signed zeros,
// subnormals, the largest finite floats (which round to infinity), infinities and NaNs with
// payloads (kept, quieted), then pseudo-random bit patterns over the whole f32 range.
std::vector<uint32_t> RoundingProbeBits() {
  std::vector<uint32_t> bits = {0x3f808000u, 0x3f818000u, 0x3f808001u, 0x3f817fffu, 0x00000000u,
                                0x80000000u, 0x00000001u, 0x807fffffu, 0x00008000u, 0x00018000u,
                                0x7f7fffffu, 0xff7fffffu, 0x7f7f8000u, 0x7f7f7fffu, 0x7f800000u,
                                0xff800000u, 0x7fc00000u, 0xffc00001u, 0x7f800001u, 0x7fa5a5a5u,
                                0xff812345u, 0x47800000u, 0xc77fffffu, 0x3eaaaaabu};
  uint32_t state = 12345u;
  for (int i = 0; i < (1 << 16); ++i) {
    state = state * 1664525u + 1013904223u;  // LCG; the high bits cover sign and exponent
    bits.push_back(state);
  }
  return bits;
}

TEST_F(CudaBackendTest, BF16ConversionMatchesCpuRounding) {
  const Tensor smooth = Ramp({1000}, 1000.0f);
  Tensor dev = cuda::ToDevice(smooth, 0);
  Tensor dev_bf16 = Tensor::Empty({1000}, DType::kBF16, Device::Cuda(0));
  cuda::ConvertF32ToBF16(dev, dev_bf16);
  const Tensor got = cuda::ToHost(dev_bf16);
  const Tensor want = smooth.To(DType::kBF16);
  for (int64_t i = 0; i < 1000; ++i) ASSERT_EQ(got.data<BF16>()[i].bits, want.data<BF16>()[i].bits);

  // Bit for bit against FloatToBF16 (runtime/dtype.h), NaN payloads included.
  const std::vector<uint32_t> bits = RoundingProbeBits();
  const int64_t n = static_cast<int64_t>(bits.size());
  Tensor probe = Tensor::Empty({n}, DType::kF32);
  std::memcpy(probe.raw(), bits.data(), bits.size() * sizeof(uint32_t));
  Tensor probe_dev = cuda::ToDevice(probe, 0);
  Tensor probe_bf16 = Tensor::Empty({n}, DType::kBF16, Device::Cuda(0));
  cuda::ConvertF32ToBF16(probe_dev, probe_bf16);
  const Tensor probe_got = cuda::ToHost(probe_bf16);
  for (int64_t i = 0; i < n; ++i) {
    ASSERT_EQ(probe_got.data<BF16>()[i].bits, FloatToBF16(probe.data<float>()[i]).bits)
        << "f32 bits 0x" << std::hex << bits[i];
  }
}

TEST_F(CudaBackendTest, BF16ToF32IsExactForEveryBitPattern) {
  Tensor all = Tensor::Empty({65536}, DType::kBF16);
  for (int64_t i = 0; i < 65536; ++i) all.data<BF16>()[i].bits = static_cast<uint16_t>(i);
  Tensor dev_f32 = Tensor::Empty({65536}, DType::kF32, Device::Cuda(0));
  cuda::ConvertBF16ToF32(cuda::ToDevice(all, 0), dev_f32);
  const Tensor got = cuda::ToHost(dev_f32);
  for (int64_t i = 0; i < 65536; ++i) {
    const float want = BF16ToFloat(all.data<BF16>()[i]);
    ASSERT_EQ(std::memcmp(&got.data<float>()[i], &want, sizeof(float)), 0)
        << "bf16 bits 0x" << std::hex << i;
  }
  // And back: every bf16 survives f32 -> bf16 on the device unchanged.
  Tensor again = Tensor::Empty({65536}, DType::kBF16, Device::Cuda(0));
  cuda::ConvertF32ToBF16(dev_f32, again);
  const Tensor round_trip = cuda::ToHost(again);
  for (int64_t i = 0; i < 65536; ++i) {
    const uint16_t b = static_cast<uint16_t>(i);
    const bool nan = (b & 0x7fffu) > 0x7f80u;  // signalling NaNs come back quieted
    ASSERT_EQ(round_trip.data<BF16>()[i].bits, nan ? (b | 0x0040u) : b)
        << "bf16 bits 0x" << std::hex << i;
  }
}

TEST_F(CudaBackendTest, BF16ConversionChecksOperands) {
  Tensor f = Tensor::Empty({8}, DType::kF32, Device::Cuda(0));
  Tensor b = Tensor::Empty({8}, DType::kBF16, Device::Cuda(0));
  Tensor b7 = Tensor::Empty({7}, DType::kBF16, Device::Cuda(0));
  Tensor host_b = Tensor::Empty({8}, DType::kBF16);
  EXPECT_THROW(cuda::ConvertF32ToBF16(f, b7), Error);
  EXPECT_THROW(cuda::ConvertF32ToBF16(f, host_b), Error);
  EXPECT_THROW(cuda::ConvertF32ToBF16(b, f), Error);
  EXPECT_THROW(cuda::ConvertBF16ToF32(f, b), Error);
  Tensor f0 = Tensor::Empty({0}, DType::kF32, Device::Cuda(0));
  Tensor b0 = Tensor::Empty({0}, DType::kBF16, Device::Cuda(0));
  EXPECT_NO_THROW(cuda::ConvertF32ToBF16(f0, b0));  // no zero-block launch
  EXPECT_NO_THROW(cuda::ConvertBF16ToF32(b0, f0));
}

// cuBLAS against cpu::MatMul. Per output element the bound is relative to s = sum_k |x_k w_k|:
//  - f32 weights, and bf16 weights with kExact: both sides accumulate in f32 (each off the exact
//    sum by at most about K * 2^-24 * s) and kExact's hi/lo split leaves at most 2^-17 |x|, so
//    |gpu - cpu| <= (4 K 2^-24 + 2^-16) s, twice the worst case;
//  - bf16 weights with kFastBF16: the GPU rounds x to bf16 (relative error 2^-9), while the CPU
//    may keep x in f32 (its GEMV kernels without AVX-512 BF16 widen the weights instead), so
//    |gpu - cpu| <= 2^-8 s.
void ExpectMatMulMatchesCpu(const Shape& x_shape, int64_t n, DType wtype,
                            cpu::MatmulPrecision precision) {
  const int64_t k = x_shape.back();
  const Tensor x = Ramp(x_shape, 1.0f);
  const Tensor w = Ramp({n, k}, 0.5f).To(wtype);
  Shape y_shape = x_shape;
  y_shape.back() = n;
  Tensor want = Tensor::Empty(y_shape, DType::kF32);
  cpu::MatMul(x, w, want, precision);
  Tensor y = Tensor::Empty(y_shape, DType::kF32, Device::Cuda(0));
  cuda::MatMul(cuda::ToDevice(x, 0), cuda::ToDevice(w, 0), y, precision);
  const Tensor got = cuda::ToHost(y);
  const Tensor w32 = w.To(DType::kF32);
  const bool fast = precision == cpu::MatmulPrecision::kFastBF16 && wtype == DType::kBF16;
  const double rel =
      fast ? std::ldexp(1.0, -8) : 4.0 * k * std::ldexp(1.0, -24) + std::ldexp(1.0, -16);
  const int64_t m = x.numel() / k;
  double worst = 0;
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      double s = 0;
      for (int64_t t = 0; t < k; ++t)
        s += std::fabs(double{x.data<float>()[i * k + t]} * w32.data<float>()[j * k + t]);
      const double diff =
          std::fabs(double{got.data<float>()[i * n + j]} - want.data<float>()[i * n + j]);
      ASSERT_LE(diff, rel * s + 1e-30)
          << DTypeName(wtype)
          << (precision == cpu::MatmulPrecision::kExact ? " kExact" : " kFastBF16") << " M=" << m
          << " K=" << k << " N=" << n << " element (" << i << ", " << j << ")";
      if (s > 0) worst = std::max(worst, diff / s);
    }
  }
  std::printf("  matmul %s %s M=%lld K=%lld N=%lld: max |gpu - cpu| / s = %.3g (bound %.3g)\n",
              std::string(DTypeName(wtype)).c_str(),
              precision == cpu::MatmulPrecision::kExact ? "kExact" : "kFastBF16",
              static_cast<long long>(m), static_cast<long long>(k), static_cast<long long>(n),
              worst, rel);
}

TEST_F(CudaBackendTest, MatMulMatchesCpu) {
  for (DType wtype : {DType::kF32, DType::kBF16}) {
    for (auto precision : {cpu::MatmulPrecision::kExact, cpu::MatmulPrecision::kFastBF16}) {
      SCOPED_TRACE(DTypeName(wtype));
      ExpectMatMulMatchesCpu({5, 67}, 19, wtype, precision);       // CPU GEMV kernels
      ExpectMatMulMatchesCpu({3, 13, 160}, 72, wtype, precision);  // CPU oneDNN GEMM, rank 3
      ExpectMatMulMatchesCpu({130, 512}, 256, wtype, precision);   // tensor-core sized tiles
    }
  }
}

TEST_F(CudaBackendTest, MatMulHandlesEmptyDimensions) {
  // K = 0: an empty sum, so y is all zeros (y starts as NaN to catch an untouched output).
  Tensor nan_host = Tensor::Empty({3, 4}, DType::kF32);
  for (int64_t i = 0; i < 12; ++i) nan_host.data<float>()[i] = std::nanf("");
  Tensor y = cuda::ToDevice(nan_host, 0);
  Tensor x0 = Tensor::Empty({3, 0}, DType::kF32, Device::Cuda(0));
  Tensor w0 = Tensor::Empty({4, 0}, DType::kBF16, Device::Cuda(0));
  cuda::MatMul(x0, w0, y);
  const Tensor got = cuda::ToHost(y);
  for (int64_t i = 0; i < 12; ++i) ASSERT_EQ(got.data<float>()[i], 0.0f);
  // M = 0 and N = 0: nothing to do, and no launch error.
  Tensor x = Tensor::Empty({0, 5}, DType::kF32, Device::Cuda(0));
  Tensor w = Tensor::Empty({4, 5}, DType::kBF16, Device::Cuda(0));
  Tensor y0 = Tensor::Empty({0, 4}, DType::kF32, Device::Cuda(0));
  EXPECT_NO_THROW(cuda::MatMul(x, w, y0));
  Tensor x2 = Tensor::Empty({2, 5}, DType::kF32, Device::Cuda(0));
  Tensor w2 = Tensor::Empty({0, 5}, DType::kF32, Device::Cuda(0));
  Tensor y2 = Tensor::Empty({2, 0}, DType::kF32, Device::Cuda(0));
  EXPECT_NO_THROW(cuda::MatMul(x2, w2, y2));
}

TEST_F(CudaBackendTest, MatMulRejectsMismatchedShapes) {
  Tensor x = Tensor::Empty({2, 3}, DType::kF32, Device::Cuda(0));
  Tensor w = Tensor::Empty({4, 5}, DType::kF32, Device::Cuda(0));
  Tensor y = Tensor::Empty({2, 4}, DType::kF32, Device::Cuda(0));
  EXPECT_THROW(cuda::MatMul(x, w, y), Error);
  Tensor host_x = Tensor::Empty({2, 5}, DType::kF32);
  EXPECT_THROW(cuda::MatMul(host_x, w, y), Error);
  Tensor w_i8 = Tensor::Empty({4, 3}, DType::kI8, Device::Cuda(0));
  EXPECT_THROW(cuda::MatMul(x, w_i8, y), Error);
}

}  // namespace
}  // namespace gemmapod
