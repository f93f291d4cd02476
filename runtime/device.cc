#include "runtime/device.h"

#include <array>
#include <cstdlib>
#include <map>
#include <mutex>
#include <new>
#include <unordered_map>

#include "runtime/error.h"

namespace gemmapod {

std::string Device::ToString() const {
  return (kind == DeviceKind::kCpu ? "cpu:" : "cuda:") + std::to_string(index);
}

namespace {

// Host memory. Blocks of 8 MiB and more are kept when freed, up to 2 GiB in all, and handed out
// again for a request of the same size: glibc maps blocks that large afresh each time, and the
// kernel then zeroes every page on first touch, which cost a training step of Gemma 3 270M a
// sixth of its time (its logits alone are 0.5 GiB, made and freed every step). Steps, decode
// iterations and micro-batches ask for the same sizes over and over, so exact sizes hit.
class CpuAllocator final : public DeviceAllocator {
 public:
  void* Allocate(Device, size_t bytes) override {
    // 64-byte alignment: one cache line, one AVX-512 register.
    const size_t rounded = bytes == 0 ? 64 : (bytes + 63) / 64 * 64;
    if (rounded >= kCacheFrom) {
      std::lock_guard<std::mutex> lock(mu_);
      const auto it = cached_.find(rounded);
      if (it != cached_.end()) {
        void* p = it->second;
        cached_.erase(it);
        cached_bytes_ -= rounded;
        live_[p] = rounded;
        return p;
      }
    }
    void* p = std::aligned_alloc(64, rounded);
    if (p == nullptr) {
      throw Error(StrCat("out of host memory allocating ", bytes, " bytes"));
    }
    if (rounded >= kCacheFrom) {
      std::lock_guard<std::mutex> lock(mu_);
      live_[p] = rounded;
    }
    return p;
  }
  void Free(Device, void* ptr) override {
    if (ptr == nullptr) return;
    {
      std::lock_guard<std::mutex> lock(mu_);
      const auto it = live_.find(ptr);
      if (it != live_.end()) {
        const size_t size = it->second;
        live_.erase(it);
        if (size <= kCacheLimit && suspended_ == 0) {
          // Over the limit: drop kept blocks, smallest first.
          while (cached_bytes_ + size > kCacheLimit && !cached_.empty()) {
            const auto victim = cached_.begin();
            cached_bytes_ -= victim->first;
            std::free(victim->second);
            cached_.erase(victim);
          }
          cached_.emplace(size, ptr);
          cached_bytes_ += size;
          return;
        }
      }
    }
    std::free(ptr);
  }

  // HostBlockCacheSuspension: drop what is kept, keep nothing until resumed.
  void Suspend() {
    std::lock_guard<std::mutex> lock(mu_);
    ++suspended_;
    for (const auto& [size, p] : cached_) std::free(p);
    cached_.clear();
    cached_bytes_ = 0;
  }
  void Resume() {
    std::lock_guard<std::mutex> lock(mu_);
    --suspended_;
  }

 private:
  static constexpr size_t kCacheFrom = size_t{8} << 20;
  static constexpr size_t kCacheLimit = size_t{2} << 30;
  std::mutex mu_;
  std::unordered_map<void*, size_t> live_;  // large blocks in use, by address
  std::multimap<size_t, void*> cached_;     // large blocks kept, by size
  size_t cached_bytes_ = 0;
  int suspended_ = 0;
};

CpuAllocator& HostAllocator() {
  static CpuAllocator cpu;
  return cpu;
}

std::array<DeviceAllocator*, 2>& Registry() {
  static std::array<DeviceAllocator*, 2> registry = {&HostAllocator(), nullptr};
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

HostBlockCacheSuspension::HostBlockCacheSuspension() { HostAllocator().Suspend(); }
HostBlockCacheSuspension::~HostBlockCacheSuspension() { HostAllocator().Resume(); }

}  // namespace gemmapod
