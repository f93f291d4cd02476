// Tensor: a shape, an element type, a device and a pointer to contiguous row-major bytes.
// An owning tensor shares its buffer with every view taken from it (the buffer lives as long as
// any of them); a borrowed tensor wraps memory it does not own. Views cover contiguous ranges
// only (leading-dimension slices and reshapes): every kernel may assume dense row-major data.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "runtime/device.h"
#include "runtime/dtype.h"
#include "runtime/error.h"

namespace gemmapod {

using Shape = std::vector<int64_t>;

std::string ShapeToString(const Shape& shape);
class Tensor;
// The index of the first NaN or infinity of an f32 or bf16 host tensor; -1 when every element is
// finite (and for integer tensors).
int64_t FirstNonFinite(const Tensor& t);
int64_t NumElements(const Shape& shape);

class Tensor {
 public:
  Tensor() = default;

  // Owning, uninitialised.
  static Tensor Empty(Shape shape, DType dtype, Device device = Device::Cpu());
  // Owning, zero-filled (CPU only).
  static Tensor Zeros(Shape shape, DType dtype);
  // Owning copy of host values as f32.
  static Tensor FromVector(Shape shape, const std::vector<float>& values);
  // Non-owning: the caller keeps `data` alive while the tensor is used.
  static Tensor Borrow(void* data, Shape shape, DType dtype, Device device = Device::Cpu());

  const Shape& shape() const { return shape_; }
  int rank() const { return static_cast<int>(shape_.size()); }
  int64_t dim(int i) const;  // negative i counts from the end
  int64_t numel() const { return NumElements(shape_); }
  size_t nbytes() const { return static_cast<size_t>(numel()) * DTypeSize(dtype_); }
  DType dtype() const { return dtype_; }
  Device device() const { return device_; }
  bool defined() const { return data_ != nullptr || numel() == 0; }
  bool owns_memory() const { return storage_ != nullptr; }

  void* raw() { return data_; }
  const void* raw() const { return data_; }
  template <typename T>
  T* data() {
    CheckType(DTypeOf<T>::value);
    return static_cast<T*>(data_);
  }
  template <typename T>
  const T* data() const {
    CheckType(DTypeOf<T>::value);
    return static_cast<const T*>(data_);
  }

  // Rows [begin, end) of the leading dimension, sharing memory.
  Tensor Slice(int64_t begin, int64_t end) const;
  // Same elements, new shape (one dimension may be -1), sharing memory.
  Tensor Reshape(Shape shape) const;
  // Deep copy on the same device (CPU), or conversion to another dtype (f32 <-> bf16).
  Tensor Clone() const;
  Tensor To(DType dtype) const;

  std::string Describe() const;  // "bf16[4, 8] on cpu:0", for error messages

 private:
  void CheckType(DType want) const;

  std::shared_ptr<void> storage_;
  void* data_ = nullptr;
  Shape shape_;
  DType dtype_ = DType::kF32;
  Device device_;
};

}  // namespace gemmapod
