#include "runtime/tensor.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <fstream>
#include <string>

namespace gemmapod {
namespace {

TEST(Tensor, EmptyHasShapeTypeAndAlignedMemory) {
  Tensor t = Tensor::Empty({3, 5}, DType::kBF16);
  EXPECT_EQ(t.rank(), 2);
  EXPECT_EQ(t.dim(0), 3);
  EXPECT_EQ(t.dim(-1), 5);
  EXPECT_EQ(t.numel(), 15);
  EXPECT_EQ(t.nbytes(), 30u);
  EXPECT_TRUE(t.owns_memory());
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t.raw()) % 64, 0u);
  EXPECT_EQ(t.Describe(), "bf16[3, 5] on cpu:0");
}

TEST(Tensor, TypedAccessChecksDType) {
  Tensor t = Tensor::Zeros({4}, DType::kI32);
  EXPECT_EQ(t.data<int32_t>()[3], 0);
  EXPECT_THROW(t.data<float>(), Error);
}

TEST(Tensor, SliceIsAViewSharingMemory) {
  Tensor t = Tensor::FromVector({3, 2}, {0, 1, 2, 3, 4, 5});
  Tensor mid = t.Slice(1, 3);
  EXPECT_EQ(mid.shape(), (Shape{2, 2}));
  EXPECT_EQ(mid.data<float>()[0], 2.0f);
  mid.data<float>()[0] = 42.0f;
  EXPECT_EQ(t.data<float>()[2], 42.0f);
  EXPECT_THROW(t.Slice(2, 4), Error);
  EXPECT_THROW(t.Slice(2, 1), Error);
}

TEST(Tensor, ViewKeepsOwnerAlive) {
  Tensor view;
  {
    Tensor owner = Tensor::FromVector({4}, {1, 2, 3, 4});
    view = owner.Slice(2, 4);
  }
  EXPECT_EQ(view.data<float>()[1], 4.0f);  // ASan/valgrind would flag a dangling buffer
}

TEST(Tensor, ReshapeInfersOneDimension) {
  Tensor t = Tensor::Zeros({2, 6}, DType::kF32);
  EXPECT_EQ(t.Reshape({3, -1}).shape(), (Shape{3, 4}));
  EXPECT_EQ(t.Reshape({3, -1}).raw(), t.raw());
  EXPECT_THROW(t.Reshape({5, -1}), Error);
  EXPECT_THROW(t.Reshape({-1, -1}), Error);
  EXPECT_THROW(t.Reshape({7}), Error);
}

TEST(Tensor, BorrowDoesNotOwn) {
  float buf[4] = {1, 2, 3, 4};
  Tensor t = Tensor::Borrow(buf, {2, 2}, DType::kF32);
  EXPECT_FALSE(t.owns_memory());
  EXPECT_EQ(t.data<float>()[3], 4.0f);
}

TEST(Tensor, ConvertsBetweenF32AndBF16) {
  Tensor f = Tensor::FromVector({3}, {1.0f, 1.0f + 0x1p-8f, -3.140625f});
  Tensor b = f.To(DType::kBF16);
  EXPECT_EQ(b.dtype(), DType::kBF16);
  EXPECT_EQ(b.data<BF16>()[1].bits, 0x3f80);  // tie rounds to even
  Tensor back = b.To(DType::kF32);
  EXPECT_EQ(back.data<float>()[2], -3.140625f);
  EXPECT_THROW(f.To(DType::kI8), Error);
}

TEST(Tensor, CloneIsDeep) {
  Tensor a = Tensor::FromVector({2}, {1, 2});
  Tensor b = a.Clone();
  b.data<float>()[0] = 9;
  EXPECT_EQ(a.data<float>()[0], 1.0f);
}

TEST(Tensor, DeviceWithoutBackendIsAClearError) {
  try {
    // In a build without CUDA, or before the CUDA backend registers, this must not crash.
    if (&AllocatorFor(DeviceKind::kCuda) != nullptr) GTEST_SKIP() << "CUDA backend registered";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("no allocator"), std::string::npos);
    EXPECT_THROW(Tensor::Empty({2}, DType::kF32, Device::Cuda(0)), Error);
  }
}

// Resident memory (VmRSS) of this process, in MiB.
int64_t ResidentMib() {
  std::ifstream in("/proc/self/status");
  std::string key;
  while (in >> key) {
    if (key == "VmRSS:") {
      int64_t kib = 0;
      in >> kib;
      return kib / 1024;
    }
    std::getline(in, key);
  }
  return -1;
}

// A large block freed is kept for the next request of its size (the same memory comes back);
// a HostBlockCacheSuspension drops the kept blocks and returns later ones to the system at once.
TEST(Tensor, LargeBlocksAreKeptUntilASuspensionReturnsThem) {
  DeviceAllocator& host = AllocatorFor(DeviceKind::kCpu);
  const size_t bytes = size_t{256} << 20;
  void* p = host.Allocate(Device{}, bytes);
  std::memset(p, 1, bytes);  // resident
  host.Free(Device{}, p);
  EXPECT_EQ(host.Allocate(Device{}, bytes), p) << "a freed 256 MiB block is kept for reuse";
  host.Free(Device{}, p);
  const int64_t kept = ResidentMib();
  {
    const HostBlockCacheSuspension one_off;
    EXPECT_LT(ResidentMib(), kept - 200) << "the kept block goes back to the system";
    void* q = host.Allocate(Device{}, bytes);
    std::memset(q, 1, bytes);
    host.Free(Device{}, q);
    EXPECT_LT(ResidentMib(), kept - 200) << "blocks freed while suspended are not kept";
  }
}

TEST(Tensor, NegativeDimensionIsRejected) {
  EXPECT_THROW(Tensor::Empty({2, -3}, DType::kF32), Error);
}

}  // namespace
TEST(Tensor, ShapesThatOverflowOrGoNegativeAreRejected) {
  // Shapes come from file headers: a product past 64 bits must not wrap to a small size.
  EXPECT_THROW(NumElements({int64_t{1} << 40, int64_t{1} << 40}), Error);
  EXPECT_THROW(Tensor::Empty({int64_t{1} << 32, int64_t{1} << 32}, DType::kF32), Error);
  float x[4];
  EXPECT_THROW(Tensor::Borrow(x, {-2, -2}, DType::kF32), Error);
  const Tensor t = Tensor::Zeros({4}, DType::kF32);
  EXPECT_THROW(t.Reshape({-2, -2}), Error);
  EXPECT_EQ(t.Reshape({2, -1}).shape(), (Shape{2, 2}));
}

}  // namespace gemmapod
