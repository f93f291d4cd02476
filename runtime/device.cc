#include "runtime/device.h"

#include <array>
#include <cstdlib>
#include <new>

#include "runtime/error.h"

namespace gemmapod {

std::string Device::ToString() const {
  return (kind == DeviceKind::kCpu ? "cpu:" : "cuda:") + std::to_string(index);
}

namespace {

class CpuAllocator final : public DeviceAllocator {
 public:
  void* Allocate(Device, size_t bytes) override {
    // 64-byte alignment: one cache line, one AVX-512 register.
    const size_t rounded = (bytes + 63) / 64 * 64;
    void* p = std::aligned_alloc(64, rounded == 0 ? 64 : rounded);
    if (p == nullptr) {
      throw Error(StrCat("out of host memory allocating ", bytes, " bytes"));
    }
    return p;
  }
  void Free(Device, void* ptr) override { std::free(ptr); }
};

std::array<DeviceAllocator*, 2>& Registry() {
  static CpuAllocator cpu;
  static std::array<DeviceAllocator*, 2> registry = {&cpu, nullptr};
  return registry;
}

}  // namespace

DeviceAllocator& AllocatorFor(DeviceKind kind) {
  DeviceAllocator* a = Registry()[static_cast<size_t>(kind)];
  GEMMAPOD_CHECK(a != nullptr, "no allocator for device kind ",
                 kind == DeviceKind::kCuda ? "cuda" : "cpu",
                 ": this build has no such backend, or it was not registered");
  return *a;
}

void RegisterAllocator(DeviceKind kind, DeviceAllocator* allocator) {
  Registry()[static_cast<size_t>(kind)] = allocator;
}

}  // namespace gemmapod
