// Where a tensor's bytes live. Backends other than the CPU register an allocator at start-up
// (runtime/cuda registers CUDA), so the core never includes a backend's headers.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace gemmapod {

enum class DeviceKind : uint8_t { kCpu, kCuda };

struct Device {
  DeviceKind kind = DeviceKind::kCpu;
  int index = 0;

  static Device Cpu() { return {DeviceKind::kCpu, 0}; }
  static Device Cuda(int index) { return {DeviceKind::kCuda, index}; }
  bool is_cpu() const { return kind == DeviceKind::kCpu; }
  bool operator==(const Device&) const = default;
  std::string ToString() const;
};

// Allocation for one device kind. Implementations must return memory aligned to 64 bytes.
class DeviceAllocator {
 public:
  virtual ~DeviceAllocator() = default;
  virtual void* Allocate(Device device, size_t bytes) = 0;
  virtual void Free(Device device, void* ptr) = 0;
};

// The allocator for `kind`; throws gemmapod::Error when that backend is not built or registered.
DeviceAllocator& AllocatorFor(DeviceKind kind);
// Called once by a backend (e.g. RegisterCudaBackend()); the allocator must outlive all tensors.
void RegisterAllocator(DeviceKind kind, DeviceAllocator* allocator);

// The host allocator keeps large freed blocks (up to 2 GiB) for the next request of the same size,
// which steps and decode iterations make over and over. A one-off phase that makes large tensors
// of sizes that do not come back (writing a checkpoint gathers every whole tensor once) would
// leave them kept: while one of these is alive, the kept blocks are dropped and large blocks freed
// go back to the system at once.
class HostBlockCacheSuspension {
 public:
  HostBlockCacheSuspension();
  ~HostBlockCacheSuspension();
  HostBlockCacheSuspension(const HostBlockCacheSuspension&) = delete;
  HostBlockCacheSuspension& operator=(const HostBlockCacheSuspension&) = delete;
};

}  // namespace gemmapod
